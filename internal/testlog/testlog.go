package testlog

import (
	"bytes"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
)

// keep is how many of the last lines a failed test shows.
const keep = 400

// New returns a logger for t. With -v it writes to stderr as it goes; otherwise it keeps the
// lines and, if t failed, logs the last of them when t ends. Loggers outliving t (a goroutine
// still stopping) write nowhere after that.
func New(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	b := &buffer{}
	t.Cleanup(func() {
		lines := b.close()
		if !t.Failed() || len(lines) == 0 {
			return
		}
		if len(lines) > keep {
			t.Logf("log (the last %d of %d lines):", keep, len(lines))
			lines = lines[len(lines)-keep:]
		} else {
			t.Log("log:")
		}
		t.Log("\n" + strings.Join(lines, "\n"))
	})
	return newLogger(b)
}

func newLogger(w *buffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type buffer struct {
	mu     sync.Mutex
	lines  []string
	closed bool
}

func (b *buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.closed {
		b.lines = append(b.lines, string(bytes.TrimRight(p, "\n")))
	}
	return len(p), nil
}

func (b *buffer) close() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	return b.lines
}
