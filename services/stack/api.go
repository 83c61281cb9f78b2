package stack

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/anchorline/anchorline/anchor/ledger"
	"github.com/anchorline/anchorline/anchor/proof"
	"github.com/anchorline/anchorline/schemas/lookup"
	"github.com/anchorline/anchorline/services/access"
	"github.com/anchorline/anchorline/services/api"
	"github.com/anchorline/anchorline/services/config"
	"github.com/anchorline/anchorline/services/erasure"
	"github.com/anchorline/anchorline/services/store"
)

// Backend answers the HTTP API from ClickHouse and the ledger.
type Backend struct {
	Store  *store.Store
	Ledger *ledger.Client
	// Optional views of the services running in this process.
	IngestStats    func() any
	AnchoringStats func() any
	RulesStats     func() any
	AuthStats      func() any
	Checks         []Check // readiness checks besides ClickHouse and the ledger
	Metrics        http.Handler
	// AfterDeviceEvent run after a device event is committed (an ingest worker or the auth
	// service in the same process refreshes its keys).
	AfterDeviceEvent []func(context.Context) error
	// Lag reports the ingest consumer's backlog, if this process can see it.
	Lag func(context.Context) (api.Lag, error)
	// Proofs builds the proof bundles; NewProofs(Store, Ledger) if nil.
	Proofs     *Proofs
	proofsOnce sync.Once
	// Grants, if set, is the ledger's consent that tokens' audiences read raw readings and
	// proofs under (api.Deps.Consent).
	Grants *access.Grants
}

// Deps returns the API server's dependencies. Every error they return is classified by
// unreachable on its way out.
func (b *Backend) Deps() api.Deps {
	d := b.deps()
	if b.Grants != nil {
		d.Consent = b.Grants.Allowed
	}
	return d
}

func (b *Backend) deps() api.Deps {
	return api.Deps{
		Reading: func(ctx context.Context, dev string, seq uint64) (any, error) {
			return classified(b.reading(ctx, dev, seq))
		},
		Batch:  func(ctx context.Context, id [16]byte) (any, error) { return classified(b.batch(ctx, id)) },
		Anchor: func(ctx context.Context, id [16]byte) (any, error) { return classified(b.anchor(ctx, id)) },
		Device: func(ctx context.Context, id string) (api.DeviceInfo, error) { return classified(b.device(ctx, id)) },
		Proof: func(ctx context.Context, dev string, seq uint64) ([]byte, error) {
			return classified(b.Proof(ctx, dev, seq))
		},
		RangeProof: func(ctx context.Context, dev string, from, to uint64) ([]byte, error) {
			return classified(b.proofs().Range(ctx, dev, from, to))
		},
		EventProof: func(ctx context.Context, id [16]byte) ([]byte, error) {
			return classified(b.proofs().Event(ctx, id))
		},
		Trust:       func(ctx context.Context) ([]byte, error) { return classified(b.trust(ctx)) },
		SubmitEvent: func(ctx context.Context, e []byte) (api.Inclusion, error) { return classified(b.submit(ctx, e)) },
		Status:      func(ctx context.Context) (api.Status, error) { return classified(b.status(ctx)) },
		Ready:       b.ready,
		Metrics:     b.Metrics,
	}
}

// lookupErr maps the errors of the lookup a request names (the reading, batch, anchor or device
// asked for) onto the API's: lookup.ErrNotFound (404) and lookup.ErrNotAnchored (409) pass as
// they are, an entry the ledger refused becomes api.ErrRejected.
func lookupErr(err error) error {
	if errors.Is(err, ledger.ErrRejected) {
		return fmt.Errorf("%w: %w", api.ErrRejected, err)
	}
	return err
}

// laterErr is the error of a lookup after the one a request names. It keeps the text but not
// lookup's sentinels: a reading whose batch has no leaves is an inconsistency (500), not an
// unknown reading (404).
func laterErr(err error) error {
	if errors.Is(err, lookup.ErrNotFound) || errors.Is(err, lookup.ErrNotAnchored) {
		return fmt.Errorf("stored records disagree: %s", err.Error()) // not %w, on purpose
	}
	return err
}

// unreachable marks an error that means ClickHouse or the ledger could not be reached (a
// network error, or a connection closed under the request) as api.ErrUnavailable: the API
// answers 503, retry later, instead of 500.
func unreachable(err error) error {
	var ne net.Error
	if err == nil || errors.Is(err, api.ErrUnavailable) {
		return err
	}
	if errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) {
		return fmt.Errorf("%w: %w", api.ErrUnavailable, err)
	}
	return err
}

func classified[T any](v T, err error) (T, error) { return v, unreachable(err) }

type readingView struct {
	Device     string `json:"device"`
	Seq        uint64 `json:"seq"`
	TS         uint64 `json:"ts"`
	ReceivedAt string `json:"received_at"`
	Raw        string `json:"raw"`
	Leaf       string `json:"leaf"`
	BatchID    string `json:"batch_id"`
	LeafIndex  uint32 `json:"leaf_index"`
	AnchorID   string `json:"anchor_id,omitempty"`
}

func (b *Backend) reading(ctx context.Context, dev string, seq uint64) (any, error) {
	r, err := b.Store.Reading(ctx, dev, seq)
	if err != nil {
		return nil, lookupErr(err)
	}
	v := readingView{Device: r.Device, Seq: r.Seq, TS: r.TS, ReceivedAt: r.ReceivedAt.UTC().Format(time.RFC3339),
		Raw: hex.EncodeToString(r.Raw), Leaf: hex.EncodeToString(r.Leaf[:]), BatchID: hex.EncodeToString(r.BatchID[:]), LeafIndex: r.LeafIndex}
	if aid, _, err := b.Store.BatchAnchor(ctx, r.BatchID); err == nil {
		v.AnchorID = hex.EncodeToString(aid[:])
	} else if !errors.Is(err, lookup.ErrNotAnchored) {
		return nil, err
	}
	return v, nil
}

func (b *Backend) batch(ctx context.Context, id [16]byte) (any, error) {
	r, err := b.Store.Batch(ctx, id)
	if err != nil {
		return nil, lookupErr(err)
	}
	v := map[string]any{"id": hex.EncodeToString(id[:]), "root": hex.EncodeToString(r.Root[:]), "size": r.Size,
		"created_at": r.CreatedAt.UTC().Format(time.RFC3339), "worker": r.Worker}
	if aid, idx, err := b.Store.BatchAnchor(ctx, id); err == nil {
		v["anchor_id"], v["batch_index"] = hex.EncodeToString(aid[:]), idx
	} else if !errors.Is(err, lookup.ErrNotAnchored) {
		return nil, err
	}
	return v, nil
}

func (b *Backend) anchor(ctx context.Context, id [16]byte) (any, error) {
	a, err := b.Store.Anchor(ctx, id)
	if err != nil {
		return nil, lookupErr(err)
	}
	bs, err := b.Store.AnchorBatches(ctx, id)
	if err != nil {
		return nil, laterErr(err)
	}
	ids := make([]string, len(bs))
	for i, x := range bs {
		ids[i] = hex.EncodeToString(x.ID[:])
	}
	return anchorInfo(a, ids), nil
}

type anchorView struct {
	api.AnchorInfo
	TxHash  string   `json:"tx_hash"`
	Entry   string   `json:"entry"`
	BatchID []string `json:"batch_ids"`
}

func anchorInfo(a store.AnchorRow, batchIDs []string) anchorView {
	return anchorView{AnchorInfo: api.AnchorInfo{ID: hex.EncodeToString(a.ID[:]), Root: hex.EncodeToString(a.Root[:]),
		Height: a.Height, LogIndex: a.LogIndex, Batches: uint64(a.Batches), Readings: a.Readings, TimeMs: uint64(a.AnchoredAt.UnixMilli())},
		TxHash: a.TxHash, Entry: hex.EncodeToString(a.Entry), BatchID: batchIDs}
}

func (b *Backend) device(ctx context.Context, id string) (api.DeviceInfo, error) {
	p, err := b.Ledger.Device(ctx, id, 0)
	if err != nil {
		return api.DeviceInfo{}, lookupErr(err)
	}
	return api.DeviceInfo{ID: p.Record.Dev, Alg: string(p.Record.Alg), PublicKey: hex.EncodeToString(p.Record.Key),
		Status: string(p.Record.Status), Height: p.Record.Height}, nil
}

func (b *Backend) submit(ctx context.Context, e []byte) (api.Inclusion, error) {
	rc, err := b.Ledger.Submit(ctx, e)
	if err != nil {
		return api.Inclusion{}, lookupErr(err)
	}
	for _, after := range b.AfterDeviceEvent {
		if err := after(ctx); err != nil {
			return api.Inclusion{}, fmt.Errorf("committed at height %d, but refreshing device keys failed: %w", rc.Height, err)
		}
	}
	return api.Inclusion{Height: uint64(rc.Height), LogIndex: rc.LogIndex}, nil
}

// trust is the trust file of the ledger's current validator set: its chain id, the set, and
// the first height that set signed (the last change of the set, or the earliest height), so
// that every export while the set stays the same is the same file.
func (b *Backend) trust(ctx context.Context) ([]byte, error) {
	chainID, err := b.Ledger.ChainID(ctx)
	if err != nil {
		return nil, err
	}
	h, err := b.Ledger.Height(ctx)
	if err != nil {
		return nil, err
	}
	h = max(h, 1)
	changes, err := b.Ledger.ValidatorChanges(ctx, h)
	if err != nil {
		return nil, err
	}
	since := int64(1)
	if len(changes) > 0 {
		since = changes[len(changes)-1]
	}
	vals, err := b.Ledger.Validators(ctx, h)
	if err != nil {
		return nil, err
	}
	return proof.TrustFileAt(chainID, since, vals)
}

// Proof assembles the proof bundle of one reading (Proofs.Proof).
func (b *Backend) Proof(ctx context.Context, dev string, seq uint64) ([]byte, error) {
	return b.proofs().Proof(ctx, dev, seq)
}

// proofs returns b.Proofs, made on first use if the caller set none.
func (b *Backend) proofs() *Proofs {
	b.proofsOnce.Do(func() {
		if b.Proofs == nil {
			b.Proofs = NewProofs(b.Store, b.Ledger)
		}
	})
	return b.Proofs
}

func (b *Backend) status(ctx context.Context) (api.Status, error) {
	var st api.Status
	h, err := b.Ledger.Height(ctx)
	if err != nil {
		return st, fmt.Errorf("ledger: %w", err)
	}
	st.Ledger.Height = uint64(h)
	if st.Ledger.ChainID, err = b.Ledger.ChainID(ctx); err != nil {
		return st, fmt.Errorf("ledger: %w", err)
	}
	ls, err := b.Ledger.State(ctx, 0)
	if err != nil {
		return st, fmt.Errorf("ledger: %w", err)
	}
	st.Ledger.LogSize = ls.LogSize
	c, err := b.Store.Counts(ctx)
	if err != nil {
		return st, fmt.Errorf("clickhouse: %w", err)
	}
	st.Tables = &api.Tables{Readings: c.Readings, Rejected: c.Rejected, Batches: c.Batches, Anchors: c.Anchors,
		UnanchoredBatches: c.UnanchoredBatches, Duplicates: c.Duplicates, Anomalies: c.Anomalies}
	if b.Lag != nil {
		if l, err := b.Lag(ctx); err == nil {
			st.Lag = &l
		}
	}
	done, err := b.Store.ErasuresDone(ctx)
	if err != nil {
		return st, fmt.Errorf("clickhouse: %w", err)
	}
	p, err := erasure.ProgressOf(ctx, done, b.Ledger)
	if err != nil {
		return st, fmt.Errorf("ledger: %w", err)
	}
	st.Erasures = &api.Erasures{Done: p.Done, Pending: p.Pending, Readings: p.Readings}
	if c.LastAnchor != nil {
		v := anchorInfo(*c.LastAnchor, nil).AnchorInfo
		st.LastAnchor = &v
	}
	if b.IngestStats != nil {
		st.Ingest = b.IngestStats()
	}
	if b.AnchoringStats != nil {
		st.Anchoring = b.AnchoringStats()
	}
	if b.RulesStats != nil {
		st.Rules = b.RulesStats()
	}
	if b.AuthStats != nil {
		st.Auth = b.AuthStats()
	}
	st.Ready = "ok"
	if err := b.ready(ctx); err != nil {
		st.Ready = err.Error()
	}
	return st, nil
}

// stalledLedger is how old the ledger's latest block may be before /readyz says it stalled: an
// idle chain still makes a block a second.
const stalledLedger = 10 * time.Second

// errLedgerStalled: the ledger answers but makes no blocks.
var errLedgerStalled = errors.New("the ledger makes no blocks")

// Check is a named readiness check of a service running in this process.
type Check struct {
	Name  string // the service, as /readyz names it (ingest, anchoring)
	Check func(context.Context) error
}

// ready checks ClickHouse, the ledger and b.Checks, and returns every failure as an
// api.UnavailableError naming what failed.
func (b *Backend) ready(ctx context.Context) error {
	var errs []error
	if err := b.Store.Ping(ctx); err != nil {
		errs = append(errs, &api.UnavailableError{Service: "clickhouse", Err: err})
	}
	if h, at, err := b.Ledger.Head(ctx); err != nil {
		errs = append(errs, &api.UnavailableError{Service: "ledger", Err: err})
	} else if age := time.Since(at); h > 0 && age > stalledLedger {
		errs = append(errs, &api.UnavailableError{Service: "ledger", Err: fmt.Errorf("%w: no block since height %d, %s ago (are too few validators up?)", errLedgerStalled, h, age.Round(time.Second))})
	}
	for _, c := range b.Checks {
		if err := c.Check(ctx); err != nil {
			errs = append(errs, &api.UnavailableError{Service: c.Name, Err: err})
		}
	}
	return errors.Join(errs...)
}

// JetStreamLag returns a Backend.Lag over a JetStream connection.
func JetStreamLag(js jetstream.JetStream) func(context.Context) (api.Lag, error) {
	return func(ctx context.Context) (api.Lag, error) {
		l, err := ConsumerLag(ctx, js)
		return api.Lag{Pending: l.Pending, AckPending: l.AckPending}, err
	}
}

// APIURL is the base URL of the HTTP API for clients: http.addr if it is a URL; else
// https://http.addr if a CA is configured (tls.ca, or dev's), http:// otherwise.
func APIURL(c config.Config) string {
	if strings.HasPrefix(c.HTTP.Addr, "http://") || strings.HasPrefix(c.HTTP.Addr, "https://") {
		return strings.TrimSuffix(c.HTTP.Addr, "/")
	}
	if c.CAFile() != "" {
		return "https://" + c.HTTP.Addr
	}
	return "http://" + c.HTTP.Addr
}

// APIClient is a client of the HTTP API at APIURL, trusting tls.ca's CA and sending the token
// in http.token's file, if set.
func APIClient(c config.Config) (*api.Client, error) {
	cl := api.NewClient(APIURL(c))
	tc, err := ClientTLS(c)
	if err != nil {
		return nil, err
	}
	if tc != nil {
		cl.HTTP.Transport = &http.Transport{TLSClientConfig: tc, Proxy: http.ProxyFromEnvironment}
	}
	if c.HTTP.Token != "" {
		b, err := os.ReadFile(c.HTTP.Token)
		if err != nil {
			return nil, fmt.Errorf("http.token %s: %w", c.HTTP.Token, err)
		}
		if cl.Token = strings.TrimSpace(string(b)); cl.Token == "" {
			return nil, fmt.Errorf("http.token %s: the file is empty", c.HTTP.Token)
		}
	}
	return cl, nil
}
