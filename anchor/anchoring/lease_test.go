package anchoring

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/anchorline/anchorline/internal/await"
	"github.com/anchorline/anchorline/schemas/stream"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

const testTTL = time.Second

// TestLease: one holder at a time; a holder that stops renewing loses the lease to another
// within about the TTL; a released lease is taken at once.
func TestLease(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	js := startNATS(t)
	a, err := OpenLease(ctx, js, "a", testTTL, 1, quiet())
	if err != nil {
		t.Fatal(err)
	}
	b, err := OpenLease(ctx, js, "b", testTTL, 1, quiet())
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := a.Try(ctx); !ok || err != nil {
		t.Fatalf("a takes a free lease: %v %v", ok, err)
	}
	if ok, err := b.Try(ctx); ok || err != nil {
		t.Fatalf("b takes a held lease: %v %v", ok, err)
	}
	if ok, err := a.Try(ctx); !ok || err != nil {
		t.Fatalf("a renews: %v %v", ok, err)
	}
	// a stops renewing (it died): b gets it once the entry expires.
	await.Until(t, ctx, "b takes over the lapsed lease", func() (bool, string) {
		ok, err := b.Try(ctx)
		return ok, fmt.Sprintf("b.Try = %v, %v", ok, err)
	})
	if ok, _ := a.Try(ctx); ok || a.Held() {
		t.Fatal("a still holds the lease b took over")
	}
	// b released (its Run ends): a takes it without waiting for the TTL.
	rctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); b.Run(rctx) }()
	await.Until(t, ctx, "b runs as holder", func() (bool, string) { return b.Held(), "not yet" })
	stop()
	<-done
	if ok, err := a.Try(ctx); !ok || err != nil {
		t.Fatalf("a takes the released lease: %v %v", ok, err)
	}
}

// TestClaims: a batch claimed by one service cannot be claimed by another while the claim is
// renewed; once it lapses, it can.
func TestClaims(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	js := startNATS(t)
	a, _ := OpenLease(ctx, js, "a", testTTL, 1, quiet())
	b, _ := OpenLease(ctx, js, "b", testTTL, 1, quiet())
	x, y := stream.NewID(time.Now()), stream.NewID(time.Now())
	ca, ok, err := a.Claim(ctx, [][16]byte{x})
	if err != nil || !ok[0] {
		t.Fatalf("a claims x: %v %v", ok, err)
	}
	_, ok, err = b.Claim(ctx, [][16]byte{x, y})
	if err != nil || ok[0] || !ok[1] {
		t.Fatalf("b claims x (a's) and y: %v %v, want false, true", ok, err)
	}
	// a renews x for longer than the TTL: b still cannot claim it.
	deadline := time.Now().Add(2 * testTTL)
	for time.Now().Before(deadline) {
		if err := ca.Renew(ctx); err != nil {
			t.Fatal(err)
		}
		if _, ok, _ := b.Claim(ctx, [][16]byte{x}); ok[0] {
			t.Fatal("b claimed x while a renewed it")
		}
		time.Sleep(testTTL / 4) // the renewal period, not a synchronisation
	}
	// a stops: the claim lapses and b can claim x.
	await.Until(t, ctx, "b claims the lapsed x", func() (bool, string) {
		_, ok, err := b.Claim(ctx, [][16]byte{x})
		return ok[0], fmt.Sprint(err)
	})
}

// TestActiveAndStandby runs two anchoring services over one consumer: only the lease holder
// anchors; when its NATS connection dies (so it can renew nothing) the standby takes over and
// anchors the rest; no batch is in two anchors.
func TestActiveAndStandby(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	js := startNATS(t)
	n := startLedger(t)
	rec := &memRecorder{}
	type svc struct {
		s  *Service
		nc *nats.Conn
	}
	start := func(name string) svc {
		nc, err := nats.Connect(js.Conn().ConnectedUrl())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		sjs, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		l, err := OpenLease(ctx, sjs, name, testTTL, 1, quiet())
		if err != nil {
			t.Fatal(err)
		}
		s, err := New(sjs, n.Client(), rec, Config{Key: anchorKey, Stream: stream.Batches, Consumer: stream.AnchorConsumer,
			Interval: 100 * time.Millisecond, Lease: l}, quiet())
		if err != nil {
			t.Fatal(err)
		}
		runCtx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); _ = s.Run(runCtx) }()
		t.Cleanup(func() { stop(); <-done })
		return svc{s, nc}
	}
	a := start("a")
	await.Until(t, ctx, "a active", func() (bool, string) { return a.s.Stats().Active, "not yet" })
	b := start("b")
	var batches []Batch
	publish := func(k int) {
		for i := range k {
			bt := randomBatch(len(batches) + i)
			batches = append(batches, bt)
			publishBatch(t, js, bt)
		}
	}
	anchoredOnce := func() (map[[16]byte]bool, string) {
		seen := map[[16]byte]bool{}
		for _, an := range rec.snapshot() {
			for _, bt := range an.Batches {
				if seen[bt.ID] {
					t.Fatalf("batch %x anchored twice", bt.ID)
				}
				seen[bt.ID] = true
			}
		}
		return seen, fmt.Sprintf("%d of %d anchored", len(seen), len(batches))
	}
	publish(10)
	await.Until(t, ctx, "the first batches anchored", func() (bool, string) {
		seen, why := anchoredOnce()
		return len(seen) == len(batches), why
	})
	if st := b.s.Stats(); st.Active || st.Anchors != 0 {
		t.Fatalf("the standby anchored while the active held the lease: %+v", st)
	}
	// a dies as far as NATS can tell: its connection is gone.
	a.nc.Close()
	await.Until(t, ctx, "b takes over", func() (bool, string) { return b.s.Stats().Active, "b still standing by" })
	publish(10)
	await.Until(t, ctx, "the later batches anchored by b", func() (bool, string) {
		seen, why := anchoredOnce()
		return len(seen) == len(batches) && b.s.Stats().Batches > 0, why
	})
}
