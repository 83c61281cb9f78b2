package merkle

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// App hash versions (DESIGN 2.2).
const (
	// AppHashV1 commits the log and the registry root directly (AppHash).
	AppHashV1 uint64 = 1
	// AppHashV2 commits the log and a state root over named sub-roots (AppHashV2Of).
	AppHashV2 uint64 = 2
)

// SubRootRegistry is the name of the device registry's sub-root in the v2 state root.
const SubRootRegistry = "registry"

// SubRootRules is the name of the rules' sub-root (schemas/ledger.md "rule records"), in the state
// root from the first block with a rule entry on.
const SubRootRules = "rules"

// SubRootOwners and SubRootConsent are the names of the owner bindings' and the consent
// records' sub-roots (schemas/ledger.md "owner records", "consent records"), each in the state
// root from the first block with an entry of its kind on.
const (
	SubRootOwners  = "owners"
	SubRootConsent = "consent"
)

// appHashV2Domain prefixes the second version of the ledger app hash.
const appHashV2Domain = "anchorline/ledger/v2"

// ErrStateRoot marks a set of sub-roots that no state root can be built over: none, an empty
// name, or a name twice.
var ErrStateRoot = errors.New("merkle: bad sub-roots")

// AppHashV2Of is the second version of the hash CometBFT commits after each block:
// SHA-256("anchorline/ledger/v2" || log_size(uint64 big-endian) || log_root || state_root),
// state_root being StateRoot over the named sub-roots.
func AppHashV2Of(logSize uint64, logRoot, stateRoot Hash) Hash {
	var buf [len(appHashV2Domain) + 8 + 2*Size]byte
	n := copy(buf[:], appHashV2Domain)
	binary.BigEndian.PutUint64(buf[n:], logSize)
	copy(buf[n+8:], logRoot[:])
	copy(buf[n+8+Size:], stateRoot[:])
	return sha256.Sum256(buf[:])
}

// SubRoot is one named root that the state root commits.
type SubRoot struct {
	Name string `json:"name"`
	Root Hash   `json:"root"`
}

// SubRootLeaf is the state tree's leaf of a sub-root: SHA-256(0x00 || name || root). The root
// has a fixed length, so name and root are read back unambiguously from the leaf's input.
func SubRootLeaf(name string, root Hash) Hash {
	b := make([]byte, 0, len(name)+Size)
	b = append(append(b, name...), root[:]...)
	return LeafHash(b)
}

// sortedSubRoots returns subs sorted by name (bytewise), checked: at least one, no empty
// name, no name twice.
func sortedSubRoots(subs []SubRoot) ([]SubRoot, error) {
	if len(subs) == 0 {
		return nil, fmt.Errorf("%w: none", ErrStateRoot)
	}
	s := slices.Clone(subs)
	slices.SortFunc(s, func(a, b SubRoot) int { return strings.Compare(a.Name, b.Name) })
	for i := range s {
		if s[i].Name == "" {
			return nil, fmt.Errorf("%w: empty name", ErrStateRoot)
		}
		if i > 0 && s[i].Name == s[i-1].Name {
			return nil, fmt.Errorf("%w: %q twice", ErrStateRoot, s[i].Name)
		}
	}
	return s, nil
}

func subRootLeaves(s []SubRoot) []Hash {
	leaves := make([]Hash, len(s))
	for i := range s {
		leaves[i] = SubRootLeaf(s[i].Name, s[i].Root)
	}
	return leaves
}

// StateRoot is the RFC 6962 tree hash over SubRootLeaf of each sub-root, sorted by name.
func StateRoot(subs []SubRoot) (Hash, error) {
	s, err := sortedSubRoots(subs)
	if err != nil {
		return Hash{}, err
	}
	return Root(subRootLeaves(s))
}

// StateProof is what proves one sub-root against a state root on its own.
type StateProof struct {
	Name  string `json:"name"`
	Root  Hash   `json:"root"`
	Index uint64 `json:"index"`
	Size  uint64 `json:"size"`
	Path  []Hash `json:"path"`
}

// ProveSubRoot returns the proof of the sub-root called name in the state root over subs.
func ProveSubRoot(subs []SubRoot, name string) (StateProof, error) {
	s, err := sortedSubRoots(subs)
	if err != nil {
		return StateProof{}, err
	}
	i, ok := slices.BinarySearchFunc(s, name, func(e SubRoot, n string) int { return strings.Compare(e.Name, n) })
	if !ok {
		return StateProof{}, fmt.Errorf("%w: no sub-root %q", ErrStateRoot, name)
	}
	path, err := InclusionPath(subRootLeaves(s), uint64(i))
	if err != nil {
		return StateProof{}, err
	}
	if path == nil {
		path = []Hash{}
	}
	return StateProof{Name: name, Root: s[i].Root, Index: uint64(i), Size: uint64(len(s)), Path: path}, nil
}

// VerifySubRoot checks that p proves p.Root as the sub-root called p.Name of stateRoot. The
// leaf carries the name, so a proof of one sub-root cannot pass as another's.
func VerifySubRoot(p StateProof, stateRoot Hash) error {
	return VerifyInclusion(p.Index, p.Size, SubRootLeaf(p.Name, p.Root), p.Path, stateRoot)
}

// ErrAppState marks an app state whose parts do not hold together, so that no app hash can be
// computed from them: an unknown version, or under v2 a registry sub-root proof that is
// missing, names another sub-root, proves another root or does not lead to the state root.
var ErrAppState = errors.New("merkle: app state does not hold together")

// AppState is what an app hash commits, under either version: the one place that says which
// hash a state has.
type AppState struct {
	// Version is the app hash version: 0 or AppHashV1 for v1, AppHashV2 for v2.
	Version      uint64
	LogSize      uint64
	LogRoot      Hash
	RegistryRoot Hash
	// StateRoot and StateProof are for v2 only (v1 ignores them): the state root over the
	// named sub-roots, and the proof that RegistryRoot is its SubRootRegistry sub-root.
	StateRoot  Hash
	StateProof *StateProof
}

// AppHash returns the app hash of s: AppHash under v1; under v2, once StateProof is checked to
// prove RegistryRoot as the SubRootRegistry sub-root of StateRoot, AppHashV2Of. An error wraps
// ErrAppState (and ErrProof when the sub-root proof does not verify).
func (s AppState) AppHash() (Hash, error) {
	switch s.Version {
	case 0, AppHashV1:
		return AppHash(s.LogSize, s.LogRoot, s.RegistryRoot), nil
	case AppHashV2:
		if err := s.checkRegistry(); err != nil {
			return Hash{}, err
		}
		return AppHashV2Of(s.LogSize, s.LogRoot, s.StateRoot), nil
	default:
		return Hash{}, fmt.Errorf("%w: app hash version %d, want %d or %d", ErrAppState, s.Version, AppHashV1, AppHashV2)
	}
}

// checkRegistry checks, under v2, that StateProof proves RegistryRoot in StateRoot.
func (s AppState) checkRegistry() error {
	p := s.StateProof
	switch {
	case p == nil:
		return fmt.Errorf("%w: v2 state without the proof of its %q sub-root", ErrAppState, SubRootRegistry)
	case p.Name != SubRootRegistry:
		return fmt.Errorf("%w: the state proof is of sub-root %q, want %q", ErrAppState, p.Name, SubRootRegistry)
	case p.Root != s.RegistryRoot:
		return fmt.Errorf("%w: the state proof proves registry root %s, the state's is %s", ErrAppState, p.Root, s.RegistryRoot)
	}
	if err := VerifySubRoot(*p, s.StateRoot); err != nil {
		return fmt.Errorf("%w: %q sub-root %s in state root %s: %w", ErrAppState, SubRootRegistry, p.Root, s.StateRoot, err)
	}
	return nil
}
