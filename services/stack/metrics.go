package stack

import (
	"context"
	"fmt"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/attribute"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/anchorline/anchorline/anchor/anchoring"
)

// NewMetrics exposes the counters of ingest and anchoring through OpenTelemetry, exported in
// Prometheus format by the returned handler. Either service may be nil.
func NewMetrics(g *Ingest, a *anchoring.Service) (http.Handler, error) {
	reg := prometheus.NewRegistry()
	exp, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp))
	m := mp.Meter("github.com/anchorline/anchorline")

	counter := func(name, desc string) (metric.Int64ObservableCounter, error) {
		return m.Int64ObservableCounter(name, metric.WithDescription(desc))
	}
	received, err1 := counter("anchorline.ingest.received", "messages pulled from READINGS")
	verified, err2 := counter("anchorline.ingest.verified", "readings whose signature and payload checked out")
	rejected, err3 := counter("anchorline.ingest.rejected", "messages written to the rejected table, by reason")
	inserted, err4 := counter("anchorline.ingest.inserted", "readings inserted into ClickHouse")
	batches, err5 := counter("anchorline.ingest.batches", "batches flushed")
	anchors, err6 := counter("anchorline.anchoring.anchors", "anchors committed to the ledger")
	anchored, err7 := counter("anchorline.anchoring.batches", "batches anchored")
	pending, err8 := m.Int64ObservableGauge("anchorline.anchoring.pending_batches", metric.WithDescription("batch records waiting for the next anchor"))
	height, err9 := m.Int64ObservableGauge("anchorline.anchoring.last_height", metric.WithDescription("ledger height of the last anchor"))
	for _, err := range []error{err1, err2, err3, err4, err5, err6, err7, err8, err9} {
		if err != nil {
			return nil, fmt.Errorf("metrics: %w", err)
		}
	}
	_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		if g != nil {
			s := g.Stats()
			o.ObserveInt64(received, int64(s.Received))
			o.ObserveInt64(verified, int64(s.Verified))
			o.ObserveInt64(inserted, int64(s.Inserted))
			o.ObserveInt64(batches, int64(s.Batches))
			for reason, n := range s.RejectedBy {
				o.ObserveInt64(rejected, int64(n), metric.WithAttributes(attribute.String("reason", reason)))
			}
		}
		if a != nil {
			s := a.Stats()
			o.ObserveInt64(anchors, int64(s.Anchors))
			o.ObserveInt64(anchored, int64(s.Batches))
			o.ObserveInt64(pending, int64(s.Pending))
			o.ObserveInt64(height, s.LastHeight)
		}
		return nil
	}, received, verified, rejected, inserted, batches, anchors, anchored, pending, height)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), nil
}
