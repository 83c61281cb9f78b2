package stack

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/anchorline/anchorline/anchor/proof"
	"github.com/anchorline/anchorline/internal/await"
	"github.com/anchorline/anchorline/internal/chserver"
	"github.com/anchorline/anchorline/pipeline/rules"
	"github.com/anchorline/anchorline/schemas/bundle"
	"github.com/anchorline/anchorline/schemas/entry"
	"github.com/anchorline/anchorline/schemas/reading"
	"github.com/anchorline/anchorline/schemas/reading/connect"
	"github.com/anchorline/anchorline/schemas/rule"
	"github.com/anchorline/anchorline/schemas/stream"
	"github.com/anchorline/anchorline/services/auth"
)

// eventLog collects the events published on iot.events.>.
type eventLog struct {
	mu  sync.Mutex
	evs []rule.Event
}

func (l *eventLog) of(ruleID, dev string) []rule.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []rule.Event
	for _, e := range l.evs {
		if e.Rule == ruleID && e.Device == dev {
			out = append(out, e)
		}
	}
	return out
}

// TestRules runs the rules stage of dev on real servers: rules committed on the ledger, readings
// published by devices; a threshold rule fires once per crossing, a window rule over the last
// 10 readings fires when their average crosses, an absence rule fires once when a device goes
// quiet, a rule's second version applies to the readings verified from its height on, and each
// event is both published on iot.events.<rule>.<device> and stored once in `events`.
func TestRules(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	chAddr, database, ch := chserver.NewDatabase(t)
	cfg := devConfig(t, chAddr, database, t.TempDir())
	d, err := StartDev(ctx, cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg = d.Config()
	defer func() {
		if err := d.Stop(); err != nil {
			t.Errorf("stop: %v", err)
		}
	}()
	client := d.APIClient()
	nc, err := nats.Connect(cfg.NATS.URL, d.NATSOptions(auth.RoleAdmin)...)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	var got eventLog
	sub, err := nc.Subscribe(rule.SubjectPrefix+">", func(m *nats.Msg) {
		var e rule.Event
		if err := json.Unmarshal(m.Data, &e); err != nil {
			t.Errorf("event %s: %v", m.Subject, err)
			return
		}
		if m.Subject != rule.Subject(e.Rule, e.Device) {
			t.Errorf("event of %s/%s on %s", e.Rule, e.Device, m.Subject)
		}
		got.mu.Lock()
		got.evs = append(got.evs, e)
		got.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()

	put := func(r rule.Rule) uint64 {
		t.Helper()
		e, err := entry.NewRule(d.AdminKey, entry.OpPut, r, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		rc, err := d.Ledger.Submit(ctx, e)
		if err != nil {
			t.Fatalf("rule %s: %v", r.ID, err)
		}
		return uint64(rc.Height)
	}
	event := []rule.Action{{Kind: rule.ActionEvent}}
	put(rule.Rule{ID: "hot", Version: 1, Devices: []string{"r-hot"}, When: "metrics.temp > 30.0", Actions: event})
	put(rule.Rule{ID: "avg10", Version: 1, Devices: []string{"r-avg"}, When: "size == 10 && window.avg.temp > 25.0", Last: 10, Actions: event})
	put(rule.Rule{ID: "quiet", Version: 1, Devices: []string{"r-quiet"}, AbsentMS: 1500, Actions: event})
	// By tag: the readings of any device that carry site=a, here r-tag's and not r-hot's.
	put(rule.Rule{ID: "tagged", Version: 1, Tags: map[string]string{"site": "a"}, When: "metrics.temp > 30.0", Actions: event})

	devs := map[string]*testDevice{}
	for _, id := range []string{"r-hot", "r-avg", "r-quiet", "r-tag"} {
		devs[id] = newDevice(t, id, reading.Ed25519)
		register(t, ctx, client, d.AdminKey, id, devs[id].Key.Public())
	}
	send := func(id string, temps ...float64) {
		t.Helper()
		dv := devs[id]
		var tags map[string]string
		if id == "r-tag" {
			tags = map[string]string{"site": "a"}
		}
		for _, v := range temps {
			raw, err := dv.Next([]reading.Metric{{Name: "temp", Value: v}}, tags)
			if err != nil {
				t.Fatal(err)
			}
			publish(t, js, reading.Subject(id), reading.MsgID(id, dv.Seq), raw)
		}
	}
	seqs := func(evs []rule.Event) []uint64 {
		var out []uint64
		for _, e := range evs {
			out = append(out, e.Seq)
		}
		return out
	}

	// Threshold: crossings at seqs 2 and 5; 3 stays above (no second firing), 4 re-arms.
	send("r-hot", 20, 31, 32, 20, 35)
	// Window: ten readings at 20, then 35s; the average of the last ten passes 25 at the
	// sixth... (4*20+6*35)/10 = 29 > 25, (5*20+5*35)/10 = 27.5 > 25, (6*20+4*35)/10 = 26 > 25,
	// (7*20+3*35)/10 = 24.5: first above at seq 14.
	var avg []float64
	for i := range 20 {
		avg = append(avg, map[bool]float64{true: 20, false: 35}[i < 10])
	}
	send("r-avg", avg...)
	send("r-quiet", 1)
	send("r-tag", 20, 31)
	await.Until(t, ctx, "the threshold, window and absence events", func() (bool, string) {
		h, w, q, g := got.of("hot", "r-hot"), got.of("avg10", "r-avg"), got.of("quiet", "r-quiet"), got.of("tagged", "r-tag")
		return len(h) >= 2 && len(w) >= 1 && len(q) >= 1 && len(g) >= 1, fmt.Sprintf("hot %v, avg10 %v, quiet %v, tagged %v", seqs(h), seqs(w), seqs(q), seqs(g))
	})

	// A second version of "hot" from its height on: readings verified after it are evaluated
	// under it (40 is the new threshold), and its events say so.
	h2 := put(rule.Rule{ID: "hot", Version: 2, Devices: []string{"r-hot"}, When: "metrics.temp > 40.0", Actions: event})
	await.Until(t, ctx, "ingest to apply the registry at the new version's height", func() (bool, string) {
		g := d.Services.Ingest
		return g.keys.height.Load() >= int64(h2), fmt.Sprintf("ingest at %d, rule at %d", g.keys.height.Load(), h2)
	})
	send("r-hot", 20, 39, 20, 41)
	await.Until(t, ctx, "the second version's event", func() (bool, string) {
		return len(got.of("hot", "r-hot")) >= 3, fmt.Sprint(seqs(got.of("hot", "r-hot")))
	})

	hot := got.of("hot", "r-hot")
	if fmt.Sprint(seqs(hot)) != "[2 5 9]" || hot[0].Version != 1 || hot[1].Version != 1 || hot[2].Version != 2 {
		t.Fatalf("hot fired %v (versions %d %d %d), want [2 5 9] under versions 1 1 2", seqs(hot), hot[0].Version, hot[1].Version, hot[2].Version)
	}
	if hot[2].Height < h2 || hot[0].ArmedAt != 1 || !slices.Equal(hot[0].Seqs, []uint64{1, 2}) {
		t.Fatalf("events of hot: %+v", hot)
	}
	if w := got.of("avg10", "r-avg"); len(w) != 1 || w[0].Seq != 14 || len(w[0].Seqs) != 11 || w[0].Seqs[0] != 4 {
		t.Fatalf("avg10 fired %+v, want once at seq 14 using seqs 4..14", w)
	}
	if g := got.of("tagged", "r-tag"); len(g) != 1 || g[0].Seq != 2 {
		t.Fatalf("tagged fired %+v for r-tag, want once at seq 2", g)
	}
	if g := got.of("tagged", "r-hot"); len(g) != 0 {
		t.Fatalf("tagged fired %d times for r-hot, whose readings carry no tags", len(g))
	}
	q := got.of("quiet", "r-quiet")
	if len(q) != 1 || q[0].Kind != rule.KindAbsent || q[0].Seq != 1 || q[0].Time-q[0].LastSeen < 1500 {
		t.Fatalf("quiet fired %+v, want once after seq 1, 1.5 s after it was received", q)
	}
	for _, e := range append(append(hot, got.of("avg10", "r-avg")...), q...) {
		if e.ID != rule.EventID(e.Rule, e.Version, e.Device, e.Seq, e.Kind) {
			t.Fatalf("event %s does not have its id", e.ID)
		}
	}
	// Stored once each, with what was published.
	await.Until(t, ctx, "the events in ClickHouse", func() (bool, string) {
		n := count(t, ctx, ch, "SELECT count() FROM "+database+".events FINAL")
		return n == 6, fmt.Sprintf("%d rows", n)
	})
	var rows uint64
	if err := ch.QueryRow(ctx, "SELECT count() FROM "+database+".events FINAL WHERE rule_id = 'hot' AND device_id = 'r-hot' AND seq = 9 AND version = 2 AND kind = 'fire' AND seqs = [8, 9]").Scan(&rows); err != nil || rows != 1 {
		t.Fatalf("stored event of hot v2: %d rows, %v", rows, err)
	}

	// Event bundles: each verifies offline against the trust file, and fails at the step that
	// checks what changed: a reading used, the rule's text, the event.
	trust, err := client.Trust(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range []rule.Event{hot[0], hot[2], got.of("avg10", "r-avg")[0], q[0]} {
		var b []byte
		await.Until(t, ctx, "the event's readings anchored", func() (bool, string) {
			var err error
			b, err = client.EventProof(ctx, e.ID)
			return err == nil, fmt.Sprint(err)
		})
		rep, err := proof.VerifyEvent(b, trust)
		if err != nil {
			var out strings.Builder
			rep.Print(&out)
			t.Fatalf("event %s/%s seq %d: %v\n%s", e.Rule, e.Device, e.Seq, err, out.String())
		}
		if e.ID != hot[0].ID {
			continue
		}
		eb, err := bundle.ParseEvent(b)
		if err != nil {
			t.Fatal(err)
		}
		tamper := func(name, wantStep string, change func(*bundle.Event)) {
			t.Helper()
			c := *eb
			c.Readings = slices.Clone(eb.Readings)
			c.Rule.Entry = slices.Clone(eb.Rule.Entry)
			change(&c)
			data, err := c.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			rep, err := proof.VerifyEvent(data, trust)
			last := rep.Steps[len(rep.Steps)-1]
			if err == nil || last.Name != wantStep {
				t.Fatalf("%s: verification %v, last step %s (%s), want a failure at %s", name, err, last.Name, last.Detail, wantStep)
			}
		}
		tamper("a reading used", "readings", func(c *bundle.Event) {
			at := bytes.LastIndex(c.Readings, []byte(`"raw":`))
			i := at + bytes.IndexByte(c.Readings[at+len(`"raw":`):], '"') + len(`"raw":`) + 11
			c.Readings[i] = map[bool]byte{true: 'a', false: 'b'}[c.Readings[i] != 'a']
		})
		tamper("the rule's text", "rule entry", func(c *bundle.Event) {
			i := bytes.Index(c.Rule.Entry, []byte("30.0"))
			c.Rule.Entry[i] = '2'
		})
		tamper("the event's arming seq", "decision", func(c *bundle.Event) { c.Event.ArmedAt = 2 })
		tamper("the event's seq", "event id", func(c *bundle.Event) { c.Event.Seq = 3 })
		tamper("the event's rule version", "event id", func(c *bundle.Event) { c.Event.Version = 2 })
		// And any byte of the file.
		for _, i := range []int{10, len(b) / 3, len(b) / 2, len(b) - 5} {
			bad := slices.Clone(b)
			bad[i] ^= 0x01
			if _, err := proof.VerifyEvent(bad, trust); err == nil {
				t.Fatalf("the bundle with byte %d changed verifies", i)
			}
		}
	}
}

// TestRuleActions runs a rule with all three actions on dev: the event; a command, which the
// device receives on iot.commands.<device>, verifies with the SDK against the commander's key
// on the ledger and acknowledges with a signed reading, both stored and anchored as readings
// whose proofs verify; and a webhook, POSTed to a real HTTP server with a signature by the
// commander's key.
func TestRuleActions(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	chAddr, database, ch := chserver.NewDatabase(t)
	cfg := devConfig(t, chAddr, database, t.TempDir())
	d, err := StartDev(ctx, cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg = d.Config()
	defer func() {
		if err := d.Stop(); err != nil {
			t.Errorf("stop: %v", err)
		}
	}()
	client := d.APIClient()

	type hook struct {
		body []byte
		hdr  http.Header
	}
	hooks := make(chan hook, 16)
	failFirst := atomic.Bool{}
	failFirst.Store(true)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if failFirst.Swap(false) { // the first attempt fails: the webhook is retried
			http.Error(w, "try again", http.StatusServiceUnavailable)
			return
		}
		hooks <- hook{body, r.Header.Clone()}
	}))
	defer srv.Close()

	valve := newDevice(t, "valve-1", reading.Ed25519)
	register(t, ctx, client, d.AdminKey, valve.ID, valve.Key.Public())
	commander, err := client.Device(ctx, rule.Commander)
	if err != nil || commander.Status != "active" {
		t.Fatalf("the commander %s on the ledger: %+v, %v", rule.Commander, commander, err)
	}
	cmdKeyBytes, err := hex.DecodeString(commander.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	cmdKey := reading.PublicKey{Alg: reading.Ed25519, Key: cmdKeyBytes}

	// The device, connected as itself: it verifies each command and acknowledges it.
	opts, err := connect.Options(valve.ID, valve.Key)
	if err != nil {
		t.Fatal(err)
	}
	dnc, err := nats.Connect(cfg.NATS.URL, append(opts, d.NATSTLS()...)...)
	if err != nil {
		t.Fatal(err)
	}
	defer dnc.Close()
	djs, err := jetstream.New(dnc)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	publishAs := func(raw []byte) {
		t.Helper()
		if _, err := djs.Publish(ctx, reading.Subject(valve.ID), raw); err != nil {
			t.Errorf("device publish: %v", err)
		}
	}
	commands := make(chan reading.Command, 4)
	if _, err := dnc.Subscribe(reading.CommandsSubject(valve.ID), func(m *nats.Msg) {
		c, err := reading.VerifyCommand(m.Data, rule.Commander, cmdKey, valve.ID)
		if err != nil {
			t.Errorf("command: %v", err)
			return
		}
		mu.Lock()
		ack, err := valve.Ack(c, reading.AckDone, "")
		mu.Unlock()
		if err != nil {
			t.Error(err)
			return
		}
		go publishAs(ack)
		commands <- c
	}); err != nil {
		t.Fatal(err)
	}
	if err := dnc.Flush(); err != nil {
		t.Fatal(err)
	}

	r := rule.Rule{ID: "valve", Version: 1, Devices: []string{valve.ID}, When: "metrics.pressure > 8.0",
		Actions: []rule.Action{{Kind: rule.ActionEvent}, {Kind: rule.ActionCommand, Command: "close", Args: map[string]string{"valve": "1"}},
			{Kind: rule.ActionWebhook, URL: srv.URL + "/hook"}}}
	e, err := entry.NewRule(d.AdminKey, entry.OpPut, r, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Ledger.Submit(ctx, e); err != nil {
		t.Fatal(err)
	}
	for _, p := range []float64{5, 9} {
		mu.Lock()
		raw, err := valve.Next([]reading.Metric{{Name: "pressure", Value: p}}, nil)
		mu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
		publishAs(raw)
	}

	var c reading.Command
	select {
	case c = <-commands:
	case <-ctx.Done():
		t.Fatal("no command reached the device")
	}
	wantEvent := rule.EventID("valve", 1, valve.ID, 2, rule.KindFire)
	if c.Name != "close" || c.Args["valve"] != "1" || c.Event != wantEvent {
		t.Fatalf("command %+v, want close valve=1 for event %s", c, wantEvent)
	}
	select {
	case h := <-hooks:
		var ev rule.Event
		if err := json.Unmarshal(h.body, &ev); err != nil || ev.ID != wantEvent || h.hdr.Get(rules.HeaderEvent) != wantEvent {
			t.Fatalf("webhook body %s (%v), event header %q", h.body, err, h.hdr.Get(rules.HeaderEvent))
		}
		sig, err := hex.DecodeString(strings.TrimPrefix(h.hdr.Get(rules.HeaderSignature), "ed25519="))
		if err != nil || h.hdr.Get(rules.HeaderKey) != commander.PublicKey || !ed25519.Verify(cmdKeyBytes, h.body, sig) {
			t.Fatalf("webhook signature %q by %q does not verify with the commander's key %s", h.hdr.Get(rules.HeaderSignature), h.hdr.Get(rules.HeaderKey), commander.PublicKey)
		}
	case <-ctx.Done():
		t.Fatal("no webhook came")
	}

	// The command and its acknowledgement are readings: stored, anchored, provable.
	trust, err := client.Trust(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, who := range []struct {
		dev string
		seq uint64
	}{{rule.Commander, c.Seq}, {valve.ID, 3}} {
		var b []byte
		await.Until(t, ctx, fmt.Sprintf("%s seq %d anchored", who.dev, who.seq), func() (bool, string) {
			var err error
			b, err = client.Proof(ctx, who.dev, who.seq)
			return err == nil, fmt.Sprint(err)
		})
		if _, err := proof.Verify(b, trust); err != nil {
			t.Fatalf("proof of %s seq %d: %v", who.dev, who.seq, err)
		}
		pb, err := bundle.Parse(b)
		if err != nil {
			t.Fatal(err)
		}
		m, err := reading.Decode(pb.Reading.Raw)
		if err != nil {
			t.Fatal(err)
		}
		switch who.dev {
		case rule.Commander:
			if reading.Leaf(pb.Reading.Raw) != c.Leaf {
				t.Fatal("the stored command is not the one the device received")
			}
		default:
			if m.Reading.Tags["ack"] != hex.EncodeToString(c.Leaf[:]) || m.Reading.Tags["status"] != reading.AckDone {
				t.Fatalf("acknowledgement reading %+v", m.Reading)
			}
		}
	}
	if n := count(t, ctx, ch, "SELECT count() FROM "+database+".readings WHERE device_id = ?", rule.Commander); n != 1 {
		t.Fatalf("%d command readings stored, want 1", n)
	}
}

// TestRulesProcessKilled kills an `anchorline rules` process (SIGKILL) while it evaluates a
// rule that fires on every tenth reading, and lets another take the shard over: every event
// comes exactly once (one row and one EVENTS message per id, each of a tenth reading, none
// missing), the redelivered messages giving the same events as before the crash.
func TestRulesProcessKilled(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	bin := filepath.Join(t.TempDir(), "anchorline")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "../anchorline").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	chAddr, database, ch := chserver.NewDatabase(t)
	cfg := devConfig(t, chAddr, database, t.TempDir())
	cfg.Rules.Embedded = false // the rules processes below are the only ones
	d, err := StartDev(ctx, cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg = d.Config()
	defer d.Stop()
	devs := registerAll(t, ctx, d.APIClient(), d, "rk", 3)
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
	rulesProcess := func() *exec.Cmd {
		cmd := exec.CommandContext(ctx, bin, "rules", "--nats.url", cfg.NATS.URL, "--nats.credentials", d.AuthSetup().File(auth.RoleRules), "--tls.ca", cfg.CAFile(),
			"--clickhouse.addr", chAddr, "--clickhouse.database", database, "--ledger.rpc", cfg.Ledger.RPC, "--http.addr", "127.0.0.1:0",
			"--rules.key", cfg.RulesKey(), "--log.level", "error")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	victim := rulesProcess()
	l := &load{devs: devs, opts: d.NATSOptions(auth.RoleSimulator)}
	done := make(chan error, 1)
	go func() { done <- l.run(t, ctx, cfg.NATS.URL, 3000, 1000) }()
	await.Until(t, ctx, "the rules process firing", func() (bool, string) {
		n := count(t, ctx, ch, "SELECT count() FROM "+database+".events")
		return n >= 20, fmt.Sprintf("%d events", n)
	})
	if err := victim.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = victim.Wait()
	successor := rulesProcess()
	defer func() { _ = successor.Process.Signal(syscall.SIGINT); _ = successor.Wait() }()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	_, js, err := ConnectNATS(ctx, cfg.NATS.URL, "rules-kill-test", testLogger(t), d.NATSOptions(auth.RoleAdmin)...)
	if err != nil {
		t.Fatal(err)
	}
	await.Until(t, ctx, "every reading stored and evaluated", func() (bool, string) {
		stored := count(t, ctx, ch, "SELECT uniqExact(device_id, seq) FROM "+database+".readings WHERE device_id != 'rules'")
		s, err := js.Stream(ctx, stream.Verified)
		if err != nil {
			return false, err.Error()
		}
		info, err := s.Info(ctx)
		return err == nil && stored == 3000 && info.State.Msgs == 0, fmt.Sprintf("%d stored, VERIFIED %+v %v", stored, info.State, err)
	})
	// The events are stored in ClickHouse from the Events stream, many per insert, soon after.
	var ids uint64
	await.Until(t, ctx, "every event stored", func() (bool, string) {
		ids = count(t, ctx, ch, "SELECT uniqExact(event_id) FROM "+database+".events")
		return ids >= 300, fmt.Sprintf("%d event ids stored", ids)
	})
	rows := count(t, ctx, ch, "SELECT count() FROM "+database+".events")
	bad := count(t, ctx, ch, "SELECT count() FROM "+database+".events WHERE seq % 10 != 0 OR seqs != [toUInt64(seq - 1), seq]")
	es, err := js.Stream(ctx, stream.Events)
	if err != nil {
		t.Fatal(err)
	}
	info, err := es.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// 3 devices x 1000 readings: seqs 10, 20, ... 1000 of each.
	if ids != 300 || info.State.Msgs != 300 || bad != 0 || rows < ids {
		t.Fatalf("events: %d rows, %d ids, %d EVENTS messages, %d not a tenth reading's; want 300 ids and messages", rows, ids, info.State.Msgs, bad)
	}
	t.Logf("%d event rows for 300 events (a row written twice by the killed process and its successor folds in FINAL)", rows)
}
