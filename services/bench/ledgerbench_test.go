package bench

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A small run of the ledger mode: four validators and the reference of one, 20 anchors in each
// phase. Its figures are filled and consistent, and with node0 stopped the client moved to
// another validator and the blocks were signed by the three left.
func TestLedgerRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	var progress strings.Builder
	opts := LedgerOptions{Validators: 4, Rate: 20, Duration: time.Second, Anchors: 20, InFlight: 8, Progress: &progress}
	res, err := RunLedger(ctx, opts, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("%v\n%s", err, progress.String())
	}
	if res.Network.Validators != 4 || res.Network.OneDown == nil || res.Reference == nil || res.Reference.Validators != 1 || res.Reference.OneDown != nil {
		t.Fatalf("runs: %+v", res)
	}
	latencies := []struct {
		name       string
		l          Latency
		minSigners int
		maxSigners int
	}{
		{"4 validators, all up", res.Network.AllUp, 3, 4}, // a commit holds at least the 2/3 that decided
		{"4 validators, one down", *res.Network.OneDown, 3, 3},
		{"1 validator", res.Reference.AllUp, 1, 1},
	}
	for _, c := range latencies {
		l := c.l
		if l.Anchors != 20 || l.P50Ms <= 0 || l.P99Ms < l.P50Ms || l.MaxMs < l.P99Ms || l.Blocks < 1 || l.Blocks > l.Anchors || l.Client == "" {
			t.Errorf("%s: latency %+v", c.name, l)
		}
		if l.MinSigners < c.minSigners || l.MaxSigners > c.maxSigners || l.MinSigners > l.MaxSigners {
			t.Errorf("%s: %d-%d signatures on the commits, want %d-%d", c.name, l.MinSigners, l.MaxSigners, c.minSigners, c.maxSigners)
		}
	}
	if down := res.Network.OneDown; down.Client == res.Network.AllUp.Client {
		t.Errorf("with node0 (%s) stopped the client still used it", down.Client)
	}
	for name, tp := range map[string]Throughput{"4 validators": res.Network.Throughput, "1 validator": res.Reference.Throughput} {
		if tp.Anchors != 20 || tp.InFlight != 8 || tp.AnchorsPerSec <= 0 || tp.BlocksPerSec <= 0 || tp.PerBlock < 1 || tp.MaxPerBlock < 1 || tp.MaxPerBlock > 8 {
			t.Errorf("%s: throughput %+v", name, tp)
		}
	}
	if res.P50Ratio <= 0 || res.P99Ratio <= 0 || res.ThroughputRatio <= 0 || res.Cores < 1 || res.TimeoutCommitMs <= 0 {
		t.Errorf("result %+v", res)
	}

	path := filepath.Join(t.TempDir(), "ledger.json")
	if err := res.WriteJSON(path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var back LedgerResult
	if err := json.Unmarshal(b, &back); err != nil || back.Network.OneDown == nil || back.Network.OneDown.P99Ms != res.Network.OneDown.P99Ms ||
		back.Reference == nil || back.Network.Throughput != res.Network.Throughput {
		t.Fatalf("result file %s: %v", b, err)
	}
	for _, k := range []string{`"one_down"`, `"p50_ms"`, `"p99_ms"`, `"max_signers"`, `"anchors_per_sec"`, `"blocks_per_sec"`, `"reference"`, `"throughput_ratio"`} {
		if !strings.Contains(string(b), k) {
			t.Errorf("result file lacks %s", k)
		}
	}
	var out strings.Builder
	res.Print(&out)
	for _, want := range []string{"latency, all 4 up:", "latency, one down:", "anchors/s", "reference: one validator", "ratios:"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, out.String())
		}
	}
}

// Options that describe no run are refused up front, naming the flag.
func TestLedgerOptionsInvalid(t *testing.T) {
	good := LedgerOptions{Validators: 4, Rate: 10, Duration: time.Second, Anchors: 10, InFlight: 4}
	for _, c := range []struct {
		change func(*LedgerOptions)
		want   string
	}{
		{func(o *LedgerOptions) { o.Validators = 0 }, "--validators 0"},
		{func(o *LedgerOptions) { o.Rate = 0 }, "--rate"},
		{func(o *LedgerOptions) { o.Duration = 10 * time.Millisecond }, "submits no anchor"}, // 10/s for 10 ms
		{func(o *LedgerOptions) { o.Anchors = 0 }, "--anchors 0"},
		{func(o *LedgerOptions) { o.InFlight = -1 }, "--in-flight -1"},
	} {
		o := good
		c.change(&o)
		_, err := RunLedger(t.Context(), o, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: err = %v, want one naming %q", o, err, c.want)
		}
	}
}
