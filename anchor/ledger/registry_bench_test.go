package ledger

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"runtime"
	"testing"
	"time"

	abci "github.com/cometbft/cometbft/abci/types"

	"github.com/anchorline/anchorline/schemas/entry"
	"github.com/anchorline/anchorline/schemas/reading"
)

var (
	benchDevices = flag.Int("ledger.devices", 20000, "devices BenchmarkRegistry registers")
	benchBlock   = flag.Int("ledger.block", 1000, "register entries per block in BenchmarkRegistry")
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
// signing not), then times a registry proof at the first block's height and a restart.
// "sequential" ids sort in registration order (each block appends to the v1 sorted tree);
// "random" ids land anywhere (each block rehashes the tree from its first new id on).
//
//	go test -run '^$' -bench BenchmarkRegistry -benchtime 1x ./anchor/ledger/ -ledger.devices 100000
func BenchmarkRegistry(b *testing.B) {
	for _, order := range []string{"sequential", "random"} {
		b.Run(order, func(b *testing.B) {
			ids := make([]string, *benchDevices)
			for i := range ids {
				if order == "sequential" {
					ids[i] = fmt.Sprintf("dev-%09d", i)
				} else {
					h := sha256.Sum256(fmt.Appendf(nil, "%d", i))
					ids[i] = "dev-" + hex.EncodeToString(h[:8])
				}
			}
			devKey := reading.PublicKey{Alg: reading.Ed25519, Key: pub(key(7))}
			txs := make([][]byte, len(ids))
			for i, id := range ids {
				var err error
				if txs[i], err = entry.NewRegister(key(1), id, devKey, t0); err != nil {
					b.Fatal(err)
				}
			}
			for range b.N {
				benchRegistry(b, ids, txs)
			}
		})
	}
}

func benchRegistry(b *testing.B, ids []string, txs [][]byte) {
	a := &benchApp{b: b, dir: b.TempDir()}
	var err error
	if a.app, err = OpenApp(a.dir, quietLog()); err != nil {
		b.Fatal(err)
	}
	defer func() { a.app.Close() }()
	g, _ := json.Marshal(Genesis{Admins: hexKeys(key(1))})
	if _, err := a.app.InitChain(b.Context(), &abci.RequestInitChain{ChainId: "bench", AppStateBytes: g, Validators: []abci.ValidatorUpdate{abci.Ed25519ValidatorUpdate(pub(key(9)), 10)}, InitialHeight: 1}); err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	for i := 0; i < len(txs); i += *benchBlock {
		a.block(txs[i:min(i+*benchBlock, len(txs))])
	}
	reg := time.Since(start)
	b.ReportMetric(float64(len(txs))/reg.Seconds(), "devices/s")

	// A proof at the first block's height (an old one), twice: the first rebuilds that
	// height's tree, the second finds it kept.
	req, _ := json.Marshal(DeviceRequest{ID: ids[0], Height: 1})
	for i, name := range []string{"proof-old-first-ms", "proof-old-again-ms"} {
		start = time.Now()
		r, err := a.app.Query(b.Context(), &abci.RequestQuery{Path: PathDevice, Data: req})
		if err != nil || r.Code != CodeOK {
			b.Fatalf("proof %d: %v %s", i, err, r.GetLog())
		}
		b.ReportMetric(float64(time.Since(start).Microseconds())/1000, name)
	}
	req, _ = json.Marshal(DeviceRequest{ID: ids[len(ids)/2]})
	start = time.Now()
	if r, err := a.app.Query(b.Context(), &abci.RequestQuery{Path: PathDevice, Data: req}); err != nil || r.Code != CodeOK {
		b.Fatalf("proof at the latest height: %v %s", err, r.GetLog())
	}
	b.ReportMetric(float64(time.Since(start).Microseconds())/1000, "proof-latest-ms")

	if err := a.app.Close(); err != nil {
		b.Fatal(err)
	}
	runtime.GC()
	start = time.Now()
	if a.app, err = OpenApp(a.dir, quietLog()); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(time.Since(start).Milliseconds()), "restart-ms")
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b.ReportMetric(float64(ms.HeapAlloc)/(1<<20), "heap-after-restart-MiB")
}
