package ledger

import (
	"bytes"
	"context"
	"fmt"

	"github.com/anchorline/anchorline/anchor/merkle"
	"github.com/anchorline/anchorline/schemas/entry"
	"github.com/anchorline/anchorline/schemas/rule"
)

// ruleVersion is a rule's record as of a height.
type ruleVersion struct {
	kept
	rec entry.RuleRecord
}

func ruleVersionOf(k kept) (ruleVersion, error) {
	rec, err := entry.DecodeRuleRecord(k.record)
	if err != nil {
		return ruleVersion{}, fmt.Errorf("ledger db: rule record: %w", err)
	}
	return ruleVersion{kept: k, rec: rec}, nil
}

// ruleAt returns a rule's record as of height.
func (s *state) ruleAt(id string, height uint64) (ruleVersion, bool, error) {
	k, ok, err := s.kinds[kindRules].at(id, height, s.height)
	if err != nil || !ok {
		return ruleVersion{}, false, err
	}
	v, err := ruleVersionOf(k)
	return v, err == nil, err
}

// latestRule returns a rule's committed record.
func (s *state) latestRule(id string) (ruleVersion, bool, error) { return s.ruleAt(id, s.height) }

// checkRule validates a rule entry against the committed state plus the block's earlier
// changes (st, nil for CheckTx).
func (s *state) checkRule(dec entry.Entry, st *staged) error {
	e := dec.Rule
	if s.version != merkle.AppHashV2 {
		return &txError{CodeConflict, fmt.Sprintf("rule %s: rules are ledger state under app hash version 2 (DESIGN 2.2); this chain is of version 1", e.Rule.ID)}
	}
	cur, known, err := s.latestRule(e.Rule.ID)
	if err != nil {
		return err
	}
	if st != nil {
		if k, ok := st.kept[kindRules][e.Rule.ID]; ok {
			if cur, err = ruleVersionOf(k); err != nil {
				return err
			}
			known = true
		}
	}
	next := uint64(1)
	if known {
		next = cur.rec.Version + 1
	}
	if e.Rule.Version != next {
		return &txError{CodeConflict, fmt.Sprintf("rule %s version %d: the next version is %d", e.Rule.ID, e.Rule.Version, next)}
	}
	switch e.Op {
	case entry.OpRetire:
		if !known || cur.rec.Status != entry.RuleActive {
			return &txError{CodeConflict, fmt.Sprintf("rule %s is not in force", e.Rule.ID)}
		}
	case entry.OpPut:
		if _, err := rule.Compile(e.Rule); err != nil {
			return &txError{CodeMalformed, err.Error()}
		}
	}
	return nil
}

// stageRule adds a valid rule entry, the block's next log entry (index), to st.
func stageRule(st *staged, dec entry.Entry, e []byte, index, height uint64) error {
	status := entry.RuleActive
	if dec.Rule.Op == entry.OpRetire {
		status = entry.RuleRetired
	}
	leaf := merkle.EntryLeaf(e)
	rec := entry.RuleRecord{ID: dec.Rule.Rule.ID, Version: dec.Rule.Rule.Version, Status: status, Entry: leaf[:], Index: index, Height: height}
	b, err := rec.Encode()
	if err != nil {
		return err
	}
	st.kept[kindRules][rec.ID] = newKept(height, b)
	return nil
}

// ruleState is a rule record with its entry.
func (s *state) ruleState(v ruleVersion) (RuleState, error) {
	e, _, err := s.entryAt(v.rec.Index)
	if err != nil {
		return RuleState{}, err
	}
	return RuleState{Record: v.record, Entry: e}, nil
}

// rulesAt lists every rule's record as of height.
func (s *state) rulesAt(height uint64, recordsOnly bool) (Rules, error) {
	ids, err := s.kinds[kindRules].keys("")
	if err != nil {
		return Rules{}, err
	}
	out := Rules{Height: height, Rules: []RuleState{}}
	for _, id := range ids {
		v, ok, err := s.ruleAt(id, height)
		if err != nil {
			return Rules{}, err
		}
		if !ok {
			continue
		}
		if recordsOnly {
			out.Rules = append(out.Rules, RuleState{Record: v.record})
			continue
		}
		rs, err := s.ruleState(v)
		if err != nil {
			return Rules{}, err
		}
		out.Rules = append(out.Rules, rs)
	}
	return out, nil
}

// proveRule is rule id's record at height with its proofs.
func (s *state) proveRule(id string, height uint64) (RuleProof, error) {
	v, ok, err := s.ruleAt(id, height)
	if err != nil {
		return RuleProof{}, err
	}
	if !ok || !s.kinds[kindRules].has(height) {
		return RuleProof{}, notFound("rule %s is not on the ledger at height %d", id, height)
	}
	rs, err := s.ruleState(v)
	if err != nil {
		return RuleProof{}, err
	}
	p, root, err := s.kinds[kindRules].prove(id, v.kept, height)
	if err != nil {
		return RuleProof{}, err
	}
	c, err := s.committedAt(height)
	if err != nil {
		return RuleProof{}, err
	}
	sp, err := merkle.ProveSubRoot(c.subRoots, merkle.SubRootRules)
	if err != nil {
		return RuleProof{}, err
	}
	return RuleProof{RuleState: rs, Height: height, SMTProof: p, RulesRoot: root, StateRoot: c.stateRoot, StateProof: sp}, nil
}

// Rule is a rule version as the ledger holds it: its record, the entry that made it and the
// rule it carries (for a retired rule, only its id and version).
type Rule struct {
	Record entry.RuleRecord
	Entry  []byte
	Rule   rule.Rule
}

// InForce reports whether the rule is in force (not retired).
func (r Rule) InForce() bool { return r.Record.Status == entry.RuleActive }

func decodeRuleState(rs RuleState) (Rule, error) {
	rec, err := entry.DecodeRuleRecord(rs.Record)
	if err != nil {
		return Rule{}, err
	}
	if leaf := merkle.EntryLeaf(rs.Entry); !bytes.Equal(leaf[:], rec.Entry) {
		return Rule{}, fmt.Errorf("ledger: rule %s: the entry does not hash to the record's leaf", rec.ID)
	}
	e, err := entry.RuleOf(rs.Entry)
	if err != nil {
		return Rule{}, fmt.Errorf("ledger: rule %s: %w", rec.ID, err)
	}
	return Rule{Record: rec, Entry: rs.Entry, Rule: e.Rule}, nil
}

// Rules returns every rule's record as of height (0: the latest committed), retired ones
// included, sorted by id, and the height they are of.
func (c *Client) Rules(ctx context.Context, height int64) ([]Rule, int64, error) {
	var r Rules
	if err := c.query(ctx, PathRules, RulesRequest{Height: uint64(height)}, &r); err != nil {
		return nil, 0, err
	}
	out := make([]Rule, 0, len(r.Rules))
	for _, rs := range r.Rules {
		v, err := decodeRuleState(rs)
		if err != nil {
			return nil, 0, err
		}
		out = append(out, v)
	}
	return out, int64(r.Height), nil
}

// RuleRecords returns every rule's record as of height (0: the latest committed), without
// the entries, sorted by id, and the height they are of.
func (c *Client) RuleRecords(ctx context.Context, height int64) ([]entry.RuleRecord, int64, error) {
	var r Rules
	if err := c.query(ctx, PathRules, RulesRequest{Height: uint64(height), RecordsOnly: true}, &r); err != nil {
		return nil, 0, err
	}
	out := make([]entry.RuleRecord, 0, len(r.Rules))
	for _, rs := range r.Rules {
		rec, err := entry.DecodeRuleRecord(rs.Record)
		if err != nil {
			return nil, 0, err
		}
		out = append(out, rec)
	}
	return out, int64(r.Height), nil
}

// RuleAt returns a rule's record at height (0: the latest) with its proofs.
func (c *Client) RuleAt(ctx context.Context, id string, height int64) (Rule, RuleProof, error) {
	var p RuleProof
	if err := c.query(ctx, PathRule, RuleRequest{ID: id, Height: uint64(height)}, &p); err != nil {
		return Rule{}, RuleProof{}, err
	}
	v, err := decodeRuleState(p.RuleState)
	return v, p, err
}
