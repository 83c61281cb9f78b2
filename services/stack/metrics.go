package stack

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/attribute"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/anchorline/anchorline/anchor/anchoring"
	"github.com/anchorline/anchorline/anchor/ledger"
	"github.com/anchorline/anchorline/schemas/stream"
	"github.com/anchorline/anchorline/services/auth"
	"github.com/anchorline/anchorline/services/store"
)

// Lag is the backlog of the shared ingest consumer.
type Lag struct {
	Pending    uint64 `json:"pending"`     // in the stream, not yet delivered to any worker
	AckPending uint64 `json:"ack_pending"` // delivered, not yet acknowledged
}

// ConsumerLag asks JetStream for the ingest consumer's backlog.
func ConsumerLag(ctx context.Context, js jetstream.JetStream) (Lag, error) {
	c, err := js.Consumer(ctx, stream.Readings, stream.IngestConsumer)
	if err != nil {
		return Lag{}, err
	}
	info, err := c.Info(ctx)
	if err != nil {
		return Lag{}, err
	}
	return Lag{Pending: info.NumPending, AckPending: uint64(info.NumAckPending)}, nil
}

// observer records ingest's histograms.
type observer struct {
	verifySize, flushSize metric.Int64Histogram
	verifyTime, flushTime metric.Float64Histogram
}

func (o *observer) VerifyBatch(n int, d time.Duration) {
	o.verifySize.Record(context.Background(), int64(n))
	o.verifyTime.Record(context.Background(), d.Seconds())
}

func (o *observer) Flush(readings, _ int, d time.Duration) {
	o.flushSize.Record(context.Background(), int64(readings))
	o.flushTime.Record(context.Background(), d.Seconds())
}

// phases records how long each phase of an anchoring round takes.
type phases struct{ h metric.Float64Histogram }

func (p phases) Phase(phase string, d time.Duration) {
	p.h.Record(context.Background(), d.Seconds(), metric.WithAttributes(attribute.String("phase", phase)))
}

// NewMetrics exposes the counters of ingest and anchoring, the ingest consumer's lag, the
// duplicate rows in ClickHouse and ingest's histograms through OpenTelemetry, exported in
// Prometheus format by the returned handler. Any argument may be nil.
func NewMetrics(g *Ingest, a *anchoring.Service, js jetstream.JetStream, st *store.Store, au func() auth.Stats, l *ledger.Client) (http.Handler, error) {
	reg := prometheus.NewRegistry()
	exp, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp))
	m := mp.Meter("github.com/anchorline/anchorline")

	var errs []error
	counter := func(name, desc string) metric.Int64ObservableCounter {
		c, err := m.Int64ObservableCounter(name, metric.WithDescription(desc))
		errs = append(errs, err)
		return c
	}
	gauge := func(name, desc string) metric.Int64ObservableGauge {
		c, err := m.Int64ObservableGauge(name, metric.WithDescription(desc))
		errs = append(errs, err)
		return c
	}
	received := counter("anchorline.ingest.received", "messages pulled from READINGS")
	verified := counter("anchorline.ingest.verified", "readings whose signature and payload checked out")
	rejected := counter("anchorline.ingest.rejected", "messages written to the rejected table, by reason")
	inserted := counter("anchorline.ingest.inserted", "readings inserted into ClickHouse")
	batches := counter("anchorline.ingest.batches", "batches flushed")
	retries := counter("anchorline.ingest.retries", "failed flush attempts (retried with backoff)")
	deferred := counter("anchorline.ingest.deferred", "messages whose check could not be made (ledger unreachable), redelivered later")
	anomalies := counter("anchorline.ingest.chain_breaks", "readings whose prev does not match the device's previous reading (recorded in anomalies)")
	chainHeld := gauge("anchorline.ingest.chain_held", "stored readings whose link to their predecessor is not settled yet (acknowledged once it is)")
	chainRemote := counter("anchorline.ingest.chain_remote", "chain links settled by another worker's answer (it stored the predecessor)")
	chainLookups := counter("anchorline.ingest.chain_lookups", "chain links settled by asking ClickHouse (breaks, or no answer in time)")
	redelivered := counter("anchorline.ingest.redelivered", "messages JetStream delivered more than once (after a crash or an ack timeout): possible duplicates")
	duplicates := gauge("anchorline.clickhouse.duplicate_readings", "rows in readings beyond one per (device_id, seq), counted at most every 30 s")
	pending := gauge("anchorline.ingest.consumer_pending", "readings in READINGS not yet delivered to a worker (consumer lag)")
	ackPending := gauge("anchorline.ingest.consumer_ack_pending", "readings delivered and not yet acknowledged")
	anchors := counter("anchorline.anchoring.anchors", "anchors committed to the ledger")
	anchored := counter("anchorline.anchoring.batches", "batches anchored")
	pendingBatches := gauge("anchorline.anchoring.pending_batches", "batch records waiting for the next anchor")
	height := gauge("anchorline.anchoring.last_height", "ledger height of the last anchor")
	active := gauge("anchorline.anchoring.active", "1 while this anchoring service holds the lease (the active one), 0 while it stands by")
	validators := gauge("anchorline.ledger.validators", "validators of the ledger's latest committed block (asked at most every 5 s)")
	signers := gauge("anchorline.ledger.signers", "validators whose signatures commit that block: fewer than anchorline_ledger_validators means some are down or behind")
	admitted := counter("anchorline.auth.admitted", "device connections the auth callout let in")
	refused := counter("anchorline.auth.refused", "device connections the auth callout refused, and revoked devices' connections it closed, by reason")
	serverRefused := counter("anchorline.auth.server_refused", "connections the NATS servers refused at authentication (any client)")

	hist := func(name, desc, unit string, bounds ...float64) metric.Float64Histogram {
		h, err := m.Float64Histogram(name, metric.WithDescription(desc), metric.WithUnit(unit), metric.WithExplicitBucketBoundaries(bounds...))
		errs = append(errs, err)
		return h
	}
	ihist := func(name, desc string, bounds ...float64) metric.Int64Histogram {
		h, err := m.Int64Histogram(name, metric.WithDescription(desc), metric.WithExplicitBucketBoundaries(bounds...))
		errs = append(errs, err)
		return h
	}
	obs := &observer{
		verifySize: ihist("anchorline.ingest.verify_batch_size", "signatures verified together", 1, 8, 64, 256, 512, 1024),
		verifyTime: hist("anchorline.ingest.verify_duration", "time to verify one chunk", "s", .0005, .001, .005, .01, .025, .05, .1),
		flushSize:  ihist("anchorline.ingest.batch_size", "readings per batch", 1, 10, 100, 1000, 5000, 10000, 50000),
		flushTime:  hist("anchorline.ingest.flush_duration", "insert latency: rejects, readings, metrics and batch record made durable", "s", .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5),
	}
	phaseTime := hist("anchorline.anchoring.phase_duration", "time of each phase of an anchoring round, by phase (collect, intents, orphans, check, claim, intent, submit, record)", "s",
		.001, .005, .01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30)
	for _, err := range errs {
		if err != nil {
			return nil, fmt.Errorf("metrics: %w", err)
		}
	}
	if g != nil {
		g.Observe(obs)
	}
	if a != nil {
		a.Observe(phases{phaseTime})
	}

	// The consumer's lag costs a request to JetStream: ask at most once a second.
	var lagMu sync.Mutex
	var lag Lag
	var lagAt time.Time
	var dupMu sync.Mutex
	var dups uint64
	var dupAt time.Time
	// The ledger's signers cost two RPC calls: at most every 5 s.
	var ledgerMu sync.Mutex
	var signed, total int
	var ledgerAt time.Time
	_, err = m.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		if g != nil {
			s := g.Stats()
			o.ObserveInt64(received, int64(s.Received))
			o.ObserveInt64(verified, int64(s.Verified))
			o.ObserveInt64(inserted, int64(s.Inserted))
			o.ObserveInt64(batches, int64(s.Batches))
			o.ObserveInt64(retries, int64(s.Retries))
			o.ObserveInt64(deferred, int64(s.Deferred))
			o.ObserveInt64(anomalies, int64(s.Anomalies))
			o.ObserveInt64(chainHeld, s.ChainHeld)
			o.ObserveInt64(chainRemote, int64(s.ChainRemote))
			o.ObserveInt64(chainLookups, int64(s.ChainLookups))
			o.ObserveInt64(redelivered, int64(s.Redelivered))
			for reason, n := range s.RejectedBy {
				o.ObserveInt64(rejected, int64(n), metric.WithAttributes(attribute.String("reason", string(reason))))
			}
		}
		if js != nil {
			lagMu.Lock()
			if time.Since(lagAt) > time.Second {
				if l, err := ConsumerLag(ctx, js); err == nil {
					lag, lagAt = l, time.Now()
				}
			}
			l := lag
			lagMu.Unlock()
			o.ObserveInt64(pending, int64(l.Pending))
			o.ObserveInt64(ackPending, int64(l.AckPending))
		}
		if st != nil {
			dupMu.Lock()
			if time.Since(dupAt) > 30*time.Second {
				if c, err := st.Counts(ctx); err == nil {
					dups, dupAt = c.Duplicates, time.Now()
				}
			}
			n := dups
			dupMu.Unlock()
			o.ObserveInt64(duplicates, int64(n))
		}
		if l != nil {
			ledgerMu.Lock()
			if time.Since(ledgerAt) > 5*time.Second {
				if sg, vs, _, err := l.Signers(ctx); err == nil {
					signed, total, ledgerAt = sg, vs, time.Now()
				}
			}
			sg, vs := signed, total
			ledgerMu.Unlock()
			if vs > 0 {
				o.ObserveInt64(validators, int64(vs))
				o.ObserveInt64(signers, int64(sg))
			}
		}
		if au != nil {
			s := au()
			o.ObserveInt64(admitted, int64(s.Granted))
			o.ObserveInt64(serverRefused, int64(s.ServerRefused))
			for reason, n := range s.Refused {
				o.ObserveInt64(refused, int64(n), metric.WithAttributes(attribute.String("reason", reason)))
			}
		}
		if a != nil {
			s := a.Stats()
			o.ObserveInt64(anchors, int64(s.Anchors))
			o.ObserveInt64(anchored, int64(s.Batches))
			o.ObserveInt64(pendingBatches, int64(s.Pending))
			o.ObserveInt64(height, s.LastHeight)
			isActive := int64(0)
			if s.Active {
				isActive = 1
			}
			o.ObserveInt64(active, isActive)
		}
		return nil
	}, received, verified, rejected, inserted, batches, retries, deferred, anomalies, chainHeld, chainRemote, chainLookups, redelivered, duplicates, pending, ackPending, anchors, anchored, pendingBatches, height, active, validators, signers, admitted, refused, serverRefused)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), nil
}
