package main

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/anchorline/anchorline/anchor/node"
)

// readCert parses the one PEM certificate in file.
func readCert(t *testing.T, file string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		t.Fatalf("%s: no PEM certificate", file)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestTLSInit runs `tls init` twice into one directory, for two servers: each certificate
// verifies against ca.pem for each of its hosts (and not for another), the CA is made once and
// kept, a certificate that covers its hosts is kept, one asked for more hosts is issued again by
// the same CA; and a missing or malformed flag is bad input that writes nothing.
func TestTLSInit(t *testing.T) {
	ctx := t.Context()
	dir := filepath.Join(t.TempDir(), "tls")
	run := func(args ...string) string {
		t.Helper()
		out, err := runOffline(ctx, t, append([]string{"tls", "init", "--dir", dir}, args...)...)
		if err != nil {
			t.Fatalf("tls init %v: %v\n%s", args, err, out)
		}
		return out
	}
	verifies := func(name string, hosts ...string) {
		t.Helper()
		roots := x509.NewCertPool()
		roots.AddCert(readCert(t, filepath.Join(dir, "ca.pem")))
		cert := readCert(t, filepath.Join(dir, name+".pem"))
		for _, h := range hosts {
			if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: h, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
				t.Errorf("%s.pem for %s: %v", name, h, err)
			}
		}
		if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: "elsewhere"}); err == nil {
			t.Errorf("%s.pem verifies for a host it was not issued for", name)
		}
	}

	out := run("--name", "nats", "--hosts", "nats-1,nats-2,localhost,127.0.0.1")
	for _, f := range []string{"ca.pem", "nats.pem", "nats-key.pem", "ca-key.pem"} {
		if !strings.Contains(out, filepath.Join(dir, f)) {
			t.Errorf("the output does not name %s:\n%s", f, out)
		}
	}
	verifies("nats", "nats-1", "nats-2", "localhost", "127.0.0.1")
	if st, err := os.Stat(filepath.Join(dir, "nats-key.pem")); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("nats-key.pem: %v %v, want mode 0600", st.Mode(), err)
	}
	ca, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	nats, err := os.ReadFile(filepath.Join(dir, "nats.pem"))
	if err != nil {
		t.Fatal(err)
	}

	run("--name", "ledger", "--hosts", "ledger-1, ledger-2")
	verifies("ledger", "ledger-1", "ledger-2")
	run("--name", "nats", "--hosts", "nats-2,localhost") // covered: kept
	if b, _ := os.ReadFile(filepath.Join(dir, "nats.pem")); !bytes.Equal(b, nats) {
		t.Error("tls init issued nats.pem again although it covers the hosts")
	}
	run("--name", "nats", "--hosts", "nats-1,nats-2,nats-3") // not covered: issued again
	verifies("nats", "nats-1", "nats-2", "nats-3")
	if b, _ := os.ReadFile(filepath.Join(dir, "ca.pem")); !bytes.Equal(b, ca) {
		t.Error("a second tls init made a new CA")
	}

	empty := filepath.Join(t.TempDir(), "none")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--name", "x", "--hosts", "a"}, "--dir"},
		{[]string{"--dir", empty, "--hosts", "a"}, "--name"},
		{[]string{"--dir", empty, "--name", "x"}, "--hosts"},
		{[]string{"--dir", empty, "--name", "ca", "--hosts", "a"}, "--name ca"},
		{[]string{"--dir", empty, "--name", "../x", "--hosts", "a"}, `--name "../x"`},
		{[]string{"--dir", empty, "--name", "x", "--hosts", "a,,b"}, `"" is not a host`},
		{[]string{"--dir", empty, "--name", "x", "--hosts", "a:4222"}, `"a:4222" is not a host`},
	} {
		out, err := runOffline(ctx, t, append([]string{"tls", "init"}, tc.args...)...)
		if exitCode(err) != exitBadInput || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("tls init %v: %v (exit %d), want bad input naming %s\n%s", tc.args, err, exitCode(err), tc.want, out)
		}
	}
	if _, err := os.Stat(empty); !os.IsNotExist(err) {
		t.Errorf("a refused tls init wrote %s: %v", empty, err)
	}
}

// TestLedgerInitRPCTLS: `ledger init --rpc-tls-cert --rpc-tls-key` writes both paths as given
// into every validator's config.toml; one without the other is bad input and writes nothing.
func TestLedgerInitRPCTLS(t *testing.T) {
	ctx := t.Context()
	dir := filepath.Join(t.TempDir(), "net")
	const cert, key = "/etc/anchorline/tls/ledger.pem", "/etc/anchorline/tls/ledger-key.pem"
	args := []string{"ledger", "init", "--validators", "2", "--chain-id", "tls-test", "--out", dir}
	for _, half := range [][]string{{"--rpc-tls-cert", cert}, {"--rpc-tls-key", key}} {
		if _, err := runOffline(ctx, t, append(args, half...)...); exitCode(err) != exitBadInput || !strings.Contains(err.Error(), "--rpc-tls-cert and --rpc-tls-key") {
			t.Fatalf("ledger init %v: %v, want bad input", half, err)
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Fatalf("a refused ledger init wrote %s: %v", dir, err)
		}
	}
	if out, err := runOffline(ctx, t, append(args, "--rpc-tls-cert", cert, "--rpc-tls-key", key)...); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, n := range []string{"node0", "node1"} {
		conf, err := node.LoadConfig(filepath.Join(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		if conf.RPC.TLSCertFile != cert || conf.RPC.TLSKeyFile != key || conf.RPC.CertFile() != cert || conf.RPC.KeyFile() != key {
			t.Errorf("%s: rpc tls_cert_file %q, tls_key_file %q, want %s and %s", n, conf.RPC.TLSCertFile, conf.RPC.TLSKeyFile, cert, key)
		}
	}
}
