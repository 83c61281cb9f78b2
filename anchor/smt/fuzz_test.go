package smt

import (
	"errors"
	"testing"

	dbm "github.com/cometbft/cometbft-db"
)

// FuzzVerify checks that Verify never panics and that whatever it accepts is a canonical
// encoding.
func FuzzVerify(f *testing.F) {
	tr, err := Open(DBStore{DB: dbm.NewMemDB()}, DefaultConfig(nil))
	if err != nil {
		f.Fatal(err)
	}
	var cs []Change
	for i := range 20 {
		cs = append(cs, Change{Key: key(i), Value: val(i)})
	}
	root, err := tr.Commit(f.Context(), 1, cs)
	if err != nil {
		f.Fatal(err)
	}
	for _, i := range []int{0, 5, 100, 101} {
		p, v, err := tr.Prove(1, key(i))
		if err != nil {
			f.Fatal(err)
		}
		k := key(i)
		f.Add(root[:], k[:], v, p.Encode())
	}
	f.Add([]byte{}, []byte{}, []byte{}, []byte{})
	f.Fuzz(func(t *testing.T, rootB, keyB, value, proof []byte) {
		var r, k Hash
		copy(r[:], rootB)
		copy(k[:], keyB)
		if len(value) == 0 {
			value = nil
		}
		err := Verify(r, k, value, proof)
		if err != nil {
			if !errors.Is(err, ErrBadProof) {
				t.Fatalf("error %v does not wrap ErrBadProof", err)
			}
			return
		}
		p, derr := DecodeProof(proof)
		if derr != nil {
			t.Fatalf("Verify accepted a proof DecodeProof rejects: %v", derr)
		}
		if string(p.Encode()) != string(proof) {
			t.Fatal("Verify accepted a non-canonical encoding")
		}
	})
}

// FuzzCommit drives commits from the fuzzer's bytes (each byte: a key among 32, set or
// delete, a value; 0xff ends a version) on a tree with small caches, and checks every root
// against the reference and the proofs of the last version.
func FuzzCommit(f *testing.F) {
	f.Add([]byte{1, 2, 3, 0xff, 0x81, 4})
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 0xff, 0x80, 0x81, 0x82, 0xff, 0x83})
	f.Fuzz(func(t *testing.T, ops []byte) {
		tr, err := Open(DBStore{DB: dbm.NewMemDB()}, Config{CacheNodes: 4, TopLevels: 3})
		if err != nil {
			t.Fatal(err)
		}
		model := map[Hash]Hash{}
		version := uint64(0)
		var cs []Change
		commit := func() {
			version++
			root, err := tr.Commit(t.Context(), version, cs)
			if err != nil {
				t.Fatalf("Commit(%d): %v", version, err)
			}
			if want := refRoot(model); root != want {
				t.Fatalf("Commit(%d) root %x, reference %x", version, root, want)
			}
			cs = cs[:0]
		}
		for _, op := range ops {
			if op == 0xff {
				commit()
				continue
			}
			c := Change{Key: key(int(op & 0x1f)), Value: val(int(op >> 5)), Delete: op&0x80 != 0 && op&0x40 == 0}
			cs = append(cs, c)
			if c.Delete {
				delete(model, c.Key)
			} else {
				model[c.Key] = c.Value
			}
		}
		commit()
		var absent []Hash
		for i := range 32 {
			if _, ok := model[key(i)]; !ok {
				absent = append(absent, key(i))
			}
		}
		checkVersion(t, tr, version, model, absent)
	})
}
