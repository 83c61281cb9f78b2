package rule

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/anchorline/anchorline/schemas/reading"
)

// nativeConds have a native form; each is evaluated natively and by CEL on random readings
// and windows (NaN, infinities, missing metrics and tags, large integers) and must give the
// same decision every time.
var nativeConds = []string{
	"metrics.temp > 25.5",
	"metrics.temp >= 25.0",
	"metrics.temp < 25.0",
	"metrics.temp <= -3.5",
	"metrics.temp == 25.0",
	"metrics.temp != 25.0",
	"25.5 < metrics.temp",
	"9007199254740993.0 > metrics.temp",
	`metrics["temp"] > 20.0`,
	"metrics.hum > 50.0 && metrics.temp > 25.0",
	"metrics.hum > 50.0 || metrics.temp > 25.0",
	"!(metrics.hum > 50.0) || metrics.temp < 21.0",
	"has(metrics.hum) && metrics.hum > 10.0",
	"!has(metrics.hum)",
	`has(tags.site) && tags.site == "north"`,
	`tags.site != "south" && metrics.temp > 22.0`,
	`device == "d7"`,
	`"d3" != device`,
	"seq > 5u",
	"seq >= 5u",
	"seq < 2u",
	"seq == 18446744073709551615u",
	"ts > 1000000",
	"ts <= 1700000000000",
	"ts != -1",
	"size == 10 && window.avg.temp > 25.5",
	"size >= 3 && window.rate.temp > 0.5",
	"window.min.temp < 21.0 || window.max.temp > 29.0",
	"window.count.hum >= 3.0 && window.sum.hum > 100.0",
	`window["avg"]["temp"] > 24.0`,
	"window.median.temp > 1.0 || true",
	"true",
	"false || metrics.temp > 25.0",
	"size > 2",
}

// celOnly are conditions the native form does not cover: CEL evaluates them.
var celOnly = []string{
	"metrics.temp > metrics.hum",
	"metrics.temp * 2.0 > 50.0",
	`metrics.exists(k, k == "temp")`,
	`device.startsWith("d")`,
	"metrics.temp > 20.0 ? true : false",
	`tags.site < "z"`,
}

func randomSample(rng *rand.Rand, seq uint64) *Sample {
	values := []float64{math.NaN(), math.Inf(1), math.Inf(-1), 0, math.Copysign(0, -1), 25, 25.5, 24.5, -3.5, 9007199254740992, 9007199254740994, 1e300}
	v := func() float64 {
		if rng.IntN(3) == 0 {
			return values[rng.IntN(len(values))]
		}
		return 15 + 20*rng.Float64()
	}
	s := &Sample{Device: []string{"d3", "d7", "x"}[rng.IntN(3)], Seq: seq, TS: uint64(rng.Int64N(2_000_000_000_000))}
	if rng.IntN(5) != 0 {
		s.Metrics = append(s.Metrics, reading.Metric{Name: "temp", Value: v()})
	}
	if rng.IntN(2) == 0 {
		s.Metrics = append(s.Metrics, reading.Metric{Name: "hum", Value: v() * 3})
	}
	switch rng.IntN(3) {
	case 0:
		s.Tags = map[string]string{"site": "north"}
	case 1:
		s.Tags = map[string]string{"site": "south", "floor": "2"}
	}
	return s
}

func TestNativeIsCEL(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	seqs := []uint64{1, 4, 5, 6, 18446744073709551615}
	for _, src := range nativeConds {
		r := Rule{ID: "n", Version: 1, When: src, Last: 10, Actions: []Action{{Kind: ActionEvent}}}
		c, err := Compile(r)
		if err != nil {
			t.Fatalf("%s: %v", src, err)
		}
		if c.whenN == nil {
			t.Fatalf("%s: no native form", src)
		}
		viaCEL := *c
		viaCEL.whenN = nil
		for i := range 3000 {
			hist := make([]*Sample, 1+rng.IntN(12))
			for j := range hist {
				hist[j] = randomSample(rng, seqs[rng.IntN(len(seqs))])
			}
			// Fresh samples for each side: a Sample caches its CEL values and aggregates.
			twin := make([]*Sample, len(hist))
			for j, s := range hist {
				cp := *s
				twin[j] = &cp
			}
			got, _ := c.test(hist)
			want, _ := viaCEL.test(twin)
			if got != want {
				last := hist[len(hist)-1]
				t.Fatalf("%s, case %d: native %v, CEL %v (reading %+v, window of %d)", src, i, got, want, *last, len(hist))
			}
		}
	}
	for _, src := range celOnly {
		c := mustCompile(t, Rule{When: src})
		if c.whenN != nil {
			t.Errorf("%s: has a native form, but the native form does not cover it", src)
		}
	}
}

// TestNativeClear: a rule whose clear condition has a native form re-arms as with CEL.
func TestNativeClear(t *testing.T) {
	c := mustCompile(t, Rule{When: "metrics.temp > 25.0", Clear: "metrics.temp < 24.0"})
	if c.whenN == nil || c.clearN == nil {
		t.Fatal("no native form for when or clear")
	}
	viaCEL := *c
	viaCEL.whenN, viaCEL.clearN = nil, nil
	values := []float64{20, 26, 25, 24.5, 26, 23, 26, 26, 20, 27}
	got, want := firedAt(run(c, samples("d", values...))), firedAt(run(&viaCEL, samples("d", values...)))
	if len(got) != 3 || len(got) != len(want) {
		t.Fatalf("native fired at %v, CEL at %v; want 3 firings each", got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("native fired at %v, CEL at %v", got, want)
		}
	}
}
