package merkle

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// AppState gives the golden vectors' app hashes under each version, and refuses a v2 state
// whose registry sub-root proof does not hold.
func TestAppState(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("testdata", "hashes.json"))
	if err != nil {
		t.Fatal(err)
	}
	var v vectors
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	mustHash := func(s string) Hash {
		t.Helper()
		h, err := ParseHash(s)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	v1 := AppState{LogSize: v.AppHash.LogSize, LogRoot: mustHash(v.AppHash.LogRoot), RegistryRoot: mustHash(v.AppHash.RegistryRoot)}
	for _, version := range []uint64{0, AppHashV1} {
		s := v1
		s.Version = version
		// v1 ignores the v2 fields.
		s.StateRoot, s.StateProof = Hash{1}, &StateProof{Name: "x"}
		if got, err := s.AppHash(); err != nil || got.String() != v.AppHash.AppHash {
			t.Errorf("version %d: app hash %s (%v), want %s", version, got, err, v.AppHash.AppHash)
		}
	}

	reg := v.StateRoot.Registry
	v2 := AppState{Version: AppHashV2, LogSize: v.AppHashV2.LogSize, LogRoot: mustHash(v.AppHashV2.LogRoot),
		RegistryRoot: reg.Root, StateRoot: mustHash(v.AppHashV2.StateRoot), StateProof: &reg}
	if got, err := v2.AppHash(); err != nil || got.String() != v.AppHashV2.AppHash {
		t.Fatalf("v2: app hash %s (%v), want %s", got, err, v.AppHashV2.AppHash)
	}
	// The v1 hash of the same log and registry is another hash: the version is committed.
	if h1 := AppHash(v2.LogSize, v2.LogRoot, v2.RegistryRoot); h1.String() == v.AppHashV2.AppHash {
		t.Fatal("v1 and v2 give the same app hash")
	}

	other := func(f func(*AppState, *StateProof)) AppState {
		s := v2
		p := reg
		p.Path = append([]Hash(nil), reg.Path...)
		f(&s, &p)
		s.StateProof = &p
		return s
	}
	for name, tc := range map[string]struct {
		s     AppState
		proof bool // the error also wraps ErrProof
	}{
		"unknown version":      {AppState{Version: 3}, false},
		"no state proof":       {AppState{Version: AppHashV2, RegistryRoot: reg.Root, StateRoot: v2.StateRoot}, false},
		"other sub-root":       {other(func(_ *AppState, p *StateProof) { p.Name = "rules" }), false},
		"other registry root":  {other(func(s *AppState, _ *StateProof) { s.RegistryRoot[0] ^= 1 }), false},
		"proof of other root":  {other(func(s *AppState, p *StateProof) { p.Root[0] ^= 1; s.RegistryRoot = p.Root }), true},
		"other state root":     {other(func(s *AppState, _ *StateProof) { s.StateRoot[0] ^= 1 }), true},
		"path changed":         {other(func(_ *AppState, p *StateProof) { p.Path[0][0] ^= 1 }), true},
		"index changed":        {other(func(_ *AppState, p *StateProof) { p.Index ^= 1 }), true},
		"size changed":         {other(func(_ *AppState, p *StateProof) { p.Size++ }), true},
		"path element dropped": {other(func(_ *AppState, p *StateProof) { p.Path = p.Path[:len(p.Path)-1] }), true},
	} {
		t.Run(name, func(t *testing.T) {
			h, err := tc.s.AppHash()
			if !errors.Is(err, ErrAppState) || errors.Is(err, ErrProof) != tc.proof || h != (Hash{}) {
				t.Fatalf("AppHash: %s, %v (want ErrAppState, ErrProof %v)", h, err, tc.proof)
			}
		})
	}
}
