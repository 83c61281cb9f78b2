package ledger

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	abci "github.com/cometbft/cometbft/abci/types"

	"github.com/anchorline/anchorline/anchor/merkle"
	"github.com/anchorline/anchorline/schemas/entry"
	"github.com/anchorline/anchorline/schemas/reading"
)

var (
	benchDevices = flag.Int("ledger.devices", 20000, "devices BenchmarkRegistry registers")
	benchBlock   = flag.Int("ledger.block", 1000, "register entries per block in BenchmarkRegistry")
	benchVersion = flag.Uint64("ledger.version", merkle.AppHashV2, "app hash version of BenchmarkRegistry's chain")
	benchKeep    = flag.String("ledger.keep", "", "BenchmarkRegistry: keep the ledger's database in this new directory; BenchmarkOpen: open it")
)

// benchApp drives an App as CometBFT does, without a node.
type benchApp struct {
	b      *testing.B
	dir    string
	app    *App
	height int64
}

func (a *benchApp) block(txs [][]byte) {
	a.height++
	r, err := a.app.FinalizeBlock(a.b.Context(), &abci.RequestFinalizeBlock{Height: a.height, Txs: txs})
	if err != nil {
		a.b.Fatal(err)
	}
	for i, res := range r.TxResults {
		if res.Code != CodeOK {
			a.b.Fatalf("block %d tx %d: %d %s", a.height, i, res.Code, res.Log)
		}
	}
	if _, err := a.app.Commit(a.b.Context(), &abci.RequestCommit{}); err != nil {
		a.b.Fatal(err)
	}
}

// BenchmarkRegistry registers -ledger.devices devices in blocks of -ledger.block register
// entries through FinalizeBlock and Commit (signature checks and the database included, entry
// signing not), on a chain of app hash version -ledger.version, then times registry proofs at
// old heights and a restart. "sequential" ids sort in registration order (each block appends
// to the v1 sorted tree); "random" ids land anywhere (each block rehashes the v1 tree from its
// first new id on; the v2 sparse Merkle tree does not care).
//
//	go test -run '^$' -bench BenchmarkRegistry -benchtime 1x ./anchor/ledger/ -ledger.devices 100000
//
// With -ledger.keep DIR (one sub-benchmark: -bench 'BenchmarkRegistry/random') the database
// stays in DIR for BenchmarkOpen, which measures a restart in a process of its own.
func BenchmarkRegistry(b *testing.B) {
	for _, order := range []string{"sequential", "random"} {
		b.Run(order, func(b *testing.B) {
			id := func(i int) string { return benchID(order, i) }
			for range b.N {
				benchRegistry(b, id)
			}
		})
	}
}

// benchID is the id of device i of BenchmarkRegistry in the given order.
func benchID(order string, i int) string {
	if order == "sequential" {
		return fmt.Sprintf("dev-%09d", i)
	}
	h := sha256.Sum256(fmt.Appendf(nil, "%d", i))
	return "dev-" + hex.EncodeToString(h[:8])
}

func benchRegistry(b *testing.B, id func(int) string) {
	dir := *benchKeep
	if dir == "" {
		dir = b.TempDir()
	} else if err := os.Mkdir(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	a := &benchApp{b: b, dir: dir}
	var err error
	if a.app, err = OpenApp(a.dir, quietLog()); err != nil {
		b.Fatal(err)
	}
	defer func() { a.app.Close() }()
	g := NewGenesis([]ed25519.PublicKey{pub(key(1))}, nil, 0)
	g.AppHashVersion = *benchVersion
	gb, _ := json.Marshal(g)
	if _, err := a.app.InitChain(b.Context(), &abci.RequestInitChain{ChainId: "bench", AppStateBytes: gb, Validators: []abci.ValidatorUpdate{abci.Ed25519ValidatorUpdate(pub(key(9)), 10)}, InitialHeight: 1}); err != nil {
		b.Fatal(err)
	}
	devKey := reading.PublicKey{Alg: reading.Ed25519, Key: pub(key(7))}
	n, size := *benchDevices, *benchBlock
	txs := make([][]byte, 0, size)
	var reg time.Duration
	for i := 0; i < n; i += size {
		txs = txs[:0]
		for j := i; j < min(i+size, n); j++ {
			e, err := entry.NewRegister(key(1), id(j), devKey, t0)
			if err != nil {
				b.Fatal(err)
			}
			txs = append(txs, e)
		}
		start := time.Now()
		a.block(txs)
		reg += time.Since(start)
	}
	b.ReportMetric(float64(n)/reg.Seconds(), "devices/s")

	// Proofs of random devices at random old heights (each at or after the device's block),
	// from the first half of the chain, and at the latest height.
	rnd := rand.New(rand.NewPCG(1, 2))
	prove := func(name string, old bool) {
		const proofs = 1000
		var took time.Duration
		for range proofs {
			i := rnd.IntN(n)
			h := uint64(0)
			if old {
				first := uint64(i/size) + 1
				h = first + rnd.Uint64N(max(uint64(a.height)/2, first)-first+1)
			}
			req, _ := json.Marshal(DeviceRequest{ID: id(i), Height: h})
			start := time.Now()
			r, err := a.app.Query(b.Context(), &abci.RequestQuery{Path: PathDevice, Data: req})
			took += time.Since(start)
			if err != nil || r.Code != CodeOK {
				b.Fatalf("proof of %s at %d: %v %s", id(i), h, err, r.GetLog())
			}
		}
		b.ReportMetric(float64(took.Microseconds())/1000/proofs, name)
	}
	prove("proof-old-ms", true)
	prove("proof-latest-ms", false)

	if err := a.app.Close(); err != nil {
		b.Fatal(err)
	}
	runtime.GC()
	start := time.Now()
	if a.app, err = OpenApp(a.dir, quietLog()); err != nil {
		b.Fatal(err)
	}
	if _, err := a.app.Info(b.Context(), &abci.RequestInfo{}); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(time.Since(start).Milliseconds()), "restart-ms")
}

// BenchmarkOpen opens the ledger database BenchmarkRegistry kept in -ledger.keep, as a
// restarting validator does (OpenApp, then Info, which computes the app hash), answers one
// registry proof, and reports the time and this process's peak resident memory (VmHWM).
//
//	go test -c -o /tmp/ledger.test ./anchor/ledger/
//	/tmp/ledger.test -test.run '^$' -test.bench 'BenchmarkRegistry/random' -test.benchtime 1x -ledger.devices 1000000 -ledger.keep /tmp/ledger-1m
//	/tmp/ledger.test -test.run '^$' -test.bench BenchmarkOpen -test.benchtime 1x -ledger.keep /tmp/ledger-1m
func BenchmarkOpen(b *testing.B) {
	if *benchKeep == "" {
		b.Fatal("BenchmarkOpen needs -ledger.keep DIR, a database BenchmarkRegistry kept")
	}
	for range b.N {
		start := time.Now()
		app, err := OpenApp(*benchKeep, quietLog())
		if err != nil {
			b.Fatal(err)
		}
		info, err := app.Info(b.Context(), &abci.RequestInfo{})
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(time.Since(start).Milliseconds()), "restart-ms")
		req, _ := json.Marshal(DeviceRequest{ID: benchID("random", 0)})
		if r, err := app.Query(b.Context(), &abci.RequestQuery{Path: PathDevice, Data: req}); err != nil || r.Code != CodeOK {
			b.Fatalf("proof of %s: %v %s", benchID("random", 0), err, r.GetLog())
		}
		r, err := app.Query(b.Context(), &abci.RequestQuery{Path: PathState, Data: []byte("{}")})
		if err != nil || r.Code != CodeOK {
			b.Fatalf("state: %v %s", err, r.GetLog())
		}
		var st State
		if err := json.Unmarshal(r.Value, &st); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(info.LastBlockHeight), "height")
		b.ReportMetric(float64(st.LogSize), "log-entries")
		if err := app.Close(); err != nil {
			b.Fatal(err)
		}
	}
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "VmHWM:" {
			kb, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(kb/1024, "peak-rss-MiB")
		}
	}
}
