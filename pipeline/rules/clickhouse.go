package rules

import (
	"context"
	"fmt"
	"strings"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/anchorline/anchorline/schemas/reading"
	"github.com/anchorline/anchorline/schemas/rule"
)

// Reader reads what the stage needs of stored readings from ClickHouse: a device's latest
// readings before a seq (to rebuild its windows and rule states after a restart), and each
// device's last reading (absence rules). It writes nothing.
type Reader struct {
	conn driver.Conn
	db   string
}

// NewReader returns a reader of database.
func NewReader(conn driver.Conn, database string) *Reader { return &Reader{conn: conn, db: database} }

// History returns, for each device of before, its latest n stored readings with a seq below
// before[device], in ascending seq (a reading stored twice once). It reads reading_lookup,
// whose small granules make a device's last readings a short read.
func (r *Reader) History(ctx context.Context, before map[string]uint64, n int) (map[string][]*rule.Sample, error) {
	out := make(map[string][]*rule.Sample, len(before))
	if n <= 0 || len(before) == 0 {
		return out, nil
	}
	var conds []string
	var args []any
	for dev, seq := range before {
		conds = append(conds, "(device_id = ? AND seq < ?)")
		args = append(args, dev, seq)
	}
	for len(conds) > 0 {
		k := min(len(conds), 200)
		q := "SELECT device_id, seq, any(raw) FROM " + r.db + ".reading_lookup WHERE " + strings.Join(conds[:k], " OR ") +
			" GROUP BY device_id, seq ORDER BY device_id, seq DESC LIMIT ? BY device_id"
		if err := r.samples(ctx, q, append(append([]any{}, args[:2*k]...), uint64(n)), out); err != nil {
			return nil, fmt.Errorf("rules: history of %d devices: %w", len(before), err)
		}
		conds, args = conds[k:], args[2*k:]
	}
	for dev, h := range out { // newest first from the query: ascending for the windows
		for i, j := 0, len(h)-1; i < j; i, j = i+1, j-1 {
			h[i], h[j] = h[j], h[i]
		}
		out[dev] = h
	}
	return out, nil
}

// Between returns each device's stored readings with spans[device][0] < seq <
// spans[device][1], in ascending seq (a reading stored twice once).
func (r *Reader) Between(ctx context.Context, spans map[string][2]uint64) (map[string][]*rule.Sample, error) {
	out := map[string][]*rule.Sample{}
	var conds []string
	var args []any
	for dev, sp := range spans {
		conds = append(conds, "(device_id = ? AND seq > ? AND seq < ?)")
		args = append(args, dev, sp[0], sp[1])
	}
	for len(conds) > 0 {
		k := min(len(conds), 200)
		q := "SELECT device_id, seq, any(raw) FROM " + r.db + ".reading_lookup WHERE " + strings.Join(conds[:k], " OR ") +
			" GROUP BY device_id, seq ORDER BY device_id, seq"
		if err := r.samples(ctx, q, args[:3*k], out); err != nil {
			return nil, fmt.Errorf("rules: readings between: %w", err)
		}
		conds, args = conds[k:], args[3*k:]
	}
	return out, nil
}

// samples runs q and appends each row (device_id, seq, raw) to out as a sample.
func (r *Reader) samples(ctx context.Context, q string, args []any, out map[string][]*rule.Sample) error {
	rows, err := r.conn.Query(ctx, q, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var dev, raw string
		var seq uint64
		if err := rows.Scan(&dev, &seq, &raw); err != nil {
			return err
		}
		m, err := reading.Decode([]byte(raw))
		if err != nil {
			continue // stored readings were verified; one that does not decode is not a window's
		}
		s := rule.SampleOf(m.Reading)
		out[dev] = append(out[dev], &s)
	}
	return rows.Err()
}

// Last is a device's last stored reading: its seq and when it was received (Unix ms).
type Last struct {
	Seq        uint64
	ReceivedMS int64
}

// LastReadings returns every device's last stored reading.
func (r *Reader) LastReadings(ctx context.Context) (map[string]Last, error) {
	rows, err := r.conn.Query(ctx, "SELECT device_id, max(seq), toUInt64(max(received_at)) FROM "+r.db+".readings GROUP BY device_id")
	if err != nil {
		return nil, fmt.Errorf("rules: last readings: %w", err)
	}
	defer rows.Close()
	out := map[string]Last{}
	for rows.Next() {
		var dev string
		var seq, at uint64
		if err := rows.Scan(&dev, &seq, &at); err != nil {
			return nil, fmt.Errorf("rules: last readings: %w", err)
		}
		out[dev] = Last{Seq: seq, ReceivedMS: int64(at) * 1000}
	}
	return out, rows.Err()
}
