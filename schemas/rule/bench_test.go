package rule

import (
	"testing"

	"github.com/anchorline/anchorline/schemas/reading"
)

// BenchmarkStep evaluates one rule on one reading with the stage's history, for a threshold,
// a window of the last 10 readings and a threshold with hysteresis.
//
//	go test -run '^$' -bench Step -benchmem ./schemas/rule/
func BenchmarkStep(b *testing.B) {
	for _, tc := range []struct {
		name string
		r    Rule
	}{
		{"threshold", Rule{When: "metrics.temp > 25.5"}},
		{"window-avg-10", Rule{When: "size == 10 && window.avg.temp > 25.5", Last: 10}},
		{"hysteresis", Rule{When: "metrics.temp > 25.5", Clear: "metrics.temp < 24.5"}},
	} {
		tc.r.ID, tc.r.Version, tc.r.Actions = "b", 1, []Action{{Kind: ActionEvent}}
		c, err := Compile(tc.r)
		if err != nil {
			b.Fatal(err)
		}
		hist := make([]*Sample, 100)
		for i := range hist {
			hist[i] = &Sample{Device: "d", Seq: uint64(i + 1), TS: uint64(1000 * i), Metrics: []reading.Metric{{Name: "hum", Value: 40}, {Name: "temp", Value: 20 + float64(i%100)/10}}}
		}
		b.Run(tc.name, func(b *testing.B) {
			var st State
			i := 0
			for b.Loop() {
				j := 10 + i%90
				st, _ = c.Step(st, hist[j-9:j+1])
				i++
			}
		})
	}
}
