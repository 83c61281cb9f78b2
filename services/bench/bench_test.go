package bench

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/anchorline/anchorline/internal/chserver"
	"github.com/anchorline/anchorline/services/config"
)

func TestMain(m *testing.M) { os.Exit(chserver.RunTests(m)) }

// A small run of the whole benchmark, so that it keeps working: two worker processes drain a
// stream, a live phase measures latencies, and the result file has every field.
func TestSmallRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	bin := buildAnchorline(t, ctx)
	addr, _, _ := chserver.NewDatabase(t)
	cfg := config.Default()
	cfg.ClickHouse.Addr = addr
	cfg.Anchor.Interval = 500 * time.Millisecond
	var progress strings.Builder
	res, err := Run(ctx, cfg, Options{Readings: 3000, Devices: 20, Workers: 2, LiveRate: 500, LiveDuration: 2 * time.Second,
		Binary: bin, Progress: &progress}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("%v\n%s", err, progress.String())
	}
	if res.ReadingsPerSec <= 0 || res.RawJetStreamPerSec <= 0 || res.VerifyPerSec <= 0 || res.CPUSecondsPer1k <= 0 || res.PeakRSSBytes == 0 {
		t.Fatalf("drain result %+v", res)
	}
	// The plain reference ran; ClickHouse is the tests' server, not the bench's child, so its
	// CPU is unknown and said to be.
	if res.PlainConnectorPerSec <= 0 || res.RatioToPlain <= 0 || res.PlainCPUPer1k <= 0 || res.NATSAndBenchCPUPer1k <= 0 ||
		res.ClickHouseEmbedded || res.ClickHouseCPUPer1k != 0 || res.PlainClickHouseCPUPer1k != 0 {
		t.Fatalf("plain reference and CPU accounting %+v", res)
	}
	if !strings.Contains(progress.String(), "reference: plain connector") || !strings.Contains(progress.String(), "plain connector: ") {
		t.Fatalf("no plain reference in the progress:\n%s", progress.String())
	}
	if res.LiveReadings != 1000 || res.P50QueryableMs <= 0 || res.P99QueryableMs < res.P50QueryableMs || res.P99AnchoredMs < res.P50QueryableMs {
		t.Fatalf("live result %+v", res)
	}
	checkResultFile(t, res.WriteJSON, "readings_per_sec", "raw_jetstream_per_sec", "verify_per_sec", "p50_queryable_ms", "p99_queryable_ms",
		"p50_anchored_ms", "p99_anchored_ms", "cpu_seconds_per_1k", "peak_rss_bytes", "rejected", "anomalies", "chain_remote", "chain_lookups",
		"plain_connector_per_sec", "ratio_to_plain", "clickhouse_embedded", "clickhouse_cpu_seconds_per_1k", "nats_and_bench_cpu_seconds_per_1k",
		"plain_clickhouse_cpu_seconds_per_1k", "plain_cpu_seconds_per_1k")
	var out strings.Builder
	res.Print(&out)
	if !strings.Contains(out.String(), "readings/s") || !strings.Contains(out.String(), "rows/s plain connector") ||
		!strings.Contains(out.String(), "unknown CPU-s per 1,000 in ClickHouse") || !strings.Contains(out.String(), "of the plain connector") {
		t.Fatalf("summary:\n%s", out.String())
	}
}

// A worker that exits on its own ends the run with an error that says so, instead of leaving
// the bench waiting for readings that will never be stored.
func TestWorkerExitEndsRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	exits := filepath.Join(t.TempDir(), "anchorline")
	if err := os.WriteFile(exits, []byte("#!/bin/sh\necho 'ingest: cannot start' >&2\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	addr, _, _ := chserver.NewDatabase(t)
	cfg := config.Default()
	cfg.ClickHouse.Addr = addr
	_, err := Run(ctx, cfg, Options{Readings: 1000, Devices: 5, Workers: 1, Binary: exits},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil || !strings.Contains(err.Error(), "ingest worker 0 exited before the bench ended (exit status 3)") {
		t.Fatalf("err = %v, want the worker's exit", err)
	}
	if ctx.Err() != nil {
		t.Fatal("the run waited for the test's deadline")
	}
}

// buildAnchorline builds the anchorline executable the bench runs its processes from.
func buildAnchorline(t *testing.T, ctx context.Context) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "anchorline")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "../anchorline").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

// checkResultFile writes a result with write and checks that the JSON has every key.
func checkResultFile(t *testing.T, write func(path string) error, keys ...string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "result.json")
	if err := write(path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var fields map[string]any
	if err := json.Unmarshal(b, &fields); err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if _, ok := fields[k]; !ok {
			t.Errorf("result file lacks %s", k)
		}
	}
}
