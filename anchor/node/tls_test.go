package node

import (
	"context"
	"crypto/ed25519"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/anchorline/anchorline/anchor/ledger"
	"github.com/anchorline/anchorline/internal/pki"
)

// TestHomeRPCOverTLS: a validator whose config.toml names rpc.tls_cert_file and tls_key_file
// serves its RPC over https only: a client trusting the CA reads it, a plain one does not.
func TestHomeRPCOverTLS(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	vs, err := InitNetwork(Network{Dir: filepath.Join(dir, "net"), ChainID: "tls-test", Validators: 1, RPCPort: -1,
		Admins: []ed25519.PublicKey{make([]byte, ed25519.PublicKeySize)}})
	if err != nil {
		t.Fatal(err)
	}
	certs := pki.Dir(filepath.Join(dir, "tls"))
	if err := certs.Ensure("rpc", []string{"127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(vs[0].Home, "config", "config.toml")
	b, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(b), `tls_cert_file = ""`, `tls_cert_file = "`+certs.CertFile("rpc")+`"`, 1)
	s = strings.Replace(s, `tls_key_file = ""`, `tls_key_file = "`+certs.KeyFile("rpc")+`"`, 1)
	if s == string(b) {
		t.Fatal("config.toml has no tls_cert_file to set")
	}
	if err := os.WriteFile(conf, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	n, err := StartHome(ctx, vs[0].Home, HomeOptions{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Stop()
	tc, err := pki.ClientConfig(certs.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	rpc, err := ledger.NewRPC(n.RPCAddr(), tc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rpc.Status(ctx); err != nil {
		t.Fatalf("https client trusting the CA: %v", err)
	}
	plain, err := ledger.NewRPC(n.RPCAddr(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := plain.Status(ctx); err == nil {
		t.Fatal("a plain-HTTP client read the RPC")
	}
}
