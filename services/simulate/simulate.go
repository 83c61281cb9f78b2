package simulate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/anchorline/anchorline/schemas/reading"
)

// Config describes a simulation run.
type Config struct {
	Devices  int           // number of devices, at least 1
	Rate     float64       // readings per second over all devices
	Duration time.Duration // how long to publish
	Prefix   string        // device ids are Prefix-000, Prefix-001, ...
	Algs     []reading.Alg // assigned round-robin; default Ed25519 and ES256 alternating
	// Register puts a device's public key on the ledger before it publishes.
	Register func(ctx context.Context, id string, pub reading.PublicKey) error
	// Connect, if set, gives each device a connection of its own, made with its key (the broker
	// authenticates it as that device, as it would a real one); otherwise every device
	// publishes on the js Run is given (a connection with the simulator role's rights).
	Connect  func(ctx context.Context, id string, key reading.PrivateKey) (jetstream.JetStream, error)
	Progress io.Writer // live progress, one line a second; nil for none
}

// Validate names the first bad field.
func (c Config) Validate() error {
	switch {
	case c.Devices < 1:
		return fmt.Errorf("simulate: --devices %d: need at least 1", c.Devices)
	case c.Rate <= 0:
		return fmt.Errorf("simulate: --rate %g: must be positive readings per second", c.Rate)
	case c.Duration <= 0:
		return fmt.Errorf("simulate: --duration %s: must be positive", c.Duration)
	case !reading.ValidDeviceID(c.Prefix + "-000"):
		return fmt.Errorf("simulate: --prefix %q: device ids must match ^[A-Za-z0-9_-]{1,64}$", c.Prefix)
	}
	return nil
}

// DeviceResult is one device at the end of a run.
type DeviceResult struct {
	ID      string
	Alg     reading.Alg
	LastSeq uint64 // seqs 1..LastSeq were published and acknowledged by JetStream
}

// Result summarises a run.
type Result struct {
	Published, Acked, Failed uint64
	Elapsed                  time.Duration
	Devices                  []DeviceResult
}

// Throughput is acknowledged readings per second.
func (r Result) Throughput() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Acked) / r.Elapsed.Seconds()
}

func (r Result) String() string {
	return fmt.Sprintf("published %d readings from %d devices in %s: %d acknowledged, %d failed, %.0f readings/s",
		r.Published, len(r.Devices), r.Elapsed.Round(time.Millisecond), r.Acked, r.Failed, r.Throughput())
}

type device struct {
	sdk   reading.Device
	js    jetstream.JetStream // the device's own connection, or the shared one
	temp  float64
	acked atomic.Uint64 // highest seq acknowledged (publishes are acked in order per device)
}

// Run registers the devices and publishes readings until Duration has passed or ctx ends.
// It returns after every publish has been acknowledged or has failed. js may be nil if
// cfg.Connect is set.
func Run(ctx context.Context, js jetstream.JetStream, cfg Config) (Result, error) {
	if err := cfg.Validate(); err != nil {
		return Result{}, err
	}
	algs := cfg.Algs
	if len(algs) == 0 {
		algs = []reading.Alg{reading.Ed25519, reading.ES256}
	}
	devs := make([]*device, cfg.Devices)
	for i := range devs {
		alg := algs[i%len(algs)]
		key, err := reading.GenerateKey(alg)
		if err != nil {
			return Result{}, err
		}
		id := fmt.Sprintf("%s-%03d", cfg.Prefix, i)
		if cfg.Register != nil {
			if err := cfg.Register(ctx, id, key.Public()); err != nil {
				return Result{}, fmt.Errorf("simulate: register %s: %w", id, err)
			}
		}
		devs[i] = &device{sdk: reading.Device{ID: id, Key: key}, js: js, temp: 15 + 10*rand.Float64()}
		if cfg.Connect != nil {
			if devs[i].js, err = cfg.Connect(ctx, id, key); err != nil {
				return Result{}, fmt.Errorf("simulate: device %s connects: %w", id, err)
			}
		}
	}

	var published, acked, failed atomic.Uint64
	var wg sync.WaitGroup
	var firstErr error
	var errOnce sync.Once
	start := time.Now()
	deadline := start.Add(cfg.Duration)
	stopProgress := progress(cfg.Progress, start, &published, &acked, &failed)

	const tick = 10 * time.Millisecond
	ticker := time.NewTicker(tick)
	defer ticker.Stop()
	var due float64
	next := 0
loop:
	for now := start; now.Before(deadline); {
		select {
		case <-ctx.Done():
			break loop
		case now = <-ticker.C:
		}
		due += cfg.Rate * tick.Seconds()
		for ; due >= 1; due-- {
			d := devs[next]
			next = (next + 1) % len(devs)
			d.temp += rand.NormFloat64() * 0.1
			raw, err := d.sdk.Next([]reading.Metric{
				{Name: "temp", Value: math.Round(d.temp*100) / 100},
				{Name: "hum", Value: float64(40 + rand.IntN(20))},
			}, map[string]string{"sim": cfg.Prefix})
			if err != nil {
				return Result{}, err
			}
			seq := d.sdk.Seq
			msg := &nats.Msg{Subject: reading.Subject(d.sdk.ID), Data: raw, Header: nats.Header{}}
			msg.Header.Set(jetstream.MsgIDHeader, reading.MsgID(d.sdk.ID, seq))
			// A slow server holds the publisher back (up to 10 s) rather than failing the reading.
			fut, err := d.js.PublishMsgAsync(msg, jetstream.WithStallWait(10*time.Second))
			if err != nil {
				failed.Add(1)
				errOnce.Do(func() { firstErr = err })
				continue
			}
			published.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				select {
				case <-fut.Ok():
					acked.Add(1)
					for {
						cur := d.acked.Load()
						if seq <= cur || d.acked.CompareAndSwap(cur, seq) {
							break
						}
					}
				case err := <-fut.Err():
					failed.Add(1)
					errOnce.Do(func() { firstErr = err })
				}
			}()
		}
	}
	wg.Wait()
	elapsed := time.Since(start)
	stopProgress()
	res := Result{Published: published.Load(), Acked: acked.Load(), Failed: failed.Load(), Elapsed: elapsed}
	for _, d := range devs {
		res.Devices = append(res.Devices, DeviceResult{ID: d.sdk.ID, Alg: d.sdk.Key.Alg(), LastSeq: d.acked.Load()})
	}
	if firstErr != nil {
		return res, fmt.Errorf("simulate: %d publishes failed, first: %w", res.Failed, firstErr)
	}
	if ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return res, ctx.Err()
	}
	return res, nil
}

// progress prints one line a second until the returned function is called.
func progress(w io.Writer, start time.Time, published, acked, failed *atomic.Uint64) func() {
	if w == nil {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		var last uint64
		for {
			select {
			case <-done:
				return
			case <-t.C:
				a := acked.Load()
				fmt.Fprintf(w, "%6.1fs  published %d  acked %d  failed %d  %d readings/s\n",
					time.Since(start).Seconds(), published.Load(), a, failed.Load(), a-last)
				last = a
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}
