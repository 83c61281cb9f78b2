package consume

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/anchorline/anchorline/internal/natstest"
	"github.com/anchorline/anchorline/schemas/reading"
	"github.com/anchorline/anchorline/schemas/stream"
)

func TestStreamsAndBatchRecords(t *testing.T) {
	ctx := t.Context()
	js := natstest.Start(t)
	if err := EnsureStreams(ctx, js, 1000, 0); err != nil {
		t.Fatal(err)
	}
	if err := EnsureStreams(ctx, js, 1000, 0); err != nil { // idempotent
		t.Fatalf("second EnsureStreams: %v", err)
	}
	for _, c := range []struct{ stream, consumer string }{{stream.Readings, stream.IngestConsumer}, {stream.Batches, stream.AnchorConsumer}} {
		if _, err := js.Consumer(ctx, c.stream, c.consumer); err != nil {
			t.Fatalf("consumer %s on %s: %v", c.consumer, c.stream, err)
		}
	}

	// A device's subject is captured by READINGS.
	if _, err := js.Publish(ctx, reading.Subject("dev-1"), []byte("reading")); err != nil {
		t.Fatalf("publish on %s: %v", reading.Subject("dev-1"), err)
	}

	rec := stream.BatchRecord{ID: "0189a3f2b1c00123456789abcdef0011", Root: "5f1c", Size: 3, Worker: "w"}
	for range 2 { // the repeat is dropped: Nats-Msg-Id is the batch id
		if err := PublishBatch(ctx, js, rec); err != nil {
			t.Fatal(err)
		}
	}
	if err := PublishBatch(ctx, js, stream.BatchRecord{}); err == nil {
		t.Fatal("a record without id was published")
	}
	st, err := js.Stream(ctx, stream.Batches)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := st.GetLastMsgForSubject(ctx, stream.BatchesSubject)
	if err != nil {
		t.Fatal(err)
	}
	var got stream.BatchRecord
	if err := json.Unmarshal(msg.Data, &got); err != nil || got != rec || msg.Header.Get(jetstream.MsgIDHeader) != rec.ID {
		t.Fatalf("stored record %s (%v), msg id %q", msg.Data, err, msg.Header.Get(jetstream.MsgIDHeader))
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 {
		t.Fatalf("BATCHES holds %d records, want 1", info.State.Msgs)
	}
}

// TestEnsureStreamsConcurrently: workers starting together on a fresh server all succeed, and a
// changed ack wait reaches the existing consumer. (Under -race this also shows that no stream
// update runs while another worker creates its consumer: a data race inside nats-server.)
func TestEnsureStreamsConcurrently(t *testing.T) {
	ctx := t.Context()
	js := natstest.Start(t)
	errs := make(chan error, 4)
	for range 4 {
		go func() { errs <- EnsureStreams(ctx, js, 1000, 0) }()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if err := EnsureStreams(ctx, js, 1000, 7*time.Second); err != nil {
		t.Fatal(err)
	}
	c, err := js.Consumer(ctx, stream.Readings, stream.IngestConsumer)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.CachedInfo().Config.AckWait; got != 7*time.Second {
		t.Fatalf("ack wait %s after the change, want 7s", got)
	}
}

// TestEnsureStreamsLeavesThemAlone: ensuring streams that already have Anchorline's settings
// updates nothing (an update is what races with a consumer creation inside nats-server). The
// server publishes an advisory for every stream update before it answers the request, on the
// same connection as the answers, so any update shows as a pending advisory once EnsureStreams
// has returned.
func TestEnsureStreamsLeavesThemAlone(t *testing.T) {
	ctx := t.Context()
	js := natstest.Start(t)
	if err := EnsureStreams(ctx, js, 1000, 0); err != nil {
		t.Fatal(err)
	}
	nc := js.Conn()
	sub, err := nc.SubscribeSync("$JS.EVENT.ADVISORY.STREAM.UPDATED.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := EnsureStreams(ctx, js, 1000, 0); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if n, _, _ := sub.Pending(); n != 0 {
		m, _ := sub.NextMsg(0)
		t.Fatalf("a second EnsureStreams updated %d streams (first: %s)", n, m.Subject)
	}
	// The check can fail: a changed setting does update.
	s, err := js.Stream(ctx, stream.Batches)
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	cfg.Description = "changed"
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if n, _, _ := sub.Pending(); n != 1 {
		t.Fatalf("an update showed %d advisories, want 1", n)
	}
}

// TestReplicasChecked: a stream that exists with another number of replicas than configured
// is an error naming nats.replicas, and nothing is changed.
func TestReplicasChecked(t *testing.T) {
	ctx := t.Context()
	js := natstest.Start(t)
	if err := EnsureStreams(ctx, js, 1000, 0); err != nil {
		t.Fatal(err)
	}
	for _, ensure := range []func(Topology) error{
		func(tp Topology) error { return tp.EnsureIngest(ctx, js) },
		func(tp Topology) error { return tp.EnsureAnchoring(ctx, js) },
	} {
		err := ensure(Topology{Replicas: 3, MaxAckPending: 1000})
		if !errors.Is(err, ErrReplicas) || !strings.Contains(err.Error(), "nats.replicas") {
			t.Fatalf("err = %v, want ErrReplicas naming nats.replicas", err)
		}
	}
	s, err := js.Stream(ctx, stream.Readings)
	if err != nil {
		t.Fatal(err)
	}
	if r := s.CachedInfo().Config.Replicas; r != 1 {
		t.Fatalf("the stream has %d replicas after the refused ensure, want 1", r)
	}
}
