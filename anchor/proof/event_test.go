package proof

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/anchorline/anchorline/schemas/entry"
	"github.com/anchorline/anchorline/schemas/reading"
	"github.com/anchorline/anchorline/schemas/rule"
)

func goldenEvent(t testing.TB) (b, trust []byte) {
	return readGolden(t, "event.json", "event-trust.json", "TestGoldenEvent")
}

// writeGoldenEvent makes the golden event bundle on a real ledger: rule "golden-hot"
// (temp > 1.0) is committed, then nine chained readings of one device whose temp rises by 0.25
// from 0.25 are anchored (one batch); the rule fires at seq 5, armed by seq 4 (each reading
// where the condition does not hold arms it anew).
func writeGoldenEvent(t *testing.T) {
	ctx := context.Background()
	c := newChain(t)
	ed := reading.NewEd25519Key(ed25519.NewKeyFromSeed(seeded(3)))
	const dev = "event-device"
	c.register(t, dev, ed)
	rl := rule.Rule{ID: "golden-hot", Version: 1, Devices: []string{dev}, When: "metrics.temp > 1.0", Actions: []rule.Action{{Kind: rule.ActionEvent}}}
	e, err := entry.NewRule(c.admin, entry.OpPut, rl, time.UnixMilli(1_764_000_000_000))
	if err != nil {
		t.Fatal(err)
	}
	c.submit(t, e)
	raws := chained(t, ed, dev, []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9}, nil)
	parts := c.anchorOn(t, dev, 1, []testBatch{batchOf(1, 12, []uint64{0, 1, 2, 3, 4, 5, 6, 7, 8}, raws)})

	// The stage's decision, as pipeline/rules makes it.
	comp, err := rule.Compile(rl)
	if err != nil {
		t.Fatal(err)
	}
	var hist []*rule.Sample
	var st rule.State
	var fired *rule.Firing
	for _, raw := range raws {
		m, err := reading.Decode(raw)
		if err != nil {
			t.Fatal(err)
		}
		s := rule.SampleOf(m.Reading)
		hist = append(hist, &s)
		if st, fired = comp.Step(st, hist); fired != nil {
			break
		}
	}
	if fired == nil || fired.Seq != 5 || fired.ArmedAt != 4 {
		t.Fatalf("firing %+v, want seq 5 armed at 4", fired)
	}
	var used []Parts
	for _, p := range parts {
		if slices.Contains(fired.Used, p.Seq) {
			used = append(used, p)
		}
	}
	rb, err := BuildRange(dev, fired.Used[0], fired.Used[len(fired.Used)-1], used, c.prover(t))
	if err != nil {
		t.Fatal(err)
	}
	rangeJSON := marshalRange(t, rb)
	h := used[0].LightBlock.Height - 1 // the anchor's block: the rule is in force there
	r, rp, err := c.lc.RuleAt(ctx, rl.ID, h)
	if err != nil {
		t.Fatal(err)
	}
	ep, err := c.lc.EntryProof(ctx, r.Record.Index, h)
	if err != nil {
		t.Fatal(err)
	}
	state, err := c.lc.State(ctx, h)
	if err != nil {
		t.Fatal(err)
	}
	lb, err := c.lc.LightBlock(ctx, h+1)
	if err != nil {
		t.Fatal(err)
	}
	lchain, err := c.lc.LightChain(ctx, h+1)
	if err != nil {
		t.Fatal(err)
	}
	cp, err := BuildCheckpoint("proof-test", state.AppState(), lb, lchain)
	if err != nil {
		t.Fatal(err)
	}
	ev := rule.Event{ID: rule.EventID(rl.ID, 1, dev, fired.Seq, rule.KindFire), Rule: rl.ID, Version: 1, RuleIndex: r.Record.Index,
		Height: uint64(h), Device: dev, Kind: rule.KindFire, Seq: fired.Seq, ArmedAt: fired.ArmedAt, Seqs: fired.Used,
		Time: 1_764_000_000_500, Actions: []string{rule.ActionEvent}}
	b, err := BuildEvent(ev, rangeJSON, EventRule{Entry: rp.Entry, Record: rp.Record, RulesProof: rp.SMTProof, RulesRoot: rp.RulesRoot,
		StateProof: rp.StateProof, LogIndex: ep.LogIndex, LogPath: ep.Path, Checkpoint: cp})
	if err != nil {
		t.Fatal(err)
	}
	out, err := b.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join("testdata", "event.json"), out, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join("testdata", "event-trust.json"), c.trust(t), 0o644); err != nil {
		t.Fatal(err)
	}
}

// The golden event bundle (a real ledger: a threshold rule armed at seq 4 that fires at
// seq 5) verifies, forever, step by step; a changed reading, rule text or event fails at the
// step that checks it. The browser verifier's test opens the same file.
func TestGoldenEvent(t *testing.T) {
	if *update {
		writeGoldenEvent(t)
	}
	data, trust := goldenEvent(t)
	if !IsEvent(data) || IsRange(data) {
		t.Fatal("IsEvent: the golden event bundle is not one")
	}
	rep, err := VerifyEvent(data, trust)
	var buf bytes.Buffer
	rep.Print(&buf)
	if err != nil {
		t.Fatalf("does not verify: %v\n%s", err, buf.String())
	}
	names := []string{"event bundle", "event id", "readings", "rule checkpoint", "rule entry", "rule in force", "decision"}
	if len(rep.Steps) != len(names) {
		t.Fatalf("%d steps:\n%s", len(rep.Steps), buf.String())
	}
	for i, n := range names {
		if rep.Steps[i].Name != n || !rep.Steps[i].OK {
			t.Fatalf("step %d is %q, want %q:\n%s", i, rep.Steps[i].Name, n, buf.String())
		}
	}
	if !strings.Contains(buf.String(), "armed at seq 4, fires at seq 5, as recorded") || rep.Range.Readings != 2 {
		t.Fatalf("report:\n%s", buf.String())
	}
	for name, c := range map[string]struct {
		old, new string
		step     string
	}{
		// The entry is hex CBOR: "metrics.temp > 1.0" becomes "... > 1.1".
		"the rule's threshold": {hex.EncodeToString([]byte("metrics.temp > 1.0")), hex.EncodeToString([]byte("metrics.temp > 1.1")), "rule entry"},
		"the firing seq":       {`"seq": 5`, `"seq": 6`, "event id"},
		"the arming seq":       {`"armed_at": 4`, `"armed_at": 3`, "decision"},
	} {
		t.Run(name, func(t *testing.T) {
			if !bytes.Contains(data, []byte(c.old)) {
				t.Fatalf("the golden bundle holds no %q", c.old)
			}
			bad := bytes.Replace(data, []byte(c.old), []byte(c.new), 1)
			rep, err := VerifyEvent(bad, trust)
			if !errors.Is(err, ErrVerify) {
				t.Fatalf("verifies: %v", err)
			}
			if last := rep.Steps[len(rep.Steps)-1]; last.OK || last.Name != c.step {
				t.Fatalf("fails at %q (%s), want %q", last.Name, last.Detail, c.step)
			}
		})
	}
}
