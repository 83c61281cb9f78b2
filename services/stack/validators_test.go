package stack

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	cmtjson "github.com/cometbft/cometbft/libs/json"
	"github.com/cometbft/cometbft/types"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/anchorline/anchorline/anchor/anchoring"
	"github.com/anchorline/anchorline/anchor/ledger"
	"github.com/anchorline/anchorline/anchor/node"
	"github.com/anchorline/anchorline/anchor/proof"
	"github.com/anchorline/anchorline/internal/await"
	"github.com/anchorline/anchorline/internal/chserver"
	"github.com/anchorline/anchorline/schemas/bundle"
	"github.com/anchorline/anchorline/schemas/reading"
	"github.com/anchorline/anchorline/schemas/stream"
	"github.com/anchorline/anchorline/services/config"
)

// TestFourValidators runs ingest, anchoring and the API against a real network of four
// in-process validators (homes from node.InitNetwork, whose genesis authorises the anchoring
// key the anchor service signs with), through a ledger client over all four RPC addresses:
//
//  1. devices registered through the API, readings published: every batch is anchored;
//  2. node0, the client's first address, stopped: the client moves on to the others, anchors
//     still commit, and the bundle of a reading anchored then verifies against the network's
//     trust file, its light block's commit signed by the three that run;
//  3. node1 stopped too: nothing commits, readings are still stored, the batches wait for an
//     anchor and the anchoring service says why (its stats or /readyz); once both are back
//     every batch is anchored exactly once, and a reading stored during the stall has a
//     bundle that verifies.
func TestFourValidators(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	logs := newLogCounts(notInABlock)
	log := slog.New(countingHandler{testLogger(t).Handler(), logs})
	dir := t.TempDir()

	// What `anchorline ledger init` does: an admin key and an anchoring key, both in the
	// genesis of the homes it writes.
	adminFile, anchorFile := filepath.Join(dir, "admin0.key"), filepath.Join(dir, "anchor.key")
	admin, err := LoadOrCreateAdminKey(adminFile)
	if err != nil {
		t.Fatal(err)
	}
	anchorKey, err := LoadOrCreateAnchorKey(anchorFile)
	if err != nil {
		t.Fatal(err)
	}
	const chainID = "four-validators"
	tn, err := node.StartTestnet(ctx, node.Network{Dir: filepath.Join(dir, "net"), ChainID: chainID, Validators: 4,
		Admins: []ed25519.PublicKey{reading.Ed25519Public(admin)}, AnchorKeys: []ed25519.PublicKey{reading.Ed25519Public(anchorKey)}}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := tn.Close(); err != nil {
			t.Error(err)
		}
	}()
	addrs := tn.RPCAddrs()
	f, err := ledger.NewFailover(addrs, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	lc := ledger.NewClient(f, log)

	ns, err := StartNATS("nats://127.0.0.1:0", filepath.Join(dir, "nats"), NATSServer{}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
	chAddr, database, ch := chserver.NewDatabase(t)
	cfg := config.Default()
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.ClickHouse.Addr, cfg.ClickHouse.Database = chAddr, database
	cfg.NATS.URL = ns.ClientURL()
	cfg.HTTP.Addr = "127.0.0.1:0"
	cfg.Ledger.ChainID, cfg.Ledger.RPC, cfg.Ledger.AdminKey = chainID, strings.Join(addrs, ","), adminFile
	cfg.Anchor.Key, cfg.Anchor.Interval = anchorFile, 500*time.Millisecond
	cfg.Ingest.BatchSize, cfg.Ingest.FlushAge = 100, 100*time.Millisecond
	s, err := StartServices(ctx, cfg, log, Roles{Ingest: true, Anchoring: true},
		Env{NATSURL: cfg.NATS.URL, Ledger: lc, Name: "four-validators"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := s.Stop(); err != nil {
			t.Error(err)
		}
	}()
	client := clientAt(t, cfg, s.HTTPAddr)
	nc, js, err := ConnectNATS(ctx, cfg.NATS.URL, "four-validators-test", log)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()

	// The trust file the API exports is the network's: its chain id and the four validators.
	trust, err := client.Trust(ctx)
	if err != nil {
		t.Fatal(err)
	}
	id, vals, err := node.Trust(ctx, tn.Node(3).Client())
	if err != nil {
		t.Fatal(err)
	}
	if want, err := proof.TrustFileAt(id, 1, vals); err != nil || !bytes.Equal(trust, want) || vals.Size() != 4 {
		t.Fatalf("/v1/trust is not the network's trust file (%v):\n%s\nwant (%d validators)\n%s", err, trust, vals.Size(), want)
	}
	node0 := validatorAddress(t, tn.Validators[0].Home, "node0")

	// (1) All four up.
	var devs []*testDevice
	for i := range 4 {
		alg := reading.Ed25519
		if i%2 == 1 {
			alg = reading.ES256
		}
		dv := newDevice(t, fmt.Sprintf("four-%d", i), alg)
		register(t, ctx, client, admin, dv.ID, dv.Key.Public())
		devs = append(devs, dv)
	}
	l := &load{devs: devs}
	total := 0
	publish := func(n int) {
		t.Helper()
		if err := l.run(t, ctx, cfg.NATS.URL, n, 1000); err != nil {
			t.Fatal(err)
		}
		total += n
	}
	publish(400)
	awaitAllAnchored(t, ctx, ch, database, uint64(total))
	if cur := f.Current(); cur != addrs[0] {
		t.Fatalf("with every validator up the client uses %s, not its first address %s", cur, addrs[0])
	}

	// (2) and the failover: node0, the client's first address, stops. An admin's entry and
	// anchors commit through the others.
	if err := tn.Stop(0); err != nil {
		t.Fatal(err)
	}
	late := newDevice(t, "four-late", reading.Ed25519)
	register(t, ctx, client, admin, late.ID, late.Key.Public())
	l.devs = append(l.devs, late)
	publish(400)
	dv := devs[0] // its last reading was published after node0 stopped
	var bundleJSON []byte
	await.Until(t, ctx, "the proof of a reading published with node0 down", func() (bool, string) {
		b, err := client.Proof(ctx, dv.ID, dv.Seq)
		bundleJSON = b
		return err == nil, fmt.Sprint(err)
	})
	if rep, err := proof.Verify(bundleJSON, trust); err != nil {
		var b strings.Builder
		rep.Print(&b)
		t.Fatalf("bundle made with node0 down: %v\n%s", err, b.String())
	}
	lb := bundleLightBlock(t, bundleJSON)
	signed := 0
	for _, sig := range lb.Commit.Signatures {
		if sig.BlockIDFlag == types.BlockIDFlagCommit {
			signed++
		}
	}
	i0, _ := lb.ValidatorSet.GetByAddress(node0)
	if i0 < 0 || signed != 3 || lb.Commit.Signatures[i0].BlockIDFlag != types.BlockIDFlagAbsent {
		t.Fatalf("the bundle's commit at %d has %d signatures, node0 (index %d) %v: want 3, node0 absent", lb.Height, signed, i0, lb.Commit.Signatures[max(i0, 0)].BlockIDFlag)
	}
	if cur := f.Current(); cur == addrs[0] {
		t.Fatalf("the client still uses %s, which stopped", cur)
	}
	awaitAllAnchored(t, ctx, ch, database, uint64(total))
	if code, body := readyz(t, ctx, client); code != http.StatusOK {
		t.Fatalf("/readyz with one of four validators down: %d %s", code, body)
	}
	// The metrics say so: three of the four validators sign the latest blocks.
	await.Until(t, ctx, "the metrics count three signers of four validators", func() (bool, string) {
		_, m := get(t, ctx, client, "/metrics")
		v := regexp.MustCompile(`(?m)^anchorline_ledger_validators\{[^}]*\} (\d+)$`).FindStringSubmatch(m)
		sg := regexp.MustCompile(`(?m)^anchorline_ledger_signers\{[^}]*\} (\d+)$`).FindStringSubmatch(m)
		return len(v) == 2 && len(sg) == 2 && v[1] == "4" && sg[1] == "3", fmt.Sprintf("validators %v, signers %v", v, sg)
	})

	// (3) node1 stops too: two of four, too little power to commit anything.
	if err := tn.Stop(1); err != nil {
		t.Fatal(err)
	}
	live := []*node.Node{tn.Node(2), tn.Node(3)}
	stalledAt := int64(0)
	for _, n := range live {
		h, err := n.Client().Height(ctx)
		if err != nil {
			t.Fatal(err)
		}
		stalledAt = max(stalledAt, h)
	}
	anchorsAtStop := count(t, ctx, ch, "SELECT count() FROM "+database+".anchors FINAL")
	resubmitsAtStop := logs.count(notInABlock)
	storedAtStop := count(t, ctx, ch, "SELECT count() FROM "+database+".readings_unique")
	publish(400)
	stalledID, stalledSeq := late.ID, late.Seq // published with two validators down
	await.Until(t, ctx, "readings published with two validators down stored", func() (bool, string) {
		c := count(t, ctx, ch, "SELECT count() FROM "+database+".readings_unique")
		return c == uint64(total), fmt.Sprintf("%d of %d", c, total)
	})
	// Their batches wait: not one of them can be anchored, since the anchor that covers one is
	// made after node1 stopped, and the two that run do not commit alone.
	await.Until(t, ctx, "the new batches wait for an anchor", func() (bool, string) {
		sized := count(t, ctx, ch, "SELECT toUInt64(sum(size)) FROM "+database+".batches FINAL")
		w := batchRecordsWaiting(t, ctx, js)
		return sized == uint64(total) && w >= 4, fmt.Sprintf("%d of %d readings in batches, %d batch records waiting", sized, total, w)
	})
	if u := unanchored(t, ctx, ch, database); u < 4 {
		t.Fatalf("%d batches unanchored with two validators down, want at least the 4 of the %d readings stored since", u, uint64(total)-storedAtStop)
	}
	// The ledger client has waited ResubmitAfter for the anchor it broadcast and broadcasts it
	// again: the anchoring service has been waiting for a block as long.
	await.Until(t, ctx, "the anchor entry not committed, broadcast again", func() (bool, string) {
		n := logs.count(notInABlock)
		return n > resubmitsAtStop, fmt.Sprintf("%d resubmits logged, %d before node1 stopped", n, resubmitsAtStop)
	})
	// At most the block that was being decided as node1 stopped (with its vote) committed.
	for i, n := range live {
		if h, err := n.Client().Height(ctx); err != nil || h > stalledAt+1 {
			t.Fatalf("node%d at height %d (%v) with two validators down, stalled at %d", i+2, h, err, stalledAt)
		}
	}
	if a := count(t, ctx, ch, "SELECT count() FROM "+database+".anchors FINAL"); a > anchorsAtStop+1 {
		t.Fatalf("%d anchors recorded with two validators down", a-anchorsAtStop)
	}
	// The anchoring service says why it waits, in its stats or through /readyz, by the time the
	// ledger client has broadcast the anchor a second time.
	var st anchoring.Stats
	var code int
	var body string
	await.Until(t, ctx, "the anchoring stats or /readyz saying why, or a second resubmit", func() (bool, string) {
		st = s.Anchoring.Stats()
		code, body = readyz(t, ctx, client)
		says := st.LastError != "" || code != http.StatusOK
		return says || logs.count(notInABlock) > resubmitsAtStop+1, fmt.Sprintf("%d resubmits logged", logs.count(notInABlock)-resubmitsAtStop)
	})
	t.Logf("with two validators down: anchoring %+v (%d batch records waiting); /readyz %d %s", st, batchRecordsWaiting(t, ctx, js), code, body)
	if st.LastError == "" && code == http.StatusOK {
		t.Errorf("nothing commits, but neither the anchoring stats nor /readyz say why: %+v, /readyz %d %s", st, code, body)
	}

	// Both return: everything waiting is anchored, each batch once.
	for _, i := range []int{1, 0} {
		if err := tn.Start(ctx, i); err != nil {
			t.Fatal(err)
		}
	}
	publish(200)
	awaitAllAnchored(t, ctx, ch, database, uint64(total))
	await.Until(t, ctx, "ready again", func() (bool, string) {
		code, body := readyz(t, ctx, client)
		return code == http.StatusOK, fmt.Sprintf("%d %s", code, body)
	})
	if r := count(t, ctx, ch, "SELECT count() FROM "+database+".rejected"); r != 0 {
		t.Errorf("%d readings rejected", r)
	}
	anchoredOnce(t, ctx, ch, database, lc, uint64(total))
	b, err := client.Proof(ctx, stalledID, stalledSeq)
	if err != nil {
		t.Fatal(err)
	}
	if rep, err := proof.Verify(b, trust); err != nil {
		var w strings.Builder
		rep.Print(&w)
		t.Fatalf("bundle of a reading stored with two validators down: %v\n%s", err, w.String())
	}
	t.Logf("anchoring: %+v; the client uses %s", s.Anchoring.Stats(), f.Current())
}

// validatorAddress is the consensus address of the genesis validator named name.
func validatorAddress(t *testing.T, home, name string) types.Address {
	t.Helper()
	doc, err := types.GenesisDocFromFile(filepath.Join(home, "config", "genesis.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range doc.Validators {
		if v.Name == name {
			return v.Address
		}
	}
	t.Fatalf("no validator %s in the genesis", name)
	return nil
}

// bundleLightBlock is the light block a proof bundle carries.
func bundleLightBlock(t *testing.T, bundleJSON []byte) *types.LightBlock {
	t.Helper()
	b, err := bundle.Parse(bundleJSON)
	if err != nil {
		t.Fatal(err)
	}
	var lb types.LightBlock
	if err := cmtjson.Unmarshal(b.Ledger.LightBlock, &lb); err != nil {
		t.Fatal(err)
	}
	if lb.SignedHeader == nil || lb.Commit == nil || lb.ValidatorSet == nil {
		t.Fatal("the bundle's light block lacks its commit or validator set")
	}
	return &lb
}

// batchRecordsWaiting counts the batch records the anchor service has not acknowledged: those
// it holds and those not delivered yet.
func batchRecordsWaiting(t *testing.T, ctx context.Context, js jetstream.JetStream) uint64 {
	t.Helper()
	c, err := js.Consumer(ctx, stream.Batches, stream.AnchorConsumer)
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.NumPending + uint64(info.NumAckPending)
}

// notInABlock is the ledger client's log of an entry it broadcast that no block included
// within ResubmitAfter (it broadcasts it again).
const notInABlock = "not in a block"

// logCounts counts the log records whose text (message and attributes) contains one of
// the texts it was made with.
type logCounts struct {
	mu sync.Mutex
	n  map[string]int // by text looked for
}

func newLogCounts(texts ...string) *logCounts {
	c := &logCounts{n: map[string]int{}}
	for _, t := range texts {
		c.n[t] = 0
	}
	return c
}

func (c *logCounts) add(record string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for t := range c.n {
		if strings.Contains(record, t) {
			c.n[t]++
		}
	}
}

func (c *logCounts) count(text string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[text]
}

// countingHandler passes records on to a handler and keeps the text of those at warning level
// and above in a logCounts.
type countingHandler struct {
	slog.Handler
	c *logCounts
}

func (h countingHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		var b strings.Builder
		b.WriteString(r.Message)
		r.Attrs(func(a slog.Attr) bool {
			fmt.Fprintf(&b, " %s=%s", a.Key, a.Value)
			return true
		})
		h.c.add(b.String())
	}
	return h.Handler.Handle(ctx, r)
}

func (h countingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return countingHandler{h.Handler.WithAttrs(as), h.c}
}

func (h countingHandler) WithGroup(name string) slog.Handler {
	return countingHandler{h.Handler.WithGroup(name), h.c}
}
