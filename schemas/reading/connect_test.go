package reading

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"testing"
)

// connectVector is a golden connect proof for implementations outside this repository: an
// Ed25519 device's seed, the server's nonce, the bytes signed and the CONNECT fields.
type connectVector struct {
	Seed      string `json:"seed"`       // hex, the device's Ed25519 seed
	Public    string `json:"public_key"` // hex, as registered
	Nkey      string `json:"nkey"`       // the CONNECT's nkey field
	Nonce     string `json:"nonce"`      // as the server sent it in INFO
	Signed    string `json:"signed"`     // hex: ConnectContext || nonce
	Sig       string `json:"sig"`        // the CONNECT's sig field (unpadded base64url)
	Device    string `json:"user"`       // the CONNECT's user field
	Inbox     string `json:"inbox_prefix"`
	Subscribe string `json:"commands_subject"`
}

// TestConnectGolden: the golden connect proof (testdata/connect.json) is what this package
// signs and verifies, byte for byte (Ed25519 is deterministic). Regenerate with
// ANCHORLINE_WRITE_GOLDEN=1 only if the contract changes.
func TestConnectGolden(t *testing.T) {
	seed := make([]byte, ed25519.SeedSize)
	for i := range seed {
		seed[i] = byte(i)
	}
	key := NewEd25519Key(ed25519.NewKeyFromSeed(seed))
	nonce := "gK3lW8s9TlqLAJf8Fwi0eQ" // the form nats-server sends: 16 base64url characters and more
	sig, err := SignConnect(key, []byte(nonce))
	if err != nil {
		t.Fatal(err)
	}
	nkey, err := ConnectKeyName(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	got := connectVector{Seed: hex.EncodeToString(seed), Public: hex.EncodeToString(key.Public().Key), Nkey: nkey, Nonce: nonce,
		Signed: hex.EncodeToString(append([]byte(ConnectContext), nonce...)), Sig: base64.RawURLEncoding.EncodeToString(sig),
		Device: "boiler-7", Inbox: InboxPrefix("boiler-7"), Subscribe: CommandsSubject("boiler-7")}
	if os.Getenv("ANCHORLINE_WRITE_GOLDEN") == "1" {
		b, _ := json.MarshalIndent(got, "", "  ")
		if err := os.WriteFile("testdata/connect.json", append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile("testdata/connect.json")
	if err != nil {
		t.Fatal(err)
	}
	var want connectVector
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("connect proof changed:\n got %+v\nwant %+v", got, want)
	}
	raw, err := DecodeConnectSig(want.Sig)
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyConnect(key.Public(), []byte(want.Nonce), raw); err != nil {
		t.Fatal(err)
	}
}

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
