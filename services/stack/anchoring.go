package stack

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/anchorline/anchorline/anchor/anchoring"
	"github.com/anchorline/anchorline/anchor/ledger"
	"github.com/anchorline/anchorline/anchor/merkle"
	"github.com/anchorline/anchorline/pipeline/consume"
	"github.com/anchorline/anchorline/pipeline/write"
	"github.com/anchorline/anchorline/schemas/stream"
	"github.com/anchorline/anchorline/services/config"
	"github.com/anchorline/anchorline/services/store"
)

// recorder records committed anchors in ClickHouse (w) and reads which batches are anchored (s).
type recorder struct {
	w   *write.Writer
	s   *store.Store
	log *slog.Logger
}

func (r recorder) RecordAnchor(ctx context.Context, a anchoring.Anchor) error {
	ids := make([][16]byte, len(a.Batches))
	for i, b := range a.Batches {
		ids[i] = b.ID
	}
	return r.w.WriteAnchor(ctx, write.Anchor{
		ID:         a.ID,
		Root:       a.Root,
		Batches:    uint32(len(a.Batches)),
		Readings:   a.Readings,
		Height:     uint64(a.Height),
		LogIndex:   a.LogIndex,
		TxHash:     hex.EncodeToString(a.TxHash),
		Entry:      a.Entry,
		AnchoredAt: a.Time,
	}, ids)
}

func (r recorder) Anchored(ctx context.Context, ids [][16]byte) (map[[16]byte]bool, error) {
	return r.s.AnchoredBatches(ctx, ids)
}

// Orphans finds the stored batches no anchor covers that are older than olderThan, and
// returns those whose stored leaves make the root and size of their batch row. One that does
// not is left unanchored and logged: the audit reports its readings.
func (r recorder) Orphans(ctx context.Context, olderThan time.Time, limit int) ([]anchoring.Batch, error) {
	rows, err := r.s.UnanchoredBatches(ctx, olderThan, limit)
	if err != nil {
		return nil, err
	}
	var out []anchoring.Batch
	for _, b := range rows {
		leaves, err := r.s.BatchLeaves(ctx, b.ID)
		if err != nil {
			r.log.Error("anchoring: a batch without a record cannot be read back; not anchored", "batch", hex.EncodeToString(b.ID[:]), "err", err)
			continue
		}
		hs := make([]merkle.Hash, len(leaves))
		for i, l := range leaves {
			hs[i] = l
		}
		root, err := merkle.Root(hs)
		if err != nil || root != merkle.Hash(b.Root) || len(leaves) != int(b.Size) {
			r.log.Error("anchoring: a batch without a record does not match its stored readings; not anchored", "batch", hex.EncodeToString(b.ID[:]),
				"size", b.Size, "leaves", len(leaves), "err", err)
			continue
		}
		// Only a batch whose every reading was stored again in another recorded batch (its
		// messages were delivered again after its worker died) is anchored this way: rows
		// written into ClickHouse behind ingest's back get no anchor from the sweep.
		rs, err := r.s.Audit().BatchReadings(ctx, b.ID)
		if err != nil {
			return nil, err
		}
		copies, err := r.s.Audit().Copies(ctx, rs)
		if err != nil {
			return nil, err
		}
		if len(copies) != len(rs) {
			r.log.Error("anchoring: a batch without a record holds readings stored nowhere else; not anchored (the audit reports them)", "batch", hex.EncodeToString(b.ID[:]),
				"readings", len(rs), "stored elsewhere", len(copies))
			continue
		}
		out = append(out, anchoring.Batch{ID: b.ID, Root: root, Size: uint64(b.Size)})
	}
	return out, nil
}

// NewAnchoring builds the anchor service, recording anchors in database cfg.ClickHouse.Database
// of ch; streams and consumers are created if missing. It signs anchors with the key in
// cfg.AnchorKey() (anchor.key), creating the file if it is missing.
func NewAnchoring(ctx context.Context, cfg config.Config, js jetstream.JetStream, ch driver.Conn, l *ledger.Client, log *slog.Logger) (*anchoring.Service, error) {
	key, err := LoadOrCreateAnchorKey(cfg.AnchorKey())
	if err != nil {
		return nil, fmt.Errorf("anchoring: %w", err)
	}
	if err := Topology(cfg).EnsureAnchoring(ctx, js); err != nil {
		return nil, fmt.Errorf("anchoring: streams: %w", err)
	}
	// Any number of anchoring services may run: the one holding the lease anchors, the others
	// stand by.
	host, _ := os.Hostname()
	id := stream.NewID(time.Now())
	lease, err := anchoring.OpenLease(ctx, js, fmt.Sprintf("%s-%d-%x", host, os.Getpid(), id[6:10]), 0, cfg.NATS.Replicas, log)
	if err != nil {
		return nil, fmt.Errorf("anchoring: %w", err)
	}
	intents, err := anchoring.OpenIntents(ctx, js, cfg.NATS.Replicas)
	if err != nil {
		return nil, err
	}
	rec := recorder{w: write.New(ch, cfg.ClickHouse.Database), s: store.New(ch, cfg.ClickHouse.Database), log: log}
	return anchoring.New(js, l, rec, anchoring.Config{
		Orphans:  rec,
		Intents:  intents,
		Lease:    lease,
		Key:      key,
		Stream:   stream.Batches,
		Consumer: stream.AnchorConsumer,
		Interval: cfg.Anchor.Interval,
	}, log)
}

// PurgeEvery is how often an anchoring process removes from the Readings stream what is
// stored and anchored (anchor.purge_readings).
const PurgeEvery = 5 * time.Second

// purgeReadings removes, every PurgeEvery until ctx ends, the Readings messages below the
// low-water mark of anchored readings (consume.PurgeAnchored). A round that fails is logged
// and the next one tries again: nothing is removed that is not known to be stored and
// anchored. Every anchoring process may run it; the mark is the servers' state, so they agree.
func purgeReadings(ctx context.Context, js jetstream.JetStream, log *slog.Logger) error {
	tick := time.NewTicker(PurgeEvery)
	defer tick.Stop()
	var warned bool
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		low, n, err := consume.PurgeAnchored(ctx, js)
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, consume.ErrLowWaterUnknown):
			if !warned {
				log.Warn("retention: readings kept in the stream until the batches older workers recorded are anchored", "err", err)
				warned = true
			}
		case err != nil:
			log.Warn("retention: cannot purge the readings stream; trying again", "err", err, "in", PurgeEvery)
		case n > 0:
			warned = false
			log.Debug("retention: readings stored and anchored removed from the stream", "stream", stream.Readings, "below", low, "messages", n)
		}
	}
}
