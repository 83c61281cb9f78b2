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
