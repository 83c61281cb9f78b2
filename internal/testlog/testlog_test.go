package testlog

import (
	"strings"
	"testing"
)

func TestKeepsLines(t *testing.T) {
	b := &buffer{}
	log := newLogger(b)
	log.Info("first", "n", 1)
	log.Warn("second")
	lines := b.close()
	if len(lines) != 2 || !strings.Contains(lines[0], "msg=first n=1") || !strings.Contains(lines[1], "level=WARN") {
		t.Fatalf("lines: %q", lines)
	}
	log.Info("after the test")
	if got := b.close(); len(got) != 2 {
		t.Fatalf("a line written after the end was kept: %q", got)
	}
}
