package smt

import (
	"flag"
	"runtime"
	"testing"

	dbm "github.com/cometbft/cometbft-db"
	"github.com/syndtr/goleveldb/leveldb/opt"
)

var (
	benchN     = flag.Int("smt.n", 100_000, "keys inserted by the smt benchmarks")
	benchBlock = flag.Int("smt.b", 1_000, "keys per commit in the smt benchmarks")
	benchTop   = flag.Int("smt.top", DefaultTopLevels, "Config.TopLevels in the smt benchmarks")
	benchOpts  = flag.Bool("smt.ldbopts", true, "open goleveldb with LevelDBOptions (false: goleveldb's defaults)")
)

// benchTree opens a tree on goleveldb in a temporary directory.
func benchTree(b *testing.B) (*Tree, dbm.DB) {
	b.Helper()
	var o *opt.Options
	if *benchOpts {
		o = LevelDBOptions()
	}
	db, err := dbm.NewGoLevelDBWithOpts("smt", b.TempDir(), o)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = db.Close() })
	cfg := DefaultConfig([]byte("registry/"))
	cfg.TopLevels = *benchTop
	tr, err := Open(DBStore{DB: db}, cfg)
	if err != nil {
		b.Fatal(err)
	}
	return tr, db
}

// fill inserts -smt.n keys in commits of -smt.b keys, versions 1, 2, ...
func fill(b *testing.B, tr *Tree) {
	b.Helper()
	n, size := *benchN, *benchBlock
	block := make([]Change, 0, size)
	version := tr.Latest()
	base := int(version) * size
	for i := 0; i < n; i += size {
		block = block[:0]
		for j := i; j < i+size && j < n; j++ {
			block = append(block, Change{Key: key(base + j), Value: val(base + j)})
		}
		version++
		if _, err := tr.Commit(b.Context(), version, block); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkInsert inserts -smt.n keys in commits of -smt.b keys into an empty tree on
// goleveldb per iteration; it reports keys/s, ns per key, and the heap in use after the
// last fill (with the tree and its database still open), which must not grow with -smt.n.
func BenchmarkInsert(b *testing.B) {
	var tr *Tree
	for b.Loop() {
		b.StopTimer()
		tr, _ = benchTree(b)
		b.StartTimer()
		fill(b, tr)
	}
	keys := float64(*benchN) * float64(b.N)
	b.ReportMetric(keys/b.Elapsed().Seconds(), "keys/s")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/keys, "ns/key")
	reportHeap(b)
	runtime.KeepAlive(tr)
}

// reportHeap reports the heap in use, after a collection, in MB.
func reportHeap(b *testing.B) {
	b.Helper()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	b.ReportMetric(float64(m.HeapInuse)/(1<<20), "heap-MB")
}

// BenchmarkProveOld proves a present key at a version half-way through filling a tree of
// -smt.n keys (an old height), and one at the latest, and verifies each proof.
func BenchmarkProveOld(b *testing.B) {
	tr, _ := benchTree(b)
	fill(b, tr)
	latest := tr.Latest()
	old := max(latest/2, 1)
	for _, bc := range []struct {
		name    string
		version uint64
		n       int // keys present at that version
	}{{"old", old, min(int(old)*(*benchBlock), *benchN)}, {"latest", latest, *benchN}} {
		root, err := tr.Root(bc.version)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(bc.name, func(b *testing.B) {
			i := 0
			for b.Loop() {
				k := key(i % bc.n)
				i += 7919
				p, v, err := tr.Prove(bc.version, k)
				if err != nil {
					b.Fatal(err)
				}
				if err := p.Verify(root, k, v); err != nil {
					b.Fatal(err)
				}
			}
			reportHeap(b)
		})
	}
}
