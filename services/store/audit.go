package store

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/anchorline/anchorline/anchor/audit"
	"github.com/anchorline/anchorline/schemas/lookup"
)

// Audit is the store as the audit reads it (audit.Source).
type Audit struct{ s *Store }

// Audit returns the store as an audit source.
func (s *Store) Audit() Audit { return Audit{s} }

// Batches returns the batch records whose device times overlap [from, to] (Unix ms), holding
// readings of device if it is set.
func (a Audit) Batches(ctx context.Context, from, to uint64, device string) ([]audit.Batch, error) {
	q := "SELECT batch_id, root, size, created_at, worker FROM " + a.s.t("batches") + " FINAL WHERE ts_max >= ? AND ts_min <= ?"
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
		b, err := scanBatch(rows)
		if err != nil {
			return nil, fmt.Errorf("audit: batches: %w", err)
		}
		out = append(out, audit.Batch{ID: b.ID, Root: b.Root, Size: b.Size, CreatedAt: b.CreatedAt})
	}
	return out, rows.Err()
}

const auditReadingCols = "device_id, seq, raw, leaf, batch_id, leaf_index"

func scanAuditReadings(rows interface {
	Next() bool
	Scan(...any) error
	Err() error
}) ([]audit.Reading, error) {
	var out []audit.Reading
	for rows.Next() {
		var r audit.Reading
		var raw, leaf, batch string
		if err := rows.Scan(&r.Device, &r.Seq, &raw, &leaf, &batch, &r.LeafIndex); err != nil {
			return nil, err
		}
		r.Raw = []byte(raw)
		copy(r.Leaf[:], leaf)
		copy(r.BatchID[:], batch)
		out = append(out, r)
	}
	return out, rows.Err()
}

// BatchReadings returns every row stored with the batch id, in leaf index order.
func (a Audit) BatchReadings(ctx context.Context, id [16]byte) ([]audit.Reading, error) {
	rows, err := a.s.conn.Query(ctx, "SELECT "+auditReadingCols+" FROM "+a.s.t("readings")+
		" WHERE batch_id = unhex(?) ORDER BY leaf_index", hex.EncodeToString(id[:]))
	if err != nil {
		return nil, fmt.Errorf("audit: readings of batch %x: %w", id, err)
	}
	defer rows.Close()
	out, err := scanAuditReadings(rows)
	if err != nil {
		return nil, fmt.Errorf("audit: readings of batch %x: %w", id, err)
	}
	return out, nil
}

// BatchAnchor returns the anchor covering a batch, or an error wrapping lookup.ErrNotAnchored.
func (a Audit) BatchAnchor(ctx context.Context, id [16]byte) ([16]byte, error) {
	anchorID, _, err := a.s.BatchAnchor(ctx, id)
	return anchorID, err
}

// Anchor returns an anchor's record, or an error wrapping lookup.ErrNotFound.
func (a Audit) Anchor(ctx context.Context, id [16]byte) (audit.Anchor, error) {
	r, err := a.s.Anchor(ctx, id)
	if err != nil {
		return audit.Anchor{}, err
	}
	return audit.Anchor{ID: r.ID, LogIndex: r.LogIndex, AnchoredAt: r.AnchoredAt}, nil
}

// AnchorBatches returns the ids of an anchor's batches in batch index order, and the records
// of those that have one.
func (a Audit) AnchorBatches(ctx context.Context, id [16]byte) ([][16]byte, map[[16]byte]audit.Batch, error) {
	ids, _, err := a.s.anchorBatchIDs(ctx, id)
	if err != nil {
		return nil, nil, fmt.Errorf("audit: %w", err)
	}
	recs := make(map[[16]byte]audit.Batch, len(ids))
	for _, bid := range ids {
		b, err := a.s.Batch(ctx, bid)
		if errors.Is(err, lookup.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		recs[bid] = audit.Batch{ID: b.ID, Root: b.Root, Size: b.Size, CreatedAt: b.CreatedAt}
	}
	return ids, recs, nil
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
	out, err := scanAuditReadings(rows)
	if err != nil {
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
