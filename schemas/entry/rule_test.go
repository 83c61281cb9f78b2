package entry

import (
	"errors"
	"testing"

	"github.com/anchorline/anchorline/schemas/rule"
)

func goldenRule() rule.Rule {
	return rule.Rule{ID: "hot", Version: 1, Devices: []string{"dev-1", "dev-2"}, Tags: map[string]string{"site": "a"},
		When: "metrics.temp > 30.0", Clear: "metrics.temp < 25.0", Last: 10,
		Actions: []rule.Action{{Kind: rule.ActionEvent}, {Kind: rule.ActionCommand, Command: "close", Args: map[string]string{"valve": "1"}}}}
}

func TestRuleEntry(t *testing.T) {
	admin := adminKey(1)
	b, err := NewRule(admin, OpPut, goldenRule(), t0)
	if err != nil {
		t.Fatal(err)
	}
	e, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if e.Type != TypeRule || e.Rule.Op != OpPut || e.Rule.Rule.When != "metrics.temp > 30.0" || e.Rule.Rule.Actions[1].Args["valve"] != "1" ||
		!e.Admin().Equal(admin.Public()) {
		t.Fatalf("decoded %+v", e.Rule)
	}
	// One byte of the condition changed: the signature no longer verifies.
	bad := append([]byte(nil), b...)
	for i := range bad {
		if string(bad[i:min(i+4, len(bad))]) == "30.0" {
			bad[i] = '4'
			break
		}
	}
	if _, err := Decode(bad); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("changed condition: %v, want ErrBadSignature", err)
	}

	// A condition that does not compile never becomes an entry; the error says where.
	r := goldenRule()
	r.When = "metrics.temp >"
	_, err = NewRule(admin, OpPut, r, t0)
	if ce, ok := errors.AsType[*rule.CompileError](err); !ok || ce.Column != 15 {
		t.Fatalf("NewRule with a broken condition: %v", err)
	}
	// A retire entry carries only the id and the version.
	r = goldenRule()
	if _, err := NewRule(admin, OpRetire, r, t0); !errors.Is(err, ErrMalformed) {
		t.Fatalf("retire with a whole rule: %v", err)
	}
	if _, err := NewRule(admin, "delete", rule.Rule{ID: "hot", Version: 2}, t0); !errors.Is(err, ErrMalformed) {
		t.Fatalf("unknown op: %v", err)
	}
}
