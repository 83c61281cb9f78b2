package stack

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/anchorline/anchorline/anchor/proof"
	"github.com/anchorline/anchorline/internal/await"
	"github.com/anchorline/anchorline/internal/chserver"
	"github.com/anchorline/anchorline/schemas/lookup"
	"github.com/anchorline/anchorline/schemas/reading"
	"github.com/anchorline/anchorline/services/api"
	"github.com/anchorline/anchorline/services/auth"
)

// TestRestart stops dev and starts it again on the same data folder: the ledger height, the
// streams and the consumers continue; readings from before and after are stored once and
// anchored; a proof fetched before the restart still verifies, and can be fetched again.
func TestRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	chAddr, database, ch := chserver.NewDatabase(t)
	cfg := devConfig(t, chAddr, database, t.TempDir())

	start := func() (*Dev, *api.Client, jetstream.JetStream, func()) {
		d, err := StartDev(ctx, cfg, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		nc, err := nats.Connect(d.Config().NATS.URL, d.NATSOptions(auth.RoleAdmin)...)
		if err != nil {
			t.Fatal(err)
		}
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		return d, d.APIClient(), js, func() {
			nc.Close()
			if err := d.Stop(); err != nil {
				t.Errorf("stop: %v", err)
			}
		}
	}
	anchoredAll := func(want uint64) {
		await.Until(t, ctx, fmt.Sprintf("%d readings stored and anchored", want), func() (bool, string) {
			n := count(t, ctx, ch, "SELECT count() FROM "+database+".readings")
			b := count(t, ctx, ch, "SELECT count() FROM "+database+".batches FINAL")
			a := count(t, ctx, ch, "SELECT uniqExact(batch_id) FROM "+database+".batch_anchors")
			// Rows land before their batch row: count the readings the batch rows cover too.
			sized := count(t, ctx, ch, "SELECT toUInt64(sum(size)) FROM "+database+".batches FINAL")
			// The anchors row is written after its batch_anchors rows, and a proof needs it.
			unrecorded := count(t, ctx, ch, "SELECT count() FROM (SELECT DISTINCT anchor_id FROM "+database+".batch_anchors) WHERE anchor_id NOT IN (SELECT anchor_id FROM "+database+".anchors)")
			return n == want && sized == want && a == b && unrecorded == 0, fmt.Sprintf("%d readings (%d in batch rows), %d of %d batches anchored, %d anchors not recorded yet", n, sized, a, b, unrecorded)
		})
	}

	d, client, js, stop := start()
	devs := []*testDevice{newDevice(t, "rs-ed", reading.Ed25519), newDevice(t, "rs-es", reading.ES256)}
	for _, dv := range devs {
		register(t, ctx, client, d.AdminKey, dv.ID, dv.Key.Public())
	}
	for range 25 {
		for _, dv := range devs {
			publish(t, js, reading.Subject(dv.ID), reading.MsgID(dv.ID, dv.Seq+1), dv.next(t))
		}
	}
	anchoredAll(50)
	trust, err := client.Trust(ctx)
	if err != nil {
		t.Fatal(err)
	}
	before, err := anchoredProof(t, ctx, client, "rs-es", 5)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := proof.Verify(before, trust); err != nil {
		t.Fatalf("proof before restart: %v", err)
	}
	h1, err := d.Node.Client().Height(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Readings published while the pipeline is stopping or stopped wait in the stream.
	stop()

	d, client, js, stop = start()
	defer stop()
	h2, err := d.Node.Client().Height(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if h2 < h1 {
		t.Fatalf("ledger height went back from %d to %d", h1, h2)
	}
	if info, err := client.Device(ctx, "rs-ed"); err != nil || info.Status != "active" {
		t.Fatalf("device after restart: %+v, %v", info, err)
	}
	for range 25 {
		for _, dv := range devs {
			publish(t, js, reading.Subject(dv.ID), reading.MsgID(dv.ID, dv.Seq+1), dv.next(t))
		}
	}
	anchoredAll(100)
	// The chains continue across the restart: the new ingest learns them from ClickHouse.
	if n := count(t, ctx, ch, "SELECT count() FROM "+database+".anomalies"); n != 0 {
		t.Errorf("%d chain breaks recorded across a restart", n)
	}
	trust2, err := client.Trust(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if string(trust2) != string(trust) {
		t.Fatalf("trust file changed across the restart:\n%s\n%s", trust, trust2)
	}
	if _, err := proof.Verify(before, trust2); err != nil {
		t.Fatalf("proof from before the restart: %v", err)
	}
	again, err := anchoredProof(t, ctx, client, "rs-es", 5)
	if err != nil {
		t.Fatal(err)
	}
	if string(again) != string(before) {
		t.Errorf("the proof of the same reading changed across the restart")
	}
	after, err := anchoredProof(t, ctx, client, "rs-ed", 40)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := proof.Verify(after, trust2); err != nil {
		t.Fatalf("proof after restart: %v", err)
	}
}

// anchoredProof fetches a reading's proof through the API, asking again while the API answers
// that the reading is not anchored yet (409, which tells a client to retry).
func anchoredProof(t *testing.T, ctx context.Context, client *api.Client, dev string, seq uint64) ([]byte, error) {
	t.Helper()
	var b []byte
	var err error
	await.Until(t, ctx, fmt.Sprintf("the proof of %s seq %d", dev, seq), func() (bool, string) {
		b, err = client.Proof(ctx, dev, seq)
		if errors.Is(err, lookup.ErrNotAnchored) {
			return false, err.Error()
		}
		return true, ""
	})
	return b, err
}
