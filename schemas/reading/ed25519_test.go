package reading

import (
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"os"
	"testing"
)

// The ZIP-215 vectors (from Zcash, as shipped with curve25519-voi): signatures of "Zcash" with
// small-order and non-canonical points, which ZIP-215 accepts. Go's crypto/ed25519 refuses
// most of them; Anchorline's rules accept all, in single and (pipeline/verify) batch checks.
func TestZIP215Vectors(t *testing.T) {
	b, err := os.ReadFile("testdata/zip215.json")
	if err != nil {
		t.Fatal(err)
	}
	var vs [][2]string
	if err := json.Unmarshal(b, &vs); err != nil {
		t.Fatal(err)
	}
	if len(vs) < 100 {
		t.Fatalf("only %d vectors", len(vs))
	}
	stdlibRefused := 0
	for i, v := range vs {
		pub, _ := hex.DecodeString(v[0])
		sig, _ := hex.DecodeString(v[1])
		if !VerifyEd25519(pub, []byte("Zcash"), sig) {
			t.Errorf("vector %d refused", i)
		}
		if !ed25519.Verify(pub, []byte("Zcash"), sig) {
			stdlibRefused++
		}
	}
	if stdlibRefused == 0 {
		t.Fatal("the vectors do not tell ZIP-215 from crypto/ed25519")
	}
	// Ordinary signatures: both rule sets agree.
	pub, priv, _ := ed25519.GenerateKey(nil)
	sig := ed25519.Sign(priv, []byte("m"))
	if !VerifyEd25519(pub, []byte("m"), sig) || VerifyEd25519(pub, []byte("n"), sig) || VerifyEd25519(pub[:31], []byte("m"), sig) {
		t.Fatal("ordinary signature handling")
	}
}
