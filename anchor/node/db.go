package node

import (
	"sync"

	dbm "github.com/cometbft/cometbft-db"
	cfg "github.com/cometbft/cometbft/config"
)

// stopSafeDBProvider opens CometBFT's databases as cfg.DefaultDBProvider does, wrapped so
// that a read or write after Close does not panic. CometBFT v0.38 closes its stores in
// Node.OnStop while per-peer goroutines (consensus queryMaj23Routine, block sync) may still
// be reading them, and its stores panic on the "leveldb: closed" error: with peers, a clean
// Stop crashed the process now and then (seen in TestNetwork; the same upstream race as
// cometbft/cometbft#1878). After Close the database behaves as that of a process that
// stopped: reads find nothing and writes are dropped, which CometBFT, being crash-safe,
// recovers from on the next start.
func stopSafeDBProvider(ctx *cfg.DBContext) (dbm.DB, error) {
	db, err := cfg.DefaultDBProvider(ctx)
	if err != nil {
		return nil, err
	}
	return &stopSafeDB{DB: db}, nil
}

type stopSafeDB struct {
	dbm.DB
	mu     sync.RWMutex // held for reading by every call into DB, for writing by Close
	closed bool
}

func (d *stopSafeDB) Get(k []byte) ([]byte, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return nil, nil
	}
	return d.DB.Get(k)
}

func (d *stopSafeDB) Has(k []byte) (bool, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return false, nil
	}
	return d.DB.Has(k)
}

func (d *stopSafeDB) write(op func() error) error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return nil
	}
	return op()
}

func (d *stopSafeDB) Set(k, v []byte) error { return d.write(func() error { return d.DB.Set(k, v) }) }
func (d *stopSafeDB) SetSync(k, v []byte) error {
	return d.write(func() error { return d.DB.SetSync(k, v) })
}
func (d *stopSafeDB) Delete(k []byte) error { return d.write(func() error { return d.DB.Delete(k) }) }
func (d *stopSafeDB) DeleteSync(k []byte) error {
	return d.write(func() error { return d.DB.DeleteSync(k) })
}

func (d *stopSafeDB) NewBatch() dbm.Batch { return stopSafeBatch{Batch: d.DB.NewBatch(), db: d} }

// stopSafeBatch drops its write once its database is closed.
type stopSafeBatch struct {
	dbm.Batch
	db *stopSafeDB
}

func (b stopSafeBatch) Write() error     { return b.db.write(b.Batch.Write) }
func (b stopSafeBatch) WriteSync() error { return b.db.write(b.Batch.WriteSync) }

func (d *stopSafeDB) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	return d.DB.Close()
}
