package ingest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/anchorline/anchorline/anchor/merkle"
	"github.com/anchorline/anchorline/internal/natstest"
	"github.com/anchorline/anchorline/pipeline/chain"
	"github.com/anchorline/anchorline/pipeline/consume"
	"github.com/anchorline/anchorline/pipeline/verify"
	"github.com/anchorline/anchorline/pipeline/write"
	"github.com/anchorline/anchorline/schemas/reading"
	"github.com/anchorline/anchorline/schemas/stream"
)

// flakyWriter keeps what it is given in memory, fails its first `fail` calls, and checks that
// nothing covered by a write has been acknowledged before that write returned.
type flakyWriter struct {
	mu        sync.Mutex
	fail      int
	calls     int
	batches   []*write.Batch
	rejects   []write.Reject
	anomalies []chain.Anomaly
	cons      jetstream.Consumer
	t         *testing.T
}

func (w *flakyWriter) attempt() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.calls++
	if w.calls <= w.fail {
		// Nothing has been written yet, so nothing may have been acknowledged.
		if w.cons != nil {
			info, err := w.cons.Info(context.Background())
			if err != nil || info.AckFloor.Consumer != 0 {
				w.t.Errorf("acknowledged before any write succeeded: %+v %v", info.AckFloor, err)
			}
		}
		return errors.New("clickhouse: connection refused")
	}
	return nil
}

func (w *flakyWriter) WriteBatch(_ context.Context, b *write.Batch) error {
	if err := w.attempt(); err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.batches = append(w.batches, b)
	return nil
}

func (w *flakyWriter) WriteRejects(_ context.Context, rs []write.Reject) error {
	if err := w.attempt(); err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.rejects = append(w.rejects, rs...)
	return nil
}

func (w *flakyWriter) WriteAnomalies(_ context.Context, as []chain.Anomaly) error {
	if err := w.attempt(); err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.anomalies = append(w.anomalies, as...)
	return nil
}

// Heads and Spans make flakyWriter the chain check's lookup too, over what it was given.
func (w *flakyWriter) Heads(_ context.Context, devices []string) (map[string]chain.Link, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[string]chain.Link{}
	for _, b := range w.batches {
		for _, r := range b.Readings {
			if slices.Contains(devices, r.Device) && r.Seq >= out[r.Device].Seq {
				out[r.Device] = chain.Link{Seq: r.Seq, Leaf: r.Leaf}
			}
		}
	}
	return out, nil
}

func (w *flakyWriter) Spans(_ context.Context, spans []chain.Span) (map[string][]chain.Link, error) {
	if err := w.attempt(); err != nil {
		return nil, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[string][]chain.Link{}
	for _, b := range w.batches {
		for _, r := range b.Readings {
			for _, sp := range spans {
				if r.Device == sp.Device && r.Seq >= sp.From && r.Seq < sp.To {
					out[r.Device] = append(out[r.Device], chain.Link{Seq: r.Seq, Leaf: r.Leaf})
				}
			}
		}
	}
	return out, nil
}

func (w *flakyWriter) anomalyCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.anomalies)
}

func (w *flakyWriter) counts() (readings, rejects int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, b := range w.batches {
		readings += len(b.Readings)
	}
	return readings, len(w.rejects)
}

func startNATS(t testing.TB) jetstream.JetStream {
	t.Helper()
	js := natstest.Start(t)
	if err := consume.EnsureStreams(context.Background(), js, 1000, 0); err != nil {
		t.Fatal(err)
	}
	return js
}

func TestIngestWritesThenAcks(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	js := startNATS(t)
	keys := verify.NewKeys(nil)
	var devs []*reading.Device
	for i, alg := range []reading.Alg{reading.Ed25519, reading.ES256, reading.Ed25519} {
		k, err := reading.GenerateKey(alg)
		if err != nil {
			t.Fatal(err)
		}
		d := &reading.Device{ID: []string{"a", "b", "c"}[i], Key: k}
		keys.Apply([]verify.Key{{Device: d.ID, Key: k.Public(), Height: 1}})
		devs = append(devs, d)
	}
	cons, err := js.Consumer(ctx, stream.Readings, stream.IngestConsumer)
	if err != nil {
		t.Fatal(err)
	}
	w := &flakyWriter{fail: 3, t: t, cons: cons}
	g := New(js, verify.New(keys, verify.DefaultLimits()), w, w, Config{BatchSize: 25, FlushAge: 50 * time.Millisecond, PullBatch: 10, Worker: "t"},
		slog.New(slog.NewTextHandler(io.Discard, nil)))

	const per = 30
	for range per {
		for _, d := range devs {
			raw, err := d.Next([]reading.Metric{{Name: "temp", Value: 1}}, nil)
			if err != nil {
				t.Fatal(err)
			}
			publishReading(t, ctx, js, d, raw)
		}
	}
	for _, bad := range [][]byte{[]byte("junk"), {0xd2, 0x84}} {
		if _, err := js.Publish(ctx, reading.Subject("x"), bad); err != nil {
			t.Fatal(err)
		}
	}

	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- g.Run(runCtx) }()
	for {
		n, r := w.counts()
		info, err := cons.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n == per*len(devs) && r == 2 && info.NumAckPending == 0 && info.NumPending == 0 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("stored %d readings and %d rejects; %d pending, %d unacked", n, r, info.NumPending, info.NumAckPending)
		case <-time.After(20 * time.Millisecond):
		}
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// Every reading exactly once, batch roots recompute from the stored leaves, and each batch
	// record is on BATCHES.
	seen := map[string]bool{}
	for _, b := range w.batches {
		leaves := make([]merkle.Hash, len(b.Readings))
		for i, r := range b.Readings {
			key := reading.MsgID(r.Device, r.Seq)
			if seen[key] || r.LeafIndex != uint32(i) || r.Leaf != reading.Leaf(r.Raw) {
				t.Fatalf("reading %s stored twice or out of place", key)
			}
			seen[key] = true
			leaves[i] = r.Leaf
		}
		root, _ := merkle.Root(leaves)
		if root != b.Root {
			t.Fatalf("batch %x root does not recompute", b.ID)
		}
	}
	st, err := js.Stream(ctx, stream.Batches)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != uint64(len(w.batches)) {
		t.Fatalf("%d batch records for %d batches", info.State.Msgs, len(w.batches))
	}
	for _, r := range w.rejects {
		if r.Reason != verify.BadCBOR || r.Subject != reading.Subject("x") || len(r.Raw) == 0 {
			t.Fatalf("reject %+v", r)
		}
	}
	s := g.Stats()
	if s.Inserted != per*3 || s.Rejected != 2 || s.RejectedBy[verify.BadCBOR] != 2 || s.Retries < 3 || s.Received != per*3+2 {
		t.Fatalf("stats %+v", s)
	}
	if err := g.Ready(); err != nil {
		t.Fatalf("not ready after recovering: %v", err)
	}
}

// A reading whose prev is not the leaf of the device's previous stored reading is stored and
// recorded as a chain break; so is a chain that continues after readings went missing.
func TestChainBreaks(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	js := startNATS(t)
	k, err := reading.GenerateKey(reading.Ed25519)
	if err != nil {
		t.Fatal(err)
	}
	keys := verify.NewKeys(nil)
	keys.Apply([]verify.Key{{Device: "chain", Key: k.Public(), Height: 1}})
	w := &flakyWriter{t: t}
	// A reading stored before this worker started: the worker learns the chain from the writer.
	d := &reading.Device{ID: "chain", Key: k}
	first, err := d.Next([]reading.Metric{{Name: "x", Value: 1}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	w.batches = append(w.batches, &write.Batch{Readings: []write.Reading{{Device: "chain", Seq: 1, Leaf: reading.Leaf(first)}}})
	var raws [][]byte
	for range 8 {
		raw, err := d.Next([]reading.Metric{{Name: "x", Value: 1}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		raws = append(raws, raw) // seqs 2..9
	}
	// seq 5 goes missing (deleted after the device sent it); seq 8 is replaced by a reading
	// that claims another predecessor.
	forged, err := reading.Sign(reading.Reading{Device: "chain", Seq: 8, TS: uint64(time.Now().UnixMilli()), Metrics: []reading.Metric{{Name: "x", Value: 2}}, Prev: make([]byte, 32)}, k)
	if err != nil {
		t.Fatal(err)
	}
	for i, raw := range raws {
		seq := uint64(i + 2)
		switch seq {
		case 5:
			continue
		case 8:
			raw = forged
		}
		if _, err := js.Publish(ctx, reading.Subject("chain"), raw); err != nil {
			t.Fatal(err)
		}
	}
	g := New(js, verify.New(keys, verify.DefaultLimits()), w, w, Config{BatchSize: 100, FlushAge: 20 * time.Millisecond, Worker: "t",
		ChainWait: 300 * time.Millisecond}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- g.Run(runCtx) }()
	for {
		if n, _ := w.counts(); n == 1+7 && w.anomalyCount() == 3 && g.Stats().ChainHeld == 0 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("readings not stored")
		case <-time.After(10 * time.Millisecond):
		}
	}
	stop()
	<-done
	got := map[uint64]uint64{}
	for _, a := range w.anomalies {
		got[a.Seq] = a.PrevSeq
		if a.Kind != chain.Break || a.BatchID == ([16]byte{}) || a.Worker != "t" {
			t.Errorf("anomaly %+v", a)
		}
	}
	// 6 follows 4 (5 is missing); 8 claims a zero predecessor; 9 follows the forged 8.
	want := map[uint64]uint64{6: 4, 8: 7, 9: 8}
	if len(got) != len(want) {
		t.Fatalf("anomalies at %v, want %v", got, want)
	}
	for seq, prev := range want {
		if got[seq] != prev {
			t.Errorf("anomaly at seq %d after %d, want after %d", seq, got[seq], prev)
		}
	}
	if g.Stats().Anomalies != 3 {
		t.Errorf("stats %+v", g.Stats())
	}
}

// Two workers share the consumer, so each device's readings alternate between them: a link
// whose predecessor the other worker stored is no break. A reading that never reaches ingest
// is one, found by whichever worker gets its successor.
func TestChainAcrossWorkers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	js := startNATS(t)
	keys := verify.NewKeys(nil)
	var devs []*reading.Device
	keyOf := map[string]reading.PrivateKey{}
	for i := range 4 {
		k, err := reading.GenerateKey(reading.Ed25519)
		if err != nil {
			t.Fatal(err)
		}
		d := &reading.Device{ID: fmt.Sprintf("d%d", i), Key: k}
		keys.Apply([]verify.Key{{Device: d.ID, Key: k.Public(), Height: 1}})
		devs = append(devs, d)
		keyOf[d.ID] = k
	}
	w := &flakyWriter{t: t}
	var workers []*Ingest
	for i := range 2 {
		workers = append(workers, New(js, verify.New(keys, verify.DefaultLimits()), w, w, Config{BatchSize: 7, FlushAge: 10 * time.Millisecond,
			PullBatch: 3, Worker: fmt.Sprintf("w%d", i), ChainWait: time.Second}, slog.New(slog.NewTextHandler(io.Discard, nil))))
	}
	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, g := range workers {
		wg.Add(1)
		go func() { defer wg.Done(); _ = g.Run(runCtx) }()
	}
	const per = 300
	published := 0
	var late []byte
	var leaf60 [32]byte
	var warmLookups uint64
	for i := range per {
		if i == 20 {
			// A worker keeps what it stores for the others once they have asked: the first
			// questions go unanswered and end in ClickHouse. Let them settle.
			for workers[0].Stats().ChainHeld+workers[1].Stats().ChainHeld > 0 {
				select {
				case <-ctx.Done():
					t.Fatal("warm-up links not settled")
				case <-time.After(20 * time.Millisecond):
				}
			}
			warmLookups = workers[0].Stats().ChainLookups + workers[1].Stats().ChainLookups
		}
		for _, d := range devs {
			raw, err := d.Next([]reading.Metric{{Name: "x", Value: float64(i)}}, nil)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case d.ID == "d1" && d.Seq == 60:
				leaf60 = reading.Leaf(raw)
			case d.ID == "d1" && d.Seq == 70:
				// A fork: d1's seq 70 is replaced by a reading that names seq 60 as its
				// predecessor (stored, but not the latest before it); d1's own 71 then
				// names a reading nobody stores.
				if raw, err = reading.Sign(reading.Reading{Device: "d1", Seq: 70, TS: uint64(time.Now().UnixMilli()),
					Metrics: []reading.Metric{{Name: "x", Value: -1}}, Prev: leaf60[:]}, keyOf[d.ID]); err != nil {
					t.Fatal(err)
				}
			case d.ID == "d2" && d.Seq == 50:
				continue // lost on the way: d2's seq 51 links to a reading nobody stores
			case d.ID == "d3" && d.Seq == 30:
				late = raw // delayed on the way: d3's seq 31 waits for it
				continue
			}
			if _, err := js.Publish(ctx, reading.Subject(d.ID), raw); err != nil {
				t.Fatal(err)
			}
			published++
			if d.ID == "d3" && d.Seq == 35 {
				// The delayed reading arrives once its successor is held waiting for it.
				for workers[0].Stats().ChainHeld+workers[1].Stats().ChainHeld == 0 {
					select {
					case <-ctx.Done():
						t.Fatal("d3's seq 31 never held for its predecessor")
					case <-time.After(10 * time.Millisecond):
					}
				}
				if _, err := js.Publish(ctx, reading.Subject(d.ID), late); err != nil {
					t.Fatal(err)
				}
				published++
			}
		}
		time.Sleep(time.Millisecond) // pacing, so that the two workers interleave
	}
	for {
		n, _ := w.counts()
		held := workers[0].Stats().ChainHeld + workers[1].Stats().ChainHeld
		if n == published && w.anomalyCount() >= 3 && held == 0 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%d of %d readings stored, %d anomalies, %d held", n, published, w.anomalyCount(), held)
		case <-time.After(20 * time.Millisecond):
		}
	}
	stop()
	wg.Wait()
	got := map[string]uint64{}
	for _, a := range w.anomalies {
		if a.Kind != chain.Break {
			t.Errorf("anomaly %+v", a)
		}
		got[fmt.Sprintf("%s/%d", a.Device, a.Seq)] = a.PrevSeq
	}
	want := map[string]uint64{"d2/51": 49, "d1/70": 69, "d1/71": 70}
	if !maps.Equal(got, want) {
		t.Fatalf("breaks (device/seq: previous stored seq) %v, want %v", got, want)
	}
	var inserted [2]uint64
	var remote, lookups uint64
	for i, g := range workers {
		inserted[i] = g.Stats().Inserted
		remote += g.Stats().ChainRemote
		lookups += g.Stats().ChainLookups
	}
	if inserted[0] == 0 || inserted[1] == 0 || remote < 2 {
		t.Fatalf("the work was not shared (inserted %v, %d links settled by the other worker): the test did not cross workers", inserted, remote)
	}
	t.Logf("links settled: %d by answers, %d in ClickHouse during the warm-up, %d after", remote, warmLookups, lookups-warmLookups)
	// After the warm-up the other worker's answers settle the links; ClickHouse is asked
	// about the three breaks (and a few links whose predecessor was not stored in time).
	if after := lookups - warmLookups; after < 3 || after > 3+remote/4 {
		t.Errorf("%d links looked up in ClickHouse after the warm-up (%d before), %d settled by the other worker's answers", lookups-warmLookups, warmLookups, remote)
	}
}

// A reading that reaches the worker after its successor (held back, or redelivered) has its
// own link checked: one whose prev is right is no break; one that names another predecessor
// is, although its successor links to it.
func TestChainLateReading(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js := startNATS(t)
	keys := verify.NewKeys(nil)
	w := &flakyWriter{t: t}
	late := map[string][][]byte{} // each device's seqs 4 and 5
	leaf3 := map[string][32]byte{}
	forged := [32]byte{0xff}
	for _, id := range []string{"good", "forged"} {
		k, err := reading.GenerateKey(reading.Ed25519)
		if err != nil {
			t.Fatal(err)
		}
		keys.Apply([]verify.Key{{Device: id, Key: k.Public(), Height: 1}})
		d := &reading.Device{ID: id, Key: k}
		var rs []write.Reading // seqs 1..3, stored before the worker starts
		for range 5 {
			if d.Seq == 3 {
				leaf3[id] = d.Prev
				if id == "forged" {
					d.Prev = forged // seq 4 names a reading that is not seq 3; seq 5 links to seq 4
				}
			}
			raw, err := d.Next([]reading.Metric{{Name: "x", Value: 1}}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if d.Seq <= 3 {
				rs = append(rs, write.Reading{Device: id, Seq: d.Seq, Leaf: reading.Leaf(raw)})
			} else {
				late[id] = append(late[id], raw)
			}
		}
		w.batches = append(w.batches, &write.Batch{Readings: rs})
	}
	for _, i := range []int{1, 0} { // seq 5 before seq 4
		for _, id := range []string{"good", "forged"} {
			if _, err := js.Publish(ctx, reading.Subject(id), late[id][i]); err != nil {
				t.Fatal(err)
			}
		}
	}
	g := New(js, verify.New(keys, verify.DefaultLimits()), w, w, Config{BatchSize: 100, FlushAge: 20 * time.Millisecond, Worker: "t",
		ChainWait: 300 * time.Millisecond}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- g.Run(runCtx) }()
	// Four links to settle: each seq 5 (by the seq 4 stored after it) and each seq 4.
	for {
		n, _ := w.counts()
		s := g.Stats()
		if n == 3*2+2*2 && s.ChainRemote+s.ChainLookups == 4 && s.ChainHeld == 0 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%d readings stored, stats %+v", n, s)
		case <-time.After(10 * time.Millisecond):
		}
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.anomalies) != 1 {
		t.Fatalf("anomalies %+v, want the forged seq 4 only", w.anomalies)
	}
	a, want := w.anomalies[0], leaf3["forged"]
	if a.Device != "forged" || a.Seq != 4 || a.Kind != chain.Break || a.PrevSeq != 3 || !bytes.Equal(a.Expected, want[:]) ||
		!bytes.Equal(a.Got, forged[:]) || a.BatchID == ([16]byte{}) {
		t.Fatalf("anomaly %+v, want forged seq 4 after seq 3", a)
	}
}

func TestChunkWait(t *testing.T) {
	for _, tc := range []struct{ flushAge, want time.Duration }{
		{time.Millisecond, minChunkWait},
		{50 * time.Millisecond, 6250 * time.Microsecond},
		{200 * time.Millisecond, maxChunkWait},
		{time.Minute, maxChunkWait},
	} {
		if got := chunkWait(tc.flushAge); got != tc.want {
			t.Errorf("chunkWait(%s) = %s, want %s", tc.flushAge, got, tc.want)
		}
	}
}

// publishReading publishes a device's reading as a device does: on its subject, with its
// message id.
func publishReading(tb testing.TB, ctx context.Context, js jetstream.JetStream, d *reading.Device, raw []byte) {
	tb.Helper()
	msg := nats.NewMsg(reading.Subject(d.ID))
	msg.Data = raw
	msg.Header.Set(jetstream.MsgIDHeader, reading.MsgID(d.ID, d.Seq))
	if _, err := js.PublishMsg(ctx, msg); err != nil {
		tb.Fatal(err)
	}
}
