package simulate

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/anchorline/anchorline/internal/natstest"
	"github.com/anchorline/anchorline/schemas/reading"
	"github.com/anchorline/anchorline/schemas/stream"
)

func TestRunPublishesSignedChainedReadings(t *testing.T) {
	js := natstest.Start(t)
	ctx := context.Background()
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: stream.Readings, Subjects: []string{stream.ReadingsSubjects}})
	if err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	keys := map[string]reading.PublicKey{}
	var progress bytes.Buffer
	res, err := Run(ctx, js, Config{Devices: 3, Rate: 300, Duration: 1500 * time.Millisecond, Prefix: "t",
		Register: func(_ context.Context, id string, pub reading.PublicKey) error {
			mu.Lock()
			defer mu.Unlock()
			keys[id] = pub
			return nil
		},
		Progress: &progress})
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 3 || keys["t-000"].Alg != reading.Ed25519 || keys["t-001"].Alg != reading.ES256 {
		t.Fatalf("registered %v", keys)
	}
	if res.Acked == 0 || res.Acked != res.Published || res.Failed != 0 || res.Throughput() <= 0 {
		t.Fatalf("result %+v", res)
	}
	if !strings.Contains(progress.String(), "readings/s") || !strings.Contains(res.String(), "readings/s") {
		t.Errorf("no live progress or summary: %q / %q", progress.String(), res.String())
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != res.Acked {
		t.Fatalf("stream holds %d readings, %d acked", info.State.Msgs, res.Acked)
	}

	// Every reading verifies under its device's key, seqs count up from 1 and prev chains them.
	prev := map[string][]byte{}
	last := map[string]uint64{}
	for i := uint64(1); i <= info.State.Msgs; i++ {
		m, err := st.GetMsg(ctx, i)
		if err != nil {
			t.Fatal(err)
		}
		msg, err := reading.Decode(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		dev := msg.Reading.Device
		if err := msg.Verify(keys[dev]); err != nil {
			t.Fatalf("%s seq %d: %v", dev, msg.Reading.Seq, err)
		}
		if m.Subject != reading.Subject(dev) || m.Header.Get(jetstream.MsgIDHeader) != reading.MsgID(dev, msg.Reading.Seq) {
			t.Fatalf("subject %s, msg id %s for %s seq %d", m.Subject, m.Header.Get(jetstream.MsgIDHeader), dev, msg.Reading.Seq)
		}
		if msg.Reading.Seq != last[dev]+1 || !bytes.Equal(msg.Reading.Prev, prev[dev]) {
			t.Fatalf("%s seq %d after %d: chain broken", dev, msg.Reading.Seq, last[dev])
		}
		l := reading.Leaf(m.Data)
		prev[dev], last[dev] = l[:], msg.Reading.Seq
	}
	for _, d := range res.Devices {
		if d.LastSeq != last[d.ID] {
			t.Errorf("%s: result says last seq %d, stream has %d", d.ID, d.LastSeq, last[d.ID])
		}
	}
}

func TestValidateNamesTheFlag(t *testing.T) {
	for flag, c := range map[string]Config{
		"--devices":  {Devices: 0, Rate: 1, Duration: time.Second, Prefix: "p"},
		"--rate":     {Devices: 1, Rate: 0, Duration: time.Second, Prefix: "p"},
		"--duration": {Devices: 1, Rate: 1, Prefix: "p"},
		"--prefix":   {Devices: 1, Rate: 1, Duration: time.Second, Prefix: "bad prefix"},
	} {
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), flag) {
			t.Errorf("%+v: %v, want an error naming %s", c, err, flag)
		}
	}
}
