package ingest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/anchorline/anchorline/pipeline/batch"
	"github.com/anchorline/anchorline/pipeline/chain"
	"github.com/anchorline/anchorline/pipeline/consume"
	"github.com/anchorline/anchorline/pipeline/verify"
	"github.com/anchorline/anchorline/pipeline/write"
	"github.com/anchorline/anchorline/schemas/reading"
	"github.com/anchorline/anchorline/schemas/stream"
)

// benchChunk is the size of a verification chunk in the benchmarks (what chunk sends).
const benchChunk = 1024

// benchMessages publishes n chained readings of the simulator's shape (two metrics, one tag,
// prev) from devices devices to a real embedded NATS and fetches them back as JetStream
// messages, unacknowledged, with the verifier that accepts them.
func benchMessages(b *testing.B, devices, n int) (jetstream.JetStream, []jetstream.Msg, *verify.Verifier, *Ingest) {
	b.Helper()
	ctx := b.Context()
	js := startNATS(b)
	keys := verify.NewKeys(nil)
	devs := make([]*reading.Device, devices)
	for i := range devs {
		k, err := reading.GenerateKey(reading.Ed25519)
		if err != nil {
			b.Fatal(err)
		}
		devs[i] = &reading.Device{ID: fmt.Sprintf("dev-%04d", i), Key: k}
		keys.Apply([]verify.Key{{Device: devs[i].ID, Key: k.Public(), Height: 1}})
	}
	for i := range n {
		d := devs[i%devices]
		raw, err := d.Next([]reading.Metric{{Name: "temp", Value: 21.5 + float64(i%7)}, {Name: "hum", Value: float64(40 + i%20)}},
			map[string]string{"sim": "bench"})
		if err != nil {
			b.Fatal(err)
		}
		publishReading(b, ctx, js, d, raw)
	}
	cons, err := js.OrderedConsumer(ctx, stream.Readings, jetstream.OrderedConsumerConfig{})
	if err != nil {
		b.Fatal(err)
	}
	var msgs []jetstream.Msg
	for len(msgs) < n {
		fetched, err := cons.Fetch(n-len(msgs), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			b.Fatal(err)
		}
		for m := range fetched.Messages() {
			msgs = append(msgs, m)
		}
		if err := fetched.Error(); err != nil {
			b.Fatal(err)
		}
	}
	v := verify.New(keys, verify.DefaultLimits())
	w := &flakyWriter{}
	g := New(js, v, w, w, Config{BatchSize: n, Worker: "bench"}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	return js, msgs, v, g
}

// BenchmarkPerMessage is ingest's hot path per chunk of benchChunk messages, from JetStream
// messages to write.Readings in a batch: verify (decode, checks, batch signature verification,
// leaf) then add (metadata, chain heads, the batch). "add" is the part after verification.
func BenchmarkPerMessage(b *testing.B) {
	_, msgs, v, g := benchMessages(b, 500, benchChunk)
	ctx := context.Background()
	in := make([]verify.Input, len(msgs))
	out := make([]verify.Result, len(msgs))
	run := func(b *testing.B, verifyToo bool) {
		if !verifyToo {
			v.CheckBatch(ctx, toInputs(msgs, in), out)
		}
		b.ReportAllocs()
		for b.Loop() {
			if verifyToo {
				v.CheckBatch(ctx, toInputs(msgs, in), out)
			}
			f := &flush{b: batch.New("bench", len(msgs))}
			heads := chain.NewHeads()
			for i, m := range msgs {
				g.add(f, m, out[i], heads)
			}
			if f.b.Len() != len(msgs) {
				b.Fatalf("%d of %d readings in the batch", f.b.Len(), len(msgs))
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(msgs)), "ns/reading")
	}
	b.Run("verify+add", func(b *testing.B) { run(b, true) })
	b.Run("add", func(b *testing.B) { run(b, false) })
}

func toInputs(msgs []jetstream.Msg, in []verify.Input) []verify.Input {
	for i, m := range msgs {
		in[i] = verify.Input{Subject: m.Subject(), Raw: m.Data()}
	}
	return in
}

// countingWriter keeps nothing: it counts what it is given, for BenchmarkDrain.
type countingWriter struct{ readings atomic.Int64 }

func (w *countingWriter) WriteBatch(_ context.Context, b *write.Batch) error {
	w.readings.Add(int64(len(b.Readings)))
	return nil
}
func (w *countingWriter) WriteRejects(context.Context, []write.Reject) error    { return nil }
func (w *countingWriter) WriteAnomalies(context.Context, []chain.Anomaly) error { return nil }
func (w *countingWriter) Heads(context.Context, []string) (map[string]chain.Link, error) {
	return map[string]chain.Link{}, nil
}
func (w *countingWriter) Spans(context.Context, []chain.Span) (map[string][]chain.Link, error) {
	return map[string][]chain.Link{}, nil
}

// BenchmarkDrain is a whole worker (Run) draining a backlog of 20,000 readings from 500
// devices on a real embedded NATS, with the default configuration but a writer that keeps
// nothing: the ingest process's share of a drain without ClickHouse (the embedded server's
// CPU is in the figures too). Each round recreates the durable consumer, so that the same
// messages are delivered again; the round ends when the worker has acknowledged them all
// (Stats().Inserted counts readings after their acks), which the benchmark polls every
// 5 ms.
func BenchmarkDrain(b *testing.B) {
	const n = 20_000
	js, _, v, _ := benchMessages(b, 500, n)
	for _, pull := range []int{250, 1000, 4000} {
		b.Run(fmt.Sprintf("pull=%d", pull), func(b *testing.B) {
			cfg := Config{BatchSize: 10_000, FlushAge: 200 * time.Millisecond, PullBatch: pull, Worker: "bench"}
			drain(b, js, v, cfg, n)
		})
	}
}

// drain runs BenchmarkDrain's rounds with cfg.
func drain(b *testing.B, js jetstream.JetStream, v *verify.Verifier, cfg Config, n int) {
	ctx := b.Context()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	var cpu time.Duration // user and system time of the process while timed
	var chunks chunkCounter
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		if err := js.DeleteConsumer(ctx, stream.Readings, stream.IngestConsumer); err != nil {
			b.Fatal(err)
		}
		if err := consume.EnsureStreams(ctx, js, 60_000, 0); err != nil {
			b.Fatal(err)
		}
		w := &countingWriter{}
		g := New(js, v, w, w, cfg, log)
		g.Observe(&chunks)
		runCtx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		b.StartTimer()
		cpu0 := cpuTime(b)
		go func() { done <- g.Run(runCtx) }()
		for g.Stats().Inserted < uint64(n) {
			select {
			case <-ctx.Done():
				b.Fatal(ctx.Err())
			case <-time.After(5 * time.Millisecond):
			}
		}
		cpu += cpuTime(b) - cpu0
		b.StopTimer()
		stop()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/reading")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N*n), "cpu-ns/reading")
	b.ReportMetric(float64(chunks.readings.Load())/float64(chunks.chunks.Load()), "readings/chunk")
}

// chunkCounter observes the sizes of the chunks verified.
type chunkCounter struct{ chunks, readings atomic.Int64 }

func (c *chunkCounter) VerifyBatch(n int, _ time.Duration) { c.chunks.Add(1); c.readings.Add(int64(n)) }
func (c *chunkCounter) Flush(int, int, time.Duration)      {}

// cpuTime is the user and system CPU time of this process so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
