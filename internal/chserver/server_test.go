package chserver

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestMissingBinary(t *testing.T) {
	_, err := findBinary([]string{filepath.Join(t.TempDir(), "clickhouse-server")}, "no-such-clickhouse-server")
	if !errors.Is(err, ErrNotInstalled) {
		t.Fatalf("got %v, want ErrNotInstalled", err)
	}
}

// TestPortTaken: a fixed native port that another process holds is refused before anything
// starts, instead of a ping that the stranger answers.
func TestPortTaken(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, err = Start(t.Context(), t.TempDir(), l.Addr().String(), quiet())
	if !errors.Is(err, ErrAddrInUse) {
		t.Fatalf("got %v, want ErrAddrInUse", err)
	}
}

// TestVerifyOwn: the server's own child passes; a process that does not hold the port (here
// `sleep`, standing for a stranger that answered on the address) is ErrNotOurs.
func TestVerifyOwn(t *testing.T) {
	s, err := Start(t.Context(), t.TempDir(), "", quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	_, port, _ := net.SplitHostPort(s.Addr)
	tcp, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.verifyOwn(tcp); err != nil {
		t.Fatalf("own child: %v", err)
	}
	other := exec.Command("sleep", "30")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = other.Process.Kill(); _ = other.Wait() }()
	stranger := &Server{Addr: s.Addr, cmd: other}
	if err := stranger.verifyOwn(tcp); !errors.Is(err, ErrNotOurs) {
		t.Fatalf("stranger: got %v, want ErrNotOurs", err)
	}
}
