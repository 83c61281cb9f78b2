package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/anchorline/anchorline/schemas/entry"
	"github.com/anchorline/anchorline/schemas/rule"
)

// TestRuleCommands runs rule put, list, show and retire against a dev stack: a rule whose
// condition does not compile is refused with its line and column before anything reaches the
// ledger; versions follow one another from the height they are committed at; a retired rule
// leaves the list of rules in force but not the ledger.
func TestRuleCommands(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	st := startCLIStack(ctx, t)
	dir := t.TempDir()
	must := func(want string, args ...string) string { t.Helper(); return st.must(t, want, args...) }
	fails := func(code int, want string, args ...string) { t.Helper(); st.fails(t, code, want, args...) }
	file := func(name, body string) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}

	broken := file("broken.yaml", "id: hot\nwhen: |\n  metrics.temp > 30.0 &&\n  nosuch > 1\nactions: [{kind: event}]\n")
	fails(exitBadInput, "when: line 2, column 1: undeclared reference to 'nosuch'", "rule", "put", broken)
	fails(exitBadInput, "actoins", "rule", "put", file("typo.yaml", "id: hot\nwhen: metrics.temp > 1.0\nactoins: []\n"))
	must("0 of 0 rules", "rule", "list")

	hot := file("hot.yaml", "id: hot\ndevices: [dev-2, dev-1]\nwhen: metrics.temp > 30.0\nclear: metrics.temp < 25.0\nactions: [{kind: event}]\n")
	out := must("put rule hot version 1 at ledger height", "rule", "put", hot)
	h1 := heightOf(t, out)
	fails(exitBadInput, "the ledger's next version is 2", "rule", "put", file("v5.yaml", "id: hot\nversion: 5\nwhen: metrics.temp > 1.0\nactions: [{kind: event}]\n"))
	out = must("put rule hot version 2", "rule", "put", file("hot2.yaml", "id: hot\ntags: {site: a}\nwhen: window.avg.temp > 31.0\nwindow: {last: 10}\nactions: [{kind: event}]\n"))
	h2 := heightOf(t, out)
	must("put rule quiet version 1", "rule", "put", file("quiet.yaml", "id: quiet\nabsent: 30s\nactions: [{kind: event}]\n"))

	out = must("2 of 2 rules", "rule", "list")
	for _, want := range []string{"hot ", "site=a", "window.avg.temp > 31.0", "quiet", "absent 30s"} {
		if !strings.Contains(out, want) {
			t.Fatalf("rule list does not say %q:\n%s", want, out)
		}
	}
	var v ruleView
	if err := json.Unmarshal([]byte(must("", "rule", "show", "hot", "--height", itoa(h1))), &v); err != nil {
		t.Fatal(err)
	}
	if v.Version != 1 || v.Rule.When != "metrics.temp > 30.0" || len(v.Rule.Devices) != 2 || v.Rule.Devices[0] != "dev-1" || v.Height != uint64(h1) {
		t.Fatalf("rule show hot at %d: %+v", h1, v)
	}
	if err := json.Unmarshal([]byte(must("", "rule", "show", "hot")), &v); err != nil || v.Version != 2 || v.Height != uint64(h2) || v.Rule.Last != 10 {
		t.Fatalf("rule show hot: %+v %v", v, err)
	}

	must("retired rule hot (version 3)", "rule", "retire", "hot")
	fails(exitBadInput, "rule hot is not in force", "rule", "retire", "hot")
	out = must("1 of 2 rules", "rule", "list")
	if strings.Contains(out, "hot ") {
		t.Fatalf("a retired rule is listed as in force:\n%s", out)
	}
	must("retired", "rule", "list", "--all")
	must("put rule hot version 4", "rule", "put", hot)

	// rules commander: a new key file becomes the commander's key (dev registered its own);
	// run again, it changes nothing.
	keyFile := filepath.Join(dir, "rules.key")
	out = must("commander rules holds key", "rules", "commander", "--rules.key", keyFile)
	p, err := st.dev.Ledger.Device(ctx, rule.Commander, 0)
	if err != nil {
		t.Fatal(err)
	}
	if p.Record.Status != entry.StatusActive || !strings.Contains(out, hex.EncodeToString(p.Record.Key)) {
		t.Fatalf("the commander's record is %s with key %x; rules commander said %q", p.Record.Status, p.Record.Key, out)
	}
	if again := must("commander rules holds key", "rules", "commander", "--rules.key", keyFile); again != out {
		t.Fatalf("rules commander again: %q, first %q", again, out)
	}
	if q, err := st.dev.Ledger.Device(ctx, rule.Commander, 0); err != nil || q.Record.Height != p.Record.Height {
		t.Fatalf("a second rules commander changed the record (height %d, was %d): %v", q.Record.Height, p.Record.Height, err)
	}
}

// heightOf is the ledger height in a "... at ledger height H, ..." line.
func heightOf(t *testing.T, out string) int64 {
	t.Helper()
	_, rest, ok := strings.Cut(out, "at ledger height ")
	var h int64
	if !ok {
		t.Fatalf("no height in %q", out)
	}
	for _, c := range rest {
		if c < '0' || c > '9' {
			break
		}
		h = h*10 + int64(c-'0')
	}
	return h
}

func itoa(h int64) string { return strconv.FormatInt(h, 10) }
