package rule

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/anchorline/anchorline/schemas/reading"
)

func mustCompile(t *testing.T, r Rule) *Compiled {
	t.Helper()
	if r.ID == "" {
		r.ID = "r1"
	}
	if r.Version == 0 {
		r.Version = 1
	}
	if r.Actions == nil {
		r.Actions = []Action{{Kind: ActionEvent}}
	}
	c, err := Compile(r)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func samples(dev string, values ...float64) []*Sample {
	out := make([]*Sample, len(values))
	for i, v := range values {
		out[i] = &Sample{Device: dev, Seq: uint64(i + 1), TS: uint64(1_000_000 + 1000*i), Metrics: []reading.Metric{{Name: "temp", Value: v}}}
	}
	return out
}

// run feeds the readings to c in order, as the stage does, and returns the firings.
func run(c *Compiled, readings []*Sample) []*Firing {
	var st State
	var out []*Firing
	for i := range readings {
		var f *Firing
		st, f = c.Step(st, readings[max(0, i+1-c.HistoryNeeded()):i+1])
		if f != nil {
			out = append(out, f)
		}
	}
	return out
}

func firedAt(fs []*Firing) []uint64 {
	var out []uint64
	for _, f := range fs {
		out = append(out, f.Seq)
	}
	return out
}

func TestThresholdFiresOncePerCrossing(t *testing.T) {
	c := mustCompile(t, Rule{When: "metrics.temp > 30.0"})
	rs := samples("d", 20, 31, 32, 33, 20, 29, 35, 36, 10)
	got := firedAt(run(c, rs))
	if fmt.Sprint(got) != "[2 7]" {
		t.Fatalf("fired at %v, want [2 7]", got)
	}
	// A device that starts above the threshold: the first reading only arms (it is not a
	// crossing the rule saw), so nothing fires until it comes back down and crosses again.
	got = firedAt(run(c, samples("d", 40, 41, 20, 31)))
	if fmt.Sprint(got) != "[4]" {
		t.Fatalf("fired at %v, want [4]", got)
	}
}

func TestHysteresis(t *testing.T) {
	c := mustCompile(t, Rule{When: "metrics.temp > 30.0", Clear: "metrics.temp < 25.0"})
	// Oscillating around 30 fires once; only a reading below 25 re-arms.
	rs := samples("d", 20, 31, 29, 31, 29, 31, 24, 26, 31)
	fs := run(c, rs)
	if got := firedAt(fs); fmt.Sprint(got) != "[2 9]" {
		t.Fatalf("fired at %v, want [2 9]", got)
	}
	if f := fs[1]; f.ArmedAt != 7 || fmt.Sprint(f.Used) != "[7 8 9]" {
		t.Fatalf("second firing armed at %d using %v, want 7 and [7 8 9]", f.ArmedAt, f.Used)
	}
	for _, f := range fs {
		if err := c.Check(*f, pick(rs, f.Used)); err != nil {
			t.Fatalf("firing at %d does not check: %v", f.Seq, err)
		}
	}
}

func TestWindowLast10(t *testing.T) {
	c := mustCompile(t, Rule{When: "window.avg.temp > 25.0 && size == 10", Last: 10})
	vals := make([]float64, 0, 30)
	for range 10 {
		vals = append(vals, 20)
	}
	for range 10 {
		vals = append(vals, 35) // the average passes 25 at the 6th of these (20*4+35*6)/10 = 29
	}
	for range 10 {
		vals = append(vals, 10)
	}
	rs := samples("d", vals...)
	fs := run(c, rs)
	// avg > 25 first at seq 15: (5*20 + 5*35)/10 = 27.5; at seq 14: (6*20+4*35)/10 = 26 > 25
	// too; at seq 13: (7*20+3*35)/10 = 24.5.
	if got := firedAt(fs); fmt.Sprint(got) != "[14]" {
		t.Fatalf("fired at %v, want [14]", got)
	}
	f := fs[0]
	if f.ArmedAt != 13 || len(f.Used) != 11 || f.Used[0] != 4 || f.Used[10] != 14 {
		t.Fatalf("firing armed at %d using %v, want 13 and seqs 4..14", f.ArmedAt, f.Used)
	}
	if err := c.Check(*f, pick(rs, f.Used)); err != nil {
		t.Fatal(err)
	}
}

func TestWindowSpanAndRate(t *testing.T) {
	// Readings 1 s apart; rate over the last 3 s of device time.
	c := mustCompile(t, Rule{When: "window.rate.temp > 2.0", SpanMS: 3000})
	rs := samples("d", 10, 10, 11, 12, 15, 16, 16, 16)
	fs := run(c, rs)
	// At seq 5 the window is seqs 3..5 (ts within 3 s): (15-11)/2 s = 2 per s: not above.
	// At seq 6: seqs 4..6: (16-12)/2 = 2: no. Make it steeper:
	if len(fs) != 0 {
		t.Fatalf("fired at %v, want none", firedAt(fs))
	}
	rs = samples("d", 10, 10, 11, 12, 18, 19, 19, 19)
	fs = run(c, rs)
	if got := firedAt(fs); fmt.Sprint(got) != "[5]" {
		t.Fatalf("fired at %v, want [5]", got)
	}
	if err := c.Check(*fs[0], pick(rs, fs[0].Used)); err != nil {
		t.Fatal(err)
	}
}

func TestCheckFailsOnTampering(t *testing.T) {
	c := mustCompile(t, Rule{When: "metrics.temp > 30.0"})
	rs := samples("d", 20, 31)
	f := run(c, rs)[0]
	if err := c.Check(*f, pick(rs, f.Used)); err != nil {
		t.Fatal(err)
	}
	changed := pick(rs, f.Used)
	changed[1] = &Sample{Device: "d", Seq: 2, TS: changed[1].TS, Metrics: []reading.Metric{{Name: "temp", Value: 30}}}
	if err := c.Check(*f, changed); err == nil {
		t.Fatal("a firing reading changed to 30.0 still checks")
	}
	changed = pick(rs, f.Used)
	changed[0] = &Sample{Device: "d", Seq: 1, TS: changed[0].TS, Metrics: []reading.Metric{{Name: "temp", Value: 31}}}
	if err := c.Check(*f, changed); err == nil {
		t.Fatal("an arming reading changed to 31.0 still checks")
	}
	other := mustCompile(t, Rule{When: "metrics.temp > 31.0"})
	if err := other.Check(*f, pick(rs, f.Used)); err == nil {
		t.Fatal("the firing checks under another rule text")
	}
	g := *f
	g.ArmedAt = 2
	if err := c.Check(g, pick(rs, f.Used)); err == nil {
		t.Fatal("a firing with another arming seq checks")
	}
}

func TestMissingMetricIsFalse(t *testing.T) {
	c := mustCompile(t, Rule{When: "metrics.pressure > 1.0"})
	if fs := run(c, samples("d", 1, 2, 3)); len(fs) != 0 {
		t.Fatalf("fired %d times on readings without the metric", len(fs))
	}
}

func TestCompileErrorsSayWhere(t *testing.T) {
	for _, tc := range []struct {
		when, clear string
		field       string
		line, col   int
	}{
		{when: "metrics.temp >", field: "when", line: 1, col: 15},
		{when: "metrics.temp > 1.0 &&\n  nosuch > 2", field: "when", line: 2, col: 3},
		{when: "metrics.temp", field: "when", line: 1, col: 1},
		{when: "metrics.temp > 1.0", clear: "tags.site ==", field: "clear", line: 1, col: 13},
	} {
		_, err := Compile(Rule{ID: "r", Version: 1, When: tc.when, Clear: tc.clear, Actions: []Action{{Kind: ActionEvent}}})
		ce, ok := errors.AsType[*CompileError](err)
		if !ok || !errors.Is(err, ErrInvalid) {
			t.Fatalf("%q: error %v, want a CompileError wrapping ErrInvalid", tc.when, err)
		}
		if ce.Field != tc.field || ce.Line != tc.line || ce.Column != tc.col {
			t.Errorf("%q: %s at %d:%d, want %s at %d:%d (%s)", tc.when, ce.Field, ce.Line, ce.Column, tc.field, tc.line, tc.col, ce.Msg)
		}
	}
}

func TestValidate(t *testing.T) {
	ok := Rule{ID: "r", Version: 1, When: "true", Actions: []Action{{Kind: ActionEvent}}}
	for name, mut := range map[string]func(*Rule){
		"bad id":            func(r *Rule) { r.ID = "a.b" },
		"no version":        func(r *Rule) { r.Version = 0 },
		"unsorted devices":  func(r *Rule) { r.Devices = []string{"b", "a"} },
		"no condition":      func(r *Rule) { r.When = " " },
		"absence with when": func(r *Rule) { r.AbsentMS = 1000 },
		"two windows":       func(r *Rule) { r.Last, r.SpanMS = 3, 1000 },
		"no actions":        func(r *Rule) { r.Actions = nil },
		"bad action":        func(r *Rule) { r.Actions = []Action{{Kind: "email"}} },
		"webhook not http":  func(r *Rule) { r.Actions = []Action{{Kind: ActionWebhook, URL: "ftp://x"}} },
		"command unnamed":   func(r *Rule) { r.Actions = []Action{{Kind: ActionCommand}} },
	} {
		r := ok
		mut(&r)
		if err := r.Validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Validate = %v, want ErrInvalid", name, err)
		}
	}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestSelects(t *testing.T) {
	r := Rule{Devices: []string{"a", "c"}, Tags: map[string]string{"site": "x"}}
	for _, tc := range []struct {
		dev  string
		tags map[string]string
		want bool
	}{
		{"a", nil, true}, {"b", nil, false}, {"b", map[string]string{"site": "x", "k": "v"}, true}, {"b", map[string]string{"site": "y"}, false},
	} {
		if got := r.Selects(tc.dev, tc.tags); got != tc.want {
			t.Errorf("Selects(%s, %v) = %v", tc.dev, tc.tags, got)
		}
	}
	if !(&Rule{}).Selects("any", nil) {
		t.Error("a rule without devices or tags does not select every device")
	}
}

func TestParseFile(t *testing.T) {
	r, err := ParseFile([]byte(`
id: hot
devices: [b, a, a]
when: metrics.temp > 30.0
clear: metrics.temp < 25.0
window: {span: 5m}
actions:
  - kind: event
  - {kind: command, command: close, args: {valve: "1"}}
`))
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(r.Devices) != "[a b]" || r.SpanMS != 300_000 || len(r.Actions) != 2 || r.Actions[1].Args["valve"] != "1" {
		t.Fatalf("parsed %+v", r)
	}
	if _, err := ParseFile([]byte("id: x\nwhen: true\nactoins: []\n")); err == nil || !strings.Contains(err.Error(), "actoins") {
		t.Fatalf("unknown field: %v", err)
	}
	if _, err := ParseFile([]byte("id: x\nabsent: 5 minutes\nactions: [{kind: event}]\n")); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "absent") {
		t.Fatalf("bad duration: %v", err)
	}
}

func TestEventIDGolden(t *testing.T) {
	id := EventID("hot", 2, "dev-1", 42, KindFire)
	if id != EventID("hot", 2, "dev-1", 42, KindFire) || len(id) != 32 {
		t.Fatal(id)
	}
	for _, other := range []string{EventID("hot", 3, "dev-1", 42, KindFire), EventID("hot", 2, "dev-1", 43, KindFire),
		EventID("hot", 2, "dev-2", 42, KindFire), EventID("hot", 2, "dev-1", 42, KindAbsent), EventID("ho", 2, "tdev-1", 42, KindFire)} {
		if other == id {
			t.Fatal("two different events share an id")
		}
	}
	// Golden: schemas/rule.md gives this value; events already stored depend on it.
	if id != "c72a9eec78e6eb078b504438d6aed47d" {
		t.Fatalf("EventID(hot, 2, dev-1, 42, fire) = %s, the contract says c72a9eec78e6eb078b504438d6aed47d", id)
	}
}

func pick(rs []*Sample, seqs []uint64) []*Sample {
	out := make([]*Sample, 0, len(seqs))
	for _, s := range seqs {
		for _, r := range rs {
			if r.Seq == s {
				out = append(out, r)
			}
		}
	}
	return out
}
