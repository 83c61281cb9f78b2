package consume

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/anchorline/anchorline/internal/natstest"
	"github.com/anchorline/anchorline/schemas/reading"
	"github.com/anchorline/anchorline/schemas/stream"
)

// fetch takes n messages from a durable consumer, in order.
func fetch(t *testing.T, ctx context.Context, js jetstream.JetStream, streamName, consumer string, n int) []jetstream.Msg {
	t.Helper()
	c, err := js.Consumer(ctx, streamName, consumer)
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.FetchNoWait(n)
	if err != nil {
		t.Fatal(err)
	}
	var out []jetstream.Msg
	for m := range b.Messages() {
		out = append(out, m)
	}
	if len(out) != n {
		t.Fatalf("%d messages from %s, want %d", len(out), consumer, n)
	}
	return out
}

func ack(t *testing.T, ctx context.Context, ms ...jetstream.Msg) {
	t.Helper()
	for _, m := range ms {
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRetention: Readings is purged below the low-water mark of stored and anchored messages
// and never beyond it. Ten readings; ingest acknowledges the first six (two batches, seqs 1-3
// and 4-6) and holds the rest; the mark follows the anchoring consumer's acknowledgements of
// the two records, then ingest's of the rest (a flush of rejects only, which has no record).
func TestRetention(t *testing.T) {
	ctx := t.Context()
	js := natstest.Start(t)
	if err := EnsureStreams(ctx, js, 1000, 0); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if _, err := js.Publish(ctx, reading.Subject("dev-1"), []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	readings := fetch(t, ctx, js, stream.Readings, stream.IngestConsumer, 10)
	ack(t, ctx, readings[:6]...)
	for i, rec := range []stream.BatchRecord{
		{ID: "0189a3f2b1c0000000000000000000a1", Root: "aa", Size: 3, Worker: "w", StreamSeqMin: 1, StreamSeqMax: 3},
		{ID: "0189a3f2b1c0000000000000000000a2", Root: "bb", Size: 3, Worker: "w", StreamSeqMin: 4, StreamSeqMax: 6},
	} {
		if err := PublishBatch(ctx, js, rec); err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
	}
	records := fetch(t, ctx, js, stream.Batches, stream.AnchorConsumer, 2)
	s, err := js.Stream(ctx, stream.Readings)
	if err != nil {
		t.Fatal(err)
	}
	step := func(wantLow, wantPurged, wantFirst uint64) {
		t.Helper()
		low, n, err := PurgeAnchored(ctx, js)
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if low != wantLow || n != wantPurged || info.State.FirstSeq != wantFirst {
			t.Fatalf("low-water %d, purged %d, the stream starts at %d (%d messages); want %d, %d, %d", low, n, info.State.FirstSeq, info.State.Msgs, wantLow, wantPurged, wantFirst)
		}
	}
	step(1, 0, 1) // stored, but neither batch anchored
	ack(t, ctx, records[0])
	step(4, 3, 4) // the first batch anchored
	ack(t, ctx, records[1])
	step(7, 3, 7) // both: what ingest has not acknowledged stays
	ack(t, ctx, readings[6:]...)
	step(11, 4, 11)

	// A batch not anchored yet whose record does not name its messages: nothing is known safe.
	if _, err := js.Publish(ctx, reading.Subject("dev-1"), []byte("late")); err != nil {
		t.Fatal(err)
	}
	ack(t, ctx, fetch(t, ctx, js, stream.Readings, stream.IngestConsumer, 1)...)
	if err := PublishBatch(ctx, js, stream.BatchRecord{ID: "0189a3f2b1c0000000000000000000a3", Root: "cc", Size: 1, Worker: "old"}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := PurgeAnchored(ctx, js); !errors.Is(err, ErrLowWaterUnknown) {
		t.Fatalf("purge with a record of an old worker pending: %v, want ErrLowWaterUnknown", err)
	}
	info, err := s.Info(ctx)
	if err != nil || info.State.Msgs != 1 {
		t.Fatalf("the stream holds %d messages (%v), want the one still unanchored", info.State.Msgs, err)
	}
}

// TestReadingsMaxAge: nats.readings_max_age becomes the Readings stream's MaxAge, and goes
// again when it is set back to 0.
func TestReadingsMaxAge(t *testing.T) {
	ctx := t.Context()
	js := natstest.Start(t)
	for _, age := range []time.Duration{2 * time.Hour, 0} {
		if err := (Topology{Replicas: 1, MaxAckPending: 10, ReadingsMaxAge: age}).EnsureIngest(ctx, js); err != nil {
			t.Fatal(err)
		}
		s, err := js.Stream(ctx, stream.Readings)
		if err != nil {
			t.Fatal(err)
		}
		if got := s.CachedInfo().Config.MaxAge; got != age {
			t.Fatalf("MaxAge %s, want %s", got, age)
		}
	}
}
