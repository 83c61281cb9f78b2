package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/anchorline/anchorline/internal/chserver"
	"github.com/anchorline/anchorline/services/config"
	"github.com/anchorline/anchorline/services/stack"
)

// plainStack is an embedded NATS and a fresh database, as the bench's runner sees them.
func plainStack(t *testing.T, ctx context.Context) *runner {
	t.Helper()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	addr, db, conn := chserver.NewDatabase(t)
	ns, err := stack.StartNATS("nats://127.0.0.1:0", filepath.Join(t.TempDir(), "nats"), stack.NATSServer{}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	nc, js, err := stack.ConnectNATS(ctx, ns.ClientURL(), "plain test", quiet)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	cfg := config.Default()
	cfg.ClickHouse.Addr = addr
	return &runner{cfg: cfg, out: io.Discard, natsURL: ns.ClientURL(), db: db, ch: conn, js: js}
}

// The plain reference stores every message once, as a row holding the message's fields, in
// full batches and a short last one; it deletes its stream and leaves its table to dropPlain.
func TestPlainConnector(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	r := plainStack(t, ctx)
	const devices, n = 7, 2*plainBatch + 345
	set := make([]signed, n)
	var seqSum uint64
	for i := range set {
		sig := make([]byte, 64)
		_, _ = rand.Read(sig)
		set[i] = signed{dev: devID(i % devices), seq: uint64(i/devices + 1), sig: sig}
		seqSum += set[i].seq
	}
	fig, err := r.plainReference(ctx, set)
	if err != nil {
		t.Fatal(err)
	}
	if fig.perSec <= 0 || fig.self <= 0 || fig.clickhouse != 0 {
		t.Fatalf("figures %+v: want a rate, this process's CPU, and no ClickHouse CPU (not a child)", fig)
	}
	var rows, devs, keys, sums uint64
	var minSig, maxSig uint64
	var temps float64
	if err := r.ch.QueryRow(ctx, "SELECT count(), uniqExact(device), uniqExact(device, seq), sum(seq), min(length(sig)), max(length(sig)), sum(temp) FROM "+r.db+"."+plainTable).
		Scan(&rows, &devs, &keys, &sums, &minSig, &maxSig, &temps); err != nil {
		t.Fatal(err)
	}
	if rows != n || devs != devices || keys != n || sums != seqSum || minSig != 128 || maxSig != 128 {
		t.Fatalf("stored %d rows, %d devices, %d distinct (device, seq), sum(seq) %d, sig lengths %d..%d; want %d, %d, %d, %d, 128..128",
			rows, devs, keys, sums, minSig, maxSig, n, devices, n, seqSum)
	}
	wantTemps := 0.0
	for k := range n {
		wantTemps += 20 + float64(k%100)/10
	}
	if d := temps - wantTemps; d > 1e-6*wantTemps || d < -1e-6*wantTemps {
		t.Fatalf("sum(temp) %f, want %f", temps, wantTemps)
	}
	var sig string
	if err := r.ch.QueryRow(ctx, "SELECT sig FROM "+r.db+"."+plainTable+" WHERE device = ? AND seq = ?", set[n-1].dev, set[n-1].seq).Scan(&sig); err != nil {
		t.Fatal(err)
	}
	if sig != hex.EncodeToString(set[n-1].sig) {
		t.Fatalf("sig %s, want %x", sig, set[n-1].sig)
	}
	if _, err := r.js.Stream(ctx, plainStream); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Fatalf("stream %s after the run: %v, want it deleted", plainStream, err)
	}
	if err := r.dropPlain(ctx); err != nil {
		t.Fatal(err)
	}
	var tables uint64
	if err := r.ch.QueryRow(ctx, "SELECT count() FROM system.tables WHERE database = ? AND name = ?", r.db, plainTable).Scan(&tables); err != nil {
		t.Fatal(err)
	}
	if tables != 0 {
		t.Fatalf("%s still exists after dropPlain", plainTable)
	}
}

// A message the connector cannot parse ends its drain with the parser's error instead of
// leaving it waiting.
func TestPlainConnectorBadMessage(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	r := plainStack(t, ctx)
	if _, err := r.js.CreateStream(ctx, jetstream.StreamConfig{Name: plainStream, Subjects: []string{plainSubjects}}); err != nil {
		t.Fatal(err)
	}
	if err := r.ch.Exec(ctx, plainDDL(r.db)); err != nil {
		t.Fatal(err)
	}
	if _, err := r.js.Publish(ctx, "plain.bench-00000", []byte(`{"device":"bench-00000","seq":"one"}`)); err != nil {
		t.Fatal(err)
	}
	_, err := drainPlain(ctx, r.natsURL, nil, clickhouse.Options{Addr: []string{r.cfg.ClickHouse.Addr}, Auth: clickhouse.Auth{Database: r.db}}, r.db+"."+plainTable, 1)
	if !errors.Is(err, errPlainMessage) {
		t.Fatalf("err = %v, want %v", err, errPlainMessage)
	}
}

func TestDecodePlain(t *testing.T) {
	good := `{"device":"d","seq":3,"ts":"2026-01-02T03:04:05.678Z","temp":20.5,"hum":40,"sig":"ab"}`
	vals, err := decodePlain([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	ts := time.Date(2026, 1, 2, 3, 4, 5, 678e6, time.UTC)
	if len(vals) != 6 {
		t.Fatalf("decoded %v", vals)
	}
	if got, ok := vals[2].(time.Time); !ok || !got.Equal(ts) || vals[0] != "d" || vals[1] != uint64(3) || vals[3] != 20.5 || vals[4] != 40.0 || vals[5] != "ab" {
		t.Fatalf("decoded %v", vals)
	}
	for name, msg := range map[string]string{
		"not JSON":      `{"device":`,
		"missing field": `{"device":"d","seq":3,"ts":"2026-01-02T03:04:05.678Z","temp":20.5,"hum":40}`,
		"wrong type":    `{"device":"d","seq":"3","ts":"2026-01-02T03:04:05.678Z","temp":20.5,"hum":40,"sig":"ab"}`,
		"bad ts":        `{"device":"d","seq":3,"ts":"yesterday","temp":20.5,"hum":40,"sig":"ab"}`,
	} {
		if _, err := decodePlain([]byte(msg)); !errors.Is(err, errPlainMessage) {
			t.Errorf("%s: err = %v, want %v", name, err, errPlainMessage)
		}
	}
}

// snapshotCPU reads a second process's CPU time when given its pid (here this process's own,
// standing in for ClickHouse's).
func TestSnapshotCPU(t *testing.T) {
	before, err := snapshotCPU(0)
	if err != nil {
		t.Fatal(err)
	}
	if before.clickhouse != 0 {
		t.Fatalf("no ClickHouse pid, CPU %f", before.clickhouse)
	}
	start, err := snapshotCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	x := 0
	for now, _ := snapshotCPU(os.Getpid()); now.clickhouse-start.clickhouse < 0.05; now, _ = snapshotCPU(os.Getpid()) {
		if t.Context().Err() != nil {
			t.Fatal("the test ended before the kernel counted any CPU time")
		}
		x++ // burn CPU until the kernel has counted some
	}
	used, err := snapshotCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if d := used.since(start); d.clickhouse <= 0 || d.self <= 0 {
		t.Fatalf("used %+v after %d rounds of work", d, x)
	}
	if _, err := snapshotCPU(1 << 30); err == nil {
		t.Fatal("a process that does not exist has a CPU time")
	}
}
