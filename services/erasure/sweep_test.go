package erasure

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/anchorline/anchorline/internal/chserver"
	"github.com/anchorline/anchorline/internal/testlog"
	"github.com/anchorline/anchorline/pipeline/write"
	"github.com/anchorline/anchorline/schemas/clickhouse"
	"github.com/anchorline/anchorline/schemas/reading"
	"github.com/anchorline/anchorline/schemas/rule"
)

func TestMain(m *testing.M) { os.Exit(chserver.RunTests(m)) }

func TestSeqIn(t *testing.T) {
	for _, c := range []struct {
		seqs []uint64
		want string
	}{
		{[]uint64{5}, "seq IN (5)"},
		{[]uint64{7, 5, 6}, "seq BETWEEN 5 AND 7"},
		{[]uint64{1, 2, 9, 10, 11, 12, 4, 4}, "(seq BETWEEN 9 AND 12 OR seq IN (1, 2, 4))"},
		{[]uint64{3, 1}, "seq IN (1, 3)"},
	} {
		if got := seqIn("seq", c.seqs); got != c.want {
			t.Errorf("seqIn(%v) = %q, want %q", c.seqs, got, c.want)
		}
	}
}

func TestTimeRange(t *testing.T) {
	for _, c := range []struct {
		from, to uint64
		want     string
	}{
		{1_700_000_000_500, 1_700_000_123_999, " AND time BETWEEN toDateTime(1700000000) AND toDateTime(1700000123)"},
		{0, ^uint64(0), " AND time BETWEEN toDateTime(0) AND toDateTime(4294967295)"},
		{5_000_000_000_000, ^uint64(0), ""},
	} {
		if got := timeRange(c.from, c.to); got != c.want {
			t.Errorf("timeRange(%d, %d) = %q, want %q", c.from, c.to, got, c.want)
		}
	}
}

// sweepFixture is a database with erase entries recorded as carried out and rows written
// after them, as ingest and the rules stage write them.
type sweepFixture struct {
	t   *testing.T
	ctx context.Context
	ch  driver.Conn
	db  string
	w   *write.Writer
}

func (f *sweepFixture) count(q string) uint64 {
	f.t.Helper()
	var n uint64
	if err := f.ch.QueryRow(f.ctx, fmt.Sprintf(q, f.db)).Scan(&n); err != nil {
		f.t.Fatalf("%s: %v", q, err)
	}
	return n
}

// insert inserts rows into table (with its column list).
func (f *sweepFixture) insert(table string, rows ...[]any) {
	f.t.Helper()
	b, err := f.ch.PrepareBatch(f.ctx, "INSERT INTO "+f.db+"."+table)
	if err != nil {
		f.t.Fatal(err)
	}
	for _, r := range rows {
		if err := b.Append(r...); err != nil {
			f.t.Fatal(err)
		}
	}
	if err := b.Send(); err != nil {
		f.t.Fatal(err)
	}
}

// carriedOut records entry index as carried out (when it covered readings readings).
func (f *sweepFixture) carriedOut(index uint64, dev, by string, from, to, readings uint64) {
	f.t.Helper()
	b, err := f.ch.PrepareBatch(f.ctx, "INSERT INTO "+f.db+".erasures (entry_index, height, device_id, by, from_value, to_value, signer, reason, readings, done_at)")
	if err != nil {
		f.t.Fatal(err)
	}
	if err := b.Append(index, index+1, dev, by, from, to, "admin", "test", readings, time.Now()); err != nil {
		f.t.Fatal(err)
	}
	if err := b.Send(); err != nil {
		f.t.Fatal(err)
	}
}

// batch stores readings (dev, seq, ts) with two metric values each.
func (f *sweepFixture) batch(id byte, rs ...[3]any) {
	f.t.Helper()
	b := &write.Batch{Created: time.Now(), Worker: "t"}
	b.ID[0] = id
	for i, r := range rs {
		dev, seq, ts := r[0].(string), uint64(r[1].(int)), uint64(r[2].(int64))
		wr := write.Reading{Device: dev, Seq: seq, TS: ts, ReceivedAt: time.Now(), Raw: fmt.Appendf(nil, "raw %s %d", dev, seq),
			Metrics: []reading.Metric{{Name: "temp", Value: float64(seq)}, {Name: "hum", Value: 40}}, LeafIndex: uint32(i)}
		wr.Leaf[0], wr.Leaf[1] = id, byte(i)
		b.Readings = append(b.Readings, wr)
	}
	if err := f.w.WriteBatch(f.ctx, b); err != nil {
		f.t.Fatal(err)
	}
}

// TestSweep carries erase entries out again on real ClickHouse: what was stored in a seq range
// and in a device-time range after they were carried out (readings, a lookup copy and metric
// values of a flush in flight, a redelivered copy, rule events, a reject) is cleared; what is
// outside keeps its bytes, also a reading in the device-time range's first second but before
// it; the rollups are rebuilt from what is left; erasures records what each entry now covers;
// and a second sweep finds only what was written since the first.
func TestSweep(t *testing.T) {
	ctx := t.Context()
	_, db, ch := chserver.NewDatabase(t)
	f := &sweepFixture{t: t, ctx: ctx, ch: ch, db: db, w: write.New(ch, db)}
	now := time.Now().UnixMilli()
	hour := now - 3_600_000
	tsFrom := hour/1000*1000 + 500 // sw-2's range starts half-way into a second

	f.carriedOut(7, "sw-1", "seq", 3, 1_000_000, 0)
	f.carriedOut(8, "sw-2", "ts", uint64(tsFrom), uint64(now+86_400_000), 0)
	f.batch(1,
		[3]any{"sw-1", 1, hour}, [3]any{"sw-1", 2, hour + 1}, [3]any{"sw-1", 3, hour + 2}, [3]any{"sw-1", 4, hour + 3},
		[3]any{"sw-2", 1, tsFrom - 300}, [3]any{"sw-2", 2, tsFrom + 100}, [3]any{"sw-2", 3, now},
		[3]any{"sw-3", 5, hour})
	// A flush in flight when sw-1's seq 5 and 6 were erased: their rows in readings lost their
	// bytes, their lookup copy (seq 5) and metric values (seq 6) came after.
	at := time.UnixMilli(hour)
	f.insert("readings (device_id, seq, ts, time, raw, leaf, batch_id, leaf_index, erased_by)",
		[]any{"sw-1", uint64(5), uint64(hour + 4), at, "", "l5", "b2", uint32(0), uint64(7)},
		[]any{"sw-1", uint64(6), uint64(hour + 5), at, "", "l6", "b2", uint32(1), uint64(7)})
	f.insert("reading_lookup (device_id, seq, time, raw, batch_id, leaf_index)", []any{"sw-1", uint64(5), at, "raw sw-1 5", "b2", uint32(0)})
	f.insert("metrics (device_id, seq, ts, time, metric, value)", []any{"sw-1", uint64(6), uint64(hour + 5), at, "temp", 6.0})
	if err := f.w.WriteEvents(ctx, []rule.Event{
		{ID: "00000000000000000000000000000001", Rule: "hot", Version: 1, Device: "sw-1", Kind: "fire", Seq: 4, Seqs: []uint64{2, 4}, Time: now},
		{ID: "00000000000000000000000000000002", Rule: "hot", Version: 1, Device: "sw-1", Kind: "fire", Seq: 2, Seqs: []uint64{1, 2}, Time: now},
		{ID: "00000000000000000000000000000003", Rule: "hot", Version: 1, Device: "sw-2", Kind: "fire", Seq: 3, Seqs: []uint64{3}, Time: now},
		{ID: "00000000000000000000000000000004", Rule: "hot", Version: 1, Device: "sw-2", Kind: "fire", Seq: 1, Seqs: []uint64{1}, Time: now},
	}); err != nil {
		t.Fatal(err)
	}
	// Rejects: one of sw-1 holding the bytes of its (covered) seq 9, one of sw-3.
	k, err := reading.GenerateKey(reading.Ed25519)
	if err != nil {
		t.Fatal(err)
	}
	var raw9 []byte
	for d := (reading.Device{ID: "sw-1", Key: k, Seq: 8}); d.Seq < 9; {
		if raw9, err = d.Next([]reading.Metric{{Name: "temp", Value: 1}}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.w.WriteRejects(ctx, []write.Reject{
		{ReceivedAt: time.Now(), Subject: reading.Subject("sw-1"), Device: "sw-1", Reason: "bad_signature", Raw: raw9},
		{ReceivedAt: time.Now(), Subject: reading.Subject("sw-3"), Device: "sw-3", Reason: "bad_signature", Raw: []byte("not a reading")},
	}); err != nil {
		t.Fatal(err)
	}

	e := New(ch, nil, nil, Config{Schema: clickhouse.Schema{Database: db}}, testlog.New(t))
	sw, err := e.Sweep(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if sw.Entries != 2 || sw.Readings != 4 || sw.More {
		t.Errorf("first sweep: %+v, want 2 entries and 4 readings (sw-1 3 and 4, sw-2 2 and 3)", sw)
	}
	for what, got := range map[string][2]uint64{
		"sw-1 erased under 7":          {f.count("SELECT count() FROM %s.readings WHERE device_id = 'sw-1' AND seq >= 3 AND raw = '' AND erased_by = 7"), 4},
		"sw-1 1 and 2 keep bytes":      {f.count("SELECT count() FROM %s.readings WHERE device_id = 'sw-1' AND seq < 3 AND raw != '' AND erased_by = 0"), 2},
		"sw-2 erased under 8":          {f.count("SELECT count() FROM %s.readings WHERE device_id = 'sw-2' AND seq >= 2 AND raw = '' AND erased_by = 8"), 2},
		"sw-2 1 keeps its bytes":       {f.count("SELECT count() FROM %s.readings WHERE device_id = 'sw-2' AND seq = 1 AND raw != '' AND erased_by = 0"), 1},
		"sw-3 keeps its bytes":         {f.count("SELECT count() FROM %s.readings WHERE device_id = 'sw-3' AND raw != ''"), 1},
		"lookup copies left in ranges": {f.count("SELECT count() FROM %s.reading_lookup WHERE (device_id = 'sw-1' AND seq >= 3 OR device_id = 'sw-2' AND seq >= 2) AND raw != ''"), 0},
		"lookup copies kept":           {f.count("SELECT count() FROM %s.reading_lookup WHERE raw != ''"), 4},
		"metric values left in ranges": {f.count("SELECT count() FROM %s.metrics WHERE device_id = 'sw-1' AND seq >= 3 OR device_id = 'sw-2' AND seq >= 2"), 0},
		"sw-1 minute rollups":          {f.count("SELECT countMerge(count) FROM %s.metrics_1m WHERE device_id = 'sw-1'"), 4},
		"sw-1 hour rollups":            {f.count("SELECT countMerge(count) FROM %s.metrics_1h WHERE device_id = 'sw-1'"), 4},
		"sw-2 hour rollups":            {f.count("SELECT countMerge(count) FROM %s.metrics_1h WHERE device_id = 'sw-2'"), 2},
		"sw-3 hour rollups":            {f.count("SELECT countMerge(count) FROM %s.metrics_1h WHERE device_id = 'sw-3'"), 2},
		"events left":                  {f.count("SELECT sum(toUInt64(reinterpretAsUInt8(substring(event_id, 16, 1)))) FROM %s.events"), 2 + 4},
		"sw-1 rejects with bytes":      {f.count("SELECT count() FROM %s.rejected WHERE device_id = 'sw-1' AND raw != ''"), 0},
		"sw-3 rejects with bytes":      {f.count("SELECT count() FROM %s.rejected WHERE device_id = 'sw-3' AND raw != ''"), 1},
		"entry 7 readings":             {f.count("SELECT readings FROM %s.erasures FINAL WHERE entry_index = 7"), 4},
		"entry 7 late":                 {f.count("SELECT late FROM %s.erasures FINAL WHERE entry_index = 7"), 4},
		"entry 8 late":                 {f.count("SELECT late FROM %s.erasures FINAL WHERE entry_index = 8"), 2},
		"entry 7 swept":                {f.count("SELECT toUInt64(swept_at > done_at - 5) FROM %s.erasures FINAL WHERE entry_index = 7"), 1},
	} {
		if got[0] != got[1] {
			t.Errorf("after the first sweep, %s: %d, want %d", what, got[0], got[1])
		}
	}

	// Later: sw-1's seq 7 and a redelivered copy of its seq 4, and a reading of sw-3.
	f.batch(3, [3]any{"sw-1", 7, hour + 6}, [3]any{"sw-1", 4, hour + 3}, [3]any{"sw-3", 6, hour + 1})
	if sw, err = e.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if sw.Entries != 1 || sw.Readings != 2 {
		t.Errorf("second sweep: %+v, want 1 entry and 2 readings", sw)
	}
	for what, got := range map[string][2]uint64{
		"sw-1 erased under 7":  {f.count("SELECT count() FROM %s.readings WHERE device_id = 'sw-1' AND seq >= 3 AND raw = '' AND erased_by = 7"), 6},
		"sw-1 with bytes":      {f.count("SELECT count() FROM %s.readings WHERE device_id = 'sw-1' AND raw != ''"), 2},
		"sw-3 with bytes":      {f.count("SELECT count() FROM %s.readings WHERE device_id = 'sw-3' AND raw != ''"), 2},
		"sw-1 metric values":   {f.count("SELECT count() FROM %s.metrics WHERE device_id = 'sw-1'"), 4},
		"sw-1 hour rollups":    {f.count("SELECT countMerge(count) FROM %s.metrics_1h WHERE device_id = 'sw-1'"), 4},
		"lookup with bytes":    {f.count("SELECT count() FROM %s.reading_lookup WHERE device_id = 'sw-1' AND raw != ''"), 2},
		"entry 7 readings":     {f.count("SELECT readings FROM %s.erasures FINAL WHERE entry_index = 7"), 6},
		"entry 7 late":         {f.count("SELECT late FROM %s.erasures FINAL WHERE entry_index = 7"), 6},
		"entry 8 readings":     {f.count("SELECT readings FROM %s.erasures FINAL WHERE entry_index = 8"), 2},
		"rows of entry 7 kept": {f.count("SELECT count() FROM %s.erasures FINAL WHERE entry_index = 7"), 1},
	} {
		if got[0] != got[1] {
			t.Errorf("after the second sweep, %s: %d, want %d", what, got[0], got[1])
		}
	}
	if e.newParts("readings") == "" {
		t.Error("after two sweeps, the next still reads every part of readings")
	}
	if sw, err = e.Sweep(ctx); err != nil || sw != (Swept{}) {
		t.Errorf("a sweep with nothing new: %+v, %v", sw, err)
	}
}
