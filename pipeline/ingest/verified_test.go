package ingest

import (
	"fmt"
	"testing"

	"github.com/anchorline/anchorline/pipeline/write"
	"github.com/anchorline/anchorline/schemas/reading"
	"github.com/anchorline/anchorline/schemas/stream"
)

// TestVerifiedMsgs: a batch's verified readings go out in as few messages as the limits allow
// (stream.MaxVerifiedChunk readings, stream.MaxVerifiedBytes each), every reading once, in
// order, with ids that a retried flush repeats.
func TestVerifiedMsgs(t *testing.T) {
	for _, tc := range []struct {
		name      string
		n, values int // readings, metrics each
		wantMsgs  int // 0: several, each under the byte limit
	}{
		{"small readings: one message", 3000, 2, 1},
		{"over the count", stream.MaxVerifiedChunk + 1, 1, 2},
		{"large readings: split by size", 2000, 60, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := &write.Batch{ID: [16]byte{1, 2, 3}}
			for i := range tc.n {
				r := write.Reading{Device: "dev-1", Seq: uint64(i + 1), TS: 1_764_000_000_000}
				for m := range tc.values {
					r.Metrics = append(r.Metrics, reading.Metric{Name: fmt.Sprintf("metric-%02d", m), Value: float64(i)})
				}
				b.Readings = append(b.Readings, r)
			}
			msgs, err := verifiedMsgs(b, &RulesFeed{Shards: 1})
			if err != nil {
				t.Fatal(err)
			}
			again, err := verifiedMsgs(b, &RulesFeed{Shards: 1})
			if err != nil {
				t.Fatal(err)
			}
			if tc.wantMsgs > 0 && len(msgs) != tc.wantMsgs || tc.wantMsgs == 0 && len(msgs) < 2 || len(again) != len(msgs) {
				t.Fatalf("%d messages (again %d), want %d", len(msgs), len(again), tc.wantMsgs)
			}
			next := uint64(1)
			for i, m := range msgs {
				if len(m.Data) > stream.MaxVerifiedBytes {
					t.Fatalf("message %d: %d bytes, over %d", i, len(m.Data), stream.MaxVerifiedBytes)
				}
				if id := m.Header.Get("Nats-Msg-Id"); id != again[i].Header.Get("Nats-Msg-Id") {
					t.Fatalf("message %d: id %q, then %q", i, id, again[i].Header.Get("Nats-Msg-Id"))
				}
				vb, err := stream.DecodeVerified(m.Data)
				if err != nil {
					t.Fatal(err)
				}
				for _, r := range vb.Readings {
					if r.Seq != next || len(r.Metrics) != tc.values {
						t.Fatalf("message %d: seq %d with %d metrics, want seq %d with %d", i, r.Seq, len(r.Metrics), next, tc.values)
					}
					next++
				}
			}
			if next != uint64(tc.n)+1 {
				t.Fatalf("%d readings in the messages, want %d", next-1, tc.n)
			}
		})
	}
}
