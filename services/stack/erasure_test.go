package stack

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/anchorline/anchorline/anchor/audit"
	"github.com/anchorline/anchorline/anchor/ledger"
	"github.com/anchorline/anchorline/anchor/proof"
	"github.com/anchorline/anchorline/internal/await"
	"github.com/anchorline/anchorline/internal/chserver"
	"github.com/anchorline/anchorline/schemas/bundle"
	"github.com/anchorline/anchorline/schemas/entry"
	"github.com/anchorline/anchorline/schemas/reading"
	"github.com/anchorline/anchorline/schemas/rule"
	"github.com/anchorline/anchorline/schemas/stream"
	"github.com/anchorline/anchorline/services/store"
)

// filesHolding lists the files under dir whose bytes contain one of the four 16-byte quarters
// of b (a 64-byte signature): compression (LZ4 in ClickHouse's parts) keeps incompressible
// bytes as they are, but may cut them where a few of them repeat earlier ones.
func filesHolding(t *testing.T, dir string, b []byte) []string {
	t.Helper()
	var out []string
	for i := 0; i+16 <= len(b); i += 16 {
		for _, f := range filesHoldingExactly(t, dir, b[i:i+16]) {
			if !slices.Contains(out, f) {
				out = append(out, f)
			}
		}
	}
	return out
}

func filesHoldingExactly(t *testing.T, dir string, b []byte) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) {
				return nil // a part removed while walking
			}
			return err
		}
		if d.IsDir() {
			return nil
		}
		data, err := os.ReadFile(p)
		if os.IsNotExist(err) {
			return nil
		}
		if err != nil {
			return err
		}
		if bytes.Contains(data, b) {
			out = append(out, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestErasure runs an owner's erasure end to end on real servers: the readings in the range
// lose their bytes and metric values in ClickHouse while their leaves, batches and positions
// stay; the rollups are rebuilt from what is left; the device's reject rows lose their bytes;
// its messages in the Readings stream are deleted; the erasure is recorded. Then, after merges
// and the server's old-parts lifetime, no file of the database's parts and no file of the
// stream holds an erased reading's signature, while readings outside the range keep theirs.
func TestErasure(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	chAddr, database, ch := chserver.NewDatabase(t)
	cfg := devConfig(t, chAddr, database, t.TempDir())
	cfg.Anchor.PurgeReadings = false // the stream keeps the readings: erasure must delete them
	d, cfg, js := startTestDev(t, ctx, cfg)
	client := d.APIClient()

	dv := newDevice(t, "er-1", reading.Ed25519)
	other := newDevice(t, "er-2", reading.Ed25519)
	register(t, ctx, client, d.AdminKey, dv.ID, dv.Key.Public())
	register(t, ctx, client, d.AdminKey, other.ID, other.Key.Public())
	raws := map[uint64][]byte{}
	for range 30 {
		raw := dv.next(t)
		raws[dv.Seq] = raw
		publish(t, js, reading.Subject(dv.ID), reading.MsgID(dv.ID, dv.Seq), raw)
		publish(t, js, reading.Subject(other.ID), reading.MsgID(other.ID, other.Seq+1), other.next(t))
	}
	// A reject of er-1 (its signature broken), stored with its bytes.
	bad := dv.next(t)
	bad[len(bad)-1] ^= 1
	publish(t, js, reading.Subject(dv.ID), reading.MsgID(dv.ID, dv.Seq), bad)
	await.Until(t, ctx, "60 readings and 1 reject stored", func() (bool, string) {
		n := count(t, ctx, ch, "SELECT count() FROM "+database+".readings")
		r := count(t, ctx, ch, "SELECT count() FROM "+database+".rejected WHERE device_id = 'er-1' AND raw != ''")
		return n == 60 && r == 1, fmt.Sprintf("%d readings, %d rejects", n, r)
	})
	leavesBefore := count(t, ctx, ch, "SELECT sum(cityHash64(leaf)) FROM "+database+".readings WHERE device_id = 'er-1'")
	sig := func(seq uint64) []byte { r := raws[seq]; return r[len(r)-64:] } // the Ed25519 signature ends the message
	chDir := filepath.Join(os.Getenv(chserver.EnvDir), "data", "data", database)
	natsDir := filepath.Join(cfg.DataDir, "nats")
	// The checks below can fail: before the erasure both stores hold the bytes.
	if len(filesHolding(t, chDir, sig(15))) == 0 || len(filesHolding(t, natsDir, sig(15))) == 0 {
		t.Fatalf("before the erasure, no file holds reading 15's signature (ClickHouse %v, NATS %v)", filesHolding(t, chDir, sig(15)), filesHolding(t, natsDir, sig(15)))
	}

	// Two rule events of er-1 in the Events stream: one quotes an erased reading, one not.
	for i, seqs := range [][]uint64{{11, 12}, {25}} {
		ev, _ := json.Marshal(rule.Event{ID: fmt.Sprintf("ev%d", i), Rule: "hot", Version: 1, Device: dv.ID, Kind: "fire", Seq: seqs[len(seqs)-1], Seqs: seqs, Actions: []string{"event"}})
		if _, err := js.Publish(ctx, rule.SubjectPrefix+"hot."+dv.ID, ev); err != nil {
			t.Fatalf("publish an event: %v", err)
		}
	}
	alice, err := reading.GenerateKey(reading.ES256)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range []func() ([]byte, error){
		func() ([]byte, error) { return entry.NewOwner(d.AdminKey, alice, entry.OpBind, dv.ID, time.Now()) },
		func() ([]byte, error) {
			return entry.NewEraseByOwner(alice, dv.ID, entry.EraseBySeq, 10, 20, "", time.Now())
		},
	} {
		b, err := e()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := d.Ledger.Submit(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	committed := time.Now()
	await.Until(t, ctx, "the erasure carried out", func() (bool, string) {
		n := count(t, ctx, ch, "SELECT count() FROM "+database+".erasures WHERE device_id = 'er-1' AND readings = 11")
		return n == 1, fmt.Sprintf("%d rows", n)
	})
	t.Logf("erasure carried out %s after its block", time.Since(committed).Round(time.Millisecond))

	events, err := js.Stream(ctx, stream.Events)
	if err != nil {
		t.Fatal(err)
	}
	m, err := events.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(rule.SubjectPrefix+"hot."+dv.ID))
	if err != nil || !bytes.Contains(m.Data, []byte(`"seqs":[25]`)) {
		t.Fatalf("the first event of er-1 left in Events: %v %s", err, m.Data)
	}
	if _, err := events.GetMsg(ctx, m.Sequence+1, jetstream.WithGetMsgSubject(rule.SubjectPrefix+"hot."+dv.ID)); !errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Fatalf("more events of er-1 left in Events: %v", err)
	}

	// The proof of an erased reading shows its leaf anchored and the entry that erased it.
	trust, err := client.Trust(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var erasedProof []byte
	await.Until(t, ctx, "the proof of erased seq 15", func() (bool, string) {
		erasedProof, err = client.Proof(ctx, dv.ID, 15)
		return err == nil, fmt.Sprint(err)
	})
	rep, err := proof.Verify(erasedProof, trust)
	if err != nil || !slices.ContainsFunc(rep.Steps, func(s proof.Step) bool { return s.Name == "erased reading" && s.OK }) ||
		slices.ContainsFunc(rep.Steps, func(s proof.Step) bool { return s.Name == "reading signature" }) {
		var b strings.Builder
		rep.Print(&b)
		t.Fatalf("the erased reading's proof: %v\n%s", err, b.String())
	}
	if bytes.Contains(erasedProof, []byte(hex.EncodeToString(sig(15)))) {
		t.Fatal("the erased reading's proof holds its signature")
	}
	for what, change := range map[string]func(*bundle.Bundle){
		"a seq the entry does not cover": func(b *bundle.Bundle) { b.Reading.Seq = 25 },
		"a changed erase entry":          func(b *bundle.Bundle) { b.Erasure.Entry[len(b.Erasure.Entry)-1] ^= 1 },
		"another leaf":                   func(b *bundle.Bundle) { b.Reading.Leaf[0] ^= 1 },
	} {
		b, err := bundle.Parse(erasedProof)
		if err != nil {
			t.Fatal(err)
		}
		change(b)
		tampered, err := b.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := proof.Verify(tampered, trust); err == nil {
			t.Errorf("the erased reading's proof with %s verifies", what)
		}
	}
	if b, err := client.Proof(ctx, dv.ID, 25); err != nil {
		t.Fatal(err)
	} else if _, err := proof.Verify(b, trust); err != nil {
		t.Fatalf("the proof of seq 25, not erased: %v", err)
	}

	q := func(query string) uint64 { t.Helper(); return count(t, ctx, ch, fmt.Sprintf(query, database)) }
	for what, got := range map[string][2]uint64{
		"readings of er-1":                 {q("SELECT count() FROM %s.readings WHERE device_id = 'er-1'"), 30},
		"erased readings without bytes":    {q("SELECT count() FROM %s.readings WHERE device_id = 'er-1' AND raw = '' AND erased_by > 0 AND seq BETWEEN 10 AND 20"), 11},
		"readings of er-1 keeping bytes":   {q("SELECT count() FROM %s.readings WHERE device_id = 'er-1' AND raw != '' AND erased_by = 0"), 19},
		"er-1's leaves unchanged":          {q("SELECT sum(cityHash64(leaf)) FROM %s.readings WHERE device_id = 'er-1'"), leavesBefore},
		"lookup copies without bytes":      {q("SELECT count() FROM %s.reading_lookup WHERE device_id = 'er-1' AND seq BETWEEN 10 AND 20 AND raw != ''"), 0},
		"metric values of erased readings": {q("SELECT count() FROM %s.metrics WHERE device_id = 'er-1' AND seq BETWEEN 10 AND 20"), 0},
		"metric values of er-1 left":       {q("SELECT count() FROM %s.metrics WHERE device_id = 'er-1'"), 38},
		"minute rollup counts":             {q("SELECT countMerge(count) FROM %s.metrics_1m WHERE device_id = 'er-1'"), 38},
		"hour rollup counts":               {q("SELECT countMerge(count) FROM %s.metrics_1h WHERE device_id = 'er-1'"), 38},
		"er-2's hour rollup counts":        {q("SELECT countMerge(count) FROM %s.metrics_1h WHERE device_id = 'er-2'"), 60},
		"er-1's rejects with bytes":        {q("SELECT count() FROM %s.rejected WHERE device_id = 'er-1' AND raw != ''"), 0},
	} {
		if got[0] != got[1] {
			t.Errorf("%s: %d, want %d", what, got[0], got[1])
		}
	}

	// On disk: merge every part, wait until the replaced parts are gone, then look.
	for _, table := range []string{"readings", "reading_lookup", "rejected", "metrics"} {
		if err := ch.Exec(ctx, fmt.Sprintf("OPTIMIZE TABLE %s.`%s` FINAL", database, table)); err != nil {
			t.Fatal(err)
		}
	}
	await.Until(t, ctx, "the replaced parts removed", func() (bool, string) {
		n := q("SELECT count() FROM system.parts WHERE database = '%s' AND NOT active")
		return n == 0, fmt.Sprintf("%d inactive parts", n)
	})
	for seq := uint64(10); seq <= 20; seq++ {
		if f := filesHolding(t, chDir, sig(seq)); len(f) > 0 {
			t.Errorf("after the erasure, ClickHouse files hold reading %d's signature: %v", seq, f)
		}
		if f := filesHolding(t, natsDir, sig(seq)); len(f) > 0 {
			t.Errorf("after the erasure, NATS files hold reading %d's signature: %v", seq, f)
		}
	}
	if len(filesHolding(t, chDir, sig(25))) == 0 || len(filesHolding(t, natsDir, sig(25))) == 0 {
		t.Error("reading 25, outside the range, lost its bytes")
	}
}

// TestErasureAudit: the audit reports readings erased under an erase entry as erased, not as
// findings, and still finds bytes removed without one, or under an entry that does not cover
// the reading.
func TestErasureAudit(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	chAddr, database, ch := chserver.NewDatabase(t)
	cfg := devConfig(t, chAddr, database, t.TempDir())
	cfg.Anchor.Interval = 200 * time.Millisecond
	d, cfg, js := startTestDev(t, ctx, cfg)
	dv := newDevice(t, "ea-1", reading.Ed25519)
	register(t, ctx, d.APIClient(), d.AdminKey, dv.ID, dv.Key.Public())
	for range 10 {
		raw := dv.next(t)
		publish(t, js, reading.Subject(dv.ID), reading.MsgID(dv.ID, dv.Seq), raw)
	}
	await.Until(t, ctx, "10 readings anchored", func() (bool, string) {
		n := count(t, ctx, ch, "SELECT count() FROM "+database+".readings r ANY INNER JOIN "+database+".batch_anchors b USING batch_id")
		return n == 10, fmt.Sprintf("%d", n)
	})
	run := func() audit.Report {
		t.Helper()
		rep, err := audit.Run(ctx, store.New(ch, database).Audit(), ledger.AuditLog{Client: d.Ledger}, audit.Query{To: math.MaxUint64, Grace: time.Minute, Now: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}
	if rep := run(); !rep.OK() || len(rep.Erased) != 0 {
		t.Fatalf("before: %+v", rep)
	}
	index := submitErase(t, ctx, d, dv.ID, 2, 4, "test")
	await.Until(t, ctx, "the erasure carried out", func() (bool, string) {
		n := count(t, ctx, ch, "SELECT count() FROM "+database+".erasures")
		return n == 1, fmt.Sprintf("%d", n)
	})
	rep := run()
	if !rep.OK() || rep.Erased[index] != 3 || len(rep.Erased) != 1 {
		t.Fatalf("after the erasure: erased %v, findings %+v", rep.Erased, rep.Findings)
	}
	// Bytes removed without an entry (seq 6), and under an entry that does not cover the
	// reading (seq 7 claims the entry of seqs 2..4): both findings.
	for _, q := range []string{
		fmt.Sprintf("ALTER TABLE %s.readings UPDATE raw = '' WHERE device_id = 'ea-1' AND seq = 6", database),
		fmt.Sprintf("ALTER TABLE %s.readings UPDATE raw = '', erased_by = %d WHERE device_id = 'ea-1' AND seq = 7", database, index),
	} {
		if err := ch.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	await.Until(t, ctx, "mutations done", func() (bool, string) {
		n := count(t, ctx, ch, "SELECT count() FROM system.mutations WHERE database = ? AND NOT is_done", database)
		return n == 0, fmt.Sprintf("%d", n)
	})
	rep = run()
	var seqs []uint64
	for _, f := range rep.Findings {
		if f.Kind == audit.Modified && strings.Contains(f.Detail, "without an erase entry") {
			seqs = append(seqs, f.Seq)
		}
	}
	if slices.Sort(seqs); !slices.Equal(seqs, []uint64{6, 7}) || rep.Erased[index] != 3 {
		t.Fatalf("after the tampering: findings %+v, erased %v", rep.Findings, rep.Erased)
	}
}

// TestErasureLateReadings: an erase entry keeps applying after it was carried out. Its seq
// range reaches past the device's last reading; the readings published after it was carried
// out that fall in it (new seqs, and a redelivered copy of an erased one) end erased like the
// others: no bytes in readings or reading_lookup, erased_by naming the entry, no metric values
// or rollup counts, no message left in READINGS; erasures counts them, the audit reports them
// erased under the entry and the proof of one is the erased-reading bundle. The device's
// readings before the range and another device's readings of the same seqs keep their bytes.
func TestErasureLateReadings(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	chAddr, database, ch := chserver.NewDatabase(t)
	cfg := devConfig(t, chAddr, database, t.TempDir())
	cfg.Anchor.PurgeReadings = false // the stream keeps the readings: the sweep must delete them
	cfg.Anchor.Interval = 200 * time.Millisecond
	cfg.Anchor.ErasureSweep = 200 * time.Millisecond
	d, cfg, js := startTestDev(t, ctx, cfg)
	client := d.APIClient()

	dv := newDevice(t, "late-1", reading.Ed25519)
	other := newDevice(t, "late-2", reading.Ed25519)
	register(t, ctx, client, d.AdminKey, dv.ID, dv.Key.Public())
	register(t, ctx, client, d.AdminKey, other.ID, other.Key.Public())
	raws := map[uint64][]byte{}
	send := func(n int) {
		for range n {
			raw := dv.next(t)
			raws[dv.Seq] = raw
			publish(t, js, reading.Subject(dv.ID), reading.MsgID(dv.ID, dv.Seq), raw)
			publish(t, js, reading.Subject(other.ID), reading.MsgID(other.ID, other.Seq+1), other.next(t))
		}
	}
	q := func(query string) uint64 { t.Helper(); return count(t, ctx, ch, fmt.Sprintf(query, database)) }
	send(4)
	await.Until(t, ctx, "8 readings stored", func() (bool, string) {
		n := q("SELECT count() FROM %s.readings")
		return n == 8, fmt.Sprintf("%d readings", n)
	})
	index := submitErase(t, ctx, d, dv.ID, 3, 1_000_000, "court order 17")
	await.Until(t, ctx, "the erasure carried out", func() (bool, string) {
		n := count(t, ctx, ch, "SELECT count() FROM "+database+".erasures WHERE entry_index = ? AND readings = 2", index)
		return n > 0, fmt.Sprintf("%d rows", n)
	})

	// After it: late-1's seqs 5 to 9 (in the range), a redelivered copy of its erased seq 4
	// (under another message id, as after JetStream's duplicate window), late-2's seqs 5 to 9.
	send(5)
	publish(t, js, reading.Subject(dv.ID), reading.MsgID(dv.ID, 4)+"-again", raws[4])
	// Two rule events of late-1 in the Events stream: one quotes readings stored after the
	// erasure, in its range, the other a reading before it.
	for i, seqs := range [][]uint64{{6, 7}, {1}} {
		ev, _ := json.Marshal(rule.Event{ID: fmt.Sprintf("late%d", i), Rule: "hot", Version: 1, Device: dv.ID, Kind: "fire", Seq: seqs[len(seqs)-1], Seqs: seqs, Actions: []string{"event"}})
		if _, err := js.Publish(ctx, rule.SubjectPrefix+"hot."+dv.ID, ev); err != nil {
			t.Fatalf("publish an event: %v", err)
		}
	}
	// The sweep records the entry last, once it removed everything else.
	await.Until(t, ctx, "the readings stored after the erasure erased and recorded", func() (bool, string) {
		all := q("SELECT count() FROM %s.readings WHERE device_id = 'late-1'")
		erased := count(t, ctx, ch, "SELECT count() FROM "+database+".readings WHERE device_id = 'late-1' AND seq >= 3 AND raw = '' AND erased_by = ?", index)
		late := count(t, ctx, ch, "SELECT sum(late) FROM "+database+".erasures FINAL WHERE entry_index = ?", index)
		return all == 10 && erased == 8 && late == 6, fmt.Sprintf("%d readings of late-1, %d of them erased, %d recorded as stored after the erasure", all, erased, late)
	})
	for what, got := range map[string][2]uint64{
		"late-1's readings before the range with bytes":  {q("SELECT count() FROM %s.readings WHERE device_id = 'late-1' AND seq < 3 AND raw != '' AND erased_by = 0"), 2},
		"late-2's readings with bytes":                   {q("SELECT count() FROM %s.readings WHERE device_id = 'late-2' AND raw != '' AND erased_by = 0"), 9},
		"late-1's lookup copies in the range with bytes": {q("SELECT count() FROM %s.reading_lookup WHERE device_id = 'late-1' AND seq >= 3 AND raw != ''"), 0},
		"late-1's lookup copies before it with bytes":    {q("SELECT count() FROM %s.reading_lookup WHERE device_id = 'late-1' AND seq < 3 AND raw != ''"), 2},
		"late-2's lookup copies with bytes":              {q("SELECT count() FROM %s.reading_lookup WHERE device_id = 'late-2' AND raw != ''"), 9},
		"late-1's metric values in the range":            {q("SELECT count() FROM %s.metrics WHERE device_id = 'late-1' AND seq >= 3"), 0},
		"late-1's minute rollup counts":                  {q("SELECT countMerge(count) FROM %s.metrics_1m WHERE device_id = 'late-1'"), 4},
		"late-1's hour rollup counts":                    {q("SELECT countMerge(count) FROM %s.metrics_1h WHERE device_id = 'late-1'"), 4},
		"late-2's hour rollup counts":                    {q("SELECT countMerge(count) FROM %s.metrics_1h WHERE device_id = 'late-2'"), 18},
		"the entry's readings":                           {count(t, ctx, ch, "SELECT readings FROM "+database+".erasures FINAL WHERE entry_index = ?", index), 8},
		"the entry's readings stored after it":           {count(t, ctx, ch, "SELECT late FROM "+database+".erasures FINAL WHERE entry_index = ?", index), 6},
	} {
		if got[0] != got[1] {
			t.Errorf("%s: %d, want %d", what, got[0], got[1])
		}
	}
	if done, err := store.New(ch, database).ErasuresDone(ctx); err != nil || done[index] != 8 {
		t.Errorf("ErasuresDone: %v, %v; want 8 readings under log index %d", done, err, index)
	}

	events, err := js.Stream(ctx, stream.Events)
	if err != nil {
		t.Fatal(err)
	}
	await.Until(t, ctx, "only the event quoting late-1's seq 1 left in Events", func() (bool, string) {
		var left []string
		for seq := uint64(1); ; seq++ {
			m, err := events.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(rule.SubjectPrefix+"hot."+dv.ID))
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			seq = m.Sequence
			left = append(left, string(m.Data))
		}
		return len(left) == 1 && strings.Contains(left[0], `"seqs":[1]`), fmt.Sprint(left)
	})

	// READINGS keeps late-2's messages and none of late-1 in the range.
	readings, err := js.Stream(ctx, stream.Readings)
	if err != nil {
		t.Fatal(err)
	}
	for dev, want := range map[string][]uint64{dv.ID: {1, 2}, other.ID: {1, 2, 3, 4, 5, 6, 7, 8, 9}} {
		var seqs []uint64
		for seq := uint64(1); ; seq++ {
			m, err := readings.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(reading.Subject(dev)))
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			seq = m.Sequence
			msg, err := reading.Decode(m.Data)
			if err != nil {
				t.Fatal(err)
			}
			seqs = append(seqs, msg.Reading.Seq)
		}
		if !slices.Equal(seqs, want) {
			t.Errorf("READINGS holds %s's seqs %v, want %v", dev, seqs, want)
		}
	}

	// Anchored, the late erased readings are erased under the entry for the audit, and the
	// proof of one is the erased-reading bundle.
	await.Until(t, ctx, "the 19 rows anchored", func() (bool, string) {
		n := count(t, ctx, ch, "SELECT count() FROM "+database+".readings r ANY INNER JOIN "+database+".batch_anchors b USING batch_id")
		return n == 19, fmt.Sprintf("%d rows anchored", n)
	})
	rep, err := audit.Run(ctx, store.New(ch, database).Audit(), ledger.AuditLog{Client: d.Ledger}, audit.Query{To: math.MaxUint64, Grace: time.Minute, Now: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() || rep.Erased[index] != 8 || len(rep.Erased) != 1 {
		t.Errorf("audit: erased %v, findings %+v; want 8 erased under log index %d", rep.Erased, rep.Findings, index)
	}
	trust, err := client.Trust(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b, err := client.Proof(ctx, dv.ID, 7)
	if err != nil {
		t.Fatal(err)
	}
	pr, err := proof.Verify(b, trust)
	if err != nil || !slices.ContainsFunc(pr.Steps, func(s proof.Step) bool { return s.Name == "erased reading" && s.OK }) ||
		slices.ContainsFunc(pr.Steps, func(s proof.Step) bool { return s.Name == "reading signature" }) {
		var w strings.Builder
		pr.Print(&w)
		t.Errorf("the proof of seq 7, stored after the erasure: %v\n%s", err, w.String())
	}
	if bytes.Contains(b, []byte(hex.EncodeToString(raws[7][len(raws[7])-64:]))) {
		t.Error("the proof of seq 7 holds its signature")
	}
}

// submitErase commits an admin-signed erase entry of dev's seqs from..to, with reason, and
// returns its log index.
func submitErase(t *testing.T, ctx context.Context, d *Dev, dev string, from, to uint64, reason string) uint64 {
	t.Helper()
	e, err := entry.NewEraseByAdmin(d.AdminKey, dev, entry.EraseBySeq, from, to, reason, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	rc, err := d.Ledger.Submit(ctx, e)
	if err != nil {
		t.Fatal(err)
	}
	return rc.LogIndex
}
