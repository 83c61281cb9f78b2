package api

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestTokensFile: a malformed line is refused with its number; comments and blank lines are
// not lines; a token maps to its audience and nothing else does.
func TestTokensFile(t *testing.T) {
	token, line, err := NewToken("lab.auditors")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := NewToken("no spaces"); err == nil {
		t.Fatal("an audience with a space was accepted")
	}
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for content, want := range map[string]string{
		"# ok\n\nauditors\n":                         "line 3",
		"auditors abcd\n":                            "line 1: \"abcd\" is not a SHA-256",
		"bad/name " + strings.Repeat("0", 64) + "\n": "line 1: want",
	} {
		if _, err := LoadTokens(write("bad", content)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: err = %v, want %q", content, err, want)
		}
	}
	if _, err := LoadTokens(filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "http.tokens") {
		t.Errorf("missing file: %v", err)
	}
	tk, err := LoadTokens(write("good", "# who  hash\n"+line+"  # a comment\n"))
	if err != nil {
		t.Fatal(err)
	}
	if aud, ok, err := tk.Audience(token); !ok || aud != "lab.auditors" || err != nil {
		t.Fatalf("Audience(token) = %q, %v, %v", aud, ok, err)
	}
	for _, bad := range []string{"", strings.Fields(line)[1], token + "x"} {
		if _, ok, _ := tk.Audience(bad); ok {
			t.Errorf("Audience(%q) was accepted", bad)
		}
	}
}
