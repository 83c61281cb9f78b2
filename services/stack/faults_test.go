package stack

import (
	"context"
	"fmt"
	"io"
	"net/http"
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

	"github.com/anchorline/anchorline/internal/await"
	"github.com/anchorline/anchorline/internal/chserver"
	"github.com/anchorline/anchorline/pipeline/verify"
	"github.com/anchorline/anchorline/schemas/entry"
	"github.com/anchorline/anchorline/schemas/reading"
	"github.com/anchorline/anchorline/schemas/rule"
	"github.com/anchorline/anchorline/schemas/stream"
	"github.com/anchorline/anchorline/services/api"
	"github.com/anchorline/anchorline/services/auth"
	"github.com/anchorline/anchorline/services/config"
)

// load publishes readings of devs, round-robin, at about rate per second until n are
// acknowledged by JetStream, retrying through outages (the message id makes a retry harmless).
type load struct {
	devs []*testDevice
	opts []nats.Option // the publisher's credentials (the simulator role's)
	mu   sync.Mutex
	sent int
}

func (l *load) run(t *testing.T, ctx context.Context, url string, n int, rate float64) error {
	nc, err := nats.Connect(url, append(l.opts, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))...)
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
	// chain_wait must be longer than ack_wait, which must be long enough for a flush of four
	// workers on two cores under the race detector.
	cfg.Ingest.AckWait, cfg.Ingest.ChainWait = 10*time.Second, 12*time.Second
	d, err := StartDev(ctx, cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg = d.Config() // the addresses dev resolved
	defer d.Stop()
	client := d.APIClient()
	devs := registerAll(t, ctx, client, d, "share", 6)

	var wg sync.WaitGroup
	wctx, stopWorkers := context.WithCancel(ctx)
	for i := range 3 {
		wcfg := cfg
		wcfg.Ingest.Worker = fmt.Sprintf("extra-%d", i)
		_, js, err := ConnectNATS(ctx, cfg.NATS.URL, wcfg.Ingest.Worker, testLogger(t), d.NATSOptions(auth.RoleIngest)...)
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
	l := &load{devs: devs, opts: d.NATSOptions(auth.RoleSimulator)}
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
	await.Until(t, ctx, "all readings stored, every link settled", func() (bool, string) {
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
	cfg = d.Config() // the addresses dev resolved
	defer d.Stop()
	client := d.APIClient()
	devs := registerAll(t, ctx, client, d, "outage", 4)
	ch, err := srv.Open(ctx, "default")
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	l := &load{devs: devs, opts: d.NATSOptions(auth.RoleSimulator)}
	if err := l.run(t, ctx, cfg.NATS.URL, 200, 1000); err != nil {
		t.Fatal(err)
	}
	await.Until(t, ctx, "first readings stored", func() (bool, string) {
		c := count(t, ctx, ch, "SELECT count() FROM outage.readings")
		return c == 200, fmt.Sprintf("%d", c)
	})

	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := l.run(t, ctx, cfg.NATS.URL, 2000, 2000); err != nil {
		t.Fatal(err)
	}
	_, js, err := ConnectNATS(ctx, cfg.NATS.URL, "outage-test", testLogger(t), d.NATSOptions(auth.RoleAdmin)...)
	if err != nil {
		t.Fatal(err)
	}
	await.Until(t, ctx, "not ready with the reason", func() (bool, string) {
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

	await.Until(t, ctx, "flushes retried with backoff", func() (bool, string) {
		st := d.Ingest.Stats()
		return st.Retries >= 3, fmt.Sprintf("%d retries", st.Retries)
	})
	srv, err = chserver.Start(ctx, filepath.Join(dir, "clickhouse"), srv.Addr, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ch2, err := srv.Open(ctx, "default")
	if err != nil {
		t.Fatal(err)
	}
	defer ch2.Close()
	await.Until(t, ctx, "everything stored after the outage", func() (bool, string) {
		c := count(t, ctx, ch2, "SELECT uniqExact(device_id, seq) FROM outage.readings")
		return c == 2200, fmt.Sprintf("%d of 2200", c)
	})
	await.Until(t, ctx, "ready again", func() (bool, string) {
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
	cfg = d.Config() // the addresses dev resolved
	defer d.Stop()
	client := d.APIClient()
	devs := registerAll(t, ctx, client, d, "natsrs", 4)
	l := &load{devs: devs, opts: d.NATSOptions(auth.RoleSimulator)}
	done := make(chan error, 1)
	go func() { done <- l.run(t, ctx, cfg.NATS.URL, 3000, 1000) }()
	await.Until(t, ctx, "readings flowing", func() (bool, string) { // restart in the middle of the load
		c := count(t, ctx, ch, "SELECT count() FROM "+database+".readings")
		return c >= 300, fmt.Sprintf("%d stored", c)
	})
	if err := d.RestartNATS(500 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	await.Until(t, ctx, "everything stored after the restart", func() (bool, string) {
		c := count(t, ctx, ch, "SELECT uniqExact(device_id, seq) FROM "+database+".readings")
		return c == 3000, fmt.Sprintf("%d of 3000", c)
	})
	await.Until(t, ctx, "all batches anchored", func() (bool, string) {
		b := count(t, ctx, ch, "SELECT count() FROM "+database+".batches FINAL")
		a := count(t, ctx, ch, "SELECT uniqExact(batch_id) FROM "+database+".batch_anchors")
		return a == b, fmt.Sprintf("%d of %d", a, b)
	})
}

// TestWorkerKilled kills an ingest process (SIGKILL) in the middle of its work: after a
// restart every published reading is stored; the duplicates the crash caused are counted in
// status, and readings_unique reads each reading once. A rule that fires on every tenth
// reading of each device fires no second time on a reading stored twice: `events` and the
// EVENTS stream hold each event once.
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
	cfg = d.Config() // the addresses dev resolved
	defer d.Stop()
	client := d.APIClient()
	devs := registerAll(t, ctx, client, d, "kill", 4)

	worker := func() *exec.Cmd {
		cmd := exec.CommandContext(ctx, bin, "ingest", "--nats.url", cfg.NATS.URL, "--nats.credentials", d.AuthSetup().File(auth.RoleIngest), "--tls.ca", cfg.CAFile(), "--clickhouse.addr", chAddr,
			"--clickhouse.database", database, "--ledger.rpc", cfg.Ledger.RPC, "--http.addr", "127.0.0.1:0", "--log.level", "error")
		cmd.Env = append(os.Environ(), "ANCHORLINE_INGEST_WORKER=victim", "ANCHORLINE_INGEST_BATCH_SIZE=300", "ANCHORLINE_INGEST_ACK_WAIT=2s")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	tenth, err := entry.NewRule(d.AdminKey, entry.OpPut, rule.Rule{ID: "tenth", Version: 1, When: "seq % 10u == 0u",
		Actions: []rule.Action{{Kind: rule.ActionEvent}}}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	rc, err := d.Ledger.Submit(ctx, tenth)
	if err != nil {
		t.Fatal(err)
	}
	await.Until(t, ctx, "ingest to apply the registry at the rule's height", func() (bool, string) {
		h := d.Services.Ingest.keys.height.Load()
		return h >= rc.Height, fmt.Sprintf("%d of %d", h, rc.Height)
	})
	victim := worker()
	l := &load{devs: devs, opts: d.NATSOptions(auth.RoleSimulator)}
	done := make(chan error, 1)
	go func() { done <- l.run(t, ctx, cfg.NATS.URL, 6000, 2000) }()
	await.Until(t, ctx, "the worker is busy", func() (bool, string) {
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
	await.Until(t, ctx, "every reading stored after the crash", func() (bool, string) {
		c := count(t, ctx, ch, "SELECT uniqExact(device_id, seq) FROM "+database+".readings")
		return c == 6000, fmt.Sprintf("%d of 6000", c)
	})
	// Once every message is acknowledged no more duplicates can come. Readings whose
	// predecessor the victim held waited for its redelivery: no chain break may be recorded.
	_, js, err := ConnectNATS(ctx, cfg.NATS.URL, "kill-test", testLogger(t), d.NATSOptions(auth.RoleAdmin)...)
	if err != nil {
		t.Fatal(err)
	}
	await.Until(t, ctx, "every message acknowledged", func() (bool, string) {
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

	// Every verified reading evaluated (the VERIFIED work queue drained), each event once.
	await.Until(t, ctx, "the rules stage through every verified reading", func() (bool, string) {
		s, err := js.Stream(ctx, stream.Verified)
		if err != nil {
			return false, err.Error()
		}
		info, err := s.Info(ctx)
		return err == nil && info.State.Msgs == 0, fmt.Sprintf("%+v %v", info.State, err)
	})
	evRows := count(t, ctx, ch, "SELECT count() FROM "+database+".events")
	evUnique := count(t, ctx, ch, "SELECT uniqExact(event_id) FROM "+database+".events")
	bad := count(t, ctx, ch, "SELECT count() FROM "+database+".events WHERE seq % 10 != 0 OR seqs[-1] != seq OR rule_id != 'tenth'")
	es, err := js.Stream(ctx, stream.Events)
	if err != nil {
		t.Fatal(err)
	}
	info, err := es.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st2 := d.Services.Rules.Stats()
	t.Logf("%d events of at most 600; rules stage: %+v", evUnique, st2)
	if evRows != evUnique || info.State.Msgs != evUnique || bad != 0 || evUnique == 0 || evUnique > 600 {
		t.Fatalf("events: %d rows, %d ids, %d on the stream, %d not a tenth reading's (want one row and one message per id, at most 600)", evRows, evUnique, info.State.Msgs, bad)
	}
}

// TestRevocationTakesEffect: a revocation committed straight to the ledger (no API hook) stops
// a worker that learns of it only by following new blocks; once a reading is refused as
// revoked_device, no later reading of the device is accepted. How soon it takes effect is
// measured by `anchorline bench` (revocation_ms), not asserted here.
func TestRevocationTakesEffect(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	chAddr, database, ch := chserver.NewDatabase(t)
	cfg := devConfig(t, chAddr, database, t.TempDir())
	d, err := StartDev(ctx, cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg = d.Config() // the addresses dev resolved
	defer d.Stop()
	client := d.APIClient()
	dv := registerAll(t, ctx, client, d, "revoke", 1)[0]
	nc, err := nats.Connect(cfg.NATS.URL, d.NATSOptions(auth.RoleAdmin)...)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	published := 0
	pub := func() {
		raw := dv.next(t)
		published++
		publish(t, js, reading.Subject(dv.ID), reading.MsgID(dv.ID, dv.Seq), raw)
	}
	for range 20 {
		pub()
	}
	await.Until(t, ctx, "the device's first readings stored", func() (bool, string) {
		n := count(t, ctx, ch, "SELECT count() FROM "+database+".readings WHERE device_id = ?", dv.ID)
		return n == 20, fmt.Sprintf("%d of 20", n)
	})
	// Straight to the ledger: the workers learn of it only by following new blocks.
	rev, err := entry.NewRevoke(d.AdminKey, dv.ID, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	rc, err := d.Node.Client().Submit(ctx, rev)
	if err != nil {
		t.Fatal(err)
	}
	// Keep publishing until a reading is refused as revoked; how soon that happens is the
	// benchmark's to measure (anchorline bench reports revocation_ms).
	await.Until(t, ctx, "a reading refused as revoked_device", func() (bool, string) {
		pub()
		n := count(t, ctx, ch, "SELECT count() FROM "+database+".rejected WHERE device_id = ? AND reason = ?", dv.ID, string(verify.RevokedDevice))
		return n > 0, fmt.Sprintf("%d published since the revocation at height %d, none refused yet", published-20, rc.Height)
	})
	// From then on nothing of the device is accepted.
	last := dv.Seq
	for range 20 {
		pub()
	}
	await.Until(t, ctx, "every reading handled", func() (bool, string) {
		n := count(t, ctx, ch, "SELECT count() FROM "+database+".readings WHERE device_id = '"+dv.ID+"'") +
			count(t, ctx, ch, "SELECT count() FROM "+database+".rejected WHERE device_id = '"+dv.ID+"'")
		return n == uint64(published), fmt.Sprintf("%d of %d", n, published)
	})
	if n := count(t, ctx, ch, "SELECT count() FROM "+database+".readings WHERE device_id = ? AND seq > ?", dv.ID, last); n != 0 {
		t.Fatalf("%d readings published after the revocation took effect (after seq %d) were accepted", n, last)
	}
	accepted := count(t, ctx, ch, "SELECT count() FROM "+database+".readings WHERE device_id = ?", dv.ID)
	if n := count(t, ctx, ch, "SELECT count() FROM "+database+".rejected WHERE device_id = ? AND reason = ?", dv.ID, string(verify.RevokedDevice)); n != uint64(published)-accepted {
		t.Fatalf("%d readings refused as revoked_device, want every one not accepted (%d)", n, uint64(published)-accepted)
	}
}

// TestLedgerOutage stops the ledger for 20 seconds while readings flow: ingest keeps storing,
// anchors wait and resume, /readyz names the ledger while it is down; at the end every batch is
// in exactly one anchor, every anchor on the ledger is recorded once, and every reading is
// stored once.
func TestLedgerOutage(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	chAddr, database, ch := chserver.NewDatabase(t)
	cfg := devConfig(t, chAddr, database, t.TempDir())
	cfg.Ingest.BatchSize = 100
	d, err := StartDev(ctx, cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Stop()
	cfg = d.Config()
	client := d.APIClient()
	devs := registerAll(t, ctx, client, d, "ledgerout", 4)

	// About 30 s of readings: before, during and after the outage.
	const n = 6000
	l := &load{devs: devs, opts: d.NATSOptions(auth.RoleSimulator)}
	done := make(chan error, 1)
	go func() { done <- l.run(t, ctx, cfg.NATS.URL, n, 200) }()
	await.Until(t, ctx, "a first anchor recorded", func() (bool, string) {
		a := count(t, ctx, ch, "SELECT count() FROM "+database+".anchors")
		return a > 0, fmt.Sprintf("%d anchors", a)
	})

	if err := d.StopLedger(); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	await.Until(t, ctx, "not ready, naming the ledger", func() (bool, string) {
		code, body := readyz(t, ctx, d.APIClient())
		return code == http.StatusServiceUnavailable && strings.Contains(body, "ledger"), fmt.Sprintf("%d %s", code, body)
	})
	// Readings flow on while anchors wait: batches pile up unanchored, no anchor is recorded.
	atStop := count(t, ctx, ch, "SELECT count() FROM "+database+".readings")
	await.Until(t, ctx, "readings stored during the outage", func() (bool, string) {
		c := count(t, ctx, ch, "SELECT count() FROM "+database+".readings")
		return c >= atStop+1000, fmt.Sprintf("%d stored since the ledger stopped", c-atStop)
	})
	anchorsDown := count(t, ctx, ch, "SELECT count() FROM "+database+".anchors")
	if u := unanchored(t, ctx, ch, database); u == 0 {
		t.Fatal("no batch waits for an anchor while the ledger is down")
	}
	time.Sleep(time.Until(stopped.Add(20 * time.Second))) // the outage lasts 20 s
	if a := count(t, ctx, ch, "SELECT count() FROM "+database+".anchors"); a != anchorsDown {
		t.Fatalf("%d anchors recorded while the ledger was down", a-anchorsDown)
	}
	if u := unanchored(t, ctx, ch, database); u == 0 {
		t.Fatal("no batch waits for an anchor at the end of the outage")
	}
	code, body := readyz(t, ctx, d.APIClient())
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "ledger") {
		t.Fatalf("/readyz with the ledger down: %d %s", code, body)
	}

	if err := d.StartLedger(ctx); err != nil {
		t.Fatal(err)
	}
	await.Until(t, ctx, "ready again", func() (bool, string) {
		code, body := readyz(t, ctx, d.APIClient())
		return code == http.StatusOK, fmt.Sprintf("%d %s", code, body)
	})
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	awaitAllAnchored(t, ctx, ch, database, n)
	if r := count(t, ctx, ch, "SELECT count() FROM "+database+".rejected"); r != 0 {
		t.Errorf("%d readings rejected", r)
	}
	if c := count(t, ctx, ch, "SELECT uniqExact(device_id, seq) FROM "+database+".readings"); c != n {
		t.Errorf("%d distinct readings stored, want %d", c, n)
	}
	anchoredOnce(t, ctx, ch, database, d.Ledger, n)
	if a := count(t, ctx, ch, "SELECT count() FROM "+database+".anchors"); a <= anchorsDown {
		t.Errorf("no anchor after the outage (%d before it)", a)
	}
	if st := d.Ingest.Stats(); st.Rejected != 0 {
		t.Errorf("ingest rejected readings: %+v", st)
	}
	t.Logf("anchoring after the outage: %+v", d.Anchoring.Stats())
}

// TestIngestWhileLedgerUnreachable restarts dev's services while the ledger is down: the fresh
// ingest worker has no device keys cached, so it cannot check the readings that arrive. It holds
// them (rejects none, stores none) until the ledger is back, then stores every one once.
func TestIngestWhileLedgerUnreachable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	chAddr, database, ch := chserver.NewDatabase(t)
	cfg := devConfig(t, chAddr, database, t.TempDir())
	d, err := StartDev(ctx, cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Stop()
	cfg = d.Config()
	devs := registerAll(t, ctx, d.APIClient(), d, "unreach", 4)

	// Dev's own services (and their key cache) go; the ledger stops; a fresh ingest worker comes.
	if err := d.Services.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := d.StopLedger(); err != nil {
		t.Fatal(err)
	}
	wcfg := cfg
	wcfg.Ingest.Worker = "fresh"
	wcfg.HTTP.Addr = "127.0.0.1:0"
	fresh, err := StartServices(ctx, wcfg, testLogger(t), Roles{Ingest: true},
		Env{NATSURL: cfg.NATS.URL, Ledger: d.Ledger, Name: "fresh-ingest"})
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Stop()

	const n = 400
	l := &load{devs: devs, opts: d.NATSOptions(auth.RoleSimulator)}
	if err := l.run(t, ctx, cfg.NATS.URL, n, 1000); err != nil {
		t.Fatal(err)
	}
	// Held through a few redeliveries, not just the first.
	await.Until(t, ctx, "the readings held again and again", func() (bool, string) {
		st := fresh.Ingest.Stats()
		return st.Deferred >= 3*n, fmt.Sprintf("%+v", st)
	})
	if c, r := count(t, ctx, ch, "SELECT count() FROM "+database+".readings"), count(t, ctx, ch, "SELECT count() FROM "+database+".rejected"); c != 0 || r != 0 {
		t.Fatalf("with the ledger down %d readings were stored and %d rejected, want them all held", c, r)
	}
	if st := fresh.Ingest.Stats(); st.Rejected != 0 || st.Verified != 0 {
		t.Fatalf("with the ledger down the worker did not hold every reading: %+v", st)
	}
	nc, js, err := ConnectNATS(ctx, cfg.NATS.URL, "unreach-test", testLogger(t), d.NATSOptions(auth.RoleAdmin)...)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if lag, err := ConsumerLag(ctx, js); err != nil || lag.Pending+lag.AckPending != n {
		t.Fatalf("consumer lag %+v (%v): want all %d readings unacknowledged", lag, err, n)
	}
	code, body := readyz(t, ctx, clientAt(t, cfg, fresh.HTTPAddr))
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "ledger") {
		t.Fatalf("/readyz of the fresh worker with the ledger down: %d %s", code, body)
	}
	if v := metricValue(t, ctx, clientAt(t, cfg, fresh.HTTPAddr), "anchorline_ingest_deferred_total"); v < n {
		t.Fatalf("anchorline_ingest_deferred_total is %v, want at least %d", v, n)
	}

	if err := d.StartLedger(ctx); err != nil {
		t.Fatal(err)
	}
	await.Until(t, ctx, "every held reading stored once the ledger is back", func() (bool, string) {
		c := count(t, ctx, ch, "SELECT count() FROM "+database+".readings_unique")
		r := count(t, ctx, ch, "SELECT count() FROM "+database+".rejected")
		return c == n || r > 0, fmt.Sprintf("%d of %d stored, %d rejected", c, n, r)
	})
	if r := count(t, ctx, ch, "SELECT count() FROM "+database+".rejected"); r != 0 {
		t.Fatalf("%d readings rejected after the ledger came back", r)
	}
	await.Until(t, ctx, "every message acknowledged", func() (bool, string) {
		lag, err := ConsumerLag(ctx, js)
		return err == nil && lag.Pending == 0 && lag.AckPending == 0, fmt.Sprintf("%+v %v", lag, err)
	})
	if a := count(t, ctx, ch, "SELECT count() FROM "+database+".anomalies"); a != 0 {
		t.Errorf("%d chain anomalies recorded for intact chains", a)
	}
	await.Until(t, ctx, "the fresh worker ready", func() (bool, string) {
		code, body := readyz(t, ctx, clientAt(t, cfg, fresh.HTTPAddr))
		return code == http.StatusOK, fmt.Sprintf("%d %s", code, body)
	})
	st := fresh.Ingest.Stats()
	if st.Rejected != 0 || st.Verified < n {
		t.Fatalf("worker stats %+v: want %d verified, none rejected", st, n)
	}
	t.Logf("worker stats after the outage: %+v", st)
}

// clientAt is a client of the API of a process with configuration cfg listening at addr.
func clientAt(t *testing.T, cfg config.Config, addr string) *api.Client {
	t.Helper()
	cfg.HTTP.Addr = addr
	c, err := APIClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// get returns the status code and body of GET path from the API c talks to.
func get(t *testing.T, ctx context.Context, c *api.Client, path string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.Base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return resp.StatusCode, string(b)
}

// readyz returns the status code and body of GET /readyz.
func readyz(t *testing.T, ctx context.Context, c *api.Client) (int, string) {
	t.Helper()
	return get(t, ctx, c, "/readyz")
}

// metricValue returns the value of a counter without labels (but the scope's) from /metrics.
func metricValue(t *testing.T, ctx context.Context, c *api.Client, name string) float64 {
	t.Helper()
	_, b := get(t, ctx, c, "/metrics")
	for _, line := range strings.Split(b, "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		var v float64
		if _, err := fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v); err != nil {
			t.Fatalf("/metrics: %q: %v", line, err)
		}
		return v
	}
	t.Fatalf("/metrics has no %s", name)
	return 0
}
