package write

import (
	"context"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/anchorline/anchorline/pipeline/chain"
	"github.com/anchorline/anchorline/pipeline/verify"
	"github.com/anchorline/anchorline/schemas/reading"
	"github.com/anchorline/anchorline/schemas/rule"
)

// Reading is a verified reading ready for storage.
type Reading struct {
	Device     string
	Seq        uint64
	TS         uint64 // device time, Unix ms
	ReceivedAt time.Time
	Raw        []byte
	Leaf       [32]byte
	Prev       []byte // the reading's prev (DESIGN 2.1), for the chain check; not stored apart from raw
	Metrics    []reading.Metric
	Tags       map[string]string // the reading's tags, for the rules stage; stored only inside raw
	LeafIndex  uint32
}

// Batch is a flushed batch: its readings in leaf_index order and the Merkle root over them.
type Batch struct {
	ID       [16]byte
	Root     [32]byte
	Created  time.Time
	Worker   string
	Readings []Reading
}

// Reject is a message ingest refused.
type Reject struct {
	ReceivedAt time.Time
	Subject    string
	Device     string // if known
	Reason     verify.Reason
	Detail     string
	Raw        []byte
	Leaf       [32]byte // set for a reading whose bytes are not kept (no_consent); zero otherwise
}

// Writer writes to one database.
type Writer struct {
	conn driver.Conn
	db   string
}

// New returns a writer for database.
func New(conn driver.Conn, database string) *Writer { return &Writer{conn: conn, db: database} }

// Ping checks that ClickHouse answers.
func (w *Writer) Ping(ctx context.Context) error { return w.conn.Ping(ctx) }

// WriteBatch inserts the batch's readings and metrics, then its `batches` row. Each insert is one
// block; if any fails the caller retries the whole batch, and the readings of a retried batch
// may be stored twice under the same batch id and leaf index (visible, removable by GROUP BY).
func (w *Writer) WriteBatch(ctx context.Context, b *Batch) error {
	n := len(b.Readings)
	if n == 0 {
		return nil
	}
	var (
		devs     = make([]string, n)
		seqs     = make([]uint64, n)
		tss      = make([]uint64, n)
		times    = make([]time.Time, n)
		received = make([]time.Time, n)
		raws     = make([]string, n)
		leaves   = make([]string, n)
		batchIDs = make([]string, n)
		indexes  = make([]uint32, n)
	)
	id := string(b.ID[:])
	metrics := 0
	tsMin, tsMax := b.Readings[0].TS, b.Readings[0].TS
	for i, r := range b.Readings {
		devs[i], seqs[i], tss[i] = r.Device, r.Seq, r.TS
		times[i] = time.UnixMilli(int64(r.TS))
		received[i] = r.ReceivedAt
		raws[i], leaves[i] = string(r.Raw), string(r.Leaf[:])
		batchIDs[i], indexes[i] = id, r.LeafIndex
		metrics += len(r.Metrics)
		tsMin, tsMax = min(tsMin, r.TS), max(tsMax, r.TS)
	}
	if err := w.columns(ctx, "readings (device_id, seq, ts, time, received_at, raw, leaf, batch_id, leaf_index)",
		devs, seqs, tss, times, received, raws, leaves, batchIDs, indexes); err != nil {
		return err
	}

	mDevs := make([]string, 0, metrics)
	mSeqs := make([]uint64, 0, metrics)
	mTSs := make([]uint64, 0, metrics)
	mTimes := make([]time.Time, 0, metrics)
	names := make([]string, 0, metrics)
	values := make([]float64, 0, metrics)
	for i, r := range b.Readings {
		for _, m := range r.Metrics {
			mDevs, mSeqs, mTSs, mTimes = append(mDevs, r.Device), append(mSeqs, r.Seq), append(mTSs, r.TS), append(mTimes, times[i])
			names, values = append(names, m.Name), append(values, m.Value)
		}
	}
	if err := w.columns(ctx, "metrics (device_id, seq, ts, time, metric, value)",
		mDevs, mSeqs, mTSs, mTimes, names, values); err != nil {
		return err
	}
	return w.columns(ctx, "batches (batch_id, root, size, created_at, worker, ts_min, ts_max)",
		[]string{id}, []string{string(b.Root[:])}, []uint32{uint32(n)}, []time.Time{b.Created}, []string{b.Worker},
		[]uint64{tsMin}, []uint64{tsMax})
}

// WriteRejects inserts refused messages.
func (w *Writer) WriteRejects(ctx context.Context, rs []Reject) error {
	if len(rs) == 0 {
		return nil
	}
	n := len(rs)
	at, subj, dev, reason, detail, raw, leaf := make([]time.Time, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	for i, r := range rs {
		at[i], subj[i], dev[i], reason[i], detail[i], raw[i], leaf[i] = r.ReceivedAt, r.Subject, r.Device, string(r.Reason), r.Detail, string(r.Raw), string(r.Leaf[:])
	}
	return w.columns(ctx, "rejected (received_at, subject, device_id, reason, detail, raw, leaf)", at, subj, dev, reason, detail, raw, leaf)
}

// columns inserts one block, column by column.
func (w *Writer) columns(ctx context.Context, table string, cols ...any) error {
	b, err := w.conn.PrepareBatch(ctx, "INSERT INTO "+w.db+"."+table)
	if err != nil {
		return fmt.Errorf("insert into %s: %w", table, err)
	}
	for i, c := range cols {
		if err := b.Column(i).Append(c); err != nil {
			_ = b.Abort()
			return fmt.Errorf("insert into %s: column %d: %w", table, i, err)
		}
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("insert into %s: %w", table, err)
	}
	return nil
}

// WriteAnomalies inserts broken chain links (pipeline/chain decides them).
func (w *Writer) WriteAnomalies(ctx context.Context, as []chain.Anomaly) error {
	if len(as) == 0 {
		return nil
	}
	n := len(as)
	at, dev, seq, kind, exp, got, prevSeq, batch, worker := make([]time.Time, n), make([]string, n), make([]uint64, n), make([]string, n),
		make([]string, n), make([]string, n), make([]uint64, n), make([]string, n), make([]string, n)
	for i, a := range as {
		at[i], dev[i], seq[i], kind[i] = a.DetectedAt, a.Device, a.Seq, string(a.Kind)
		exp[i], got[i], prevSeq[i], batch[i], worker[i] = string(a.Expected), string(a.Got), a.PrevSeq, string(a.BatchID[:]), a.Worker
	}
	return w.columns(ctx, "anomalies (detected_at, device_id, seq, kind, expected, got, prev_seq, batch_id, worker)",
		at, dev, seq, kind, exp, got, prevSeq, batch, worker)
}

// Anchor is a committed anchor, as the anchor service records it.
type Anchor struct {
	ID               [16]byte
	Root             [32]byte
	Batches          uint32 // batches it covers
	Readings         uint64 // readings in those batches
	Height, LogIndex uint64 // the ledger block and log position of its entry
	TxHash           string // hex
	Entry            []byte // the ledger entry (DESIGN 2.3)
	AnchoredAt       time.Time
}

// WriteAnchor records a committed anchor and its batches (batch_index = position in batchIDs):
// the `batch_anchors` rows first, then the `anchors` row, so that an anchor listed in `anchors`
// has all its batch rows. Writing the same anchor again is harmless: both tables replace by key.
func (w *Writer) WriteAnchor(ctx context.Context, a Anchor, batchIDs [][16]byte) error {
	n := len(batchIDs)
	ids, anchorIDs, idx := make([]string, n), make([]string, n), make([]uint32, n)
	for i, id := range batchIDs {
		ids[i], anchorIDs[i], idx[i] = string(id[:]), string(a.ID[:]), uint32(i)
	}
	if n > 0 {
		if err := w.columns(ctx, "batch_anchors (batch_id, anchor_id, batch_index)", ids, anchorIDs, idx); err != nil {
			return fmt.Errorf("record anchor %x: %w", a.ID, err)
		}
	}
	if err := w.columns(ctx, "anchors (anchor_id, root, batches, readings, height, log_index, tx_hash, entry, anchored_at)",
		[]string{string(a.ID[:])}, []string{string(a.Root[:])}, []uint32{a.Batches}, []uint64{a.Readings}, []uint64{a.Height},
		[]uint64{a.LogIndex}, []string{a.TxHash}, []string{string(a.Entry)}, []time.Time{a.AnchoredAt}); err != nil {
		return fmt.Errorf("record anchor %x: %w", a.ID, err)
	}
	return nil
}

// WriteEvents inserts rule events (the rules stage decides them). Writing an event again is
// harmless: `events` replaces by event id.
func (w *Writer) WriteEvents(ctx context.Context, evs []rule.Event) error {
	if len(evs) == 0 {
		return nil
	}
	n := len(evs)
	id, ruleID, version, index, height, dev, kind := make([]string, n), make([]string, n), make([]uint64, n), make([]uint64, n), make([]uint64, n), make([]string, n), make([]string, n)
	seq, armed, seqs, partial, at, ms, lastSeen, actions := make([]uint64, n), make([]uint64, n), make([][]uint64, n), make([]uint8, n),
		make([]time.Time, n), make([]uint64, n), make([]uint64, n), make([][]string, n)
	for i, e := range evs {
		raw, err := hex.DecodeString(e.ID)
		if err != nil || len(raw) != 16 {
			return fmt.Errorf("insert into events: event id %q is not 16 bytes of hex", e.ID)
		}
		id[i], ruleID[i], version[i], index[i], height[i], dev[i], kind[i] = string(raw), e.Rule, e.Version, e.RuleIndex, e.Height, e.Device, e.Kind
		seq[i], armed[i], seqs[i], at[i], ms[i], lastSeen[i], actions[i] = e.Seq, e.ArmedAt, e.Seqs, time.UnixMilli(e.Time), uint64(e.Time), uint64(e.LastSeen), e.Actions
		if e.Partial {
			partial[i] = 1
		}
	}
	return w.columns(ctx, "events (event_id, rule_id, version, rule_index, height, device_id, kind, seq, armed_at, seqs, partial, time, time_ms, last_seen_ms, actions)",
		id, ruleID, version, index, height, dev, kind, seq, armed, seqs, partial, at, ms, lastSeen, actions)
}
