package smt

import (
	dbm "github.com/cometbft/cometbft-db"
	"github.com/syndtr/goleveldb/leveldb/filter"
	"github.com/syndtr/goleveldb/leveldb/opt"
)

// Store is the key-value store the tree keeps its nodes and roots in. Get returns nil, nil
// for a missing key. Values passed to and returned by it must not be modified.
type Store interface {
	Get(key []byte) ([]byte, error)
	NewBatch() Batch
}

// Batch is a group of writes applied atomically by Write. Close must be called after, and
// is safe to call more than once.
type Batch interface {
	Set(key, value []byte) error
	Write() error
	Close() error
}

// DBStore adapts a cometbft-db DB (goleveldb, memdb, ...) to Store. Batches are written
// with WriteSync when Sync is set.
type DBStore struct {
	DB   dbm.DB
	Sync bool
}

var _ Store = DBStore{}

// Get implements Store.
func (s DBStore) Get(key []byte) ([]byte, error) { return s.DB.Get(key) }

// NewBatch implements Store.
func (s DBStore) NewBatch() Batch { return dbBatch{b: s.DB.NewBatch(), sync: s.Sync} }

type dbBatch struct {
	b    dbm.Batch
	sync bool
}

func (b dbBatch) Set(key, value []byte) error { return b.b.Set(key, value) }
func (b dbBatch) Close() error                { return b.b.Close() }
func (b dbBatch) Write() error {
	if b.sync {
		return b.b.WriteSync()
	}
	return b.b.Write()
}

// LevelDBOptions returns the goleveldb options recommended for a database that holds a tree
// of about a million keys, for dbm.NewGoLevelDBWithOpts. The tree writes each commit's nodes
// under keys that grow with the version, so flushed tables barely overlap and compaction
// mostly moves them down; what costs is reading older nodes, which the block cache and the
// bloom filter serve. Memory: BlockCacheCapacity, plus up to two write buffers, whatever the
// tree's size.
func LevelDBOptions() *opt.Options {
	return &opt.Options{
		BlockCacheCapacity:  32 * opt.MiB,
		WriteBuffer:         32 * opt.MiB,
		CompactionTableSize: 8 * opt.MiB,
		CompactionTotalSize: 80 * opt.MiB,
		Filter:              filter.NewBloomFilter(10),
		// Node values are hashes, which do not compress: snappy would only cost a decode
		// on every block read.
		Compression: opt.NoCompression,
	}
}
