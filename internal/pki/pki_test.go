package pki

import (
	"crypto/tls"
	"os"
	"testing"
)

// TestHandshake: a server with an issued certificate and a client trusting the CA complete a
// handshake; a client trusting another CA does not; Ensure keeps what it made.
func TestHandshake(t *testing.T) {
	d := Dir(t.TempDir())
	if err := d.Ensure("server", []string{"127.0.0.1", "localhost"}); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(d.CAFile())
	if err := d.Ensure("server", []string{"127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	if after, _ := os.ReadFile(d.CAFile()); string(after) != string(before) {
		t.Fatal("Ensure made a new CA although one existed")
	}
	scfg, err := d.ServerConfig("server")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", scfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	dial := func(caFile string) error {
		ccfg, err := ClientConfig(caFile)
		if err != nil {
			return err
		}
		c, err := tls.Dial("tcp", ln.Addr().String(), ccfg)
		if err == nil {
			c.Close()
		}
		return err
	}
	if err := dial(d.CAFile()); err != nil {
		t.Fatalf("client trusting the CA: %v", err)
	}
	other := Dir(t.TempDir())
	if err := other.Ensure("x", []string{"127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	if err := dial(other.CAFile()); err == nil {
		t.Fatal("a client trusting another CA completed the handshake")
	}
	if _, err := ClientConfig(d.KeyFile("server")); err == nil {
		t.Fatal("a key file was taken for a CA certificate")
	}
}
