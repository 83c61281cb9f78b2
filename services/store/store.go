package store

import (
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/anchorline/anchorline/schemas/lookup"
	"github.com/anchorline/anchorline/schemas/rule"
)

// Store reads one database; it writes nothing (the readings' writes are pipeline/write's;
// services/access and services/erasure write what consent and erasure change).
// Binary keys (batch and anchor ids) are passed to queries as hex and compared with unhex(?):
// binary bytes do not survive parameter quoting.
type Store struct {
	conn driver.Conn
	db   string
}

// New returns a store over database.
func New(conn driver.Conn, database string) *Store { return &Store{conn: conn, db: database} }

// Erased is what a reading's row keeps once its bytes are erased.
type Erased struct {
	TS       uint64   // device time
	Leaf     [32]byte // its leaf in the batch
	ErasedBy uint64   // the log index of the erase entry (0: not erased)
}

// ErasedOf returns what the row of a device's reading in a batch keeps after erasure.
func (s *Store) ErasedOf(ctx context.Context, dev string, seq uint64, batch [16]byte) (Erased, error) {
	var e Erased
	var leaf string
	err := s.conn.QueryRow(ctx, "SELECT ts, leaf, erased_by FROM "+s.t("readings")+" WHERE device_id = ? AND seq = ? AND batch_id = unhex(?) LIMIT 1",
		dev, seq, hex.EncodeToString(batch[:])).Scan(&e.TS, &leaf, &e.ErasedBy)
	if errors.Is(err, sql.ErrNoRows) {
		return e, fmt.Errorf("%w: no row of %s seq %d in batch %x", lookup.ErrNotFound, dev, seq, batch)
	}
	if err != nil {
		return e, err
	}
	copy(e.Leaf[:], leaf)
	return e, nil
}

// ErasedKey names one stored row of a reading: its device's seq in a batch.
type ErasedKey struct {
	Seq   uint64
	Batch [16]byte
}

// ErasedInRange returns what the erased rows of a device's readings with seqs in [from, to]
// keep (one query, by readings' primary key).
func (s *Store) ErasedInRange(ctx context.Context, dev string, from, to uint64) (map[ErasedKey]Erased, error) {
	rows, err := s.conn.Query(ctx, "SELECT seq, batch_id, ts, leaf, erased_by FROM "+s.t("readings")+
		" WHERE device_id = ? AND seq >= ? AND seq <= ? AND erased_by != 0", dev, from, to)
	if err != nil {
		return nil, fmt.Errorf("erased readings of %s from %d to %d: %w", dev, from, to, err)
	}
	defer rows.Close()
	out := map[ErasedKey]Erased{}
	for rows.Next() {
		var k ErasedKey
		var e Erased
		var batch, leaf string
		if err := rows.Scan(&k.Seq, &batch, &e.TS, &leaf, &e.ErasedBy); err != nil {
			return nil, fmt.Errorf("erased readings of %s from %d to %d: %w", dev, from, to, err)
		}
		copy(k.Batch[:], batch)
		copy(e.Leaf[:], leaf)
		out[k] = e
	}
	return out, rows.Err()
}

// ErasuresDone returns the erase entries carried out (the erasures table, services/erasure):
// the readings each erased, by log index.
func (s *Store) ErasuresDone(ctx context.Context) (map[uint64]uint64, error) {
	rows, err := s.conn.Query(ctx, "SELECT entry_index, readings FROM "+s.db+".erasures FINAL")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[uint64]uint64{}
	for rows.Next() {
		var i, n uint64
		if err := rows.Scan(&i, &n); err != nil {
			return nil, err
		}
		out[i] = n
	}
	return out, rows.Err()
}

// Ping checks that ClickHouse answers.
func (s *Store) Ping(ctx context.Context) error { return s.conn.Ping(ctx) }

func (s *Store) t(table string) string { return s.db + "." + table }

// ReadingRow is a stored reading.
type ReadingRow struct {
	Device     string
	Seq, TS    uint64
	ReceivedAt time.Time
	Raw        []byte
	Leaf       [32]byte
	BatchID    [16]byte
	LeafIndex  uint32
}

const readingCols = "device_id, seq, ts, received_at, raw, leaf, batch_id, leaf_index"

// scanReading scans a row of readingCols.
func scanReading(sc interface{ Scan(...any) error }) (ReadingRow, error) {
	var r ReadingRow
	var raw, leaf, batch string
	if err := sc.Scan(&r.Device, &r.Seq, &r.TS, &r.ReceivedAt, &raw, &leaf, &batch, &r.LeafIndex); err != nil {
		return r, err
	}
	r.Raw = []byte(raw)
	copy(r.Leaf[:], leaf)
	copy(r.BatchID[:], batch)
	return r, nil
}

// lookupCols are the columns of reading_lookup (and of readings) a proof needs.
const lookupCols = "device_id, seq, raw, batch_id, leaf_index"

// scanLookup scans a row of lookupCols.
func scanLookup(sc interface{ Scan(...any) error }) (ReadingRow, error) {
	var r ReadingRow
	var raw, batch string
	if err := sc.Scan(&r.Device, &r.Seq, &raw, &batch, &r.LeafIndex); err != nil {
		return r, err
	}
	r.Raw = []byte(raw)
	copy(r.BatchID[:], batch)
	return r, nil
}

// Reading returns a stored reading. A reading stored twice (at-least-once delivery) is
// returned from an anchored batch if one is.
func (s *Store) Reading(ctx context.Context, device string, seq uint64) (ReadingRow, error) {
	rows, err := s.conn.Query(ctx, "SELECT "+readingCols+" FROM "+s.t("readings")+
		" WHERE device_id = ? AND seq = ? ORDER BY batch_id LIMIT 16", device, seq)
	if err != nil {
		return ReadingRow{}, fmt.Errorf("reading %s/%d: %w", device, seq, err)
	}
	var found []ReadingRow
	for rows.Next() {
		r, err := scanReading(rows)
		if err != nil {
			rows.Close()
			return ReadingRow{}, fmt.Errorf("reading %s/%d: %w", device, seq, err)
		}
		found = append(found, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return ReadingRow{}, fmt.Errorf("reading %s/%d: %w", device, seq, err)
	}
	if len(found) == 0 {
		return ReadingRow{}, fmt.Errorf("%w: reading %s seq %d", lookup.ErrNotFound, device, seq)
	}
	for _, r := range found[:len(found)-1] {
		if _, _, err := s.BatchAnchor(ctx, r.BatchID); err == nil {
			return r, nil
		}
	}
	return found[len(found)-1], nil
}

// ReadingKey names a reading: its device and seq.
type ReadingKey struct {
	Device string
	Seq    uint64
}

// validDevice is the device id syntax (DESIGN 2.1): ids are written into ReadingsOf's query.
var validDevice = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// ReadingsOf returns the stored rows of each key that has any (a reading stored twice has two),
// ordered by batch id, in one query of reading_lookup (the keys it lacks, as for readings stored
// while its view was missing, from readings): a point lookup there costs ClickHouse about the
// same for one key as for dozens (it reads a granule of 256 rows per key, and pays the query's
// fixed cost once). The rows carry device, seq, raw, batch id and leaf index.
func (s *Store) ReadingsOf(ctx context.Context, keys []ReadingKey) (map[ReadingKey][]ReadingRow, error) {
	out := make(map[ReadingKey][]ReadingRow, len(keys))
	if err := s.readingsOf(ctx, "reading_lookup", keys, out); err != nil {
		return nil, err
	}
	var missing []ReadingKey
	for _, k := range keys {
		if _, ok := out[k]; !ok {
			missing = append(missing, k)
		}
	}
	if err := s.readingsOf(ctx, "readings", missing, out); err != nil {
		return nil, err
	}
	return out, nil
}

func (s *Store) readingsOf(ctx context.Context, table string, keys []ReadingKey, out map[ReadingKey][]ReadingRow) error {
	if len(keys) == 0 {
		return nil
	}
	var in strings.Builder
	for i, k := range keys {
		if !validDevice.MatchString(k.Device) {
			return fmt.Errorf("reading %s/%d: device ids match %s", k.Device, k.Seq, validDevice)
		}
		if i > 0 {
			in.WriteString(", ")
		}
		fmt.Fprintf(&in, "('%s', %d)", k.Device, k.Seq)
	}
	// One thread: the query reads a granule or two per key, and on 18.16 each further thread
	// (a stream per core by default) adds to the server's fixed cost of a query.
	qctx := clickhouse.Context(ctx, clickhouse.WithSettings(clickhouse.Settings{"max_threads": 1}))
	rows, err := s.conn.Query(qctx, "SELECT "+lookupCols+" FROM "+s.t(table)+
		" WHERE (device_id, seq) IN ("+in.String()+") ORDER BY device_id, seq, batch_id")
	if err != nil {
		return fmt.Errorf("readings (%d keys): %w", len(keys), err)
	}
	defer rows.Close()
	for rows.Next() {
		r, err := scanLookup(rows)
		if err != nil {
			return fmt.Errorf("readings (%d keys): %w", len(keys), err)
		}
		k := ReadingKey{r.Device, r.Seq}
		out[k] = append(out[k], r)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("readings (%d keys): %w", len(keys), err)
	}
	return nil
}

// ReadingsRange returns the stored rows of a device's readings with seqs in [from, to] (a
// reading stored twice has two), ordered by seq and batch id: a range read of reading_lookup's
// primary key (its view writes every row of readings in the same insert). The rows carry
// device, seq, raw, batch id and leaf index. It returns at most limit rows and reports whether
// there were more.
func (s *Store) ReadingsRange(ctx context.Context, device string, from, to uint64, limit int) ([]ReadingRow, bool, error) {
	rows, err := s.conn.Query(ctx, "SELECT "+lookupCols+" FROM "+s.t("reading_lookup")+
		" WHERE device_id = ? AND seq >= ? AND seq <= ? ORDER BY seq, batch_id LIMIT ?", device, from, to, uint64(limit)+1)
	if err != nil {
		return nil, false, fmt.Errorf("readings of %s from %d to %d: %w", device, from, to, err)
	}
	defer rows.Close()
	var out []ReadingRow
	for rows.Next() {
		r, err := scanLookup(rows)
		if err != nil {
			return nil, false, fmt.Errorf("readings of %s from %d to %d: %w", device, from, to, err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, false, fmt.Errorf("readings of %s from %d to %d: %w", device, from, to, err)
	}
	if len(out) > limit {
		return out[:limit], true, nil
	}
	return out, false, nil
}

// BatchRow is a stored batch.
type BatchRow struct {
	ID        [16]byte
	Root      [32]byte
	Size      uint32
	CreatedAt time.Time
	Worker    string
}

func scanBatch(sc interface{ Scan(...any) error }) (BatchRow, error) {
	var b BatchRow
	var id, root string
	if err := sc.Scan(&id, &root, &b.Size, &b.CreatedAt, &b.Worker); err != nil {
		return b, err
	}
	copy(b.ID[:], id)
	copy(b.Root[:], root)
	return b, nil
}

// Batch returns a batch's record.
func (s *Store) Batch(ctx context.Context, id [16]byte) (BatchRow, error) {
	rows, err := s.conn.Query(ctx, "SELECT batch_id, root, size, created_at, worker FROM "+s.t("batches")+" FINAL WHERE batch_id = unhex(?) LIMIT 1", hex.EncodeToString(id[:]))
	if err != nil {
		return BatchRow{}, fmt.Errorf("batch %x: %w", id, err)
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return BatchRow{}, fmt.Errorf("batch %x: %w", id, err)
		}
		return BatchRow{}, fmt.Errorf("%w: batch %x", lookup.ErrNotFound, id)
	}
	b, err := scanBatch(rows)
	if err != nil {
		return BatchRow{}, fmt.Errorf("batch %x: %w", id, err)
	}
	return b, nil
}

// BatchLeaves returns the leaves of a batch in leaf_index order, one per index even where a
// retried insert stored a reading twice. It fails if an index is missing. It reads the batch's
// row of batch_leaves (one point lookup), or, for a batch that has none, its rows of readings.
func (s *Store) BatchLeaves(ctx context.Context, id [16]byte) ([][32]byte, error) {
	out, err := s.leavesRow(ctx, id)
	if err != nil || out != nil {
		return out, err
	}
	return s.scanLeaves(ctx, id)
}

// leavesRow reads a batch's leaves from batch_leaves: nil without an error if it has no row
// that holds exactly one whole leaf per index (a reading stored twice in one insert; or a row
// of the view before migration 0013, which cut a leaf's trailing zero bytes). A batch may have
// two rows until ReplacingMergeTree merges them (a retried insert, or 0013's repair of a cut
// row): any whole one serves.
func (s *Store) leavesRow(ctx context.Context, id [16]byte) ([][32]byte, error) {
	rows, err := s.conn.Query(ctx, "SELECT n, distinct_indexes, max_index, leaves FROM "+s.t("batch_leaves")+" WHERE batch_id = unhex(?) LIMIT 16", hex.EncodeToString(id[:]))
	if err != nil {
		return nil, fmt.Errorf("batch %x leaves: %w", id, err)
	}
	defer rows.Close()
	for rows.Next() {
		var n, distinct, maxIndex uint32
		var leaves string
		if err := rows.Scan(&n, &distinct, &maxIndex, &leaves); err != nil {
			return nil, fmt.Errorf("batch %x leaves: %w", id, err)
		}
		if n == 0 || n != distinct || maxIndex != n-1 || len(leaves) != 32*int(n) {
			continue
		}
		out := make([][32]byte, n)
		for i := range out {
			copy(out[i][:], leaves[32*i:])
		}
		return out, nil
	}
	return nil, rows.Err()
}

// scanLeaves reads a batch's leaves from its rows of readings.
func (s *Store) scanLeaves(ctx context.Context, id [16]byte) ([][32]byte, error) {
	rows, err := s.conn.Query(ctx, "SELECT leaf_index, any(leaf) FROM "+s.t("readings")+" WHERE batch_id = unhex(?) GROUP BY leaf_index ORDER BY leaf_index", hex.EncodeToString(id[:]))
	if err != nil {
		return nil, fmt.Errorf("batch %x leaves: %w", id, err)
	}
	defer rows.Close()
	var out [][32]byte
	for rows.Next() {
		var idx uint32
		var leaf string
		if err := rows.Scan(&idx, &leaf); err != nil {
			return nil, fmt.Errorf("batch %x leaves: %w", id, err)
		}
		if int(idx) != len(out) {
			return nil, fmt.Errorf("batch %x: leaf %d is missing from readings", id, len(out))
		}
		var l [32]byte
		copy(l[:], leaf)
		out = append(out, l)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("batch %x leaves: %w", id, err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: readings of batch %x", lookup.ErrNotFound, id)
	}
	return out, nil
}

// UnanchoredBatches returns up to limit batches created before olderThan that no anchor covers,
// oldest first.
func (s *Store) UnanchoredBatches(ctx context.Context, olderThan time.Time, limit int) ([]BatchRow, error) {
	rows, err := s.conn.Query(ctx, fmt.Sprintf("SELECT batch_id, root, size, created_at, worker FROM %s FINAL WHERE created_at < toDateTime(%d) AND batch_id NOT IN (SELECT batch_id FROM %s) ORDER BY batch_id LIMIT %d",
		s.t("batches"), olderThan.Unix(), s.t("batch_anchors"), max(limit, 1)))
	if err != nil {
		return nil, fmt.Errorf("unanchored batches: %w", err)
	}
	defer rows.Close()
	var out []BatchRow
	for rows.Next() {
		b, err := scanBatch(rows)
		if err != nil {
			return nil, fmt.Errorf("unanchored batches: %w", err)
		}
		out = append(out, b)
	}
	return out, rows.Err()
}

// BatchAnchor returns the anchor covering a batch (the earliest, if two do) and the batch's
// position in it.
func (s *Store) BatchAnchor(ctx context.Context, batchID [16]byte) (anchorID [16]byte, batchIndex uint32, err error) {
	rows, err := s.conn.Query(ctx, "SELECT anchor_id, batch_index FROM "+s.t("batch_anchors")+" WHERE batch_id = unhex(?) ORDER BY anchor_id LIMIT 1", hex.EncodeToString(batchID[:]))
	if err != nil {
		return anchorID, 0, fmt.Errorf("anchor of batch %x: %w", batchID, err)
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return anchorID, 0, fmt.Errorf("anchor of batch %x: %w", batchID, err)
		}
		return anchorID, 0, fmt.Errorf("%w: batch %x", lookup.ErrNotAnchored, batchID)
	}
	var a string
	if err := rows.Scan(&a, &batchIndex); err != nil {
		return anchorID, 0, fmt.Errorf("anchor of batch %x: %w", batchID, err)
	}
	copy(anchorID[:], a)
	return anchorID, batchIndex, nil
}

// AnchoredBatches returns which of ids are already covered by an anchor.
func (s *Store) AnchoredBatches(ctx context.Context, ids [][16]byte) (map[[16]byte]bool, error) {
	out := map[[16]byte]bool{}
	if len(ids) == 0 {
		return out, nil
	}
	// Ids go as hex: binary strings do not survive the array parameter's quoting.
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = strings.ToUpper(hex.EncodeToString(id[:]))
	}
	rows, err := s.conn.Query(ctx, "SELECT DISTINCT batch_id FROM "+s.t("batch_anchors")+" WHERE has(?, hex(batch_id))", keys)
	if err != nil {
		return nil, fmt.Errorf("anchored batches: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var b string
		if err := rows.Scan(&b); err != nil {
			return nil, fmt.Errorf("anchored batches: %w", err)
		}
		var id [16]byte
		copy(id[:], b)
		out[id] = true
	}
	return out, rows.Err()
}

// AnchorRow is a committed anchor as stored (the anchor service records it as a write.Anchor).
type AnchorRow struct {
	ID               [16]byte
	Root             [32]byte
	Batches          uint32
	Readings         uint64
	Height, LogIndex uint64
	TxHash           string
	Entry            []byte
	AnchoredAt       time.Time
}

const anchorCols = "anchor_id, root, batches, readings, height, log_index, tx_hash, entry, anchored_at"

func scanAnchor(sc interface{ Scan(...any) error }) (AnchorRow, error) {
	var a AnchorRow
	var id, root, entry string
	if err := sc.Scan(&id, &root, &a.Batches, &a.Readings, &a.Height, &a.LogIndex, &a.TxHash, &entry, &a.AnchoredAt); err != nil {
		return a, err
	}
	copy(a.ID[:], id)
	copy(a.Root[:], root)
	a.Entry = []byte(entry)
	return a, nil
}

// Anchor returns a committed anchor.
func (s *Store) Anchor(ctx context.Context, id [16]byte) (AnchorRow, error) {
	rows, err := s.conn.Query(ctx, "SELECT "+anchorCols+" FROM "+s.t("anchors")+" FINAL WHERE anchor_id = unhex(?) LIMIT 1", hex.EncodeToString(id[:]))
	if err != nil {
		return AnchorRow{}, fmt.Errorf("anchor %x: %w", id, err)
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return AnchorRow{}, fmt.Errorf("anchor %x: %w", id, err)
		}
		return AnchorRow{}, fmt.Errorf("%w: anchor %x", lookup.ErrNotFound, id)
	}
	a, err := scanAnchor(rows)
	if err != nil {
		return AnchorRow{}, fmt.Errorf("anchor %x: %w", id, err)
	}
	return a, nil
}

// AnchorBatches returns an anchor's batches in batch_index order.
func (s *Store) AnchorBatches(ctx context.Context, id [16]byte) ([]BatchRow, error) {
	ids, idx, err := s.anchorBatchIDs(ctx, id)
	if err != nil {
		return nil, err
	}
	for i := range idx {
		if int(idx[i]) != i {
			return nil, fmt.Errorf("anchor %x: batch index %d is missing", id, i)
		}
	}
	if len(ids) == 0 {
		return nil, fmt.Errorf("%w: batches of anchor %x", lookup.ErrNotFound, id)
	}
	// The batches' records in one query (not one per batch: an anchor holds many).
	rows, err := s.conn.Query(ctx, "SELECT batch_id, root, size, created_at, worker FROM "+s.t("batches")+" FINAL WHERE batch_id IN (SELECT batch_id FROM "+
		s.t("batch_anchors")+" WHERE anchor_id = unhex(?))", hex.EncodeToString(id[:]))
	if err != nil {
		return nil, fmt.Errorf("batch records of anchor %x: %w", id, err)
	}
	defer rows.Close()
	recs := make(map[[16]byte]BatchRow, len(ids))
	for rows.Next() {
		b, err := scanBatch(rows)
		if err != nil {
			return nil, fmt.Errorf("batch records of anchor %x: %w", id, err)
		}
		recs[b.ID] = b
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("batch records of anchor %x: %w", id, err)
	}
	out := make([]BatchRow, len(ids))
	for i, bid := range ids {
		b, ok := recs[bid]
		if !ok {
			return nil, fmt.Errorf("%w: batch %x", lookup.ErrNotFound, bid)
		}
		out[i] = b
	}
	return out, nil
}

// anchorBatchIDs returns the ids of an anchor's batches and their batch indexes, in batch
// index order.
func (s *Store) anchorBatchIDs(ctx context.Context, id [16]byte) ([][16]byte, []uint32, error) {
	rows, err := s.conn.Query(ctx, "SELECT batch_index, batch_id FROM "+s.t("batch_anchors")+" FINAL WHERE anchor_id = unhex(?) ORDER BY batch_index", hex.EncodeToString(id[:]))
	if err != nil {
		return nil, nil, fmt.Errorf("batches of anchor %x: %w", id, err)
	}
	defer rows.Close()
	var ids [][16]byte
	var idx []uint32
	for rows.Next() {
		var i uint32
		var b string
		if err := rows.Scan(&i, &b); err != nil {
			return nil, nil, fmt.Errorf("batches of anchor %x: %w", id, err)
		}
		var bid [16]byte
		copy(bid[:], b)
		ids, idx = append(ids, bid), append(idx, i)
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("batches of anchor %x: %w", id, err)
	}
	return ids, idx, nil
}

// Counts summarises the tables for status.
type Counts struct {
	Readings, Rejected, Batches, Anchors, UnanchoredBatches uint64
	Duplicates                                              uint64 // rows beyond one per (device_id, seq)
	Anomalies                                               uint64 // chain breaks
	LastAnchor                                              *AnchorRow
}

// Counts counts rows; cheap enough for a status page on tables of millions of rows.
func (s *Store) Counts(ctx context.Context) (Counts, error) {
	var c Counts
	for q, dst := range map[string]*uint64{
		"SELECT count() FROM " + s.t("readings"):           &c.Readings,
		"SELECT count() FROM " + s.t("rejected"):           &c.Rejected,
		"SELECT count() FROM " + s.t("batches") + " FINAL": &c.Batches,
		"SELECT count() FROM " + s.t("anchors") + " FINAL": &c.Anchors,
		"SELECT count() FROM " + s.t("batches") + " FINAL WHERE batch_id NOT IN (SELECT batch_id FROM " + s.t("batch_anchors") + ")": &c.UnanchoredBatches,
		"SELECT toUInt64(count() - uniqExact(device_id, seq)) FROM " + s.t("readings"):                                               &c.Duplicates,
		"SELECT count() FROM " + s.t("anomalies"):                                                                                    &c.Anomalies,
	} {
		if err := s.conn.QueryRow(ctx, q).Scan(dst); err != nil {
			return c, fmt.Errorf("counts: %w", err)
		}
	}
	rows, err := s.conn.Query(ctx, "SELECT "+anchorCols+" FROM "+s.t("anchors")+" ORDER BY height DESC LIMIT 1")
	if err != nil {
		return c, fmt.Errorf("last anchor: %w", err)
	}
	defer rows.Close()
	if rows.Next() {
		a, err := scanAnchor(rows)
		if err != nil {
			return c, fmt.Errorf("last anchor: %w", err)
		}
		c.LastAnchor = &a
	}
	return c, rows.Err()
}

// Event returns a rule event by id (the `events` table folded by FINAL).
func (s *Store) Event(ctx context.Context, id [16]byte) (rule.Event, error) {
	rows, err := s.conn.Query(ctx, "SELECT rule_id, version, rule_index, height, device_id, kind, seq, armed_at, seqs, partial, time_ms, last_seen_ms, actions FROM "+
		s.t("events")+" FINAL WHERE event_id = unhex(?) LIMIT 1", hex.EncodeToString(id[:]))
	if err != nil {
		return rule.Event{}, fmt.Errorf("event %x: %w", id, err)
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return rule.Event{}, fmt.Errorf("event %x: %w", id, err)
		}
		return rule.Event{}, fmt.Errorf("%w: event %x", lookup.ErrNotFound, id)
	}
	e := rule.Event{ID: hex.EncodeToString(id[:])}
	var partial uint8
	var at, lastSeen uint64
	if err := rows.Scan(&e.Rule, &e.Version, &e.RuleIndex, &e.Height, &e.Device, &e.Kind, &e.Seq, &e.ArmedAt, &e.Seqs, &partial, &at, &lastSeen, &e.Actions); err != nil {
		return rule.Event{}, fmt.Errorf("event %x: %w", id, err)
	}
	e.Partial, e.Time, e.LastSeen = partial == 1, int64(at), int64(lastSeen)
	return e, nil
}
