package rules

import (
	"context"
	"fmt"
	"math"
	"slices"
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
	spans := make(map[string][2]uint64, len(before))
	for dev, seq := range before {
		spans[dev] = [2]uint64{seq - min(seq, uint64(n)+1), seq}
	}
	out, err := r.between(ctx, spans)
	if err != nil {
		return nil, fmt.Errorf("rules: history of %d devices: %w", len(before), err)
	}
	for dev, h := range out {
		out[dev] = h[max(0, len(h)-n):]
	}
	return out, nil
}

// Between returns each device's stored readings with spans[device][0] < seq <
// spans[device][1], in ascending seq (a reading stored twice once).
func (r *Reader) Between(ctx context.Context, spans map[string][2]uint64) (map[string][]*rule.Sample, error) {
	out, err := r.between(ctx, spans)
	if err != nil {
		return nil, fmt.Errorf("rules: readings between: %w", err)
	}
	return out, nil
}

// between asks for up to 200 devices at a time as `device_id IN (…) AND seq > lo AND seq <
// hi` over the union of their spans, which ClickHouse 18.16 narrows to the devices' parts of
// the primary key (an OR of one condition per device it would not), and keeps each device's
// own span.
func (r *Reader) between(ctx context.Context, spans map[string][2]uint64) (map[string][]*rule.Sample, error) {
	out := map[string][]*rule.Sample{}
	devs := make([]string, 0, len(spans))
	for dev := range spans {
		devs = append(devs, dev)
	}
	slices.Sort(devs)
	for len(devs) > 0 {
		k := min(len(devs), 200)
		lo, hi := uint64(math.MaxUint64), uint64(0)
		args := make([]any, 0, k+2)
		for _, dev := range devs[:k] {
			sp := spans[dev]
			lo, hi = min(lo, sp[0]), max(hi, sp[1])
			args = append(args, dev)
		}
		args = append(args, lo, hi)
		q := "SELECT device_id, seq, any(raw) FROM " + r.db + ".reading_lookup WHERE device_id IN (" + placeholders(k) + ") AND seq > ? AND seq < ?" +
			" GROUP BY device_id, seq ORDER BY device_id, seq"
		got := map[string][]*rule.Sample{}
		if err := r.samples(ctx, q, args, got); err != nil {
			return nil, err
		}
		for dev, ss := range got {
			sp := spans[dev]
			for _, s := range ss {
				if s.Seq > sp[0] && s.Seq < sp[1] {
					out[dev] = append(out[dev], s)
				}
			}
		}
		devs = devs[k:]
	}
	return out, nil
}

func placeholders(n int) string { return strings.TrimSuffix(strings.Repeat("?,", n), ",") }

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
