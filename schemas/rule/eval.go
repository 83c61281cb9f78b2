package rule

import (
	"fmt"
	"slices"

	"github.com/anchorline/anchorline/schemas/reading"
)

// Sample is a verified reading as a rule sees it.
type Sample struct {
	Device  string
	Seq     uint64
	TS      uint64 // device time, Unix ms
	Metrics []reading.Metric
	Tags    map[string]string

	metrics map[string]float64 // built once, on first use
}

// SampleOf is r as a Sample.
func SampleOf(r reading.Reading) Sample {
	return Sample{Device: r.Device, Seq: r.Seq, TS: r.TS, Metrics: r.Metrics, Tags: r.Tags}
}

func (s *Sample) metricMap() map[string]float64 {
	if s.metrics == nil {
		s.metrics = make(map[string]float64, len(s.Metrics))
		for _, m := range s.Metrics {
			s.metrics[m.Name] = m.Value
		}
	}
	return s.metrics
}

// Aggregates are a window's per-metric count, min, max, sum, avg and rate.
type Aggregates struct {
	Size   int
	agg    map[string]map[string]float64
	window []*Sample
}

// aggregate computes the aggregates of window (ascending seq, current reading last). Sums
// add in seq order and every operation is one IEEE 754 double operation, so every platform
// gets the same bits.
func aggregate(window []*Sample) *Aggregates {
	a := &Aggregates{Size: len(window), window: window}
	return a
}

func (a *Aggregates) byName() map[string]map[string]float64 {
	if a.agg != nil {
		return a.agg
	}
	count, lo, hi, sum, avg, rate := map[string]float64{}, map[string]float64{}, map[string]float64{}, map[string]float64{}, map[string]float64{}, map[string]float64{}
	type ends struct {
		firstV, lastV float64
		firstT, lastT uint64
	}
	span := map[string]ends{}
	for _, s := range a.window {
		for _, m := range s.Metrics {
			n, seen := count[m.Name]
			count[m.Name] = n + 1
			if !seen {
				lo[m.Name], hi[m.Name], sum[m.Name] = m.Value, m.Value, m.Value
				span[m.Name] = ends{m.Value, m.Value, s.TS, s.TS}
				continue
			}
			lo[m.Name] = min(lo[m.Name], m.Value)
			hi[m.Name] = max(hi[m.Name], m.Value)
			sum[m.Name] += m.Value
			e := span[m.Name]
			e.lastV, e.lastT = m.Value, s.TS
			span[m.Name] = e
		}
	}
	for name, n := range count {
		avg[name] = sum[name] / n
		e := span[name]
		if e.lastT > e.firstT {
			rate[name] = (e.lastV - e.firstV) / (float64(e.lastT-e.firstT) / 1000)
		} else {
			rate[name] = 0
		}
	}
	a.agg = map[string]map[string]float64{"count": count, "min": lo, "max": hi, "sum": sum, "avg": avg, "rate": rate}
	return a.agg
}

// Window returns the part of history (a device's readings in ascending seq, the current one
// last) that c's window holds: its last N readings, or those within its span of device time
// before the current reading's (ts > current ts - span), or the current reading alone.
func (c *Compiled) Window(history []*Sample) []*Sample {
	if len(history) == 0 {
		return nil
	}
	last, span := c.Rule.window()
	if last > 0 {
		return history[max(0, len(history)-int(last)):]
	}
	cur := history[len(history)-1].TS
	i := len(history) - 1
	for i > 0 && history[i-1].TS+span > cur {
		i--
	}
	return history[i:]
}

// HistoryNeeded is how many of a device's latest readings the stage must keep for c: its
// window's length (a span window keeps what falls within the span, at most MaxWindowLast).
func (c *Compiled) HistoryNeeded() int {
	last, span := c.Rule.window()
	if span > 0 {
		return MaxWindowLast
	}
	return int(last)
}

// cond and rearm are c's conditions on the current reading of history.
func (c *Compiled) test(history []*Sample) (cond, rearm bool) {
	w := c.Window(history)
	var agg *Aggregates
	if c.window {
		agg = aggregate(w)
	} else {
		agg = &Aggregates{Size: len(w)}
	}
	s := history[len(history)-1]
	cond = eval(c.when, s, agg)
	if c.clear == nil {
		return cond, !cond
	}
	return cond, eval(c.clear, s, agg)
}

// MaxBetween bounds the readings an event lists between its arming and its firing (rules
// with hysteresis); beyond it the event says its evidence is incomplete (schemas/rule.md).
const MaxBetween = 256

// State is a rule's state for one device, as the stage keeps it between readings.
type State struct {
	Seen    bool     // a reading of the device was evaluated under this version
	Armed   bool     // the next reading for which when holds fires
	ArmedAt uint64   // seq of the reading that armed it
	Used    []uint64 // seqs of the readings since the start of ArmedAt's window, while armed
	Partial bool     // more than MaxBetween readings since arming: Used is incomplete
}

// Firing is a decision to fire, with the readings it rests on.
type Firing struct {
	Seq     uint64   // the reading that fired
	ArmedAt uint64   // the reading that armed the rule
	Used    []uint64 // ascending: the window of ArmedAt through the firing reading
	Partial bool
}

// Step evaluates c on the current reading, the last of history (the device's readings in
// ascending seq; Window says how many it needs), from state st, and returns the state after
// it and the firing if it fires. Edge-triggered: it fires when the condition holds on a
// reading after one that armed it (where it did not hold, or where clear held), and not again
// until it is re-armed. The first reading evaluated under a version only arms.
func (c *Compiled) Step(st State, history []*Sample) (State, *Firing) {
	if c.Rule.Absence() || len(history) == 0 {
		return st, nil
	}
	cur := history[len(history)-1]
	cond, rearm := c.test(history)
	arm := func() State {
		used := make([]uint64, 0, len(c.Window(history)))
		for _, s := range c.Window(history) {
			used = append(used, s.Seq)
		}
		return State{Seen: true, Armed: true, ArmedAt: cur.Seq, Used: used}
	}
	switch {
	case st.Armed && cond:
		return State{Seen: true}, &Firing{Seq: cur.Seq, ArmedAt: st.ArmedAt, Used: mergeSeqs(st.Used, c.Window(history)), Partial: st.Partial}
	case rearm && !cond:
		return arm(), nil
	case st.Armed:
		if len(st.Used) < MaxBetween+c.HistoryNeeded() {
			st.Used = mergeSeqs(st.Used, c.Window(history))
		} else {
			st.Partial = true
		}
		return st, nil
	}
	return State{Seen: true}, nil
}

// mergeSeqs adds the seqs of w (ascending) to used (ascending), keeping it sorted and unique.
func mergeSeqs(used []uint64, w []*Sample) []uint64 {
	for _, s := range w {
		if len(used) == 0 || s.Seq > used[len(used)-1] {
			used = append(used, s.Seq)
		} else if _, ok := slices.BinarySearch(used, s.Seq); !ok {
			i, _ := slices.BinarySearch(used, s.Seq)
			used = slices.Insert(used, i, s.Seq)
		}
	}
	return used
}

// Check re-evaluates a firing offline: samples are the readings of f.Used (ascending seq),
// as the event lists them. It reports nil if, evaluated in order from the arming reading,
// c arms at f.ArmedAt, does not fire before f.Seq and fires at f.Seq; otherwise the first
// step that does not hold.
func (c *Compiled) Check(f Firing, samples []*Sample) error {
	if c.Rule.Absence() {
		return fmt.Errorf("rule %s is an absence rule: check it with CheckAbsence", c.Rule.ID)
	}
	if len(samples) != len(f.Used) {
		return fmt.Errorf("%d readings for the %d seqs the event lists", len(samples), len(f.Used))
	}
	for i, s := range samples {
		if s.Seq != f.Used[i] || i > 0 && s.Seq <= samples[i-1].Seq {
			return fmt.Errorf("reading %d has seq %d, the event lists %d", i, s.Seq, f.Used[i])
		}
	}
	at := slices.IndexFunc(samples, func(s *Sample) bool { return s.Seq == f.ArmedAt })
	if at < 0 || samples[len(samples)-1].Seq != f.Seq || f.ArmedAt >= f.Seq {
		return fmt.Errorf("the event's readings do not run from its arming reading (seq %d) to its firing one (seq %d)", f.ArmedAt, f.Seq)
	}
	cond, rearm := c.test(samples[:at+1])
	if !rearm || cond {
		return fmt.Errorf("seq %d does not arm the rule (when %v, clear %v)", f.ArmedAt, cond, rearm)
	}
	for i := at + 1; i < len(samples); i++ {
		cond, rearm := c.test(samples[:i+1])
		last := i == len(samples)-1
		switch {
		case last && !cond:
			return fmt.Errorf("when does not hold at seq %d, where the event says the rule fired", samples[i].Seq)
		case !last && cond && !f.Partial:
			return fmt.Errorf("when already holds at seq %d, before seq %d where the event says it fired", samples[i].Seq, f.Seq)
		case !last && rearm && c.clear != nil && !f.Partial:
			return fmt.Errorf("clear holds again at seq %d, after the arming reading the event names (seq %d)", samples[i].Seq, f.ArmedAt)
		}
	}
	return nil
}

// AbsenceDue reports whether absence rule c fires for a device whose last reading the stage
// evaluated at lastMS of its clock, now at nowMS.
func (c *Compiled) AbsenceDue(lastMS, nowMS int64) bool {
	return c.Rule.Absence() && nowMS-lastMS >= int64(c.Rule.AbsentMS)
}
