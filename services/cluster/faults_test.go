package cluster

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/anchorline/anchorline/anchor/anchoring"
	"github.com/anchorline/anchorline/anchor/proof"
	"github.com/anchorline/anchorline/internal/await"
	"github.com/anchorline/anchorline/internal/retry"
	"github.com/anchorline/anchorline/internal/testlog"
	"github.com/anchorline/anchorline/schemas/clickhouse"
	"github.com/anchorline/anchorline/schemas/entry"
	"github.com/anchorline/anchorline/schemas/reading"
	"github.com/anchorline/anchorline/schemas/reading/connect"
	"github.com/anchorline/anchorline/services/api"
	"github.com/anchorline/anchorline/services/stack"
)

// Load of the fault test: devices (half Ed25519, half ES256), each connected to the NATS
// cluster as itself, publishing at a steady rate.
const (
	faultDevices   = 200
	faultPerDevice = 100 * time.Millisecond // one reading per device every 100 ms: 2,000/s in all
)

// buildAnchorline builds the anchorline binary the cluster's services run from.
func buildAnchorline(t *testing.T, ctx context.Context) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "anchorline")
	out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/anchorline/anchorline/services/anchorline").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// TestClusterSurvivesFaults starts the whole cluster (Up: 3 NATS nodes, 4 validators, ZooKeeper
// and 2 ClickHouse replicas, the auth callout, 2 ingest workers, 2 anchoring services, 1 API,
// all real processes) and, while 200 devices publish 2,000 readings/s, kills -9 one NATS node,
// one validator, one ingest worker and the active anchoring service, and stops one ClickHouse
// replica for 20 s, one after another. During each fault a reading published after it began
// is anchored and its proof verifies. At the end every acknowledged reading is stored (the
// distinct readings equal the acknowledged ones), every batch is anchored and the audit finds
// nothing; then one device's first readings are erased on the ClickHouse cluster
// (checkErasure). It reports, per fault, readings lost, duplicates, the longest gap between
// anchors and the time to recover.
func TestClusterSurvivesFaults(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	bin := buildAnchorline(t, ctx)
	nsrv, err := NATSServerBinary(ctx)
	if err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	c, err := Up(ctx, Options{Dir: t.TempDir(), Binary: bin, NATSServer: nsrv, Log: testlog.New(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	info := c.Info()
	t.Logf("cluster up in %v: %d processes", time.Since(begin).Round(time.Millisecond), len(info.Processes))
	trust, err := os.ReadFile(info.TrustFile)
	if err != nil {
		t.Fatal(err)
	}
	client := api.NewClient("https://" + info.HTTPAddr)
	client.HTTP = c.HTTPClient()
	ch, err := c.shard.Replicas[0].Open(ctx, "default")
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()

	// Devices, registered through the API with the cluster's admin key.
	admin, err := stack.LoadAdminKey(info.AdminKey)
	if err != nil {
		t.Fatal(err)
	}
	p := &publisher{t: t, urls: strings.Join(info.NATSURLs, ","), tls: c.ClientTLS(), last: map[string]ack{}}
	for i := range faultDevices {
		alg := reading.Ed25519
		if i%2 == 1 {
			alg = reading.ES256
		}
		key, err := reading.GenerateKey(alg)
		if err != nil {
			t.Fatal(err)
		}
		p.devices = append(p.devices, &reading.Device{ID: fmt.Sprintf("fault-%03d", i), Key: key})
	}
	// Twenty registrations at a time: each waits for its block.
	var g errgroup.Group
	g.SetLimit(20)
	for _, d := range p.devices {
		g.Go(func() error {
			reg, err := entry.NewRegister(admin, d.ID, d.Key.Public(), time.Now())
			if err != nil {
				return err
			}
			if _, err := client.SubmitDeviceEvent(ctx, reg); err != nil {
				return fmt.Errorf("register %s: %w", d.ID, err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d devices registered after %v", faultDevices, time.Since(begin).Round(time.Millisecond))
	// A rule for the rules processes: an event at every 50th reading of every device.
	ruleFile := filepath.Join(t.TempDir(), "every50.yaml")
	if err := os.WriteFile(ruleFile, []byte("id: every50\nwhen: seq % 50u == 0u\nactions: [{kind: event}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.CommandContext(ctx, bin, "rule", "put", ruleFile, "--config", info.ClientConfig).CombinedOutput(); err != nil {
		t.Fatalf("rule put: %v\n%s", err, out)
	}
	pctx, stopPublishing := context.WithCancel(ctx)
	p.start(pctx)
	await.Until(t, ctx, "every device publishing", func() (bool, string) {
		n := p.publishing()
		return n == faultDevices, fmt.Sprintf("%d of %d devices have a reading acknowledged", n, faultDevices)
	})

	kill := func(name string) func() {
		return func() {
			pr := c.process(name)
			if err := syscall.Kill(pr.PID, syscall.SIGKILL); err != nil {
				t.Fatalf("kill -9 %s (pid %d): %v", name, pr.PID, err)
			}
		}
	}
	type fault struct {
		what, process string
		do            func()
	}
	faults := []fault{
		{"kill -9 a NATS node", "nats-1", kill("nats-1")},
		{"kill -9 a validator", "validator-2", kill("validator-2")},
		{"kill -9 an ingest worker", "ingest-1", kill("ingest-1")},
		{"kill -9 a rules process", "rules-1", kill("rules-1")},
		{"kill -9 the active anchoring service", "", nil},
		{"stop a ClickHouse replica for 20 s", "clickhouse-2", func() {
			resp, err := http.Post("http://"+info.Control+"/v1/processes/clickhouse-2/stop?for=20s", "", nil)
			if err != nil || resp.StatusCode != http.StatusNoContent {
				t.Fatalf("stop clickhouse-2: %v %v", resp, err)
			}
			resp.Body.Close()
		}},
	}
	type result struct {
		what         string
		start, end   time.Time
		next         time.Time // when the next fault began (the last: later, for its redeliveries)
		proven, back time.Duration
		probe        string
	}
	var results []result
	for _, f := range faults {
		if f.process == "" { // the anchoring service that holds the lease now
			f.process = c.activeAnchor(t, ctx)
			f.do = kill(f.process)
		}
		before := c.process(f.process)
		start := time.Now()
		f.do()
		// A reading acknowledged after the fault began gets anchored, and its proof verifies.
		dev, seq := p.ackedAfter(t, ctx, start)
		var verified bool
		await.Until(t, ctx, fmt.Sprintf("a verified proof of %s seq %d during %q", dev, seq, f.what), func() (bool, string) {
			b, err := client.Proof(ctx, dev, seq)
			if err != nil {
				return false, err.Error()
			}
			if _, err := proof.Verify(b, trust); err != nil {
				t.Fatalf("proof of %s seq %d during %q does not verify: %v", dev, seq, f.what, err)
			}
			verified = true
			return true, ""
		})
		proven := time.Since(start)
		// The process is back (the supervisor restarts it, the ClickHouse replica after 20 s).
		await.Until(t, ctx, f.process+" restarted", func() (bool, string) {
			now := c.process(f.process)
			return now.Restarts > before.Restarts && alive(now), fmt.Sprintf("%d restarts", now.Restarts)
		})
		back := c.process(f.process).RestartedAt.Sub(start)
		r := result{what: f.what + " (" + f.process + ")", start: start, proven: proven, back: back, probe: fmt.Sprintf("%s/%d", dev, seq)}
		if !verified {
			t.Fatalf("no proof verified during %q", f.what)
		}
		// Let the cluster settle before the next fault: every process up, the replica caught up.
		await.Until(t, ctx, "every process running", func() (bool, string) {
			for _, pr := range c.Info().Processes {
				if !alive(pr) {
					return false, pr.Name + " is not running"
				}
			}
			return true, ""
		})
		r.end = time.Now()
		results = append(results, r)
	}
	for i := range results {
		if i+1 < len(results) {
			results[i].next = results[i+1].start
		} else {
			results[i].next = time.Now().Add(time.Hour) // redeliveries of the last fault come later
		}
	}
	stopPublishing()
	p.wait()
	acked := p.total()
	t.Logf("published and acknowledged: %d readings from %d devices in %v", acked, faultDevices, time.Since(begin).Round(time.Second))

	// Every acknowledged reading is stored once or more, and every batch is anchored.
	schema := clickhouse.Schema{Database: "anchorline", Cluster: ClickHouseCluster}
	await.Until(t, ctx, "every acknowledged reading stored and anchored", func() (bool, string) {
		// Each round within a minute: a query that does not answer is asked again.
		qctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		if err := schema.Sync(qctx, ch); err != nil {
			return false, err.Error()
		}
		var n [4]uint64
		for i, q := range []string{
			"SELECT uniqExact(device_id, seq) FROM anchorline.readings",
			"SELECT count() FROM anchorline.batches FINAL",
			"SELECT uniqExact(batch_id) FROM anchorline.batch_anchors",
			"SELECT count() FROM (SELECT DISTINCT anchor_id FROM anchorline.batch_anchors) WHERE anchor_id NOT IN (SELECT anchor_id FROM anchorline.anchors)",
		} {
			if err := ch.QueryRow(qctx, q).Scan(&n[i]); err != nil {
				return false, fmt.Sprintf("%s: %v", q, err)
			}
		}
		distinct, batches, anchored, unrecorded := n[0], n[1], n[2], n[3]
		return distinct == acked && anchored == batches && unrecorded == 0,
			fmt.Sprintf("%d of %d distinct readings, %d of %d batches anchored, %d anchors not recorded", distinct, acked, anchored, batches, unrecorded)
	})
	// Per device, through the Distributed table (either replica answers, so both are synced):
	// seqs 1 to the last acknowledged, each stored, none beyond.
	ch2, err := c.shard.Replicas[1].Open(ctx, "default")
	if err != nil {
		t.Fatal(err)
	}
	defer ch2.Close()
	await.Until(t, ctx, "clickhouse-2 synced", func() (bool, string) {
		qctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		err := schema.Sync(qctx, ch2)
		return err == nil, fmt.Sprint(err)
	})
	rows, err := ch.Query(ctx, "SELECT device_id, uniqExact(seq), max(seq) FROM anchorline.readings_all GROUP BY device_id")
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for rows.Next() {
		var id string
		var n, top uint64
		if err := rows.Scan(&id, &n, &top); err != nil {
			t.Fatal(err)
		}
		if last := p.last[id].seq; n != last || top != last {
			t.Errorf("device %s: %d distinct seqs stored up to %d, want 1..%d", id, n, top, last)
		}
		seen++
	}
	rows.Close()
	if seen != faultDevices {
		t.Fatalf("readings of %d devices stored, want %d", seen, faultDevices)
	}
	// The readings stored on the replica that was stopped are the same.
	want := count(t, ctx, ch, "SELECT count() FROM anchorline.readings")
	await.Until(t, ctx, "clickhouse-2 caught up", func() (bool, string) {
		n := count(t, ctx, ch2, "SELECT count() FROM anchorline.readings")
		return n == want, fmt.Sprintf("%d of %d rows", n, want)
	})

	// The audit over everything, against the trust file, finds nothing. Asked again while it
	// finds something: the newest anchors may sit in a block no signed header commits yet, or on
	// a validator that lags; a real finding stays, and the last output is shown.
	var auditOut []byte
	await.Until(t, ctx, "a clean audit --trust", func() (bool, string) {
		out, err := exec.CommandContext(ctx, bin, "audit", "--config", info.ClientConfig, "--trust", info.TrustFile).CombinedOutput()
		auditOut = out
		return err == nil && strings.Contains(string(out), "modified 0, missing 0, inserted 0, unanchored 0"), fmt.Sprintf("%v\n%s", err, out)
	})
	t.Logf("audit: %s", firstLine(auditOut))
	checkEvents(t, ctx, ch, client, trust, p)
	checkErasure(t, ctx, bin, info, schema, ch, ch2, client, trust, p.devices[0].ID)

	// The report: per fault, lost (0: checked above), duplicates stored while it lasted, the
	// longest gap between anchors, and the time until a reading published after it was proven
	// and until the process was back.
	total := count(t, ctx, ch, "SELECT count() FROM anchorline.readings")
	// An analyst's clickhouse-client, with the configuration the cluster wrote, reads them over
	// TLS through the Distributed table.
	host, port, _ := strings.Cut(strings.Split(info.ClickHouseAddr, ",")[0], ":")
	out, err := exec.CommandContext(ctx, "clickhouse-client", "--config-file", info.ClickHouseClient, "--secure", "--host", host, "--port", port,
		"-q", "SELECT count() FROM anchorline.readings_all").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != strconv.FormatUint(total, 10) {
		t.Fatalf("clickhouse-client over TLS: %v: %s (want %d rows)", err, out, total)
	}
	t.Logf("readings: %d acknowledged, %d distinct stored, %d rows (%d duplicates, from redeliveries of readings whose worker died or whose ack was lost)", acked, acked, total, total-acked)
	t.Logf("%-58s %5s %10s %14s %12s %12s", "fault", "lost", "duplicates", "anchor gap (s)", "proven (s)", "restarted (s)")
	for _, r := range results {
		// A duplicate belongs to the fault during which its first copy was stored (the copy whose
		// acknowledgement the fault lost; the second comes ingest.ack_wait later).
		dups := count(t, ctx, ch, fmt.Sprintf("SELECT toUInt64(sum(n - 1)) FROM (SELECT count() AS n, min(received_at) AS first FROM anchorline.readings GROUP BY device_id, seq HAVING n > 1) WHERE first >= toDateTime(%d) AND first < toDateTime(%d)", r.start.Unix()-2, r.next.Unix()-2))
		gap := anchorGap(t, ctx, ch, r.start, r.end)
		t.Logf("%-58s %5d %10d %14d %12.1f %12.1f  (proof of %s)", r.what, 0, dups, gap, r.proven.Seconds(), r.back.Seconds(), r.probe)
	}
	// Where an anchoring round's time goes: the mean of each phase over the rounds of the
	// anchoring services running now (a process restarted by a fault counts from its restart).
	var sums, counts = map[string]float64{}, map[string]float64{}
	for _, p := range c.Info().Processes {
		if p.Role == "anchor" {
			c.phaseTimes(t, p, sums, counts)
		}
	}
	var line []string
	for _, ph := range []string{anchoring.PhaseCollect, anchoring.PhaseIntents, anchoring.PhaseOrphans, anchoring.PhaseCheck, anchoring.PhaseClaim, anchoring.PhaseIntent, anchoring.PhaseSubmit, anchoring.PhaseRecord} {
		if counts[ph] > 0 {
			line = append(line, fmt.Sprintf("%s %.0f ms", ph, 1000*sums[ph]/counts[ph]))
		}
	}
	t.Logf("anchoring round, mean per phase: %s", strings.Join(line, ", "))
}

// phaseTimes adds process p's anchorline_anchoring_phase_duration_seconds sums and counts, by
// phase, to sums and counts.
func (c *Cluster) phaseTimes(t *testing.T, p Process, sums, counts map[string]float64) {
	t.Helper()
	resp, err := c.HTTPClient().Get("https://" + p.Listen["http"] + "/metrics")
	if err != nil {
		t.Fatalf("%s /metrics: %v", p.Name, err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		// anchorline_anchoring_phase_duration_seconds_sum{otel_scope_name="...",phase="submit"} 1.25
		name, rest, ok := strings.Cut(sc.Text(), "{")
		if !ok {
			continue
		}
		labels, value, ok := strings.Cut(rest, "} ")
		_, phase, found := strings.Cut(labels, `phase="`)
		if !ok || !found {
			continue
		}
		phase, _, _ = strings.Cut(phase, `"`)
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			continue
		}
		switch name {
		case "anchorline_anchoring_phase_duration_seconds_sum":
			sums[phase] += v
		case "anchorline_anchoring_phase_duration_seconds_count":
			counts[phase] += v
		}
	}
}

// anchorGap is the longest time in whole seconds between consecutive anchors (anchored_at has
// seconds) from the last anchor before start to the first one after end: how long anchoring
// paused around the fault.
func anchorGap(t *testing.T, ctx context.Context, ch driver.Conn, start, end time.Time) uint64 {
	t.Helper()
	qctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	rows, err := ch.Query(qctx, "SELECT toUInt64(toUInt32(anchored_at)) AS s FROM anchorline.anchors FINAL ORDER BY s")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var all []uint64
	for rows.Next() {
		var s uint64
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		all = append(all, s)
	}
	var gap uint64
	for i := 1; i < len(all); i++ {
		// The pair (all[i-1], all[i]) overlaps [start, end].
		if all[i] >= uint64(start.Unix()) && all[i-1] <= uint64(end.Unix()) {
			gap = max(gap, all[i]-all[i-1])
		}
	}
	return gap
}

func count(t *testing.T, ctx context.Context, ch driver.Conn, q string) uint64 {
	t.Helper()
	var n uint64
	qctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := ch.QueryRow(qctx, q).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

// process is the member called name as cluster.json has it now.
func (c *Cluster) process(name string) Process {
	for _, p := range c.Info().Processes {
		if p.Name == name {
			return p
		}
	}
	return Process{}
}

// activeAnchor is the anchoring service whose metrics say it holds the lease.
func (c *Cluster) activeAnchor(t *testing.T, ctx context.Context) string {
	t.Helper()
	var name string
	await.Until(t, ctx, "an active anchoring service", func() (bool, string) {
		for _, p := range c.Info().Processes {
			if p.Role != "anchor" {
				continue
			}
			resp, err := c.HTTPClient().Get("https://" + p.Listen["http"] + "/metrics")
			if err != nil {
				continue
			}
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				// anchorline_anchoring_active{otel_scope_name="..."} 1
				f := strings.Fields(sc.Text())
				if len(f) >= 2 && strings.HasPrefix(f[0], "anchorline_anchoring_active") && f[len(f)-1] == "1" {
					name = p.Name
				}
			}
			resp.Body.Close()
		}
		return name != "", "no anchoring service reports anchorline_anchoring_active 1"
	})
	return name
}

// ack is a device's last acknowledged reading.
type ack struct {
	seq uint64
	at  time.Time
}

// publisher runs one goroutine per device: each connects to the cluster as its device and
// publishes a reading every faultPerDevice, retrying a reading (same message id, so the stream
// keeps it once) until it is acknowledged before it signs the next.
type publisher struct {
	t       *testing.T
	urls    string
	tls     *tls.Config // trusts the cluster's CA
	devices []*reading.Device
	wg      sync.WaitGroup
	mu      sync.Mutex
	last    map[string]ack
}

func (p *publisher) start(ctx context.Context) {
	for _, d := range p.devices {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			if err := p.run(ctx, d); err != nil && ctx.Err() == nil {
				p.t.Errorf("device %s: %v", d.ID, err)
			}
		}()
	}
}

func (p *publisher) run(ctx context.Context, d *reading.Device) error {
	opts, err := connect.Options(d.ID, d.Key)
	if err != nil {
		return err
	}
	var nc *nats.Conn
	for nc == nil { // the broker's auth service may see the registration a block later
		if nc, err = nats.Connect(p.urls, append(opts, nats.Secure(p.tls.Clone()), nats.MaxReconnects(-1),
			// A node killed mid-read reports an i/o timeout on the connection, which then
			// reconnects; the readings are retried until acknowledged, which is what counts.
			nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}), nats.ReconnectWait(100*time.Millisecond))...); err != nil {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	tick := time.NewTicker(faultPerDevice)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		raw, err := d.Next([]reading.Metric{{Name: "t", Value: float64(d.Seq % 50)}, {Name: "rh", Value: 40}}, nil)
		if err != nil {
			return err
		}
		msg := &nats.Msg{Subject: reading.Subject(d.ID), Data: raw, Header: nats.Header{}}
		msg.Header.Set(jetstream.MsgIDHeader, reading.MsgID(d.ID, d.Seq))
		// Once signed, a reading is published until acknowledged, even while the test stops
		// publishing: the acknowledged readings are what the test checks are stored.
		_, err = retry.Do(context.Background(), retry.Policy{Initial: 50 * time.Millisecond, Max: time.Second, Timeout: 2 * time.Minute},
			func(context.Context) (struct{}, error) {
				pctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				defer cancel()
				_, err := js.PublishMsg(pctx, msg)
				return struct{}{}, err
			}, func(error, time.Duration) {})
		if err != nil {
			return fmt.Errorf("seq %d not acknowledged: %w", d.Seq, err)
		}
		p.mu.Lock()
		p.last[d.ID] = ack{seq: d.Seq, at: time.Now()}
		p.mu.Unlock()
	}
}

func (p *publisher) wait() { p.wg.Wait() }

func (p *publisher) publishing() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.last)
}

func (p *publisher) total() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	var n uint64
	for _, a := range p.last {
		n += a.seq
	}
	return n
}

// ackedAfter waits for a reading acknowledged after t0 and returns it.
func (p *publisher) ackedAfter(t *testing.T, ctx context.Context, t0 time.Time) (string, uint64) {
	t.Helper()
	var dev string
	var seq uint64
	await.Until(t, ctx, "a reading acknowledged after "+t0.Format(time.TimeOnly), func() (bool, string) {
		p.mu.Lock()
		defer p.mu.Unlock()
		for id, a := range p.last {
			if a.at.After(t0) {
				dev, seq = id, a.seq
				return true, ""
			}
		}
		return false, strconv.Itoa(len(p.last)) + " devices, none acknowledged since"
	})
	return dev, seq
}

func firstLine(b []byte) string {
	line, _, _ := strings.Cut(string(b), "\n")
	return line
}

// checkEvents: the rule every50 fired, through the faults, at multiples of 50 only, at most
// once per reading and for every device; and an event's bundle from the cluster's API verifies.
// (A reading the stage skips as late, behind a later seq of its device stored by the other
// ingest worker, fires nothing: fewer events than multiples of 50 is possible, more is not.)
func checkEvents(t *testing.T, ctx context.Context, ch driver.Conn, client *api.Client, trust []byte, p *publisher) {
	t.Helper()
	var id string
	await.Until(t, ctx, "the rules processes' events", func() (bool, string) {
		rows, err := ch.Query(ctx, "SELECT device_id, count(), uniqExact(seq), countIf(seq % 50 != 0), any(lower(hex(event_id))) FROM anchorline.events FINAL WHERE rule_id = 'every50' GROUP BY device_id")
		if err != nil {
			return false, err.Error()
		}
		defer rows.Close()
		devices, events := 0, uint64(0)
		for rows.Next() {
			var dev, ev string
			var n, seqs, wrong uint64
			if err := rows.Scan(&dev, &n, &seqs, &wrong, &ev); err != nil {
				return false, err.Error()
			}
			if wrong != 0 || n != seqs || n > p.last[dev].seq/50 {
				t.Fatalf("device %s: %d events at %d seqs, %d not a multiple of 50; %d readings acknowledged", dev, n, seqs, wrong, p.last[dev].seq)
			}
			devices++
			events += n
			id = ev
		}
		return devices == faultDevices, fmt.Sprintf("events of %d of %d devices (%d events)", devices, faultDevices, events)
	})
	b, err := client.EventProof(ctx, id)
	if err != nil {
		t.Fatalf("event %s: %v", id, err)
	}
	if rep, err := proof.VerifyEvent(b, trust); err != nil {
		t.Fatalf("event %s does not verify: %v (%+v)", id, err, rep.Steps)
	}
}
