package connect

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"os"
	"testing"

	"github.com/anchorline/anchorline/schemas/reading"
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

// TestConnectGolden: the golden connect proof (schemas/reading/testdata/connect.json) is what schemas/reading and
// this package sign, name and verify, byte for byte (Ed25519 is deterministic). Regenerate with
// ANCHORLINE_WRITE_GOLDEN=1 only if the contract changes.
func TestConnectGolden(t *testing.T) {
	seed := make([]byte, ed25519.SeedSize)
	for i := range seed {
		seed[i] = byte(i)
	}
	key := reading.NewEd25519Key(ed25519.NewKeyFromSeed(seed))
	nonce := "gK3lW8s9TlqLAJf8Fwi0eQ" // the form nats-server sends: 16 base64url characters and more
	sig, err := reading.SignConnect(key, []byte(nonce))
	if err != nil {
		t.Fatal(err)
	}
	nkey, err := KeyName(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	got := connectVector{Seed: hex.EncodeToString(seed), Public: hex.EncodeToString(key.Public().Key), Nkey: nkey, Nonce: nonce,
		Signed: hex.EncodeToString(append([]byte(reading.ConnectContext), nonce...)), Sig: base64.RawURLEncoding.EncodeToString(sig),
		Device: "boiler-7", Inbox: reading.InboxPrefix("boiler-7"), Subscribe: reading.CommandsSubject("boiler-7")}
	if os.Getenv("ANCHORLINE_WRITE_GOLDEN") == "1" {
		b, _ := json.MarshalIndent(got, "", "  ")
		if err := os.WriteFile("../testdata/connect.json", append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile("../testdata/connect.json")
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
	raw, err := reading.DecodeConnectSig(want.Sig)
	if err != nil {
		t.Fatal(err)
	}
	if err := reading.VerifyConnect(key.Public(), []byte(want.Nonce), raw); err != nil {
		t.Fatal(err)
	}
}
