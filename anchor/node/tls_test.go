package node

import (
	"context"
	"crypto/ed25519"
	"errors"
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
// (InitNetwork's RPCTLSCert and RPCTLSKey)
// serves its RPC over https only: a client trusting the CA reads it, a plain one does not.
func TestHomeRPCOverTLS(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	certs := pki.Dir(filepath.Join(dir, "tls"))
	if err := certs.Ensure("rpc", []string{"127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	net := Network{Dir: filepath.Join(dir, "net"), ChainID: "tls-test", Validators: 1, RPCPort: -1,
		Admins: []ed25519.PublicKey{make([]byte, ed25519.PublicKeySize)}, RPCTLSCert: certs.CertFile("rpc")}
	if _, err := InitNetwork(net); !errors.Is(err, ErrInvalidNetwork) {
		t.Fatalf("a certificate without its key: %v, want ErrInvalidNetwork", err)
	}
	net.RPCTLSKey = certs.KeyFile("rpc")
	vs, err := InitNetwork(net)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(vs[0].Home, "config", "config.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `tls_cert_file = "`+certs.CertFile("rpc")+`"`) {
		t.Fatal("config.toml does not name the RPC's certificate")
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
