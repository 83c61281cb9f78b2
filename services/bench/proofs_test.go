package bench

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/anchorline/anchorline/internal/chserver"
	"github.com/anchorline/anchorline/services/config"
)

// A small run of `bench proofs`, so that it keeps working: devices registered in bulk, readings
// stored and anchored, one API process answering /healthz, proofs (a sample verified) and whole
// ranges (each verified and complete), and the result file has every field.
func TestSmallProofsRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	bin := buildAnchorline(t, ctx)
	addr, _, _ := chserver.NewDatabase(t)
	cfg := config.Default()
	cfg.ClickHouse.Addr = addr
	cfg.Anchor.Interval = 500 * time.Millisecond
	var progress strings.Builder
	res, err := RunProofs(ctx, cfg, ProofOptions{Readings: 2000, Devices: 300, Publishers: 25, Clients: 2, Duration: 500 * time.Millisecond,
		Cold: 10, Binary: bin, Progress: &progress}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("%v\n%s", err, progress.String())
	}
	if res.Readings != 2000 || res.Batches == 0 || res.Anchors == 0 || res.Errors != 0 || res.ColdProofs != 10 || res.Verified < 11 {
		t.Fatalf("result %+v", res)
	}
	if res.HealthzPerSec <= 0 || res.ProofsPerSec <= 0 || res.RatioToHealthz <= 0 || res.ProofsP99Ms < res.ProofsP50Ms || res.ColdMaxMs < res.ColdP50Ms {
		t.Fatalf("rates %+v", res)
	}
	if res.Ranges != rangeDevices || res.RangeReadings != rangeDevices*2000/25 || !res.RangeAllComplete || res.RangePerSec <= 0 {
		t.Fatalf("ranges %+v", res)
	}
	checkResultFile(t, res.WriteJSON, "proofs_per_sec", "proofs_p50_ms", "proofs_p99_ms", "healthz_per_sec", "ratio_to_healthz", "cold_max_ms",
		"cold_first_of_batch_max_ms", "range_readings_per_sec", "range_all_complete", "api_cpu_seconds_per_1k_proofs", "verified", "errors")
}
