package stack

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	cmted25519 "github.com/cometbft/cometbft/crypto/ed25519"
	cmttypes "github.com/cometbft/cometbft/types"
	"github.com/fxamacker/cbor/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/veraison/go-cose"

	"github.com/anchorline/anchorline/anchor/proof"
	"github.com/anchorline/anchorline/internal/await"
	"github.com/anchorline/anchorline/internal/chserver"
	"github.com/anchorline/anchorline/internal/testlog"
	"github.com/anchorline/anchorline/pipeline/verify"
	"github.com/anchorline/anchorline/schemas/bundle"
	"github.com/anchorline/anchorline/schemas/entry"
	"github.com/anchorline/anchorline/schemas/lookup"
	"github.com/anchorline/anchorline/schemas/reading"
	"github.com/anchorline/anchorline/schemas/stream"
	"github.com/anchorline/anchorline/services/api"
	"github.com/anchorline/anchorline/services/auth"
	"github.com/anchorline/anchorline/services/config"
	"github.com/anchorline/anchorline/services/store"
)

func TestMain(m *testing.M) { os.Exit(chserver.RunTests(m)) }

func testLogger(t *testing.T) *slog.Logger { return testlog.New(t) }

// devConfig is a dev configuration with its own ports, data folder and ClickHouse database.
func devConfig(t *testing.T, chAddr, database, dataDir string) config.Config {
	cfg := config.Default()
	cfg.DataDir = dataDir
	cfg.ClickHouse.Addr = chAddr
	cfg.ClickHouse.Database = database
	// Any free port: StartDev listens on them, and Dev.Config tells which it got.
	cfg.NATS.URL = "nats://127.0.0.1:0"
	cfg.HTTP.Addr = "127.0.0.1:0"
	cfg.Ledger.RPC = "127.0.0.1:0"
	cfg.Ledger.AdminKey = dataDir + "/admin.key"
	cfg.Anchor.Interval = 500 * time.Millisecond
	cfg.Ingest.FlushAge = 100 * time.Millisecond
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// testDevice is a device with its key and the SDK that numbers and chains its readings.
type testDevice struct {
	reading.Device
}

func newDevice(t *testing.T, id string, alg reading.Alg) *testDevice {
	k, err := reading.GenerateKey(alg)
	if err != nil {
		t.Fatal(err)
	}
	return &testDevice{reading.Device{ID: id, Key: k, Now: func() time.Time { return time.Now() }}}
}

func (d *testDevice) next(t *testing.T) []byte {
	raw, err := d.Next([]reading.Metric{{Name: "temp", Value: 20 + float64(d.Seq)/10}, {Name: "hum", Value: 40}}, map[string]string{"site": "lab"})
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func publish(t *testing.T, js jetstream.JetStream, subject, msgID string, raw []byte) {
	t.Helper()
	msg := nats.NewMsg(subject)
	msg.Data = raw
	if msgID != "" {
		msg.Header.Set(nats.MsgIdHdr, msgID)
	}
	if _, err := js.PublishMsg(context.Background(), msg); err != nil {
		t.Fatalf("publish %s: %v", subject, err)
	}
}

// signRaw signs an arbitrary payload as a COSE_Sign1 reading with the given kid.
func signRaw(t *testing.T, kid string, payload any, key ed25519.PrivateKey) []byte {
	t.Helper()
	p, err := cbor.Marshal(payload)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := cose.NewSigner(cose.AlgorithmEdDSA, key)
	if err != nil {
		t.Fatal(err)
	}
	msg := cose.NewSign1Message()
	msg.Headers.Protected.SetAlgorithm(cose.AlgorithmEdDSA)
	msg.Headers.Protected[cose.HeaderLabelKeyID] = []byte(kid)
	msg.Payload = p
	if err := msg.Sign(rand.Reader, nil, signer); err != nil {
		t.Fatal(err)
	}
	raw, err := msg.MarshalCBOR()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// newEdKey makes an Ed25519 key for readings built by hand (the SDK keeps its keys opaque).
func newEdKey(t *testing.T) ed25519.PrivateKey {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func register(t *testing.T, ctx context.Context, c *api.Client, admin ed25519.PrivateKey, id string, pub reading.PublicKey) {
	t.Helper()
	ev, err := entry.NewRegister(admin, id, pub, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.SubmitDeviceEvent(ctx, ev); err != nil {
		t.Fatalf("register %s: %v", id, err)
	}
}

func count(t *testing.T, ctx context.Context, ch driver.Conn, query string, args ...any) uint64 {
	t.Helper()
	var n uint64
	if err := ch.QueryRow(ctx, query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

type key struct {
	dev string
	seq uint64
}

// TestEndToEnd runs dev on real servers (embedded NATS, a private ClickHouse, an in-process
// CometBFT node): good and bad readings from Ed25519 and ES256 devices go in, every good one is
// stored once, every bad one is rejected with its reason, batches are anchored, and a proof
// bundle verifies offline, and stops verifying if any byte of it changes.
func TestEndToEnd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	chAddr, database, ch := chserver.NewDatabase(t)
	cfg := devConfig(t, chAddr, database, t.TempDir())
	// One worker: a missing predecessor is not on its way. chain_wait must be longer than
	// ack_wait, which must be long enough for a flush under the race detector.
	cfg.Ingest.AckWait, cfg.Ingest.ChainWait = 5*time.Second, 6*time.Second
	d, err := StartDev(ctx, cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg = d.Config() // the addresses dev resolved
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

	// Devices: three Ed25519, two ES256, one to be revoked; one never registered.
	var devs []*testDevice
	for i, alg := range []reading.Alg{reading.Ed25519, reading.ES256, reading.Ed25519, reading.ES256, reading.Ed25519} {
		dv := newDevice(t, fmt.Sprintf("e2e-%02d", i), alg)
		register(t, ctx, client, d.AdminKey, dv.ID, dv.Key.Public())
		devs = append(devs, dv)
	}
	revoked := newDevice(t, "e2e-revoked", reading.Ed25519)
	register(t, ctx, client, d.AdminKey, revoked.ID, revoked.Key.Public())
	rev, err := entry.NewRevoke(d.AdminKey, revoked.ID, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.SubmitDeviceEvent(ctx, rev); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	info, err := client.Device(ctx, revoked.ID)
	if err != nil || info.Status != "revoked" {
		t.Fatalf("revoked device shows %+v, %v", info, err)
	}
	// An event signed by a key that is not an admin is refused.
	_, stranger, _ := ed25519.GenerateKey(rand.Reader)
	bogus, err := entry.NewRegister(stranger, "e2e-bogus", devs[0].Key.Public(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.SubmitDeviceEvent(ctx, bogus); !errors.Is(err, api.ErrRejected) {
		t.Fatalf("register by a non-admin: %v, want ErrRejected", err)
	}

	good := map[key]bool{}
	const perDevice = 40
	for range perDevice {
		for _, dv := range devs {
			raw := dv.next(t)
			publish(t, js, reading.Subject(dv.ID), reading.MsgID(dv.ID, dv.Seq), raw)
			good[key{dv.ID, dv.Seq}] = true
		}
	}
	// A retransmission inside the duplicate window is dropped by JetStream.
	again := devs[0]
	dupRaw, err := reading.Sign(reading.Reading{Device: again.ID, Seq: 1, TS: uint64(time.Now().UnixMilli()), Metrics: []reading.Metric{{Name: "temp", Value: 1}}}, again.Key)
	if err != nil {
		t.Fatal(err)
	}
	publish(t, js, reading.Subject(again.ID), reading.MsgID(again.ID, 1), dupRaw)

	// Bad readings, one of each kind, with the reason each must be rejected for.
	want := map[string]verify.Reason{} // device id (or subject) -> reason
	bad := devs[2]
	raw := bad.next(t)
	raw[len(raw)-1] ^= 0x01
	publish(t, js, reading.Subject(bad.ID), "", raw)
	want[bad.ID] = verify.BadSignature

	stranger2 := newDevice(t, "e2e-unknown", reading.Ed25519)
	publish(t, js, reading.Subject(stranger2.ID), "", stranger2.next(t))
	want[stranger2.ID] = verify.UnknownDevice

	publish(t, js, reading.Subject(revoked.ID), "", revoked.next(t))
	want[revoked.ID] = verify.RevokedDevice

	k := newEdKey(t)
	now := uint64(time.Now().UnixMilli())
	publish(t, js, reading.Subject("e2e-kid"), "", signRaw(t, "e2e-kid", map[string]any{"dev": "e2e-other", "seq": 1, "ts": now, "m": map[string]any{"x": 1}}, k))
	want["e2e-kid"] = verify.KIDMismatch

	publish(t, js, reading.Subject("e2e-notcbor"), "", []byte("this is not CBOR"))
	want[reading.Subject("e2e-notcbor")] = verify.BadCBOR

	publish(t, js, reading.Subject(devs[3].ID+"x"), "", devs[3].next(t)) // valid reading, wrong subject
	want[devs[3].ID] = verify.SubjectMismatch
	delete(good, key{devs[3].ID, devs[3].Seq})

	publish(t, js, reading.Subject("e2e-nometrics"), "", signRaw(t, "e2e-nometrics", map[string]any{"dev": "e2e-nometrics", "seq": 1, "ts": now}, k))
	want["e2e-nometrics"] = verify.BadPayload

	tags := map[string]string{}
	for i := range 200 {
		tags[fmt.Sprintf("tag%03d", i)] = strings.Repeat("v", 40)
	}
	big, err := reading.Sign(reading.Reading{Device: devs[4].ID, Seq: 10_000, TS: now, Metrics: []reading.Metric{{Name: "x", Value: 1}}, Tags: tags}, devs[4].Key)
	if err != nil {
		t.Fatal(err)
	}
	if len(big) <= reading.MaxSize {
		t.Fatalf("oversize reading is only %d bytes", len(big))
	}
	publish(t, js, reading.Subject(devs[4].ID), "", big)
	want["big"] = verify.TooLarge

	// Fleet limits: device clocks and payload sizes.
	stranger3 := reading.NewEd25519Key(newEdKey(t))
	limit := func(dev string, r reading.Reading, reason verify.Reason) {
		r.Device, r.Seq = dev, 1
		if len(r.Metrics) == 0 {
			r.Metrics = []reading.Metric{{Name: "x", Value: 1}}
		}
		raw, err := reading.Sign(r, stranger3)
		if err != nil {
			t.Fatal(err)
		}
		publish(t, js, reading.Subject(dev), "", raw)
		want[dev] = reason
	}
	limit("e2e-future", reading.Reading{TS: uint64(time.Now().Add(time.Hour).UnixMilli())}, verify.ClockSkew)
	limit("e2e-ancient", reading.Reading{TS: 1_000_000_000_000}, verify.ClockSkew)
	var many []reading.Metric
	for i := range 65 {
		many = append(many, reading.Metric{Name: fmt.Sprintf("m%02d", i), Value: 1})
	}
	limit("e2e-metrics", reading.Reading{TS: now, Metrics: many}, verify.TooManyMetrics)
	limit("e2e-tags", reading.Reading{TS: now, Tags: map[string]string{"k": strings.Repeat("v", 200)}}, verify.TagsTooLarge)

	// A reading that breaks its device's chain is stored, and the break recorded.
	forged, err := reading.Sign(reading.Reading{Device: devs[1].ID, Seq: devs[1].Seq + 1, TS: now,
		Metrics: []reading.Metric{{Name: "temp", Value: 1}, {Name: "hum", Value: 2}}, Prev: make([]byte, 32)}, devs[1].Key)
	if err != nil {
		t.Fatal(err)
	}
	publish(t, js, reading.Subject(devs[1].ID), reading.MsgID(devs[1].ID, devs[1].Seq+1), forged)
	good[key{devs[1].ID, devs[1].Seq + 1}] = true

	// Every good reading is stored exactly once; every bad one is rejected with its reason.
	await.Until(t, ctx, "all readings stored and rejected", func() (bool, string) {
		n := count(t, ctx, ch, "SELECT count() FROM "+database+".readings")
		r := count(t, ctx, ch, "SELECT count() FROM "+database+".rejected")
		return n == uint64(len(good)) && r == uint64(len(want)), fmt.Sprintf("%d/%d readings, %d/%d rejected", n, len(good), r, len(want))
	})
	rows, err := ch.Query(ctx, "SELECT device_id, seq, count() FROM "+database+".readings GROUP BY device_id, seq")
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for rows.Next() {
		var dev string
		var seq, n uint64
		if err := rows.Scan(&dev, &seq, &n); err != nil {
			t.Fatal(err)
		}
		if !good[key{dev, seq}] || n != 1 {
			t.Errorf("readings has %s seq %d %d times", dev, seq, n)
		}
		seen++
	}
	rows.Close()
	if seen != len(good) {
		t.Errorf("%d distinct readings stored, want %d", seen, len(good))
	}
	rrows, err := ch.Query(ctx, "SELECT subject, device_id, reason, detail, length(raw) FROM "+database+".rejected")
	if err != nil {
		t.Fatal(err)
	}
	for rrows.Next() {
		var subject, dev, reason, detail string
		var size uint64
		if err := rrows.Scan(&subject, &dev, &reason, &detail, &size); err != nil {
			t.Fatal(err)
		}
		k := dev
		switch {
		case verify.Reason(reason) == verify.TooLarge:
			k = "big"
		case verify.Reason(reason) == verify.BadCBOR:
			k = subject
		case dev == "":
			k = strings.TrimPrefix(subject, reading.SubjectPrefix)
		}
		if want[k] != verify.Reason(reason) {
			t.Errorf("rejected %s (subject %s) as %s (%s), want %q", dev, subject, reason, detail, want[k])
		}
		if size == 0 || detail == "" {
			t.Errorf("rejected %s as %s without raw bytes or detail", dev, reason)
		}
		delete(want, k)
	}
	rrows.Close()
	if len(want) != 0 {
		t.Errorf("not rejected: %v", want)
	}

	// The devices chain their readings (prev): the one forged break is recorded (once its
	// predecessor has had chain_wait to turn up), nothing else.
	await.Until(t, ctx, "the chain break recorded", func() (bool, string) {
		n := count(t, ctx, ch, "SELECT count() FROM "+database+".anomalies")
		return n > 0, fmt.Sprintf("%d anomalies", n)
	})
	if n := count(t, ctx, ch, "SELECT count() FROM "+database+".anomalies WHERE device_id = '"+devs[1].ID+"' AND seq = "+fmt.Sprint(devs[1].Seq+1)); n != 1 {
		t.Errorf("the chain break is recorded %d times", n)
	}
	if n := count(t, ctx, ch, "SELECT count() FROM "+database+".anomalies"); n != 1 {
		rows, _ := ch.Query(ctx, "SELECT device_id, seq, prev_seq, length(expected), length(got), worker FROM "+database+".anomalies")
		for rows.Next() {
			var dev, w string
			var seq, prev, le, lg uint64
			_ = rows.Scan(&dev, &seq, &prev, &le, &lg, &w)
			t.Logf("break: %s seq %d after %d (expected %d bytes, got %d)", dev, seq, prev, le, lg)
		}
		rows.Close()
		t.Errorf("%d chain breaks recorded for intact chains", n)
	}

	// Every batch is anchored.
	await.Until(t, ctx, "all batches anchored", func() (bool, string) {
		b := count(t, ctx, ch, "SELECT count() FROM "+database+".batches FINAL")
		a := count(t, ctx, ch, "SELECT uniqExact(batch_id) FROM "+database+".batch_anchors")
		sized := count(t, ctx, ch, "SELECT toUInt64(sum(size)) FROM "+database+".batches FINAL")
		// The anchors row is written after its batch_anchors rows.
		unrecorded := count(t, ctx, ch, "SELECT count() FROM (SELECT DISTINCT anchor_id FROM "+database+".batch_anchors) WHERE anchor_id NOT IN (SELECT anchor_id FROM "+database+".anchors)")
		return sized == uint64(len(good)) && a == b && unrecorded == 0, fmt.Sprintf("%d of %d batches anchored, covering %d readings; %d anchors not recorded yet", a, b, sized, unrecorded)
	})
	// Stored and anchored, the readings leave the stream (anchor.purge_readings): every message,
	// rejects included, the anchoring service's retention rounds remove with its own credentials.
	rs, err := js.Stream(ctx, stream.Readings)
	if err != nil {
		t.Fatal(err)
	}
	await.Until(t, ctx, "READINGS purged of what is stored and anchored", func() (bool, string) {
		info, err := rs.Info(ctx)
		if err != nil {
			return false, err.Error()
		}
		return info.State.Msgs == 0 && info.State.LastSeq > 0, fmt.Sprintf("%d messages, seqs %d to %d", info.State.Msgs, info.State.FirstSeq, info.State.LastSeq)
	})
	// Metric rows (written before each batch row) and the rollups the materialized views fill.
	if n := count(t, ctx, ch, "SELECT count() FROM "+database+".metrics"); n != 2*uint64(len(good)) {
		t.Errorf("metrics has %d rows, want %d", n, 2*len(good))
	}
	for _, rollup := range []string{"metrics_1m", "metrics_1h"} {
		if n := count(t, ctx, ch, "SELECT toUInt64(sum(c)) FROM (SELECT countMerge(count) AS c FROM "+database+"."+rollup+" GROUP BY device_id, metric, period)"); n != 2*uint64(len(good)) {
			t.Errorf("%s counts %d values, want %d", rollup, n, 2*len(good))
		}
	}
	if n := count(t, ctx, ch, "SELECT count() FROM "+database+".anchors FINAL WHERE height > 0"); n == 0 {
		t.Fatal("no anchors recorded")
	}

	trust, err := client.Trust(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, dv := range []*testDevice{devs[0], devs[1]} { // Ed25519 and ES256
		b, err := client.Proof(ctx, dv.ID, 7)
		if err != nil {
			t.Fatalf("proof of %s seq 7: %v", dv.ID, err)
		}
		report, err := proof.Verify(b, trust)
		if err != nil {
			var buf bytes.Buffer
			report.Print(&buf)
			t.Fatalf("proof of %s does not verify: %v\n%s", dv.ID, err, buf.String())
		}
		if len(report.Steps) < 8 {
			t.Fatalf("verification reported only %d steps", len(report.Steps))
		}
		if dv == devs[0] {
			tamperEveryByte(t, b, trust)
		}
	}
	if _, err := client.Proof(ctx, "e2e-unknown", 1); !errors.Is(err, lookup.ErrNotFound) {
		t.Errorf("proof of a rejected reading: %v, want ErrNotFound", err)
	}
	checkProofCache(t, ctx, NewProofs(store.New(ch, database), d.Ledger), client, devs[0].ID, perDevice)
	for _, dv := range []*testDevice{devs[0], devs[1]} { // a range of each algorithm, every reading chained
		rb, err := client.RangeProof(ctx, dv.ID, 1, perDevice)
		if err != nil {
			t.Fatalf("range proof of %s: %v", dv.ID, err)
		}
		rep, err := proof.VerifyRange(rb, trust)
		if err != nil || rep.Readings != perDevice || !rep.Complete {
			var buf bytes.Buffer
			rep.Print(&buf)
			t.Fatalf("range of %s: %v, %d readings, complete %v\n%s", dv.ID, err, rep.Readings, rep.Complete, buf.String())
		}
	}
	if _, err := client.RangeProof(ctx, devs[0].ID, perDevice+1, perDevice+100); !errors.Is(err, lookup.ErrNotFound) {
		t.Fatalf("range with no readings: %v, want ErrNotFound", err)
	}
	// A trust file for another validator set refuses a genuine bundle.
	b, err := client.Proof(ctx, devs[2].ID, 3)
	if err != nil {
		t.Fatal(err)
	}
	other, err := otherTrust(t, trust)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := proof.Verify(b, other); err == nil {
		t.Fatal("bundle verified against another validator set's trust file")
	}
	if st, err := client.Status(ctx); err != nil || st.Ready != "ok" || st.LastAnchor == nil || st.Ledger.Height == 0 || st.Lag == nil || st.Tables.Anomalies != 1 {
		t.Fatalf("status %+v, %v", st, err)
	}
	// The operator's counters, in Prometheus format.
	resp, err := client.HTTP.Get(client.Base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"anchorline_ingest_received_total", `anchorline_ingest_rejected_total{otel_scope_name="github.com/anchorline/anchorline",otel_scope_schema_url="",otel_scope_version="",reason="` + string(verify.BadSignature) + `"}`,
		"anchorline_ingest_batch_size_bucket", "anchorline_ingest_flush_duration_seconds_bucket", "anchorline_ingest_verify_batch_size_bucket",
		"anchorline_ingest_consumer_pending", "anchorline_clickhouse_duplicate_readings", "anchorline_anchoring_anchors_total", "anchorline_ingest_chain_breaks_total", "anchorline_ingest_chain_held", "anchorline_ingest_chain_lookups_total",
		"anchorline_anchoring_phase_duration_seconds_bucket"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// tamperEveryByte changes each byte of a genuine bundle to another value that keeps it
// well-formed where possible (hex digits to other hex digits, digits to digits) and requires
// verification to fail every time.
func tamperEveryByte(t *testing.T, b, trust []byte) {
	t.Helper()
	accepted := 0
	for i := range b {
		c := append([]byte(nil), b...)
		switch x := c[i]; {
		case x >= '0' && x <= '8', x >= 'a' && x <= 'e', x >= 'A' && x <= 'E':
			c[i]++
		case x == '9':
			c[i] = '0'
		case x == 'f' || x == 'F':
			c[i] = 'a'
		default:
			c[i] ^= 0x20
		}
		if _, err := proof.Verify(c, trust); err == nil {
			accepted++
			if accepted <= 5 {
				lo, hi := max(0, i-60), min(len(b), i+20)
				t.Errorf("bundle with byte %d changed (%q -> %q) still verifies; context: %s", i, b[i], c[i], b[lo:hi])
			}
		}
	}
	if accepted > 0 {
		t.Errorf("%d single-byte changes of %d verified", accepted, len(b))
	}
}

// otherTrust is a trust file for the same chain with a different validator.
func otherTrust(t *testing.T, trust []byte) ([]byte, error) {
	tr, err := bundle.ParseTrust(trust)
	if err != nil {
		return nil, err
	}
	vals := cmttypes.NewValidatorSet([]*cmttypes.Validator{cmttypes.NewValidator(cmted25519.GenPrivKey().PubKey(), 10)})
	return proof.TrustFile(tr.ChainID, vals)
}

// checkProofCache asks a fresh Proofs for every reading of a device at once (concurrent misses
// of one batch and anchor, and of many readings, which the loader asks in shared queries): each
// bundle must be byte for byte the API's. Forget drops the device's batches and proofs, and the
// bundles built again are the same.
func checkProofCache(t *testing.T, ctx context.Context, p *Proofs, client *api.Client, dev string, n int) {
	t.Helper()
	want := make([][]byte, n+1)
	for seq := 1; seq <= n; seq++ {
		b, err := client.Proof(ctx, dev, uint64(seq))
		if err != nil {
			t.Fatalf("proof of %s seq %d: %v", dev, seq, err)
		}
		want[seq] = b
	}
	askAll := func(what string) {
		t.Helper()
		got := make([][]byte, n+1)
		errs := make([]error, n+1)
		var wg sync.WaitGroup
		for seq := 1; seq <= n; seq++ {
			wg.Go(func() { got[seq], errs[seq] = p.Proof(ctx, dev, uint64(seq)) })
		}
		wg.Wait()
		for seq := 1; seq <= n; seq++ {
			if errs[seq] != nil || !bytes.Equal(got[seq], want[seq]) {
				t.Fatalf("%s: proof of %s seq %d differs from the API's (%v)", what, dev, seq, errs[seq])
			}
		}
	}
	askAll("cold cache")
	batches, anchors, devices := p.Cached()
	if batches == 0 || anchors == 0 || devices == 0 {
		t.Fatalf("cached %d batches, %d anchors, %d device proofs after %d proofs", batches, anchors, devices, n)
	}
	askAll("warm cache")
	var ids [][16]byte
	for seq := 1; seq <= n; seq++ {
		b, err := bundle.Parse(want[seq])
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, [16]byte(b.Batch.ID))
	}
	p.Forget(ids, []string{dev})
	if b, _, d := p.Cached(); b != 0 || d != 0 {
		t.Fatalf("after Forget: %d batches and %d device proofs cached, want none", b, d)
	}
	askAll("after Forget")
	if _, err := p.Proof(ctx, dev, uint64(n+1000)); !errors.Is(err, lookup.ErrNotFound) {
		t.Fatalf("proof of a reading never sent: %v, want ErrNotFound", err)
	}
}

// startTestDev starts dev with cfg for a test, stopped when the test ends, and returns it
// with the configuration it resolved and a JetStream client of the admin role.
func startTestDev(t *testing.T, ctx context.Context, cfg config.Config) (*Dev, config.Config, jetstream.JetStream) {
	t.Helper()
	d, err := StartDev(ctx, cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Stop(); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	cfg = d.Config()
	nc, err := nats.Connect(cfg.NATS.URL, d.NATSOptions(auth.RoleAdmin)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return d, cfg, js
}
