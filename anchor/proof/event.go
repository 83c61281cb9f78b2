package proof

import (
	"bytes"
	"fmt"
	"io"
	"slices"

	"github.com/anchorline/anchorline/anchor/merkle"
	"github.com/anchorline/anchorline/anchor/smt"
	"github.com/anchorline/anchorline/schemas/bundle"
	"github.com/anchorline/anchorline/schemas/entry"
	"github.com/anchorline/anchorline/schemas/reading"
	"github.com/anchorline/anchorline/schemas/rule"
)

// IsEvent reports whether data is an event bundle (by its format member).
func IsEvent(data []byte) bool { return bundle.FormatOf(data) == bundle.EventFormat }

// EventRule is what proves an event's rule version in force at the event's height H: the
// rule entry and its record, the record's proof in the rules tree and the tree's root in the
// state root at H, the entry's log index and inclusion path, and the checkpoint of the state
// at H (its header at H+1).
type EventRule struct {
	Entry, Record, RulesProof []byte
	RulesRoot                 merkle.Hash
	StateProof                merkle.StateProof // of the "rules" sub-root
	LogIndex                  uint64
	LogPath                   []merkle.Hash
	Checkpoint                *bundle.Checkpoint
}

// BuildEvent makes the event bundle of ev from its rule's proofs and the range bundle of the
// readings it used (rangeJSON, canonical: Range.Marshal).
func BuildEvent(ev rule.Event, rangeJSON []byte, r EventRule) (*bundle.Event, error) {
	cp, err := r.Checkpoint.Marshal()
	if err != nil {
		return nil, err
	}
	sp := bundle.StateProof{Name: r.StateProof.Name, Index: r.StateProof.Index, Size: r.StateProof.Size, Path: hexes(r.StateProof.Path)}
	e := &bundle.Event{Format: bundle.EventFormat, Event: ev, Readings: rangeJSON, Rule: bundle.EventRule{
		Entry: r.Entry, Record: r.Record, RulesProof: r.RulesProof, StateProof: sp, RulesRoot: bytes.Clone(r.RulesRoot[:]),
		LogIndex: r.LogIndex, LogPath: hexes(r.LogPath), Checkpoint: cp}}
	if _, err := e.Marshal(); err != nil {
		return nil, err
	}
	return e, nil
}

// EventReport is what VerifyEvent checked: its own steps, and the range's.
type EventReport struct {
	Steps []Step
	Range RangeReport
}

// Print writes the event's steps with the range's report in the middle, where its step is.
func (r EventReport) Print(w io.Writer) {
	for _, s := range r.Steps {
		Report{Steps: []Step{s}}.Print(w)
		if s.Name == "readings" && len(r.Range.Steps) > 0 {
			var buf bytes.Buffer
			r.Range.Print(&buf)
			for _, line := range bytes.SplitAfter(buf.Bytes(), []byte("\n")) {
				if len(line) > 0 {
					fmt.Fprintf(w, "    %s", line)
				}
			}
		}
	}
}

// VerifyEvent checks an event bundle offline against a trust file (schemas/proof.md, "Event
// bundles"): the readings the decision used, reading by reading as VerifyRange does; the rule
// version in force at the event's height (its entry in the log, its record in the rules tree,
// the tree in the state root, all under a header the trust file's validators signed); then it
// evaluates the rule on those readings again and requires the decision the event records. It
// returns the report and an error wrapping ErrVerify unless every step holds.
func VerifyEvent(eventJSON, trustJSON []byte) (EventReport, error) {
	v := &verifier{}
	rep := EventReport{}
	var b *bundle.Event
	ev := &rule.Event{}
	v.step("event bundle", func() (string, error) {
		var err error
		if b, err = bundle.ParseEvent(eventJSON); err != nil {
			return "", err
		}
		ev = &b.Event
		return fmt.Sprintf("%s, canonical encoding (%d bytes): rule %s version %d, device %s, %s at seq %d", b.Format, len(eventJSON), ev.Rule, ev.Version, ev.Device, ev.Kind, ev.Seq), nil
	})
	v.step("event id", func() (string, error) {
		if want := rule.EventID(ev.Rule, ev.Version, ev.Device, ev.Seq, ev.Kind); ev.ID != want {
			return "", fmt.Errorf("id %s, the event's rule, version, device, seq and kind give %s", ev.ID, want)
		}
		if len(ev.Seqs) == 0 || !slices.IsSorted(ev.Seqs) || len(slices.Compact(slices.Clone(ev.Seqs))) != len(ev.Seqs) {
			return "", fmt.Errorf("seqs %v: want the readings used, ascending, each once", ev.Seqs)
		}
		return ev.ID, nil
	})
	var samples []*rule.Sample
	v.step("readings", func() (string, error) {
		data, err := b.RangeBytes()
		if err != nil {
			return "", err
		}
		rep.Range, err = VerifyRange(data, trustJSON)
		if err != nil {
			return "", fmt.Errorf("the range of the readings used does not verify: %w", err)
		}
		r, err := bundle.ParseRange(data)
		if err != nil {
			return "", err
		}
		if r.Device != ev.Device || r.From != ev.Seqs[0] || r.To != ev.Seqs[len(ev.Seqs)-1] {
			return "", fmt.Errorf("the range is of %s seqs %d..%d, the event used %s seqs %d..%d", r.Device, r.From, r.To, ev.Device, ev.Seqs[0], ev.Seqs[len(ev.Seqs)-1])
		}
		bySeq := map[uint64][]byte{}
		for _, rd := range r.Readings {
			bySeq[rd.Seq] = rd.Raw
		}
		for _, seq := range ev.Seqs {
			raw, ok := bySeq[seq]
			if !ok {
				return "", fmt.Errorf("the range holds no reading with seq %d, which the event used", seq)
			}
			m, err := reading.Decode(raw)
			if err != nil {
				return "", fmt.Errorf("seq %d: %w", seq, err)
			}
			s := rule.SampleOf(m.Reading)
			samples = append(samples, &s)
		}
		return fmt.Sprintf("%d readings used, every one signed, anchored and proven (%d in the range)", len(ev.Seqs), len(r.Readings)), nil
	})
	var head LogHead
	var cp *bundle.Checkpoint
	v.step("rule checkpoint", func() (string, error) {
		data, err := b.CheckpointBytes()
		if err != nil {
			return "", err
		}
		var cr Report
		head, cr, err = VerifyCheckpoint(data, trustJSON)
		if err != nil {
			last := cr.Steps[len(cr.Steps)-1]
			return "", fmt.Errorf("%s: %s", last.Name, last.Detail)
		}
		if cp, err = bundle.ParseCheckpoint(data); err != nil {
			return "", err
		}
		if !cp.V2() {
			return "", fmt.Errorf("the checkpoint's app hash is of version 1: rules are state under version 2")
		}
		if head.Height != int64(ev.Height)+1 {
			return "", fmt.Errorf("the checkpoint's header is at %d; the state at the event's height %d is committed by the header at %d", head.Height, ev.Height, ev.Height+1)
		}
		return fmt.Sprintf("header %d of %s signed by the trusted validators commits the log (size %d) and the state root after block %d", head.Height, head.ChainID, head.LogSize, ev.Height), nil
	})
	var entryLeaf merkle.Hash
	v.step("rule entry", func() (string, error) {
		entryLeaf = merkle.EntryLeaf(b.Rule.Entry)
		path, err := hashes(b.Rule.LogPath, "log_path")
		if err != nil {
			return "", err
		}
		if err := merkle.VerifyInclusion(b.Rule.LogIndex, head.LogSize, entryLeaf, path, head.LogRoot); err != nil {
			return "", fmt.Errorf("the rule entry is not at log index %d of the log of %d entries: %w", b.Rule.LogIndex, head.LogSize, err)
		}
		return fmt.Sprintf("entry %s at log index %d of %d", short(entryLeaf[:]), b.Rule.LogIndex, head.LogSize), nil
	})
	var c *rule.Compiled
	v.step("rule in force", func() (string, error) {
		stateRoot, err := hash(cp.StateRoot, "state_root")
		if err != nil {
			return "", err
		}
		rulesRoot, err := hash(b.Rule.RulesRoot, "rules_root")
		if err != nil {
			return "", err
		}
		path, err := hashes(b.Rule.StateProof.Path, "state_proof.path")
		if err != nil {
			return "", err
		}
		sp := merkle.StateProof{Name: b.Rule.StateProof.Name, Root: rulesRoot, Index: b.Rule.StateProof.Index, Size: b.Rule.StateProof.Size, Path: path}
		if sp.Name != merkle.SubRootRules {
			return "", fmt.Errorf("state_proof is of %q, want %q", sp.Name, merkle.SubRootRules)
		}
		if err := merkle.VerifySubRoot(sp, stateRoot); err != nil {
			return "", fmt.Errorf("rules_root is not the state root's rules sub-root: %w", err)
		}
		leaf := merkle.LeafHash(b.Rule.Record)
		if err := smt.Verify(smt.Hash(rulesRoot), smt.KeyOf(ev.Rule), leaf[:], b.Rule.RulesProof); err != nil {
			return "", fmt.Errorf("the record is not rule %s's in the rules tree: %w", ev.Rule, err)
		}
		rec, err := entry.DecodeRuleRecord(b.Rule.Record)
		if err != nil {
			return "", err
		}
		switch {
		case rec.ID != ev.Rule || rec.Version != ev.Version:
			return "", fmt.Errorf("the record is of rule %s version %d, the event says %s version %d", rec.ID, rec.Version, ev.Rule, ev.Version)
		case rec.Status != entry.RuleActive:
			return "", fmt.Errorf("rule %s was %s at height %d", rec.ID, rec.Status, ev.Height)
		case !bytes.Equal(rec.Entry, entryLeaf[:]) || rec.Index != b.Rule.LogIndex || rec.Index != ev.RuleIndex:
			return "", fmt.Errorf("the record names entry %x at log index %d; the bundle's entry is %s at %d, the event says index %d", rec.Entry, rec.Index, short(entryLeaf[:]), b.Rule.LogIndex, ev.RuleIndex)
		}
		e, err := entry.RuleOf(b.Rule.Entry)
		if err != nil {
			return "", err
		}
		if e.Op != entry.OpPut || e.Rule.ID != rec.ID || e.Rule.Version != rec.Version {
			return "", fmt.Errorf("the entry is a %s of rule %s version %d", e.Op, e.Rule.ID, e.Rule.Version)
		}
		if c, err = rule.Compile(e.Rule); err != nil {
			return "", err
		}
		return fmt.Sprintf("rule %s version %d (committed at height %d, signed by admin %s) in force at height %d", rec.ID, rec.Version, rec.Height, short(e.Admin), ev.Height), nil
	})
	v.step("decision", func() (string, error) {
		for _, s := range samples {
			if !c.Rule.Selects(ev.Device, s.Tags) {
				return "", fmt.Errorf("the rule does not select %s's reading %d", ev.Device, s.Seq)
			}
		}
		switch ev.Kind {
		case rule.KindFire:
			f := rule.Firing{Seq: ev.Seq, ArmedAt: ev.ArmedAt, Used: ev.Seqs, Partial: ev.Partial}
			if err := c.Check(f, samples); err != nil {
				return "", err
			}
			note := ""
			if ev.Partial {
				note = fmt.Sprintf("; more than %d readings between arming and firing: those not in the event were not re-evaluated", rule.MaxBetween)
			}
			return fmt.Sprintf("evaluated again on %d readings: armed at seq %d, fires at seq %d, as recorded%s", len(samples), ev.ArmedAt, ev.Seq, note), nil
		case rule.KindAbsent:
			if !c.Rule.Absence() {
				return "", fmt.Errorf("an absence event of a rule that is not an absence rule")
			}
			if len(ev.Seqs) != 1 || ev.Seqs[0] != ev.Seq {
				return "", fmt.Errorf("an absence event uses the device's last reading only")
			}
			if !c.AbsenceDue(ev.LastSeen, ev.Time) {
				return "", fmt.Errorf("%d ms between the last reading's receipt and the event, the rule waits %d", ev.Time-ev.LastSeen, c.Rule.AbsentMS)
			}
			return fmt.Sprintf("no reading after seq %d for %d ms (the rule waits %d ms; times of the rules stage's clock, not provable by the readings)", ev.Seq, ev.Time-ev.LastSeen, c.Rule.AbsentMS), nil
		}
		return "", fmt.Errorf("kind %q: want %s or %s", ev.Kind, rule.KindFire, rule.KindAbsent)
	})
	rep.Steps = v.r.Steps
	return rep, v.err
}

func hashes(hs []bundle.Hex, what string) ([]merkle.Hash, error) {
	out := make([]merkle.Hash, len(hs))
	for i, h := range hs {
		var err error
		if out[i], err = hash(h, fmt.Sprintf("%s[%d]", what, i)); err != nil {
			return nil, err
		}
	}
	return out, nil
}
