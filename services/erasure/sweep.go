package erasure

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/anchorline/anchorline/schemas/entry"
	"github.com/anchorline/anchorline/schemas/reading"
	"github.com/anchorline/anchorline/schemas/rule"
	"github.com/anchorline/anchorline/schemas/stream"
)

// DefaultSweep is the time between two sweeps when Config.Sweep is not set. Looking is cheap:
// a sweep reads only the parts written or merged since the one before (see Sweep), and only
// for the entries whose device has rows there. Measured here (1,000 entries of 200 devices,
// 4 million readings and metric values in 20 parts): 9 ms when nothing was written, 2.5 s
// after a flush holding readings of all 200 devices (about 1.2 ms per entry and table, mostly
// ClickHouse analysing the SELECT of each entry), 8 s for the first sweep of an Eraser, which
// reads every part. Removing is what costs: each ALTER of 18.16 rewrites, in every part
// holding a row it changes, the columns it changes (it hard-links the rest), whether the part
// holds one such row or a thousand (5,000 readings of 380 entries, with their metric values,
// took 9 to 12 s). So a sweep should gather what arrived over a while rather than act on each
// reading: at the ledger's pace (Every, one second) a device streaming into a range that
// reaches into the future would have the raw column of the newest parts rewritten every
// second; at one minute it is once a minute for the minute's readings, and a reading stored
// after its erasure keeps its bytes about a minute (plus the mutations' own time), well inside
// what an owner asking for erasure can expect.
const DefaultSweep = time.Minute

// maxFound bounds the rows of each kind one sweep removes, so that its statements (which name
// them) and its mutations stay of a bounded size; a sweep that reaches it says More and the
// next goes on at once.
const maxFound = 5000

// perQuery is how many entries one finding query looks for: a UNION ALL of one SELECT per
// entry, each bounded by the primary key (device_id, seq) or, for device time, by the device
// and the parts' time ranges. (One SELECT whose WHERE ORs the entries' ranges costs, on 18.16,
// every range on every row read: measured on 30 million readings, 100 seq ranges took 21 s
// ORed and 1.1 s as a UNION ALL, 300 took 2 s as a UNION ALL; 50 keep a query's memory near
// 100 MB.)
const perQuery = 50

// watched are the tables whose new parts a sweep reads.
const watched = "'readings', 'reading_lookup', 'metrics', 'events', 'rejected'"

// marks is how far a sweep looked.
type marks struct {
	blocks  map[string]uint64 // per table of watched, the highest block number of its active parts
	started time.Time         // when the ClickHouse server started (its block numbers restart with it)
	events  uint64            // the Events stream's last sequence
}

// carried is an erase entry carried out, as its latest row in erasures has it.
type carried struct {
	Index, Height  uint64
	Dev, By        string
	From, To       uint64
	Signer, Reason string
	Readings, Late uint64
	DoneAt         time.Time
}

func (c carried) covers(seq, ts uint64) bool {
	return entry.Erase{Dev: c.Dev, By: c.By, From: c.From, To: c.To}.Covers(c.Dev, seq, ts)
}

// Swept is what one sweep did.
type Swept struct {
	Entries  int  // erase entries whose readings it erased
	Readings int  // rows of readings whose bytes it removed
	Other    int  // rows of reading_lookup, metrics, events and rejected, and Events messages, it cleared or deleted
	More     bool // it stopped at maxFound: the next sweep goes on
}

// Sweep applies every erase entry carried out again, to what was stored in its range since:
// rows of readings that still hold their bytes, rows of reading_lookup holding them, metric
// values, rule events (table and Events stream) quoting a covered reading, and rejects holding
// a covered reading's bytes. Those are a flush that was in flight when the entry was carried
// out, a late redelivery, or a range reaching into the future. For what it finds it does what
// carrying out the entry does: readings lose raw and get erased_by, reading_lookup loses raw,
// the metric values go and the rollups of their hours are rebuilt, the events go, the
// devices' rejects lose their bytes and their Readings messages covered are deleted; then the
// entries' rows in erasures are written again with the readings they now cover.
//
// It reads, of each table, only the parts holding rows written after the previous sweep read
// the tables' highest block numbers (a part's name holds its highest; 18.16 skips the other
// parts before reading, from a condition on _part): rows written before were there for the
// previous sweep or for the entry's own mutations. The first sweep of an Eraser, the first
// after the server restarted (block numbers then restart from the highest left) and every
// sweep on a cluster (replicas fetch parts out of order) read every part.
func (e *Eraser) Sweep(ctx context.Context) (Swept, error) {
	start := time.Now()
	now, err := e.marksNow(ctx)
	if err != nil {
		return Swept{}, fmt.Errorf("erasure sweep: %w", err)
	}
	es, err := e.carriedOut(ctx)
	if err != nil {
		return Swept{}, fmt.Errorf("erasure sweep: %w", err)
	}
	var sw Swept
	if len(es) > 0 {
		f, err := e.find(ctx, es, now)
		if err != nil {
			return Swept{}, fmt.Errorf("erasure sweep: %w", err)
		}
		if sw, err = e.removeFound(ctx, es, f); err != nil {
			return Swept{}, fmt.Errorf("erasure sweep: %w", err)
		}
		n, err := e.sweepEventsStream(ctx, es, now.events)
		if err != nil {
			return Swept{}, fmt.Errorf("erasure sweep: %w", err)
		}
		sw.Other += n
	}
	if !sw.More {
		e.seen = now
	}
	if sw.Readings > 0 || sw.Other > 0 {
		e.log.Info("erasure sweep: removed what was stored in erased ranges after their erasure", "entries", sw.Entries, "readings", sw.Readings, "other_rows", sw.Other, "more", sw.More, "took", time.Since(start).Round(time.Millisecond))
	}
	return sw, nil
}

// marksNow reads how far the tables and the Events stream are, and forgets the last sweep's
// marks if the server restarted since.
func (e *Eraser) marksNow(ctx context.Context) (*marks, error) {
	m := &marks{blocks: map[string]uint64{}}
	var up uint32
	if err := e.ch.QueryRow(ctx, "SELECT uptime()").Scan(&up); err != nil {
		return nil, fmt.Errorf("server uptime: %w", err)
	}
	m.started = time.Now().Add(-time.Duration(up) * time.Second)
	if e.seen != nil {
		if d := m.started.Sub(e.seen.started); d > 2*time.Second || d < -2*time.Second {
			e.log.Info("erasure sweep: ClickHouse restarted; the next sweep reads every part", "started", m.started.Round(time.Second))
			e.seen = nil
		}
	}
	rows, err := e.ch.Query(ctx, "SELECT table, toUInt64(max(max_block_number)) FROM system.parts WHERE database = ? AND active AND table IN ("+watched+") GROUP BY table", e.cfg.Schema.Database)
	if err != nil {
		return nil, fmt.Errorf("parts: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var t string
		var b uint64
		if err := rows.Scan(&t, &b); err != nil {
			return nil, err
		}
		m.blocks[t] = b
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if e.js != nil {
		s, err := e.js.Stream(ctx, stream.Events)
		switch {
		case errors.Is(err, jetstream.ErrStreamNotFound):
		case err != nil:
			return nil, fmt.Errorf("stream %s: %w", stream.Events, err)
		default:
			info, err := s.Info(ctx)
			if err != nil {
				return nil, fmt.Errorf("stream %s: %w", stream.Events, err)
			}
			m.events = info.State.LastSeq
		}
	}
	return m, nil
}

// newParts is the condition that keeps the parts of table holding rows written since the last
// sweep read the marks ("" to read every part).
func (e *Eraser) newParts(table string) string {
	if e.seen == nil || e.cfg.Schema.Cluster != "" {
		return ""
	}
	b, ok := e.seen.blocks[table]
	if !ok {
		return ""
	}
	// <partition>_<min block>_<max block>_<level>[_<mutation>]; the partition ids of the watched
	// tables (toYYYYMM) hold no _.
	return fmt.Sprintf(" AND toUInt64(splitByChar('_', _part)[3]) > %d", b)
}

// carriedOut reads the entries carried out, by log index, skipping (with a warning) a row
// whose device or range kind no entry could have (the statements are written out from them).
func (e *Eraser) carriedOut(ctx context.Context) ([]carried, error) {
	rows, err := e.ch.Query(ctx, fmt.Sprintf("SELECT entry_index, height, device_id, by, from_value, to_value, signer, reason, readings, late, done_at FROM %s.erasures FINAL ORDER BY entry_index", e.cfg.Schema.Database))
	if err != nil {
		return nil, fmt.Errorf("erasures: %w", err)
	}
	defer rows.Close()
	var out []carried
	for rows.Next() {
		var c carried
		if err := rows.Scan(&c.Index, &c.Height, &c.Dev, &c.By, &c.From, &c.To, &c.Signer, &c.Reason, &c.Readings, &c.Late, &c.DoneAt); err != nil {
			return nil, fmt.Errorf("erasures: %w", err)
		}
		if !reading.ValidDeviceID(c.Dev) || (c.By != entry.EraseBySeq && c.By != entry.EraseByTS) || c.From > c.To {
			e.log.Warn("erasure sweep: a row of erasures no erase entry could have; not swept", "entry_index", c.Index, "device", c.Dev, "by", c.By)
			continue
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// hit is a row a sweep found that its entry still has to clear.
type hit struct {
	entry uint64 // the covering entry's log index (the lowest, if several cover it)
	dev   string
	seq   uint64
	ts    uint64 // 0 for reading_lookup's rows (which have no device time)
	hour  uint32 // the hour (Unix seconds) whose rollups count the row's values
}

// found is what a sweep found.
type found struct {
	readings []hit               // readings rows with their bytes
	lookup   []hit               // reading_lookup rows with their bytes
	metrics  []hit               // metric values (one hit per reading)
	events   map[string][]string // per device, the hex ids of the events quoting a covered reading
	rejects  map[string]bool     // devices with a reject holding a covered reading's bytes
	more     bool
}

// byDevice groups entries by device, each device's by log index.
func byDevice(es []carried) map[string][]carried {
	out := map[string][]carried{}
	for _, c := range es {
		out[c.Dev] = append(out[c.Dev], c)
	}
	return out
}

// inRange is the condition for the rows of readings or metrics in c's range. For a device-time
// range, the partition key's time narrows which parts are read (18.16 keeps each part's
// minimum and maximum time).
func inRange(c carried) string {
	if c.By == entry.EraseBySeq {
		return fmt.Sprintf("device_id = '%s' AND seq BETWEEN %d AND %d", c.Dev, c.From, c.To)
	}
	return fmt.Sprintf("device_id = '%s' AND ts BETWEEN %d AND %d", c.Dev, c.From, c.To) + timeRange(c.From, c.To)
}

// timeRange is the condition on time (DateTime, seconds) that every row with a device time
// in from..to (ms) meets ("" when from is past what DateTime holds).
func timeRange(from, to uint64) string {
	lo, hi := from/1000, to/1000
	if lo > math.MaxUint32 {
		return ""
	}
	return fmt.Sprintf(" AND time BETWEEN toDateTime(%d) AND toDateTime(%d)", lo, min(hi, math.MaxUint32))
}

// seqIn is the condition that col is one of seqs: runs of three or more consecutive seqs as
// BETWEEN, the rest in an IN list.
func seqIn(col string, seqs []uint64) string {
	s := slices.Clone(seqs)
	slices.Sort(s)
	s = slices.Compact(s)
	var terms, single []string
	for i := 0; i < len(s); {
		j := i
		for j+1 < len(s) && s[j+1] == s[j]+1 {
			j++
		}
		if j-i >= 2 {
			terms = append(terms, fmt.Sprintf("%s BETWEEN %d AND %d", col, s[i], s[j]))
		} else {
			for _, q := range s[i : j+1] {
				single = append(single, fmt.Sprint(q))
			}
		}
		i = j + 1
	}
	if len(single) > 0 {
		terms = append(terms, fmt.Sprintf("%s IN (%s)", col, strings.Join(single, ", ")))
	}
	if len(terms) == 1 {
		return terms[0]
	}
	return "(" + strings.Join(terms, " OR ") + ")"
}

// unionOf runs one SELECT per entry (perQuery at a time, as UNION ALLs, at most limit rows
// each) and hands each row to scan; it stops once limit rows came, and says so.
func (e *Eraser) unionOf(ctx context.Context, es []carried, limit int, sel func(carried) string, scan func(scanner) error) (bool, error) {
	got := 0
	for i := 0; i < len(es); i += perQuery {
		var qs []string
		for _, c := range es[i:min(i+perQuery, len(es))] {
			qs = append(qs, sel(c))
		}
		q := "SELECT * FROM (" + strings.Join(qs, " UNION ALL ") + ")"
		if limit > 0 {
			q += fmt.Sprintf(" LIMIT %d", limit-got)
		}
		rows, err := e.ch.Query(ctx, q)
		if err != nil {
			return false, fmt.Errorf("%.120s: %w", q, err)
		}
		for rows.Next() {
			if err := scan(rows); err != nil {
				rows.Close()
				return false, err
			}
			got++
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return false, err
		}
		if limit > 0 && got >= limit {
			return true, nil
		}
	}
	return false, nil
}

// scanner is a row of a query's result.
type scanner interface{ Scan(dest ...any) error }

// find looks for what the entries still have to clear, in the parts written since the last sweep.
func (e *Eraser) find(ctx context.Context, all []carried, now *marks) (found, error) {
	db := e.cfg.Schema.Database
	f := found{events: map[string][]string{}, rejects: map[string]bool{}}
	index := map[uint64]carried{}
	for _, c := range all {
		index[c.Index] = c
	}
	// readings first, then reading_lookup and metrics: what a flush writes after readings (the
	// lookup copy, the metric values) is then more likely found in the same sweep.
	es, err := e.withNewRows(ctx, "readings", all, now)
	if err != nil {
		return f, err
	}
	more, err := e.unionOf(ctx, es, maxFound, func(c carried) string {
		return fmt.Sprintf("SELECT toUInt64(%d) AS e, device_id, seq, ts, toUInt32(toStartOfHour(time)) AS h FROM %s.readings PREWHERE %s AND erased_by = 0 WHERE raw != ''%s",
			c.Index, db, inRange(c), e.newParts("readings"))
	}, func(r scanner) error {
		var h hit
		if err := r.Scan(&h.entry, &h.dev, &h.seq, &h.ts, &h.hour); err != nil {
			return fmt.Errorf("readings: %w", err)
		}
		f.readings = append(f.readings, h)
		return nil
	})
	if err != nil {
		return f, err
	}
	f.more = f.more || more
	// reading_lookup has no device time: for a device-time range it gives the rows of the
	// range's seconds, and readings tells which of them the range covers.
	var candidates []hit
	if es, err = e.withNewRows(ctx, "reading_lookup", all, now); err != nil {
		return f, err
	}
	more, err = e.unionOf(ctx, es, maxFound, func(c carried) string {
		cond := inRange(c)
		if c.By == entry.EraseByTS {
			cond = fmt.Sprintf("device_id = '%s'", c.Dev) + timeRange(c.From, c.To)
		}
		return fmt.Sprintf("SELECT toUInt64(%d) AS e, device_id, seq, toUInt32(toStartOfHour(time)) AS h FROM %s.reading_lookup PREWHERE %s WHERE raw != ''%s",
			c.Index, db, cond, e.newParts("reading_lookup"))
	}, func(r scanner) error {
		var h hit
		if err := r.Scan(&h.entry, &h.dev, &h.seq, &h.hour); err != nil {
			return fmt.Errorf("reading_lookup: %w", err)
		}
		candidates = append(candidates, h)
		return nil
	})
	if err != nil {
		return f, err
	}
	f.more = f.more || more
	need := map[string][]uint64{}
	for _, h := range candidates {
		if index[h.entry].By == entry.EraseByTS {
			need[h.dev] = append(need[h.dev], h.seq)
		}
	}
	times, err := e.timesOf(ctx, need)
	if err != nil {
		return f, err
	}
	for _, h := range candidates {
		c := index[h.entry]
		if c.By == entry.EraseBySeq || slices.ContainsFunc(times[devSeq{h.dev, h.seq}], func(ts uint64) bool { return c.covers(h.seq, ts) }) {
			f.lookup = append(f.lookup, h)
		}
	}
	if es, err = e.withNewRows(ctx, "metrics", all, now); err != nil {
		return f, err
	}
	more, err = e.unionOf(ctx, es, maxFound, func(c carried) string {
		return fmt.Sprintf("SELECT DISTINCT toUInt64(%d) AS e, device_id, seq, ts, toUInt32(toStartOfHour(time)) AS h FROM %s.metrics PREWHERE %s WHERE 1%s",
			c.Index, db, inRange(c), e.newParts("metrics"))
	}, func(r scanner) error {
		var h hit
		if err := r.Scan(&h.entry, &h.dev, &h.seq, &h.ts, &h.hour); err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
		f.metrics = append(f.metrics, h)
		return nil
	})
	if err != nil {
		return f, err
	}
	f.more = f.more || more
	devs := byDevice(all)
	if e.anyNew("events", now) {
		if err := e.findEvents(ctx, devs, &f); err != nil {
			return f, err
		}
	}
	if e.anyNew("rejected", now) {
		if err := e.findRejects(ctx, devs, &f); err != nil {
			return f, err
		}
	}
	return f, nil
}

// anyNew reports whether table may have rows written since the last sweep: its highest block
// number moved (a merge of older parts does not move it).
func (e *Eraser) anyNew(table string, now *marks) bool {
	if e.newParts(table) == "" {
		return true
	}
	return now.blocks[table] != e.seen.blocks[table]
}

// withNewRows keeps the entries whose device has rows in the parts of table written since the
// last sweep (all of them when the sweep reads every part): one query over the devices, so that
// a sweep costs per device with new rows, not per entry.
func (e *Eraser) withNewRows(ctx context.Context, table string, es []carried, now *marks) ([]carried, error) {
	cond := e.newParts(table)
	if cond == "" {
		return es, nil
	}
	if !e.anyNew(table, now) {
		return nil, nil
	}
	devs := byDevice(es)
	with := map[string]bool{}
	for _, part := range devicesIn(slices.Sorted(maps.Keys(devs))) {
		rows, err := e.ch.Query(ctx, fmt.Sprintf("SELECT DISTINCT device_id FROM %s.%s PREWHERE device_id IN ('%s') WHERE 1%s", e.cfg.Schema.Database, table, strings.Join(part, "', '"), cond))
		if err != nil {
			return nil, fmt.Errorf("%s: devices with new rows: %w", table, err)
		}
		for rows.Next() {
			var dev string
			if err := rows.Scan(&dev); err != nil {
				rows.Close()
				return nil, fmt.Errorf("%s: devices with new rows: %w", table, err)
			}
			with[dev] = true
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: devices with new rows: %w", table, err)
		}
	}
	var out []carried
	for _, c := range es {
		if with[c.Dev] {
			out = append(out, c)
		}
	}
	return out, nil
}

type devSeq struct {
	dev string
	seq uint64
}

// timesOf returns the device times readings holds for each device's seqs (a redelivered
// reading has a row per copy).
func (e *Eraser) timesOf(ctx context.Context, seqs map[string][]uint64) (map[devSeq][]uint64, error) {
	out := map[devSeq][]uint64{}
	devs := slices.Sorted(maps.Keys(seqs))
	for i := 0; i < len(devs); i += perQuery {
		var qs []string
		for _, dev := range devs[i:min(i+perQuery, len(devs))] {
			qs = append(qs, fmt.Sprintf("SELECT device_id, seq, ts FROM %s.readings PREWHERE device_id = '%s' AND %s", e.cfg.Schema.Database, dev, seqIn("seq", seqs[dev])))
		}
		rows, err := e.ch.Query(ctx, strings.Join(qs, " UNION ALL "))
		if err != nil {
			return nil, fmt.Errorf("device times: %w", err)
		}
		for rows.Next() {
			var k devSeq
			var ts uint64
			if err := rows.Scan(&k.dev, &k.seq, &ts); err != nil {
				rows.Close()
				return nil, fmt.Errorf("device times: %w", err)
			}
			out[k] = append(out[k], ts)
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// quoting reports, for the events given as (device, quoted seqs), which quote a reading one
// of the device's entries covers.
func (e *Eraser) quoting(ctx context.Context, devs map[string][]carried, evs []quote) ([]bool, error) {
	need := map[string][]uint64{}
	for _, q := range evs {
		if slices.ContainsFunc(devs[q.dev], func(c carried) bool { return c.By == entry.EraseByTS }) {
			need[q.dev] = append(need[q.dev], q.seqs...)
		}
	}
	times, err := e.timesOf(ctx, need)
	if err != nil {
		return nil, err
	}
	out := make([]bool, len(evs))
	for i, q := range evs {
		out[i] = slices.ContainsFunc(q.seqs, func(seq uint64) bool {
			return slices.ContainsFunc(devs[q.dev], func(c carried) bool {
				if c.By == entry.EraseBySeq {
					return c.covers(seq, 0)
				}
				return slices.ContainsFunc(times[devSeq{q.dev, seq}], func(ts uint64) bool { return c.covers(seq, ts) })
			})
		})
	}
	return out, nil
}

// quote is an event's device and the seqs it quotes.
type quote struct {
	dev  string
	seqs []uint64
}

func quoteOf(ev rule.Event) quote {
	return quote{ev.Device, append([]uint64{ev.Seq}, ev.Seqs...)}
}

// devicesIn is the IN list of devs, perQuery*10 at a time.
func devicesIn(devs []string) [][]string {
	var out [][]string
	for i := 0; i < len(devs); i += perQuery * 10 {
		out = append(out, devs[i:min(i+perQuery*10, len(devs))])
	}
	return out
}

// findEvents finds the events in new parts that quote a reading an entry of their device covers.
func (e *Eraser) findEvents(ctx context.Context, devs map[string][]carried, f *found) error {
	for _, part := range devicesIn(slices.Sorted(maps.Keys(devs))) {
		q := fmt.Sprintf("SELECT device_id, seq, seqs, hex(event_id) FROM %s.events WHERE device_id IN ('%s')%s", e.cfg.Schema.Database, strings.Join(part, "', '"), e.newParts("events"))
		rows, err := e.ch.Query(ctx, q)
		if err != nil {
			return fmt.Errorf("events: %w", err)
		}
		var evs []quote
		var ids []string
		for rows.Next() {
			var ev rule.Event
			var id string
			if err := rows.Scan(&ev.Device, &ev.Seq, &ev.Seqs, &id); err != nil {
				rows.Close()
				return fmt.Errorf("events: %w", err)
			}
			evs, ids = append(evs, quoteOf(ev)), append(ids, id)
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return fmt.Errorf("events: %w", err)
		}
		covered, err := e.quoting(ctx, devs, evs)
		if err != nil {
			return err
		}
		for i, ok := range covered {
			if ok && len(f.events[evs[i].dev]) < maxFound {
				f.events[evs[i].dev] = append(f.events[evs[i].dev], ids[i])
			} else if ok {
				f.more = true
			}
		}
	}
	return nil
}

// findRejects finds the devices with a reject in new parts holding the bytes of a reading one
// of the device's entries covers (bytes that are no reading cover nothing).
func (e *Eraser) findRejects(ctx context.Context, devs map[string][]carried, f *found) error {
	for _, part := range devicesIn(slices.Sorted(maps.Keys(devs))) {
		q := fmt.Sprintf("SELECT device_id, raw FROM %s.rejected PREWHERE device_id IN ('%s') WHERE raw != ''%s", e.cfg.Schema.Database, strings.Join(part, "', '"), e.newParts("rejected"))
		rows, err := e.ch.Query(ctx, q)
		if err != nil {
			return fmt.Errorf("rejected: %w", err)
		}
		for rows.Next() {
			var dev, raw string
			if err := rows.Scan(&dev, &raw); err != nil {
				rows.Close()
				return fmt.Errorf("rejected: %w", err)
			}
			if f.rejects[dev] {
				continue
			}
			m, err := reading.Decode([]byte(raw))
			if err != nil {
				continue
			}
			r := m.Reading
			if slices.ContainsFunc(devs[r.Device], func(c carried) bool { return c.covers(r.Seq, r.TS) }) {
				f.rejects[dev] = true
			}
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return fmt.Errorf("rejected: %w", err)
		}
	}
	return nil
}

// actedOn are the entries, in log order, in whose ranges the readings hits were found.
func actedOn(index map[uint64]carried, hs []hit) []carried {
	seen := map[uint64]bool{}
	for _, h := range hs {
		seen[h.entry] = true
	}
	var out []carried
	for _, i := range slices.Sorted(maps.Keys(seen)) {
		out = append(out, index[i])
	}
	return out
}

// plan is how a sweep clears what it found. Its conditions name the rows found as sets, which
// 18.16 checks with one lookup per row, whatever their number (a condition per entry ORed
// costs every entry on every row of every part rewritten).
type plan struct {
	// rollups delete the rollups of the hours whose counts include a value found (of a reading
	// found, or a metric value found); hours are those, per device (Unix seconds), and the
	// rollups are rebuilt from the metric values of those hours but those matching drop.
	rollups []string
	hours   map[string][]uint32
	drop    string
	// clear are the mutations that clear the rest: the metric values go, reading_lookup loses
	// raw, the devices' rejects lose their bytes, the events go, and readings (last) lose raw
	// and get erased_by, the entry that covers the row.
	clear []string
	devs  []string // the devices concerned (their Readings messages are looked at)
}

// devsIn is the condition that device_id is one of the hits' devices (for the key and the
// parts' ranges, ahead of a set of rows).
func devsIn(hs ...[]hit) string {
	devs := map[string]bool{}
	for _, l := range hs {
		for _, h := range l {
			devs[h.dev] = true
		}
	}
	return fmt.Sprintf("device_id IN ('%s')", strings.Join(slices.Sorted(maps.Keys(devs)), "', '"))
}

// rowsIn is the condition that (device_id, seq, ts), or (device_id, seq) without withTS, is one
// of the hits'.
func rowsIn(withTS bool, hs ...[]hit) string {
	set := map[string]bool{}
	for _, l := range hs {
		for _, h := range l {
			if withTS {
				set[fmt.Sprintf("('%s', %d, %d)", h.dev, h.seq, h.ts)] = true
			} else {
				set[fmt.Sprintf("('%s', %d)", h.dev, h.seq)] = true
			}
		}
	}
	cols := "(device_id, seq)"
	if withTS {
		cols = "(device_id, seq, ts)"
	}
	return fmt.Sprintf("%s IN (%s)", cols, strings.Join(slices.Sorted(maps.Keys(set)), ", "))
}

// planOf is the plan that clears f.
func planOf(db string, f found) plan {
	var p plan
	if len(f.readings)+len(f.metrics) > 0 {
		p.drop = devsIn(f.readings, f.metrics) + " AND " + rowsIn(true, f.readings, f.metrics)
		p.clear = append(p.clear, fmt.Sprintf("ALTER TABLE %s.metrics DELETE WHERE %s", db, p.drop))
	}
	if len(f.readings)+len(f.lookup)+len(f.metrics) > 0 {
		p.clear = append(p.clear, fmt.Sprintf("ALTER TABLE %s.reading_lookup UPDATE raw = '' WHERE %s AND raw != '' AND %s",
			db, devsIn(f.readings, f.lookup, f.metrics), rowsIn(false, f.readings, f.lookup, f.metrics)))
	}
	concerned := map[string]bool{}
	for dev := range f.rejects {
		concerned[dev] = true
	}
	for _, l := range [][]hit{f.readings, f.lookup, f.metrics} {
		for _, h := range l {
			concerned[h.dev] = true
		}
	}
	p.devs = slices.Sorted(maps.Keys(concerned))
	if len(p.devs) > 0 {
		p.clear = append(p.clear, fmt.Sprintf("ALTER TABLE %s.rejected UPDATE raw = '' WHERE device_id IN ('%s') AND raw != ''", db, strings.Join(p.devs, "', '")))
	}
	if len(f.events) > 0 {
		var evDevs, ids []string
		for _, dev := range slices.Sorted(maps.Keys(f.events)) {
			evDevs, ids = append(evDevs, dev), append(ids, f.events[dev]...)
		}
		p.clear = append(p.clear, fmt.Sprintf("ALTER TABLE %s.events DELETE WHERE device_id IN ('%s') AND hex(event_id) IN ('%s')", db, strings.Join(evDevs, "', '"), strings.Join(ids, "', '")))
	}
	if len(f.readings) > 0 {
		// Each row names the entry that covers it (the lowest, if several do).
		entryOf := map[string]uint64{}
		for _, h := range f.readings {
			k := fmt.Sprintf("%s/%d/%d", h.dev, h.seq, h.ts)
			if e, ok := entryOf[k]; !ok || h.entry < e {
				entryOf[k] = h.entry
			}
		}
		keys := slices.Sorted(maps.Keys(entryOf))
		var entries []string
		for _, k := range keys {
			entries = append(entries, fmt.Sprint(entryOf[k]))
		}
		p.clear = append(p.clear, fmt.Sprintf("ALTER TABLE %s.readings UPDATE raw = '', erased_by = transform(concat(device_id, '/', toString(seq), '/', toString(ts)), ['%s'], CAST([%s] AS Array(UInt64)), erased_by) WHERE %s AND erased_by = 0 AND raw != '' AND %s",
			db, strings.Join(keys, "', '"), strings.Join(entries, ", "), devsIn(f.readings), rowsIn(true, f.readings)))
	}
	hourSet := map[string]map[uint32]bool{}
	for _, l := range [][]hit{f.readings, f.metrics} {
		for _, h := range l {
			if hourSet[h.dev] == nil {
				hourSet[h.dev] = map[uint32]bool{}
			}
			hourSet[h.dev][h.hour] = true
		}
	}
	if len(hourSet) > 0 {
		p.hours = map[string][]uint32{}
		for dev, hs := range hourSet {
			p.hours[dev] = slices.Sorted(maps.Keys(hs))
		}
		p.rollups = []string{
			fmt.Sprintf("ALTER TABLE %s.metrics_1m DELETE WHERE %s", db, inHours("period", "toStartOfHour(period)", p.hours)),
			fmt.Sprintf("ALTER TABLE %s.metrics_1h DELETE WHERE %s", db, inHours("period", "period", p.hours)),
		}
	}
	return p
}

// removeFound clears what f found and records the entries whose readings it erased. The order
// makes a sweep that fails half-way safe to repeat: what the next sweep finds again is what
// this one did not clear yet, and the readings, which name what is left to do, are cleared
// last. So first the devices' covered Readings messages go; then the rollups of the hours
// concerned are rebuilt from the metric values that stay (the new rows have higher block
// numbers than the deletion, which leaves them); then the rest is cleared; once all of it is
// done, the entries are recorded.
func (e *Eraser) removeFound(ctx context.Context, es []carried, f found) (Swept, error) {
	sw := Swept{More: f.more, Readings: len(f.readings), Other: len(f.lookup) + len(f.metrics) + len(f.rejects)}
	for _, ids := range f.events {
		sw.Other += len(ids)
	}
	if sw.Readings == 0 && sw.Other == 0 {
		return sw, nil
	}
	index := map[uint64]carried{}
	for _, c := range es {
		index[c.Index] = c
	}
	p := planOf(e.cfg.Schema.Database, f)
	if e.js != nil {
		byDev := byDevice(es)
		for _, dev := range p.devs {
			covers := func(d string, seq, ts uint64) bool {
				return d == dev && slices.ContainsFunc(byDev[dev], func(c carried) bool { return c.covers(seq, ts) })
			}
			if err := e.eraseStream(ctx, dev, covers); err != nil {
				return sw, err
			}
		}
	}
	for _, st := range p.rollups {
		if err := e.exec(ctx, st); err != nil {
			return sw, err
		}
	}
	if len(p.hours) > 0 {
		if err := e.rebuildRollups(ctx, p.hours, p.drop); err != nil {
			return sw, err
		}
	}
	for _, st := range p.clear {
		if err := e.exec(ctx, st); err != nil {
			return sw, err
		}
	}
	if err := e.waitMutations(ctx); err != nil {
		return sw, err
	}
	acted := actedOn(index, f.readings)
	sw.Entries = len(acted)
	return sw, e.recordSwept(ctx, acted)
}

// recordSwept writes the entries' rows in erasures again (ReplacingMergeTree: the newest row of
// an entry_index is the one kept, and the one FINAL reads) with the readings each now covers,
// and of those how many were stored after it was carried out. Counting what is there, rather
// than adding what this sweep erased, keeps the numbers right when two anchoring processes
// sweep at once.
func (e *Eraser) recordSwept(ctx context.Context, acted []carried) error {
	if len(acted) == 0 {
		return nil
	}
	db := e.cfg.Schema.Database
	total := map[uint64]uint64{}
	_, err := e.unionOf(ctx, acted, 0, func(c carried) string {
		return fmt.Sprintf("SELECT toUInt64(%d) AS e, count() AS n FROM %s.readings PREWHERE %s", c.Index, db, inRange(c))
	}, func(r scanner) error {
		var i, n uint64
		if err := r.Scan(&i, &n); err != nil {
			return fmt.Errorf("count: %w", err)
		}
		total[i] = n
		return nil
	})
	if err != nil {
		return err
	}
	b, err := e.ch.PrepareBatch(ctx, fmt.Sprintf("INSERT INTO %s.erasures (entry_index, height, device_id, by, from_value, to_value, signer, reason, readings, done_at, late, swept_at)", db))
	if err != nil {
		return err
	}
	now := time.Now()
	for _, c := range acted {
		n := total[c.Index]
		first := c.Readings - min(c.Late, c.Readings) // what it covered when carried out
		late := uint64(0)
		if n > first {
			late = n - first
		}
		if err := b.Append(c.Index, c.Height, c.Dev, c.By, c.From, c.To, c.Signer, c.Reason, n, c.DoneAt, late, now); err != nil {
			_ = b.Abort()
			return fmt.Errorf("record the sweep: %w", err)
		}
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("record the sweep: %w", err)
	}
	return nil
}

// sweepEventsStream deletes, bytes overwritten, the Events messages after stream sequence
// from (the last sweep's mark) of the entries' devices that quote a covered reading, and
// returns how many. (The rules stage stores an event, then publishes it: its message may come
// after the sweep that cleared its row.)
func (e *Eraser) sweepEventsStream(ctx context.Context, es []carried, last uint64) (int, error) {
	if e.js == nil {
		return 0, nil
	}
	from := uint64(1)
	if e.seen != nil && e.seen.events <= last { // (a lower last: the stream was made again)
		if e.seen.events == last {
			return 0, nil // nothing new
		}
		from = e.seen.events + 1
	}
	devs := byDevice(es)
	n := 0
	for _, dev := range slices.Sorted(maps.Keys(devs)) {
		var ferr error
		k, err := e.eraseEvents(ctx, dev, from, func(ev rule.Event) bool {
			ok, err := e.quoting(ctx, devs, []quote{quoteOf(ev)})
			if err != nil {
				ferr = errors.Join(ferr, err)
				return false
			}
			return ok[0]
		})
		if err = errors.Join(err, ferr); err != nil {
			return n, err
		}
		n += k
	}
	return n, nil
}
