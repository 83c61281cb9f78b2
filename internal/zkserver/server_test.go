package zkserver

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// TestStart: a private ZooKeeper answers srvr and ruok, keeps its data dir across a restart,
// and is gone after Stop.
func TestStart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	s, err := Start(ctx, dir, quiet())
	if err != nil { // ErrNotInstalled says to run scripts/install-zookeeper.sh
		t.Fatal(err)
	}
	defer s.Stop()
	stat, err := FourLetter(ctx, s.Addr, "srvr")
	if err != nil || !strings.Contains(stat, "Mode: standalone") || !strings.Contains(stat, "Zookeeper version: 3.") {
		t.Fatalf("srvr: %q, %v", stat, err)
	}
	if ok, err := FourLetter(ctx, s.Addr, "ruok"); err != nil || ok != "imok" {
		t.Fatalf("ruok: %q, %v", ok, err)
	}
	addr := s.Addr
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := FourLetter(ctx, addr, "ruok"); err == nil {
		t.Fatalf("%s still answers after Stop", addr)
	}
	s2, err := Start(ctx, dir, quiet())
	if err != nil {
		t.Fatalf("restart on the same dir: %v", err)
	}
	defer s2.Stop()
}
