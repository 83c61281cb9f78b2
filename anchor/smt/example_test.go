package smt_test

import (
	"context"
	"crypto/sha256"
	"fmt"

	dbm "github.com/cometbft/cometbft-db"

	"github.com/anchorline/anchorline/anchor/smt"
)

// A ledger commits registry changes per height; an auditor checks a device's record at an
// old height against that height's root, with no access to the store.
func Example() {
	tree, err := smt.Open(smt.DBStore{DB: dbm.NewMemDB()}, smt.DefaultConfig([]byte("registry/")))
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx := context.Background()
	dev := smt.KeyOf("device-42")
	record := smt.Hash(sha256.Sum256([]byte("record of device-42")))
	if _, err := tree.Commit(ctx, 1, []smt.Change{{Key: dev, Value: record}}); err != nil {
		fmt.Println(err)
		return
	}
	if _, err := tree.Commit(ctx, 2, []smt.Change{{Key: dev, Delete: true}}); err != nil {
		fmt.Println(err)
		return
	}

	for _, height := range []uint64{1, 2} {
		root, err := tree.Root(height)
		if err != nil {
			fmt.Println(err)
			return
		}
		proof, value, err := tree.Prove(height, dev)
		if err != nil {
			fmt.Println(err)
			return
		}
		// value is the record hash when present, nil when absent; Verify checks either claim.
		fmt.Printf("height %d: present %v, proof verifies %v\n",
			height, value != nil, smt.Verify(root, dev, value, proof.Encode()) == nil)
	}
	// Output:
	// height 1: present true, proof verifies true
	// height 2: present false, proof verifies true
}
