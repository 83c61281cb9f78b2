package ledger

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"

	"github.com/anchorline/anchorline/anchor/merkle"
	"github.com/anchorline/anchorline/anchor/smt"
	"github.com/anchorline/anchorline/schemas/entry"
	"github.com/anchorline/anchorline/schemas/rule"
)

// Keys of the rules state (schemas/ledger.md "rule records"): like a device's, a rule's
// record by height and its latest one, and the rules' sparse Merkle tree, whose root is the
// state root's "rules" sub-root from keyRulesFrom on.
var (
	prefRule       = []byte("u/")              // u/<rule id> 0x00 <height BE> = record bytes
	prefRuleLatest = []byte("U/")              // U/<rule id> = height BE || its latest record
	prefRulesSMT   = []byte("S/")              // the rules' sparse Merkle tree (anchor/smt)
	keyRulesFrom   = []byte("meta/rules_from") // height of the first block with a rule entry
)

// ruleVersion is a rule's record as of a height.
type ruleVersion struct {
	height uint64
	record []byte
	leaf   merkle.Hash
	rec    entry.RuleRecord
}

func newRuleVersion(record []byte, rec entry.RuleRecord) ruleVersion {
	return ruleVersion{height: rec.Height, record: record, leaf: merkle.LeafHash(record), rec: rec}
}

func ruleKey(id string, height uint64) []byte {
	return dbKey(prefRule, []byte(id), []byte{0}, u64(height))
}

// latestRule returns a rule's committed record.
func (s *state) latestRule(id string) (ruleVersion, bool, error) {
	v, err := s.db.Get(dbKey(prefRuleLatest, []byte(id)))
	if err != nil || v == nil {
		return ruleVersion{}, false, err
	}
	if len(v) < 8 {
		return ruleVersion{}, false, fmt.Errorf("ledger db: latest record of rule %s is truncated", id)
	}
	rec, err := entry.DecodeRuleRecord(v[8:])
	if err != nil {
		return ruleVersion{}, false, fmt.Errorf("ledger db: rule %s: %w", id, err)
	}
	return newRuleVersion(v[8:], rec), true, nil
}

// ruleAt returns a rule's record as of height.
func (s *state) ruleAt(id string, height uint64) (ruleVersion, bool, error) {
	if height >= s.height {
		return s.latestRule(id)
	}
	it, err := s.db.ReverseIterator(ruleKey(id, 0), ruleKey(id, height+1))
	if err != nil {
		return ruleVersion{}, false, err
	}
	defer it.Close()
	if !it.Valid() {
		return ruleVersion{}, false, it.Error()
	}
	rec, err := entry.DecodeRuleRecord(it.Value())
	if err != nil {
		return ruleVersion{}, false, fmt.Errorf("ledger db: rule %s at %d: %w", id, height, err)
	}
	return newRuleVersion(bytes.Clone(it.Value()), rec), true, nil
}

// ruleIDs returns the ids of every rule ever committed, sorted.
func (s *state) ruleIDs() ([]string, error) {
	it, err := s.db.Iterator(prefRuleLatest, prefixEnd(prefRuleLatest))
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var out []string
	for ; it.Valid(); it.Next() {
		out = append(out, string(it.Key()[len(prefRuleLatest):]))
	}
	return out, it.Error()
}

// rulesFrom is the height from which the state root commits the rules sub-root (0: not yet).
func (s *state) loadRulesFrom() error {
	b, err := s.db.Get(keyRulesFrom)
	if err != nil {
		return err
	}
	switch len(b) {
	case 0:
	case 8:
		s.rulesFrom = binary.BigEndian.Uint64(b)
	default:
		return fmt.Errorf("ledger db: %s is %d bytes", keyRulesFrom, len(b))
	}
	return nil
}

// hasRules reports whether the state root at height commits a rules sub-root.
func (s *state) hasRules(height uint64) bool { return s.rulesFrom > 0 && height >= s.rulesFrom }

// rulesRoot is the rules sub-root at height (only for heights where hasRules).
func (s *state) rulesRoot(height uint64) (merkle.Hash, error) {
	r, err := s.rules.Root(height)
	return merkle.Hash(r), err
}

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
		if v, ok := st.rules[e.Rule.ID]; ok {
			cur, known = v, true
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
	st.rules[rec.ID] = newRuleVersion(b, rec)
	return nil
}

// commitRules gives the rules tree its version for height, with the block's changes: from
// the first block with a rule entry on, every block (so that every height from then on has a
// root). A block replayed after a crash between FinalizeBlock and Commit finds its version.
func (s *state) commitRules(ctx context.Context, st *staged, height uint64) (*merkle.Hash, error) {
	from := s.rulesFrom
	if from == 0 && len(st.rules) > 0 {
		from = height
	}
	st.rulesFrom = from
	if from == 0 || s.version != merkle.AppHashV2 {
		return nil, nil
	}
	var root smt.Hash
	var err error
	if s.rules.Latest() >= height {
		root, err = s.rules.Root(height)
	} else {
		changes := make([]smt.Change, 0, len(st.rules))
		for id, v := range st.rules {
			changes = append(changes, smt.Change{Key: smt.KeyOf(id), Value: smt.Hash(v.leaf)})
		}
		root, err = s.rules.Commit(ctx, height, changes)
	}
	if err != nil {
		return nil, fmt.Errorf("ledger: rules at %d: %w", height, err)
	}
	h := merkle.Hash(root)
	return &h, nil
}

// ruleProof is a rule record's membership proof in the rules tree at height.
func (s *state) ruleProof(id string, v ruleVersion, height uint64) ([]byte, merkle.Hash, error) {
	root, err := s.rules.Root(height)
	if err != nil {
		return nil, merkle.Hash{}, err
	}
	p, val, err := s.rules.Prove(height, smt.KeyOf(id))
	if err != nil {
		return nil, merkle.Hash{}, err
	}
	if !bytes.Equal(val, v.leaf[:]) {
		return nil, merkle.Hash{}, fmt.Errorf("ledger db: rule %s at %d: the tree holds leaf %x, the record hashes to %s", id, height, val, v.leaf)
	}
	return p.Encode(), merkle.Hash(root), nil
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
	ids, err := s.ruleIDs()
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
	if !ok || !s.hasRules(height) {
		return RuleProof{}, notFound("rule %s is not on the ledger at height %d", id, height)
	}
	rs, err := s.ruleState(v)
	if err != nil {
		return RuleProof{}, err
	}
	p, root, err := s.ruleProof(id, v, height)
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
