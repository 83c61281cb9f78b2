package stack

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/anchorline/anchorline/internal/chserver"
	"github.com/anchorline/anchorline/schemas/entry"
	"github.com/anchorline/anchorline/schemas/reading"
	"github.com/anchorline/anchorline/services/api"
)

// load publishes readings of devs, round-robin, at about rate per second until n are
// acknowledged by JetStream, retrying through outages (the message id makes a retry harmless).
type load struct {
	devs []*testDevice
	mu   sync.Mutex
	sent int
}

func (l *load) run(t *testing.T, ctx context.Context, url string, n int, rate float64) error {
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	start := time.Now()
	for i := range n {
		if wait := time.Duration(float64(i)/rate*float64(time.Second)) - time.Since(start); wait > 0 {
			time.Sleep(wait)
		}
		dv := l.devs[i%len(l.devs)]
		raw := dv.next(t)
		msg := nats.NewMsg(reading.Subject(dv.ID))
		msg.Data = raw
		msg.Header.Set(jetstream.MsgIDHeader, reading.MsgID(dv.ID, dv.Seq))
		for {
			pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			_, err := js.PublishMsg(pctx, msg)
			cancel()
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			time.Sleep(100 * time.Millisecond)
		}
		l.mu.Lock()
		l.sent++
		l.mu.Unlock()
	}
	return nil
}

func registerAll(t *testing.T, ctx context.Context, c *api.Client, d *Dev, prefix string, n int) []*testDevice {
	var devs []*testDevice
	for i := range n {
		alg := reading.Ed25519
		if i%2 == 1 {
			alg = reading.ES256
		}
		dv := newDevice(t, fmt.Sprintf("%s-%02d", prefix, i), alg)
		register(t, ctx, c, d.AdminKey, dv.ID, dv.Key.Public())
		devs = append(devs, dv)
	}
	return devs
}

// TestWorkersShareTheConsumer runs three more ingest workers beside dev's own: every reading is
// stored exactly once and the work is spread across them.
func TestWorkersShareTheConsumer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	chAddr, database, ch := chserver.NewDatabase(t)
	cfg := devConfig(t, chAddr, database, t.TempDir())
	cfg.Ingest.BatchSize = 200
	cfg.Ingest.ChainWait = 3 * time.Second
	d, err := StartDev(ctx, cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Stop()
	client := api.NewClient("http://" + d.HTTPAddr)
	devs := registerAll(t, ctx, client, d, "share", 6)

	var wg sync.WaitGroup
	wctx, stopWorkers := context.WithCancel(ctx)
	for i := range 3 {
		wcfg := cfg
		wcfg.Ingest.Worker = fmt.Sprintf("extra-%d", i)
		_, js, err := ConnectNATS(ctx, cfg.NATS.URL, wcfg.Ingest.Worker, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		g, err := NewIngest(ctx, wcfg, js, ch, d.Node.Client(), testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() { defer wg.Done(); _ = g.Run(wctx) }()
	}
	defer func() { stopWorkers(); wg.Wait() }()

	const n = 6000
	l := &load{devs: devs}
	if err := l.run(t, ctx, cfg.NATS.URL, n, 3000); err != nil {
		t.Fatal(err)
	}
	// One reading of the first device is lost before it reaches NATS: its successor's link
	// is the one break in the chains.
	lost := devs[0]
	lost.next(t)
	gap := lost.Seq + 1
	if err := l.run(t, ctx, cfg.NATS.URL, len(devs), 1000); err != nil {
		t.Fatal(err)
	}
	total := n + len(devs)
	eventually(t, ctx, "all readings stored, every link settled", func() (bool, string) {
		c := count(t, ctx, ch, "SELECT count() FROM "+database+".readings")
		a := count(t, ctx, ch, "SELECT count() FROM "+database+".anomalies")
		return c >= uint64(total) && a > 0, fmt.Sprintf("%d of %d readings, %d anomalies", c, total, a)
	})
	if rows, distinct := count(t, ctx, ch, "SELECT count() FROM "+database+".readings"), count(t, ctx, ch, "SELECT uniqExact(device_id, seq) FROM "+database+".readings"); rows != uint64(total) || distinct != uint64(total) {
		t.Fatalf("%d rows, %d distinct readings, want %d of each", rows, distinct, total)
	}
	// Each device's readings went to several workers: a link to a predecessor another worker
	// stored is no break. Only the lost reading's successor is one.
	if breaks := count(t, ctx, ch, "SELECT count() FROM "+database+".anomalies"); breaks != 1 {
		t.Errorf("%d chain breaks recorded, want the 1 after the lost reading", breaks)
	}
	if n := count(t, ctx, ch, fmt.Sprintf("SELECT count() FROM %s.anomalies WHERE device_id = '%s' AND seq = %d AND prev_seq = %d AND kind = 'chain_break'", database, lost.ID, gap, gap-2)); n != 1 {
		t.Errorf("the break after %s seq %d is not recorded as such", lost.ID, gap-1)
	}
	rows, err := ch.Query(ctx, "SELECT worker, toUInt64(sum(size)) FROM "+database+".batches GROUP BY worker")
	if err != nil {
		t.Fatal(err)
	}
	share := map[string]uint64{}
	for rows.Next() {
		var w string
		var c uint64
		if err := rows.Scan(&w, &c); err != nil {
			t.Fatal(err)
		}
		share[w] = c
	}
	rows.Close()
	t.Logf("readings per worker: %v", share)
	busy := 0
	for _, c := range share {
		if c > 0 {
			busy++
		}
	}
	if busy < 3 {
		t.Fatalf("work not spread across the workers: %v", share)
	}
}

// TestClickHouseOutage stops ClickHouse under load: ingest stops pulling (the consumer's
// in-flight readings stay bounded while the stream backs up), /readyz says why, and once
// ClickHouse is back everything is stored; nothing is lost.
func TestClickHouseOutage(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	dir := t.TempDir()
	srv, err := chserver.Start(ctx, filepath.Join(dir, "clickhouse"), "", testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = srv.Stop() }()
	cfg := devConfig(t, srv.Addr, "outage", filepath.Join(dir, "data"))
	cfg.Ingest.MaxAckPending = 300
	cfg.Ingest.PullBatch = 100
	cfg.Ingest.BatchSize = 100
	d, err := StartDev(ctx, cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Stop()
	client := api.NewClient("http://" + d.HTTPAddr)
	devs := registerAll(t, ctx, client, d, "outage", 4)
	ch, err := srv.Open(ctx, "default")
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	l := &load{devs: devs}
	if err := l.run(t, ctx, cfg.NATS.URL, 200, 1000); err != nil {
		t.Fatal(err)
	}
	eventually(t, ctx, "first readings stored", func() (bool, string) {
		c := count(t, ctx, ch, "SELECT count() FROM outage.readings")
		return c == 200, fmt.Sprintf("%d", c)
	})

	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := l.run(t, ctx, cfg.NATS.URL, 2000, 2000); err != nil {
		t.Fatal(err)
	}
	_, js, err := ConnectNATS(ctx, cfg.NATS.URL, "outage-test", testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, ctx, "not ready with the reason", func() (bool, string) {
		err := client.Ready(ctx)
		return err != nil && strings.Contains(err.Error(), "clickhouse"), fmt.Sprint(err)
	})
	lag, err := ConsumerLag(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	if lag.AckPending > uint64(cfg.Ingest.MaxAckPending) || lag.Pending < 2000-uint64(cfg.Ingest.MaxAckPending) {
		t.Fatalf("ingest kept pulling during the outage: %+v", lag)
	}

	time.Sleep(2 * time.Second) // a few retries with backoff
	srv, err = chserver.Start(ctx, filepath.Join(dir, "clickhouse"), srv.Addr, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ch2, err := srv.Open(ctx, "default")
	if err != nil {
		t.Fatal(err)
	}
	defer ch2.Close()
	eventually(t, ctx, "everything stored after the outage", func() (bool, string) {
		c := count(t, ctx, ch2, "SELECT uniqExact(device_id, seq) FROM outage.readings")
		return c == 2200, fmt.Sprintf("%d of 2200", c)
	})
	eventually(t, ctx, "ready again", func() (bool, string) {
		err := client.Ready(ctx)
		return err == nil, fmt.Sprint(err)
	})
	if st := d.Ingest.Stats(); st.Retries == 0 {
		t.Fatalf("no flush was retried: %+v", st)
	}
}

// TestNATSRestart restarts the NATS server (file storage) under load: publishers and ingest
// reconnect and resume; nothing is lost.
func TestNATSRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	chAddr, database, ch := chserver.NewDatabase(t)
	cfg := devConfig(t, chAddr, database, t.TempDir())
	d, err := StartDev(ctx, cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Stop()
	client := api.NewClient("http://" + d.HTTPAddr)
	devs := registerAll(t, ctx, client, d, "natsrs", 4)
	l := &load{devs: devs}
	done := make(chan error, 1)
	go func() { done <- l.run(t, ctx, cfg.NATS.URL, 3000, 1000) }()
	time.Sleep(time.Second)
	if err := d.RestartNATS(500 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	eventually(t, ctx, "everything stored after the restart", func() (bool, string) {
		c := count(t, ctx, ch, "SELECT uniqExact(device_id, seq) FROM "+database+".readings")
		return c == 3000, fmt.Sprintf("%d of 3000", c)
	})
	eventually(t, ctx, "all batches anchored", func() (bool, string) {
		b := count(t, ctx, ch, "SELECT count() FROM "+database+".batches FINAL")
		a := count(t, ctx, ch, "SELECT uniqExact(batch_id) FROM "+database+".batch_anchors")
		return a == b, fmt.Sprintf("%d of %d", a, b)
	})
}

// TestWorkerKilled kills an ingest process (SIGKILL) in the middle of its work: after a
// restart every published reading is stored; the duplicates the crash caused are counted in
// status, and readings_unique reads each reading once.
func TestWorkerKilled(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	bin := filepath.Join(t.TempDir(), "anchorline")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "../anchorline").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	chAddr, database, ch := chserver.NewDatabase(t)
	cfg := devConfig(t, chAddr, database, t.TempDir())
	cfg.Ingest.AckWait = 2 * time.Second
	d, err := StartDev(ctx, cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Stop()
	client := api.NewClient("http://" + d.HTTPAddr)
	devs := registerAll(t, ctx, client, d, "kill", 4)

	worker := func() *exec.Cmd {
		httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
		cmd := exec.CommandContext(ctx, bin, "ingest", "--nats.url", cfg.NATS.URL, "--clickhouse.addr", chAddr,
			"--clickhouse.database", database, "--ledger.rpc", cfg.Ledger.RPC, "--http.addr", httpAddr, "--log.level", "error")
		cmd.Env = append(os.Environ(), "ANCHORLINE_INGEST_WORKER=victim", "ANCHORLINE_INGEST_BATCH_SIZE=300", "ANCHORLINE_INGEST_ACK_WAIT=2s")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	victim := worker()
	l := &load{devs: devs}
	done := make(chan error, 1)
	go func() { done <- l.run(t, ctx, cfg.NATS.URL, 6000, 2000) }()
	eventually(t, ctx, "the worker is busy", func() (bool, string) {
		c := count(t, ctx, ch, "SELECT count() FROM "+database+".batches WHERE worker = 'victim'")
		return c >= 2, fmt.Sprintf("%d batches", c)
	})
	if err := victim.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = victim.Wait()
	restarted := worker()
	defer func() { _ = restarted.Process.Signal(syscall.SIGINT); _ = restarted.Wait() }()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	eventually(t, ctx, "every reading stored after the crash", func() (bool, string) {
		c := count(t, ctx, ch, "SELECT uniqExact(device_id, seq) FROM "+database+".readings")
		return c == 6000, fmt.Sprintf("%d of 6000", c)
	})
	// Once every message is acknowledged no more duplicates can come. Readings whose
	// predecessor the victim held waited for its redelivery: no chain break may be recorded.
	_, js, err := ConnectNATS(ctx, cfg.NATS.URL, "kill-test", testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, ctx, "every message acknowledged", func() (bool, string) {
		lag, err := ConsumerLag(ctx, js)
		return err == nil && lag.Pending == 0 && lag.AckPending == 0, fmt.Sprintf("%+v %v", lag, err)
	})
	if n := count(t, ctx, ch, "SELECT count() FROM "+database+".anomalies"); n != 0 {
		t.Fatalf("%d chain anomalies recorded for intact chains", n)
	}
	rows := count(t, ctx, ch, "SELECT count() FROM "+database+".readings")
	unique := count(t, ctx, ch, "SELECT count() FROM "+database+".readings_unique")
	if unique != 6000 {
		t.Fatalf("readings_unique has %d rows", unique)
	}
	st, err := client.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Tables.Duplicates != rows-6000 {
		t.Fatalf("status counts %d duplicates, the table has %d", st.Tables.Duplicates, rows-6000)
	}
	t.Logf("%d duplicate rows after the crash", rows-6000)
}

// TestRevocationTakesEffect measures how long after its block a revocation stops a worker that
// learns it only by following the ledger (no API hook): it must be within 2 seconds.
func TestRevocationTakesEffect(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	chAddr, database, ch := chserver.NewDatabase(t)
	cfg := devConfig(t, chAddr, database, t.TempDir())
	d, err := StartDev(ctx, cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Stop()
	client := api.NewClient("http://" + d.HTTPAddr)
	dv := registerAll(t, ctx, client, d, "revoke", 1)[0]
	nc, err := nats.Connect(cfg.NATS.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	publishedAt := map[uint64]time.Time{}
	pub := func() {
		raw := dv.next(t)
		publishedAt[dv.Seq] = time.Now()
		publish(t, js, reading.Subject(dv.ID), reading.MsgID(dv.ID, dv.Seq), raw)
	}
	for range 20 {
		pub()
		time.Sleep(20 * time.Millisecond)
	}
	// Straight to the ledger: the workers learn of it only by following new blocks.
	rev, err := entry.NewRevoke(d.AdminKey, dv.ID, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	rc, err := d.Node.Client().Submit(ctx, rev)
	if err != nil {
		t.Fatal(err)
	}
	committed := time.Now() // Submit returns once the block is committed
	for time.Since(committed) < 3*time.Second {
		pub()
		time.Sleep(20 * time.Millisecond)
	}
	eventually(t, ctx, "every reading handled", func() (bool, string) {
		n := count(t, ctx, ch, "SELECT count() FROM "+database+".readings WHERE device_id = '"+dv.ID+"'") +
			count(t, ctx, ch, "SELECT count() FROM "+database+".rejected WHERE device_id = '"+dv.ID+"'")
		return n == uint64(len(publishedAt)), fmt.Sprintf("%d of %d", n, len(publishedAt))
	})
	rows, err := ch.Query(ctx, "SELECT seq FROM "+database+".readings WHERE device_id = '"+dv.ID+"' ORDER BY seq")
	if err != nil {
		t.Fatal(err)
	}
	var lastAccepted time.Time
	for rows.Next() {
		var seq uint64
		if err := rows.Scan(&seq); err != nil {
			t.Fatal(err)
		}
		if at := publishedAt[seq]; at.After(lastAccepted) {
			lastAccepted = at
		}
	}
	rows.Close()
	effect := lastAccepted.Sub(committed)
	t.Logf("revocation committed at height %d; the last reading accepted was published %s after the commit", rc.Height, effect.Round(time.Millisecond))
	if effect > 2*time.Second {
		t.Fatalf("readings were accepted %s after the revocation's block (limit 2s)", effect)
	}
	if n := count(t, ctx, ch, "SELECT count() FROM "+database+".rejected WHERE device_id = '"+dv.ID+"' AND reason = 'revoked_device'"); n == 0 {
		t.Fatal("no reading rejected as revoked_device")
	}
}
