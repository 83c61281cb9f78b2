package smt

import (
	"flag"
	"testing"

	dbm "github.com/cometbft/cometbft-db"
)

var (
	benchN     = flag.Int("smt.n", 100_000, "keys inserted by the smt benchmarks")
	benchBlock = flag.Int("smt.b", 1_000, "keys per commit in the smt benchmarks")
)

// benchTree opens a tree on goleveldb in a temporary directory.
func benchTree(b *testing.B) (*Tree, dbm.DB) {
	b.Helper()
	db, err := dbm.NewGoLevelDB("smt", b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = db.Close() })
	tr, err := Open(DBStore{DB: db}, DefaultConfig([]byte("registry/")))
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
// goleveldb per iteration; it reports keys/s and ns per key.
func BenchmarkInsert(b *testing.B) {
	for b.Loop() {
		b.StopTimer()
		tr, _ := benchTree(b)
		b.StartTimer()
		fill(b, tr)
	}
	keys := float64(*benchN) * float64(b.N)
	b.ReportMetric(keys/b.Elapsed().Seconds(), "keys/s")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/keys, "ns/key")
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
		})
	}
}
