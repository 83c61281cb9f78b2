package procnet

import (
	"net"
	"os"
	"testing"
)

// TestHolds: this process holds the port it listens on, and not a port nobody listens on.
func TestHolds(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	if ok, err := Holds(os.Getpid(), port); err != nil || !ok {
		t.Fatalf("Holds(self, %d) = %v, %v; want true", port, ok, err)
	}
	ln.Close()
	if ok, err := Holds(os.Getpid(), port); err != nil || ok {
		t.Fatalf("Holds(self, closed %d) = %v, %v; want false", port, ok, err)
	}
}
