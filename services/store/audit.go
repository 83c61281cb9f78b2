package store

import (
	"context"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/anchorline/anchorline/anchor/audit"
)

// Audit is the store as the audit reads it (audit.Source).
type Audit struct{ s *Store }

// Audit returns the store as an audit source.
func (s *Store) Audit() Audit { return Audit{s} }

// Batches returns the batch records whose device times overlap [from, to] (Unix ms), holding
// readings of device if it is set.
func (a Audit) Batches(ctx context.Context, from, to uint64, device string) ([]audit.Batch, error) {
	q := "SELECT batch_id, root, size, created_at, worker, ts_max FROM " + a.s.t("batches") + " FINAL WHERE ts_max >= ? AND ts_min <= ?"
	args := []any{from, to}
	if device != "" {
		q += " AND batch_id IN (SELECT batch_id FROM " + a.s.t("readings") + " WHERE device_id = ? AND ts >= ? AND ts <= ?)"
		args = append(args, device, from, to)
	}
	rows, err := a.s.conn.Query(ctx, q+" ORDER BY created_at, batch_id", args...)
	if err != nil {
		return nil, fmt.Errorf("audit: batches: %w", err)
	}
	defer rows.Close()
	var out []audit.Batch
	for rows.Next() {
		b, err := scanAuditBatch(rows)
		if err != nil {
			return nil, fmt.Errorf("audit: batches: %w", err)
		}
		out = append(out, b)
	}
	return out, rows.Err()
}

const auditReadingCols = "device_id, seq, ts, raw, leaf, batch_id, leaf_index, erased_by"

// scanAuditBatch scans batch_id, root, size, created_at, worker, ts_max.
func scanAuditBatch(sc interface{ Scan(...any) error }) (audit.Batch, error) {
	var id, root, worker string
	var b audit.Batch
	if err := sc.Scan(&id, &root, &b.Size, &b.CreatedAt, &worker, &b.TSMax); err != nil {
		return b, err
	}
	copy(b.ID[:], id)
	copy(b.Root[:], root)
	return b, nil
}

// Expired returns what retention dropped of the readings: the months (partitions) dropped and
// the end of the latest, and the positions recorded of readings dropped from batches holding
// later ones.
func (a Audit) Expired(ctx context.Context) (audit.Expiry, error) {
	e := audit.Expiry{Months: map[uint32]bool{}, Positions: map[[16]byte]map[uint32]bool{}}
	rows, err := a.s.conn.Query(ctx, "SELECT partition, before FROM "+a.s.t("expired")+" WHERE table_name = 'readings'")
	if err != nil {
		return e, fmt.Errorf("audit: expired: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var p string
		var before time.Time
		if err := rows.Scan(&p, &before); err != nil {
			return e, fmt.Errorf("audit: expired: %w", err)
		}
		m, err := strconv.ParseUint(p, 10, 32)
		if err != nil {
			return e, fmt.Errorf("audit: expired: partition %q of readings is not a month YYYYMM", p)
		}
		e.Months[uint32(m)] = true
		if before.After(e.Before) {
			e.Before = before
		}
	}
	if err := rows.Err(); err != nil {
		return e, fmt.Errorf("audit: expired: %w", err)
	}
	rows.Close()
	if len(e.Months) == 0 {
		return e, nil
	}
	prows, err := a.s.conn.Query(ctx, "SELECT batch_id, leaf_index FROM "+a.s.t("expired_positions"))
	if err != nil {
		return e, fmt.Errorf("audit: expired positions: %w", err)
	}
	defer prows.Close()
	for prows.Next() {
		var id string
		var i uint32
		if err := prows.Scan(&id, &i); err != nil {
			return e, fmt.Errorf("audit: expired positions: %w", err)
		}
		var b [16]byte
		copy(b[:], id)
		if e.Positions[b] == nil {
			e.Positions[b] = map[uint32]bool{}
		}
		e.Positions[b][i] = true
	}
	return e, prows.Err()
}

// LeafMonths returns, for each of the batches whose batch_leaves row records its positions'
// device times (every batch stored since migration 0013), the month of each position in leaf
// index order, toYYYYMM as readings is partitioned (on the server, in its time zone, as the
// partitions are made). One query of batch_leaves' primary key that reads neither the leaves
// nor readings; a batch with two rows (not merged yet) gives the first whole one.
func (a Audit) LeafMonths(ctx context.Context, ids [][16]byte) (map[[16]byte][]uint32, error) {
	out := make(map[[16]byte][]uint32, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	rows, err := a.s.conn.Query(ctx, "SELECT batch_id, n, distinct_indexes, max_index, arrayMap(t -> toYYYYMM(t), times) FROM "+a.s.t("batch_leaves")+
		" WHERE batch_id IN ("+idList(ids)+") AND notEmpty(times)")
	if err != nil {
		return nil, fmt.Errorf("audit: device months of %d batches: %w", len(ids), err)
	}
	defer rows.Close()
	for rows.Next() {
		var id [16]byte
		var n, distinct, maxIndex uint32
		var months []uint32
		if err := rows.Scan(&id, &n, &distinct, &maxIndex, &months); err != nil {
			return nil, fmt.Errorf("audit: device months of %d batches: %w", len(ids), err)
		}
		if _, ok := out[id]; ok || n == 0 || n != distinct || maxIndex != n-1 || len(months) != int(n) {
			continue
		}
		out[id] = months
	}
	return out, rows.Err()
}

// idList is ids as the elements of an IN list. Ids go as hex: binary bytes do not survive
// quoting.
func idList(ids [][16]byte) string {
	var b strings.Builder
	b.Grow(len(ids) * 42)
	for i, id := range ids {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString("unhex('")
		b.WriteString(hex.EncodeToString(id[:]))
		b.WriteString("')")
	}
	return b.String()
}

type scanner interface {
	Next() bool
	Scan(...any) error
	Err() error
}

func scanAuditReadings(rows scanner, each func(audit.Reading)) error {
	var leaf, batch []byte
	for rows.Next() {
		var r audit.Reading
		if err := rows.Scan(&r.Device, &r.Seq, &r.TS, &r.Raw, &leaf, &batch, &r.LeafIndex, &r.ErasedBy); err != nil {
			return err
		}
		copy(r.Leaf[:], leaf)
		copy(r.BatchID[:], batch)
		each(r)
	}
	return rows.Err()
}

// BatchReadings returns every row stored with the batch id, in leaf index order.
func (a Audit) BatchReadings(ctx context.Context, id [16]byte) ([]audit.Reading, error) {
	rows, err := a.s.conn.Query(ctx, "SELECT "+auditReadingCols+" FROM "+a.s.t("readings")+
		" WHERE batch_id = unhex(?) ORDER BY leaf_index", hex.EncodeToString(id[:]))
	if err != nil {
		return nil, fmt.Errorf("audit: readings of batch %x: %w", id, err)
	}
	defer rows.Close()
	var out []audit.Reading
	if err := scanAuditReadings(rows, func(r audit.Reading) { out = append(out, r) }); err != nil {
		return nil, fmt.Errorf("audit: readings of batch %x: %w", id, err)
	}
	return out, nil
}

// Readings returns every row stored with one of the batch ids, by batch id, in one query:
// the readings table is read once, in its own order.
func (a Audit) Readings(ctx context.Context, ids [][16]byte) (map[[16]byte][]audit.Reading, error) {
	out := make(map[[16]byte][]audit.Reading, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	rows, err := a.s.conn.Query(ctx, "SELECT "+auditReadingCols+" FROM "+a.s.t("readings")+" WHERE batch_id IN ("+idList(ids)+")")
	if err != nil {
		return nil, fmt.Errorf("audit: readings of %d batches: %w", len(ids), err)
	}
	defer rows.Close()
	if err := scanAuditReadings(rows, func(r audit.Reading) { out[r.BatchID] = append(out[r.BatchID], r) }); err != nil {
		return nil, fmt.Errorf("audit: readings of %d batches: %w", len(ids), err)
	}
	return out, nil
}

// BatchAnchors returns the anchor covering each of the batches an anchor covers (the lowest
// anchor id, if two do).
func (a Audit) BatchAnchors(ctx context.Context, ids [][16]byte) (map[[16]byte][16]byte, error) {
	out := make(map[[16]byte][16]byte, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	rows, err := a.s.conn.Query(ctx, "SELECT batch_id, min(anchor_id) FROM "+a.s.t("batch_anchors")+" WHERE batch_id IN ("+idList(ids)+") GROUP BY batch_id")
	if err != nil {
		return nil, fmt.Errorf("audit: anchors of %d batches: %w", len(ids), err)
	}
	defer rows.Close()
	for rows.Next() {
		var bid, aid [16]byte
		if err := rows.Scan(&bid, &aid); err != nil {
			return nil, fmt.Errorf("audit: anchors of %d batches: %w", len(ids), err)
		}
		out[bid] = aid
	}
	return out, rows.Err()
}

// Anchors returns the records of those of the anchors that have one.
func (a Audit) Anchors(ctx context.Context, ids [][16]byte) (map[[16]byte]audit.Anchor, error) {
	out := make(map[[16]byte]audit.Anchor, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	rows, err := a.s.conn.Query(ctx, "SELECT anchor_id, log_index, anchored_at FROM "+a.s.t("anchors")+" FINAL WHERE anchor_id IN ("+idList(ids)+")")
	if err != nil {
		return nil, fmt.Errorf("audit: %d anchors: %w", len(ids), err)
	}
	defer rows.Close()
	for rows.Next() {
		var r audit.Anchor
		if err := rows.Scan(&r.ID, &r.LogIndex, &r.AnchoredAt); err != nil {
			return nil, fmt.Errorf("audit: %d anchors: %w", len(ids), err)
		}
		out[r.ID] = r
	}
	return out, rows.Err()
}

// AnchorBatches returns, for each of the anchors, the ids of its batches in batch index
// order, and the records of those batches that have one: two queries for all of them.
func (a Audit) AnchorBatches(ctx context.Context, ids [][16]byte) (map[[16]byte][][16]byte, map[[16]byte]audit.Batch, error) {
	lists, recs := map[[16]byte][][16]byte{}, map[[16]byte]audit.Batch{}
	if len(ids) == 0 {
		return lists, recs, nil
	}
	in := idList(ids)
	rows, err := a.s.conn.Query(ctx, "SELECT anchor_id, batch_id FROM "+a.s.t("batch_anchors")+" FINAL WHERE anchor_id IN ("+in+") ORDER BY anchor_id, batch_index")
	if err != nil {
		return nil, nil, fmt.Errorf("audit: batches of %d anchors: %w", len(ids), err)
	}
	defer rows.Close()
	for rows.Next() {
		var aid, bid [16]byte
		if err := rows.Scan(&aid, &bid); err != nil {
			return nil, nil, fmt.Errorf("audit: batches of %d anchors: %w", len(ids), err)
		}
		lists[aid] = append(lists[aid], bid)
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("audit: batches of %d anchors: %w", len(ids), err)
	}
	rows.Close()
	brows, err := a.s.conn.Query(ctx, "SELECT batch_id, root, size, created_at, worker, ts_max FROM "+a.s.t("batches")+" FINAL WHERE batch_id IN (SELECT batch_id FROM "+
		a.s.t("batch_anchors")+" WHERE anchor_id IN ("+in+"))")
	if err != nil {
		return nil, nil, fmt.Errorf("audit: batch records of %d anchors: %w", len(ids), err)
	}
	defer brows.Close()
	for brows.Next() {
		b, err := scanAuditBatch(brows)
		if err != nil {
			return nil, nil, fmt.Errorf("audit: batch records of %d anchors: %w", len(ids), err)
		}
		recs[b.ID] = b
	}
	return lists, recs, brows.Err()
}

// Strays returns readings in [from, to] (of device, if set), received before before, whose
// batch has no record.
func (a Audit) Strays(ctx context.Context, from, to uint64, device string, before time.Time) ([]audit.Reading, error) {
	q := "SELECT " + auditReadingCols + " FROM " + a.s.t("readings") + " WHERE ts >= ? AND ts <= ? AND received_at < toDateTime(?)"
	args := []any{from, to, before.Unix()}
	if device != "" {
		q += " AND device_id = ?"
		args = append(args, device)
	}
	q += " AND batch_id NOT IN (SELECT batch_id FROM " + a.s.t("batches") + ") ORDER BY device_id, seq LIMIT 100000"
	rows, err := a.s.conn.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("audit: readings without a batch: %w", err)
	}
	defer rows.Close()
	var out []audit.Reading
	if err := scanAuditReadings(rows, func(r audit.Reading) { out = append(out, r) }); err != nil {
		return nil, fmt.Errorf("audit: readings without a batch: %w", err)
	}
	return out, nil
}

// Copies finds, for each of rs, another row of the same device, seq and leaf in another batch
// that has a record.
func (a Audit) Copies(ctx context.Context, rs []audit.Reading) (map[int][16]byte, error) {
	out := map[int][16]byte{}
	byKey := map[string][]int{}
	devices := map[string]bool{}
	var lo, hi uint64 = ^uint64(0), 0
	for i, r := range rs {
		k := fmt.Sprintf("%s\x00%d\x00%x", r.Device, r.Seq, r.Leaf[:])
		byKey[k] = append(byKey[k], i)
		devices[r.Device] = true
		lo, hi = min(lo, r.Seq), max(hi, r.Seq)
	}
	list := make([]string, 0, len(devices))
	for d := range devices {
		list = append(list, d)
	}
	rows, err := a.s.conn.Query(ctx, "SELECT device_id, seq, leaf, batch_id FROM "+a.s.t("readings")+
		" WHERE has(?, device_id) AND seq >= ? AND seq <= ? AND batch_id IN (SELECT batch_id FROM "+a.s.t("batches")+")", list, lo, hi)
	if err != nil {
		return nil, fmt.Errorf("audit: copies of readings without a batch: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var dev, leaf, batch string
		var seq uint64
		if err := rows.Scan(&dev, &seq, &leaf, &batch); err != nil {
			return nil, fmt.Errorf("audit: copies of readings without a batch: %w", err)
		}
		var id [16]byte
		copy(id[:], batch)
		for _, i := range byKey[fmt.Sprintf("%s\x00%d\x00%x", dev, seq, []byte(leaf))] {
			if id != rs[i].BatchID { // another row, not the reading itself
				out[i] = id
			}
		}
	}
	return out, rows.Err()
}

var _ audit.Source = Audit{}
