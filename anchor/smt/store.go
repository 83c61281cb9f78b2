package smt

import (
	dbm "github.com/cometbft/cometbft-db"
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
