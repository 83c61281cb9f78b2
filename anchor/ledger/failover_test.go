package ledger_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cometbft/cometbft/types"

	"github.com/anchorline/anchorline/anchor/ledger"
	"github.com/anchorline/anchorline/anchor/node"
	"github.com/anchorline/anchorline/schemas/entry"
	"github.com/anchorline/anchorline/schemas/reading"
)

// switchLog keeps the Failover's log records (message and attributes).
type switchLog struct {
	mu   sync.Mutex
	recs []string
}

func (h *switchLog) Enabled(context.Context, slog.Level) bool { return true }
func (h *switchLog) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool { fmt.Fprintf(&b, " %s=%v", a.Key, a.Value); return true })
	h.mu.Lock()
	defer h.mu.Unlock()
	h.recs = append(h.recs, b.String())
	return nil
}
func (h *switchLog) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *switchLog) WithGroup(string) slog.Handler      { return h }

// has reports whether a record contains every one of parts.
func (h *switchLog) has(parts ...string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.ContainsFunc(h.recs, func(r string) bool {
		for _, p := range parts {
			if !strings.Contains(r, p) {
				return false
			}
		}
		return true
	})
}

func (h *switchLog) String() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return strings.Join(h.recs, "\n")
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// ledgerNode starts a single-validator node on home that serves its RPC on ln.
func ledgerNode(t *testing.T, home string, admin ed25519.PublicKey, ln net.Listener) *node.Node {
	t.Helper()
	n, err := node.Start(t.Context(), node.Config{Home: home, ChainID: "failover-test", RPC: ln, TimeoutCommit: 50 * time.Millisecond,
		Admins: []ed25519.PublicKey{admin}, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// deadAddr is an address nothing listens on: connections to it are refused.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln := listen(t)
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// registration is an admin-signed registration of a new device.
func registration(t *testing.T, admin ed25519.PrivateKey, dev string) []byte {
	t.Helper()
	k, err := reading.GenerateKey(reading.ES256)
	if err != nil {
		t.Fatal(err)
	}
	e, err := entry.NewRegister(admin, dev, k.Public(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func failover(t *testing.T, addrs []string, log *slog.Logger) (*ledger.Failover, *ledger.Client) {
	t.Helper()
	f, err := ledger.NewFailover(addrs, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	f.CallTimeout = 5 * time.Second
	c := ledger.NewClient(f, log)
	c.Retry.Max = 500 * time.Millisecond
	return f, c
}

// A client whose first address is dead uses the next one, for queries and Submit, and says
// so in its log; the node's own refusals and not-founds are answers, not failures.
func TestFailoverDeadFirstAddress(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	adminPub, admin, _ := ed25519.GenerateKey(rand.Reader)
	n := ledgerNode(t, t.TempDir(), adminPub, listen(t))
	defer n.Stop()
	dead, live := deadAddr(t), n.RPCAddr()
	logs := &switchLog{}
	f, c := failover(t, []string{dead, live}, slog.New(logs))

	rc, err := c.Submit(ctx, registration(t, admin, "dev-1"))
	if err != nil {
		t.Fatal(err)
	}
	if f.Current() != live {
		t.Fatalf("in use: %s, want %s", f.Current(), live)
	}
	if !logs.has("switched node", "from="+dead, "to="+live, "connection refused") || !logs.has("node not answering", "addr="+dead) {
		t.Fatalf("switch not logged:\n%s", logs)
	}
	if dp, err := c.Device(ctx, "dev-1", rc.Height); err != nil || dp.Record.Dev != "dev-1" {
		t.Fatalf("device: %+v %v", dp, err)
	}
	if chain, err := c.ChainID(ctx); err != nil || chain != "failover-test" {
		t.Fatalf("chain id: %q %v", chain, err)
	}
	st, err := c.State(ctx, rc.Height)
	if err != nil {
		t.Fatal(err)
	}
	lb, err := c.LightBlock(ctx, rc.Height+1) // commit and validators
	if err != nil {
		t.Fatal(err)
	}
	if string(lb.Header.AppHash) != string(st.AppHash[:]) {
		t.Fatalf("app hash: header %x, state %x", lb.Header.AppHash, st.AppHash)
	}

	// Answers of the node, not failures: none of these may switch or report ErrNoNode.
	if _, err := c.Device(ctx, "nobody", 0); !errors.Is(err, ledger.ErrUnknownDevice) {
		t.Fatalf("unknown device: %v", err)
	}
	if _, err := c.Submit(ctx, []byte("junk")); !errors.Is(err, ledger.ErrRejected) {
		t.Fatalf("junk: %v", err)
	}
	future := rc.Height + 1_000_000
	if _, err := f.Commit(ctx, &future); err == nil || errors.Is(err, ledger.ErrNoNode) {
		t.Fatalf("commit at a future height: %v", err)
	}
	tx := registration(t, admin, "dev-2")
	if _, err := f.BroadcastTxSync(ctx, tx); err != nil {
		t.Fatal(err)
	}
	if _, err := f.BroadcastTxSync(ctx, tx); err == nil || errors.Is(err, ledger.ErrNoNode) || !strings.Contains(err.Error(), "already exists in cache") {
		t.Fatalf("second broadcast: %v", err)
	}
	if _, err := c.Submit(ctx, tx); err != nil { // in the mempool or committed: Submit waits for it
		t.Fatal(err)
	}
	if f.Current() != live || logs.has("addr="+live) || logs.has("from="+live) {
		t.Fatalf("an answer of the node counted as a failure:\n%s", logs)
	}

	// A proxy in front of a node that is gone answers 502: that node is down too.
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: dead})
	rp.ErrorLog = log.New(io.Discard, "", 0)
	proxy := httptest.NewServer(rp)
	defer proxy.Close()
	gw := proxy.Listener.Addr().String()
	logs = &switchLog{}
	f, c = failover(t, []string{gw, live}, slog.New(logs))
	if h, err := c.Height(ctx); err != nil || h < rc.Height {
		t.Fatalf("height through a failover behind a 502: %d %v", h, err)
	}
	if f.Current() != live || !logs.has("switched node", "from="+gw, "502 Bad Gateway") {
		t.Fatalf("in use %s; log:\n%s", f.Current(), logs)
	}
}

// A node that stops while in use: calls fail naming every address and how each failed (one
// refuses, one accepts connections but never answers); a Submit made meanwhile waits, and
// commits once the node is back behind the other address. Concurrent callers share the
// Failover throughout.
func TestFailoverNodeStopsAndComesBack(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	adminPub, admin, _ := ed25519.GenerateKey(rand.Reader)
	home := t.TempDir()
	first, second := listen(t), listen(t) // second: held but not served until the restart
	addr1, addr2 := first.Addr().String(), second.Addr().String()
	n := ledgerNode(t, home, adminPub, first)
	stopped := false
	defer func() {
		if !stopped {
			n.Stop()
		}
	}()
	logs := &switchLog{}
	f, c := failover(t, []string{addr1, addr2}, slog.New(logs))
	f.CallTimeout = 2 * time.Second // the held listener never answers

	if _, err := c.Submit(ctx, registration(t, admin, "before")); err != nil {
		t.Fatal(err)
	}
	if f.Current() != addr1 {
		t.Fatalf("in use: %s, want %s", f.Current(), addr1)
	}
	if err := n.Stop(); err != nil {
		t.Fatal(err)
	}
	stopped = true

	_, err := c.Height(ctx)
	ne, ok := errors.AsType[*ledger.NodesError](err)
	if !ok || !errors.Is(err, ledger.ErrNoNode) {
		t.Fatalf("with the node stopped: %v", err)
	}
	if !slices.Contains(ne.Addrs, addr1) || !slices.Contains(ne.Addrs, addr2) || !strings.Contains(err.Error(), addr1) || !strings.Contains(err.Error(), addr2) {
		t.Fatalf("error does not name both addresses: %v", err)
	}
	if !errors.Is(ne.Errs[slices.Index(ne.Addrs, addr1)], syscall.ECONNREFUSED) || !strings.Contains(ne.Errs[slices.Index(ne.Addrs, addr2)].Error(), "no answer within") {
		t.Fatalf("failures: %v", err)
	}

	// Submit while no node answers; readers poll meanwhile.
	type result struct {
		rc  ledger.Receipt
		err error
	}
	submitted := make(chan result, 1)
	go func() {
		rc, err := c.Submit(ctx, registration(t, admin, "during"))
		submitted <- result{rc, err}
	}()
	var readers sync.WaitGroup
	heights := make(chan int64, 4)
	for range 4 {
		readers.Go(func() {
			for ctx.Err() == nil {
				if h, err := c.Height(ctx); err == nil {
					heights <- h
					return
				}
			}
		})
	}
	// Wait until the Submit has failed at least once, so that it really spans the outage.
	waitFor(ctx, t, func() bool { return logs.has("submit failed, retrying") })

	n = ledgerNode(t, home, adminPub, second)
	stopped = false
	r := <-submitted
	if r.err != nil {
		t.Fatal(r.err)
	}
	readers.Wait()
	close(heights)
	for h := range heights {
		if h < 1 {
			t.Fatalf("height %d", h)
		}
	}
	if dp, err := c.Device(ctx, "during", r.rc.Height); err != nil || dp.Record.Dev != "during" {
		t.Fatalf("device registered during the outage: %+v %v", dp, err)
	}
	if _, err := c.Device(ctx, "before", 0); err != nil {
		t.Fatal(err)
	}
	if f.Current() != addr2 || !logs.has("switched node", "from="+addr1, "to="+addr2) {
		t.Fatalf("in use %s; log:\n%s", f.Current(), logs)
	}
}

// Four validators, the client over all their RPC addresses: when the validator in use stops,
// Submit commits through another and reads follow it.
func TestFailoverFourValidators(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	adminPub, admin, _ := ed25519.GenerateKey(rand.Reader)
	tn, err := node.StartTestnet(ctx, node.Network{Dir: filepath.Join(t.TempDir(), "net"), ChainID: "failover-4", Validators: 4,
		Admins: []ed25519.PublicKey{adminPub}}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer tn.Close()
	addrs := tn.RPCAddrs()
	logs := &switchLog{}
	f, c := failover(t, addrs, slog.New(logs))

	if _, err := c.Submit(ctx, registration(t, admin, "four")); err != nil {
		t.Fatal(err)
	}
	used := slices.Index(addrs, f.Current())
	if err := tn.Stop(used); err != nil {
		t.Fatal(err)
	}

	rc, err := c.Submit(ctx, registration(t, admin, "three"))
	if err != nil {
		t.Fatal(err)
	}
	if f.Current() == addrs[used] || !logs.has("switched node", "from="+addrs[used]) {
		t.Fatalf("in use %s after %s stopped; log:\n%s", f.Current(), addrs[used], logs)
	}
	if dp, err := c.Device(ctx, "three", rc.Height); err != nil || dp.Record.Dev != "three" {
		t.Fatalf("device: %+v %v", dp, err)
	}
	if _, err := c.Device(ctx, "four", 0); err != nil {
		t.Fatal(err)
	}
	lb, err := c.LightBlock(ctx, rc.Height+1)
	if err != nil {
		t.Fatal(err)
	}
	signed := 0
	for _, s := range lb.Commit.Signatures {
		if s.BlockIDFlag == types.BlockIDFlagCommit {
			signed++
		}
	}
	if signed != 3 {
		t.Fatalf("%d of 4 validators signed block %d with one stopped", signed, lb.Height)
	}
}

// waitFor polls cond until it holds; it fails the test when ctx ends first.
func waitFor(ctx context.Context, t *testing.T, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("condition not met: %v", context.Cause(ctx))
		case <-time.After(20 * time.Millisecond):
		}
	}
}
