package ledger

import (
	"bytes"
	"crypto/ed25519"
	"fmt"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/anchorline/anchorline/anchor/merkle"
	"github.com/anchorline/anchorline/anchor/smt"
	"github.com/anchorline/anchorline/schemas/entry"
	"github.com/anchorline/anchorline/schemas/reading"
	"github.com/anchorline/anchorline/schemas/rule"
)

func hotRule(version uint64, threshold float64) rule.Rule {
	return rule.Rule{ID: "hot", Version: version, When: fmt.Sprintf("metrics.temp > %.1f", threshold), Actions: []rule.Action{{Kind: rule.ActionEvent}}}
}

func ruleEntry(t *testing.T, admin ed25519.PrivateKey, op string, r rule.Rule, at time.Time) []byte {
	t.Helper()
	e, err := entry.NewRule(admin, op, r, at)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// unsafeRuleEntry signs a put entry without compiling its conditions, as a tool other than
// Anchorline's might.
func unsafeRuleEntry(t *testing.T, admin ed25519.PrivateKey, r rule.Rule, at time.Time) []byte {
	t.Helper()
	enc, err := cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		t.Fatal(err)
	}
	e := entry.Rule{Type: entry.TypeRule, Op: entry.OpPut, Rule: r, Time: uint64(at.UnixMilli()), Admin: pub(admin)}
	msg, err := enc.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	e.Sig = ed25519.Sign(admin, msg)
	b, err := enc.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (c *chain) state(h uint64) State {
	c.t.Helper()
	var s State
	c.query(PathState, StateRequest{Height: h}, &s)
	return s
}

func TestRuleEntries(t *testing.T) {
	admin, stranger := key(1), key(2)
	c := newChain(t, fmt.Sprintf(`{"admins": ["%x"], "app_hash_version": 2}`, pub(admin)), key(9))
	reg, err := entry.NewRegister(admin, "dev-1", reading.PublicKey{Alg: reading.Ed25519, Key: pub(key(7))}, t0)
	if err != nil {
		t.Fatal(err)
	}
	wantCodes(t, c.block(reg), CodeOK)
	before := c.state(1)

	// Version 1 of "hot", refused by a stranger, with a wrong version, and with a condition
	// that does not compile.
	wantCodes(t, c.block(
		ruleEntry(t, stranger, entry.OpPut, hotRule(1, 30), t0),
		ruleEntry(t, admin, entry.OpPut, hotRule(2, 30), t0),
		unsafeRuleEntry(t, admin, rule.Rule{ID: "bad", Version: 1, When: "metrics.temp >", Actions: []rule.Action{{Kind: rule.ActionEvent}}}, t0),
		ruleEntry(t, admin, entry.OpPut, hotRule(1, 30), t0),
		ruleEntry(t, admin, entry.OpPut, hotRule(1, 31), t0.Add(time.Millisecond)),
	), CodeUnauthorised, CodeConflict, CodeMalformed, CodeOK, CodeConflict)
	if r := c.checkTx(ruleEntry(t, admin, entry.OpPut, hotRule(1, 30), t0)); r.Code != CodeConflict {
		t.Fatalf("the same entry again: CheckTx code %d (%s)", r.Code, r.Log)
	}

	// The state at height 1 keeps its state root (registry only); from height 2 on the state
	// root commits the rules sub-root too.
	if again := c.state(1); again.AppHash != before.AppHash || !bytes.Equal(c.hashes[0], before.AppHash[:]) {
		t.Fatal("the state at height 1 changed when rules came")
	}
	checkRuleProof(t, c, "hot", 2, 1, entry.RuleActive)

	// Version 2 from height 3; a retire at height 4; the state at each height keeps its version.
	wantCodes(t, c.block(ruleEntry(t, admin, entry.OpPut, hotRule(2, 35), t0.Add(time.Second))), CodeOK)
	wantCodes(t, c.block(ruleEntry(t, admin, entry.OpRetire, rule.Rule{ID: "hot", Version: 3}, t0.Add(2*time.Second))), CodeOK)
	wantCodes(t, c.block(ruleEntry(t, admin, entry.OpRetire, rule.Rule{ID: "hot", Version: 4}, t0.Add(3*time.Second))), CodeConflict)
	checkRuleProof(t, c, "hot", 2, 1, entry.RuleActive)
	checkRuleProof(t, c, "hot", 3, 2, entry.RuleActive)
	checkRuleProof(t, c, "hot", 4, 3, entry.RuleRetired)
	var rs Rules
	c.query(PathRules, RulesRequest{Height: 3}, &rs)
	if len(rs.Rules) != 1 {
		t.Fatalf("%d rules at height 3", len(rs.Rules))
	}
	r, err := decodeRuleState(rs.Rules[0])
	if err != nil || r.Rule.When != "metrics.temp > 35.0" || !r.InForce() {
		t.Fatalf("rule at height 3: %+v %v", r, err)
	}

	// A restart keeps the rules and the app hashes.
	last := c.state(0)
	c.reopen()
	if got := c.state(0); got.AppHash != last.AppHash {
		t.Fatal("the app hash changed across a restart")
	}
	c.block()
	checkRuleProof(t, c, "hot", uint64(c.height), 3, entry.RuleRetired)
}

// checkRuleProof checks rule id's record at height (version, status), its proof in the rules
// tree, the tree's root in the state root and the state root in the app hash.
func checkRuleProof(t *testing.T, c *chain, id string, height, version uint64, status string) {
	t.Helper()
	var p RuleProof
	c.query(PathRule, RuleRequest{ID: id, Height: height}, &p)
	v, err := decodeRuleState(p.RuleState)
	if err != nil {
		t.Fatal(err)
	}
	if v.Record.Version != version || v.Record.Status != status || v.Rule.Version != version {
		t.Fatalf("rule %s at %d: record %+v, want version %d %s", id, height, v.Record, version, status)
	}
	leaf := merkle.LeafHash(p.Record)
	if err := smt.Verify(smt.Hash(p.RulesRoot), smt.KeyOf(id), leaf[:], p.SMTProof); err != nil {
		t.Fatalf("rule %s at %d: tree proof: %v", id, height, err)
	}
	if p.StateProof.Name != merkle.SubRootRules || p.StateProof.Root != p.RulesRoot {
		t.Fatalf("state proof of %q", p.StateProof.Name)
	}
	if err := merkle.VerifySubRoot(p.StateProof, p.StateRoot); err != nil {
		t.Fatal(err)
	}
	s := c.state(height)
	if merkle.AppHashV2Of(s.LogSize, s.LogRoot, p.StateRoot) != s.AppHash || !bytes.Equal(c.hashes[height-1], s.AppHash[:]) {
		t.Fatalf("rule %s at %d: the state root is not what the app hash commits", id, height)
	}
}

func TestRulesNeedAppHashV2(t *testing.T) {
	admin := key(1)
	c := newChain(t, fmt.Sprintf(`{"admins": ["%x"]}`, pub(admin)), key(9))
	wantCodes(t, c.block(ruleEntry(t, admin, entry.OpPut, hotRule(1, 30), t0)), CodeConflict)
}
