package stack

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/anchorline/anchorline/anchor/ledger"
	"github.com/anchorline/anchorline/pipeline/chain"
	"github.com/anchorline/anchorline/pipeline/consume"
	"github.com/anchorline/anchorline/pipeline/ingest"
	"github.com/anchorline/anchorline/pipeline/rules"
	"github.com/anchorline/anchorline/pipeline/verify"
	"github.com/anchorline/anchorline/pipeline/write"
	"github.com/anchorline/anchorline/schemas/entry"
	"github.com/anchorline/anchorline/services/access"
	"github.com/anchorline/anchorline/services/config"
)

// Ingest is a running ingest worker with its key cache.
type Ingest struct {
	*ingest.Ingest
	keys *follower
}

// Topology is how the services make their streams and consumers, from the configuration.
func Topology(cfg config.Config) consume.Topology {
	return consume.Topology{Replicas: cfg.NATS.Replicas, MaxAckPending: cfg.Ingest.MaxAckPending, AckWait: cfg.Ingest.AckWait,
		ReadingsMaxAge: cfg.NATS.ReadingsMaxAge}
}

// NewIngest builds an ingest worker: streams and consumers are created if missing.
func NewIngest(ctx context.Context, cfg config.Config, js jetstream.JetStream, ch driver.Conn, l *ledger.Client, log *slog.Logger) (*Ingest, error) {
	if err := Topology(cfg).EnsureIngest(ctx, js); err != nil {
		return nil, fmt.Errorf("ingest: streams: %w", err)
	}
	var feed *ingest.RulesFeed
	fol := &follower{l: l, log: log}
	if cfg.Rules.Enabled {
		if err := Topology(cfg).EnsureVerified(ctx, js, cfg.Rules.Shards); err != nil {
			return nil, fmt.Errorf("ingest: rules feed: %w", err)
		}
		feed = &ingest.RulesFeed{Shards: cfg.Rules.Shards, Height: func() uint64 { return uint64(max(fol.height.Load(), 0)) }}
	}
	keys := NewKeys(l)
	fol.keys = keys
	grants := access.NewGrants(l, time.Second)
	collect := func(ctx context.Context, dev string) (bool, uint64, error) {
		return grants.Allowed(ctx, entry.AudienceCollect, dev)
	}
	g := ingest.New(js, verify.New(keys, verify.Limits{MaxSize: cfg.Ingest.MaxSize, MaxFuture: cfg.Ingest.MaxFuture, MaxAge: cfg.Ingest.MaxAge,
		MaxMetrics: cfg.Ingest.MaxMetrics, MaxTags: cfg.Ingest.MaxTags, MaxTagLen: cfg.Ingest.MaxTagLen, Collect: collect}), write.New(ch, cfg.ClickHouse.Database), chain.NewReader(ch, cfg.ClickHouse.Database), ingest.Config{
		BatchSize: cfg.Ingest.BatchSize,
		FlushAge:  cfg.Ingest.FlushAge,
		PullBatch: cfg.Ingest.PullBatch,
		MaxSize:   cfg.Ingest.MaxSize,
		Worker:    cfg.Ingest.Worker,
		Verifiers: cfg.Ingest.Verifiers,
		Flushers:  cfg.Ingest.Flushers,
		AckWait:   cfg.Ingest.AckWait,
		ChainWait: cfg.Ingest.ChainWait,
		Rules:     feed,
	}, log)
	return &Ingest{Ingest: g, keys: fol}, nil
}

// RefreshKeys applies the registry changes committed so far, now: the API calls it after a
// device event it submitted, so that a revocation applies to the next reading this process
// sees. Other workers follow within their poll interval.
func (g *Ingest) RefreshKeys(ctx context.Context) error { return g.keys.refresh(ctx) }

// Run follows the device registry and ingests until ctx ends.
func (g *Ingest) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan struct{})
	go func() { defer close(done); g.keys.follow(ctx, 250*time.Millisecond) }()
	defer func() { cancel(); <-done }()
	return g.Ingest.Run(ctx)
}

// NewRules builds the rules stage and its action runner (signing commands and webhooks with
// rules.key): their streams and consumers are created if missing.
func NewRules(ctx context.Context, cfg config.Config, js jetstream.JetStream, ch driver.Conn, l *ledger.Client, log *slog.Logger) (*rules.Stage, *rules.Actions, error) {
	key, err := LoadRulesKey(cfg.RulesKey())
	if err != nil {
		return nil, nil, fmt.Errorf("%w: rules.key: %w", config.ErrInvalid, err)
	}
	if err := Topology(cfg).EnsureRules(ctx, js, cfg.Rules.Shards); err != nil {
		return nil, nil, fmt.Errorf("rules: streams: %w", err)
	}
	st := rulesStore{Reader: rules.NewReader(ch, cfg.ClickHouse.Database), Writer: write.New(ch, cfg.ClickHouse.Database)}
	stage := rules.New(js, l, st, rules.Config{Shards: cfg.Rules.Shards}, log)
	return stage, rules.NewActions(js, stage, key), nil
}

// rulesStore is the rules stage's ClickHouse: pipeline/rules reads, pipeline/write writes.
type rulesStore struct {
	*rules.Reader
	*write.Writer
}
