package reading

import (
	"crypto/ed25519"
	"errors"
	"testing"
)

// TestConnectProof: both algorithms' proofs verify against their key and nonce only; a proof
// is never a valid signature of the nonce alone (the context is bound in).
func TestConnectProof(t *testing.T) {
	for _, alg := range []Alg{Ed25519, ES256} {
		key, err := GenerateKey(alg)
		if err != nil {
			t.Fatal(err)
		}
		other, _ := GenerateKey(alg)
		nonce := []byte("nonce-1")
		sig, err := SignConnect(key, nonce)
		if err != nil {
			t.Fatal(err)
		}
		if err := VerifyConnect(key.Public(), nonce, sig); err != nil {
			t.Fatalf("%s: %v", alg, err)
		}
		for name, check := range map[string]error{
			"other nonce": VerifyConnect(key.Public(), []byte("nonce-2"), sig),
			"other key":   VerifyConnect(other.Public(), nonce, sig),
			"cut sig":     VerifyConnect(key.Public(), nonce, sig[:len(sig)-1]),
		} {
			if !errors.Is(check, ErrBadConnectProof) {
				t.Errorf("%s %s: %v, want ErrBadConnectProof", alg, name, check)
			}
		}
		if alg == Ed25519 && ed25519.Verify(ed25519.PublicKey(key.Public().Key), nonce, sig) {
			t.Error("the connect proof is a signature of the bare nonce")
		}
	}
}
