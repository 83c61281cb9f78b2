package rule

import (
	"fmt"
	"slices"
	"strings"

	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"

	"github.com/anchorline/anchorline/schemas/reading"
)

// Sample is a verified reading as a rule sees it.
type Sample struct {
	Device  string
	Seq     uint64
	TS      uint64 // device time, Unix ms
	Metrics []reading.Metric
	Tags    map[string]string

	// Built once, on first use: the CEL values of metrics and tags, and the aggregates of
	// the windows ending at this reading (by window shape), which every rule with that shape
	// shares. A Sample is one reading in one device's history, so a window of a given shape
	// ending at it is always the same readings.
	metricsVal, tagsVal ref.Val
	aggs                []shaped
}

// shaped is the aggregates of the window of one shape (last, span, aggregates read) ending at
// a Sample.
type shaped struct {
	shape [3]uint64
	agg   *Aggregates
}

// SampleOf is r as a Sample.
func SampleOf(r reading.Reading) Sample {
	return Sample{Device: r.Device, Seq: r.Seq, TS: r.TS, Metrics: r.Metrics, Tags: r.Tags}
}

func (s *Sample) metricsValue() ref.Val {
	if s.metricsVal == nil {
		m := make(map[ref.Val]ref.Val, len(s.Metrics))
		for _, x := range s.Metrics {
			m[types.String(x.Name)] = types.Double(x.Value)
		}
		s.metricsVal = types.NewRefValMap(types.DefaultTypeAdapter, m)
	}
	return s.metricsVal
}

func (s *Sample) tagsValue() ref.Val {
	if s.tagsVal == nil {
		tags := s.Tags
		if tags == nil {
			tags = map[string]string{}
		}
		s.tagsVal = types.NewStringStringMap(types.DefaultTypeAdapter, tags)
	}
	return s.tagsVal
}

// Aggregates are a window's per-metric count, min, max, sum, avg and rate.
type Aggregates struct {
	Size   int
	window []*Sample
	accs   []acc   // per metric, in order of first appearance
	done   bool    // accs computed
	val    ref.Val // the CEL value of the aggregates a rule reads, built on first use
	mask   aggMask
}

// acc accumulates one metric over a window.
type acc struct {
	name          string
	n             float64
	lo, hi, sum   float64
	firstV, lastV float64
	firstT, lastT uint64
}

// aggMask says which aggregates a rule reads (window.count, window.avg, ...): only those are
// made into CEL values.
type aggMask uint8

// aggNames are the aggregates, in mask bit order.
var aggNames = [...]string{"count", "min", "max", "sum", "avg", "rate"}

const allAggs = aggMask(1)<<len(aggNames) - 1

// maskOf is the aggregates conditions read: every one if they index window by a computed key.
func maskOf(conds ...string) aggMask {
	var m aggMask
	for _, c := range conds {
		if strings.Contains(c, varWindow+"[") {
			return allAggs
		}
		for i, name := range aggNames {
			if strings.Contains(c, varWindow+"."+name) {
				m |= 1 << i
			}
		}
	}
	return m
}

// aggregate returns the aggregates of window (ascending seq, current reading last), computed
// on first use. Sums add in seq order and every operation is one IEEE 754 double operation, so
// every platform gets the same bits.
func aggregate(window []*Sample, mask aggMask) *Aggregates {
	return &Aggregates{Size: len(window), window: window, mask: mask}
}

func (a *Aggregates) compute() {
	if a.done {
		return
	}
	a.done = true
	for _, s := range a.window {
		for _, m := range s.Metrics {
			i := 0
			for i < len(a.accs) && a.accs[i].name != m.Name {
				i++
			}
			if i == len(a.accs) {
				a.accs = append(a.accs, acc{name: m.Name, n: 1, lo: m.Value, hi: m.Value, sum: m.Value, firstV: m.Value, lastV: m.Value, firstT: s.TS, lastT: s.TS})
				continue
			}
			x := &a.accs[i]
			x.n++
			x.lo, x.hi = min(x.lo, m.Value), max(x.hi, m.Value)
			x.sum += m.Value
			x.lastV, x.lastT = m.Value, s.TS
		}
	}
}

// of is aggregate i (aggNames) of x.
func (x *acc) of(i int) float64 {
	switch i {
	case 0: // count
		return x.n
	case 1: // min
		return x.lo
	case 2: // max
		return x.hi
	case 3: // sum
		return x.sum
	case 4: // avg
		return x.sum / x.n
	default: // rate
		if x.lastT > x.firstT {
			return (x.lastV - x.firstV) / (float64(x.lastT-x.firstT) / 1000)
		}
		return 0
	}
}

// value is the CEL value of the aggregates the mask names, built on first use.
func (a *Aggregates) value() ref.Val {
	if a.val == nil {
		a.compute()
		outer := map[ref.Val]ref.Val{}
		for i, name := range aggNames {
			if a.mask&(1<<i) == 0 {
				continue
			}
			inner := make(map[ref.Val]ref.Val, len(a.accs))
			for j := range a.accs {
				inner[types.String(a.accs[j].name)] = types.Double(a.accs[j].of(i))
			}
			outer[types.String(name)] = types.NewRefValMap(types.DefaultTypeAdapter, inner)
		}
		a.val = types.NewRefValMap(types.DefaultTypeAdapter, outer)
	}
	return a.val
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
	s := history[len(history)-1]
	var agg *Aggregates
	if c.window {
		w := c.Window(history)
		shape := [3]uint64{c.Rule.Last, c.Rule.SpanMS, uint64(c.aggs)}
		i := slices.IndexFunc(s.aggs, func(x shaped) bool { return x.shape == shape })
		switch {
		case i < 0:
			agg = aggregate(w, c.aggs)
			s.aggs = append(s.aggs, shaped{shape, agg})
		case s.aggs[i].agg.Size != len(w):
			agg = aggregate(w, c.aggs)
			s.aggs[i].agg = agg
		default:
			agg = s.aggs[i].agg
		}
	} else {
		agg = c.none
	}
	cond = eval(c.when, c.whenN, s, agg)
	if c.clear == nil {
		return cond, !cond
	}
	return cond, eval(c.clear, c.clearN, s, agg)
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
		// st.Used is this state's own (a firing takes it, and its state starts without one).
		used := st.Used[:0]
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
