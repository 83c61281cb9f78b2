package bundle

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
)

// Formats.
const (
	Format      = "anchorline.proof/v1"
	TrustFormat = "anchorline.trust/v1"
)

// Errors of Parse and ParseTrust.
var (
	ErrFormat       = errors.New("bundle: not a well-formed bundle")
	ErrNotCanonical = errors.New("bundle: not in canonical encoding")
)

// Hex is binary data, lower-case hex in JSON.
type Hex []byte

// MarshalJSON encodes h as a lower-case hex string.
func (h Hex) MarshalJSON() ([]byte, error) {
	return []byte(`"` + hex.EncodeToString(h) + `"`), nil
}

// UnmarshalJSON accepts only a lower-case hex string.
func (h *Hex) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("want a hex string: %w", err)
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return fmt.Errorf("hex %q: lower-case hex digits only", s)
		}
	}
	v, err := hex.DecodeString(s)
	if err != nil {
		return fmt.Errorf("hex %q: %w", s, err)
	}
	*h = v
	return nil
}

// Bundle is a proof bundle.
type Bundle struct {
	Format  string  `json:"format"`
	Reading Reading `json:"reading"`
	Device  Device  `json:"device"`
	Batch   Batch   `json:"batch"`
	Anchor  Anchor  `json:"anchor"`
	Ledger  Ledger  `json:"ledger"`
	// Erasure is set, last, for a reading whose bytes were erased (schemas/proof.md "Erased
	// readings"): the erase entry and its place in the same log as the anchor entry. Absent
	// otherwise, so every other bundle keeps its bytes.
	Erasure *Erasure `json:"erasure,omitempty"`
}

// Reading is the reading as the device sent it: Raw; or, for an erased reading (Bundle.Erasure
// set), its leaf and the device time its row recorded in place of Raw.
type Reading struct {
	Device string `json:"device"`
	Seq    uint64 `json:"seq"`
	Raw    Hex    `json:"raw,omitempty"`
	Leaf   Hex    `json:"leaf,omitempty"`
	TS     uint64 `json:"ts,omitempty"`
}

// Erasure is the erase entry under which a reading's bytes were removed, with its inclusion
// path in the log of ledger.log_size.
type Erasure struct {
	Entry    Hex    `json:"entry"`
	LogIndex uint64 `json:"log_index"`
	LogPath  []Hex  `json:"log_path"`
}

// ErrErasedBundle marks a bundle whose reading members do not fit its erasure member: raw
// without erasure, or leaf (and ts) with it.
var ErrErasedBundle = errors.New("bundle: an erased reading has leaf and erasure in place of raw")

// checkErased checks that the reading carries raw, or (with an erasure) a 32-byte leaf.
func (b *Bundle) checkErased() error {
	r := b.Reading
	switch {
	case b.Erasure == nil && (len(r.Raw) == 0 || r.Leaf != nil || r.TS != 0):
		return fmt.Errorf("%w: %w: a bundle without erasure has reading.raw and no reading.leaf or reading.ts", ErrFormat, ErrErasedBundle)
	case b.Erasure != nil && (r.Raw != nil || len(r.Leaf) != 32):
		return fmt.Errorf("%w: %w: a bundle with erasure has reading.leaf (32 bytes) and no reading.raw", ErrFormat, ErrErasedBundle)
	}
	return nil
}

// Device is the device's registry record in the state the header commits, with its proof: in
// a v1 bundle RegistryIndex, RegistrySize and RegistryPath (the sorted registry tree), in a v2
// bundle RegistryProof instead (the registry's sparse Merkle tree). Its JSON carries only the
// members of its version: a non-nil RegistryProof makes it v2.
type Device struct {
	ID            string `json:"id"`
	Alg           string `json:"alg"`
	PublicKey     Hex    `json:"public_key"`
	Status        string `json:"status"`
	Height        uint64 `json:"height"` // block of the record's last change
	Record        Hex    `json:"record"` // the record's exact bytes (schemas/ledger.md)
	RegistryIndex uint64 `json:"registry_index"`
	RegistrySize  uint64 `json:"registry_size"`
	RegistryPath  []Hex  `json:"registry_path"`
	// RegistryProof is, in a v2 bundle only, the record's membership proof in the registry's
	// sparse Merkle tree (anchor/smt's encoding); nil in a v1 bundle.
	RegistryProof Hex `json:"registry_proof,omitempty"`
}

// deviceV2 is a Device's JSON in a v2 bundle: the v1 registry members are not there.
type deviceV2 struct {
	ID            string `json:"id"`
	Alg           string `json:"alg"`
	PublicKey     Hex    `json:"public_key"`
	Status        string `json:"status"`
	Height        uint64 `json:"height"`
	Record        Hex    `json:"record"`
	RegistryProof Hex    `json:"registry_proof"`
}

// MarshalJSON encodes d with the members of its version: registry_index, registry_size and
// registry_path (as [] when empty) without RegistryProof, registry_proof alone with it.
func (d Device) MarshalJSON() ([]byte, error) {
	type plain Device // without the methods
	if d.RegistryProof == nil {
		p := plain(d)
		p.RegistryPath = nonNil(p.RegistryPath)
		return json.Marshal(p)
	}
	if d.RegistryIndex != 0 || d.RegistrySize != 0 || len(d.RegistryPath) != 0 {
		return nil, fmt.Errorf("%w: device has registry_proof (v2) and registry_index, registry_size or registry_path (v1)", ErrFormat)
	}
	return json.Marshal(deviceV2{ID: d.ID, Alg: d.Alg, PublicKey: d.PublicKey, Status: d.Status, Height: d.Height, Record: d.Record, RegistryProof: d.RegistryProof})
}

// UnmarshalJSON decodes a device strictly (known members only) and refuses one that mixes the
// members of the two versions or has an empty registry_proof.
func (d *Device) UnmarshalJSON(b []byte) error {
	type plain Device
	var w struct {
		*plain
		// Shadow the registry members to see which are present.
		RegistryIndex *uint64 `json:"registry_index"`
		RegistrySize  *uint64 `json:"registry_size"`
		RegistryPath  *[]Hex  `json:"registry_path"`
		RegistryProof *Hex    `json:"registry_proof"`
	}
	var c Device
	w.plain = (*plain)(&c)
	if err := strictValue(b, &w); err != nil {
		return fmt.Errorf("device: %w", err)
	}
	v1 := w.RegistryIndex != nil || w.RegistrySize != nil || w.RegistryPath != nil
	if w.RegistryProof != nil {
		if v1 {
			return errors.New("device: registry_proof (app hash v2) together with registry_index, registry_size or registry_path (v1)")
		}
		if len(*w.RegistryProof) == 0 {
			return errors.New("device: registry_proof is empty")
		}
		c.RegistryProof = *w.RegistryProof
	}
	if w.RegistryIndex != nil {
		c.RegistryIndex = *w.RegistryIndex
	}
	if w.RegistrySize != nil {
		c.RegistrySize = *w.RegistrySize
	}
	if w.RegistryPath != nil {
		c.RegistryPath = *w.RegistryPath
	}
	*d = c
	return nil
}

// Batch proves the reading's leaf in its batch.
type Batch struct {
	ID        Hex    `json:"id"`
	Size      uint64 `json:"size"`
	LeafIndex uint64 `json:"leaf_index"`
	Path      []Hex  `json:"path"`
	Root      Hex    `json:"root"`
}

// Anchor proves the batch in its anchor.
type Anchor struct {
	ID         Hex    `json:"id"`
	Batches    uint64 `json:"batches"`
	BatchIndex uint64 `json:"batch_index"`
	Path       []Hex  `json:"path"`
	Root       Hex    `json:"root"`
}

// Ledger proves the anchor entry in the ledger's log and the log in a signed header.
type Ledger struct {
	ChainID      string `json:"chain_id"`
	Height       int64  `json:"height"` // of the header in light_block
	Entry        Hex    `json:"entry"`
	LogIndex     uint64 `json:"log_index"`
	LogSize      uint64 `json:"log_size"`
	LogPath      []Hex  `json:"log_path"`
	LogRoot      Hex    `json:"log_root"`
	RegistryRoot Hex    `json:"registry_root"`
	// AppHashVersion, StateRoot and StateProof are present in v2 bundles only (the header's
	// app hash is of the second version, schemas/ledger.md): AppHashVersion is 2, StateRoot
	// the state root the app hash commits, StateProof the proof of RegistryRoot as its
	// "registry" sub-root. A v1 bundle has none of them, so its bytes are as before.
	AppHashVersion uint64          `json:"app_hash_version,omitempty"`
	StateRoot      Hex             `json:"state_root,omitempty"`
	StateProof     *StateProof     `json:"state_proof,omitempty"`
	LightBlock     json.RawMessage `json:"light_block"`
	// LightChain holds the light blocks (oldest first, each in the same JSON as LightBlock)
	// that lead from an earlier validator set to LightBlock's. Absent when the set never
	// changed, so bundles made before it existed keep their bytes.
	LightChain []json.RawMessage `json:"light_chain,omitempty"`
}

// UnmarshalJSON decodes the ledger member strictly and refuses an app_hash_version that is
// written out but not 2 (a v1 bundle has none).
func (l *Ledger) UnmarshalJSON(b []byte) error {
	type plain Ledger
	var w struct {
		*plain
		AppHashVersion *uint64 `json:"app_hash_version"` // shadows plain's, to see it present
	}
	var c Ledger
	w.plain = (*plain)(&c)
	if err := strictValue(b, &w); err != nil {
		return fmt.Errorf("ledger: %w", err)
	}
	if w.AppHashVersion != nil {
		if *w.AppHashVersion != AppHashV2 {
			return fmt.Errorf("ledger: app_hash_version %d: a bundle has none (v1) or %d", *w.AppHashVersion, AppHashV2)
		}
		c.AppHashVersion = *w.AppHashVersion
	}
	*l = c
	return nil
}

// StateProof proves the registry root as the "registry" sub-root of the state root
// (merkle.StateProof without its root, which is the bundle's registry_root).
type StateProof struct {
	Name  string `json:"name"`
	Index uint64 `json:"index"`
	Size  uint64 `json:"size"`
	Path  []Hex  `json:"path"`
}

// AppHashV2 is the only app_hash_version a bundle writes out (schemas/ledger.md).
const AppHashV2 = 2

// V2 reports whether b is a v2 bundle: its header's app hash is of the second version.
func (b *Bundle) V2() bool { return b.Ledger.AppHashVersion == AppHashV2 }

// checkVersion checks that b carries exactly the members of its app hash version.
func (b *Bundle) checkVersion() error {
	d, l := &b.Device, &b.Ledger
	switch l.AppHashVersion {
	case 0:
		if d.RegistryProof != nil || l.StateRoot != nil || l.StateProof != nil {
			return fmt.Errorf("%w: device.registry_proof, ledger.state_root and ledger.state_proof are only in bundles with app_hash_version %d", ErrFormat, AppHashV2)
		}
	case AppHashV2:
		if len(d.RegistryProof) == 0 || len(l.StateRoot) == 0 || l.StateProof == nil {
			return fmt.Errorf("%w: a bundle with app_hash_version %d needs device.registry_proof, ledger.state_root and ledger.state_proof", ErrFormat, AppHashV2)
		}
		if d.RegistryIndex != 0 || d.RegistrySize != 0 || len(d.RegistryPath) != 0 {
			return fmt.Errorf("%w: a bundle with app_hash_version %d has no device.registry_index, registry_size or registry_path", ErrFormat, AppHashV2)
		}
	default:
		return fmt.Errorf("%w: ledger.app_hash_version %d: a bundle has none (v1) or %d", ErrFormat, l.AppHashVersion, AppHashV2)
	}
	return nil
}

func nonNil(p []Hex) []Hex {
	if p == nil {
		return []Hex{}
	}
	return p
}

// Marshal returns the canonical encoding: two-space indented JSON in field order, paths as []
// when empty, the light block compacted then indented like the rest, and a final newline.
// A v1 bundle (no AppHashVersion) has device.registry_index, registry_size and registry_path
// and nothing of v2; a v2 bundle (AppHashVersion 2) has device.registry_proof instead of those
// three, and ledger.app_hash_version, state_root and state_proof after registry_root. Marshal
// refuses a bundle that mixes the two (ErrFormat).
func (b *Bundle) Marshal() ([]byte, error) {
	if err := b.checkVersion(); err != nil {
		return nil, err
	}
	if err := b.checkErased(); err != nil {
		return nil, err
	}
	c := *b
	if c.Erasure != nil {
		e := *c.Erasure
		e.LogPath = nonNil(e.LogPath)
		c.Erasure = &e
	}
	if c.Ledger.StateProof != nil {
		sp := *c.Ledger.StateProof
		sp.Path = nonNil(sp.Path)
		c.Ledger.StateProof = &sp
	}
	c.Batch.Path = nonNil(c.Batch.Path)
	c.Anchor.Path = nonNil(c.Anchor.Path)
	c.Ledger.LogPath = nonNil(c.Ledger.LogPath)
	if len(c.Ledger.LightBlock) > 0 {
		var buf bytes.Buffer
		if err := json.Compact(&buf, c.Ledger.LightBlock); err != nil {
			return nil, fmt.Errorf("%w: light_block: %w", ErrFormat, err)
		}
		c.Ledger.LightBlock = buf.Bytes()
	}
	if len(c.Ledger.LightChain) > 0 {
		chain := make([]json.RawMessage, len(c.Ledger.LightChain))
		for i, lb := range c.Ledger.LightChain {
			var buf bytes.Buffer
			if err := json.Compact(&buf, lb); err != nil {
				return nil, fmt.Errorf("%w: light_chain[%d]: %w", ErrFormat, i, err)
			}
			chain[i] = buf.Bytes()
		}
		c.Ledger.LightChain = chain
	}
	out, err := json.MarshalIndent(&c, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}

// Parse decodes a bundle strictly: known fields only, lower-case hex, the right format, and
// exactly the canonical encoding (Marshal of the result gives the same bytes).
func Parse(data []byte) (*Bundle, error) {
	var b Bundle
	if err := strict(data, &b); err != nil {
		return nil, err
	}
	if err := wantFormat(b.Format, Format); err != nil {
		return nil, err
	}
	if err := canonical(data, b.Marshal); err != nil {
		return nil, err
	}
	return &b, nil
}

// wantFormat checks a file's format member.
func wantFormat(got, want string) error {
	if got != want {
		return fmt.Errorf("%w: format %q, want %q", ErrFormat, got, want)
	}
	return nil
}

// canonical checks that data is exactly what marshal (of what data decoded to) encodes.
func canonical(data []byte, marshal func() ([]byte, error)) error {
	again, err := marshal()
	if err != nil {
		return err
	}
	if !bytes.Equal(again, data) {
		return fmt.Errorf("%w: re-encoding differs at byte %d", ErrNotCanonical, firstDiff(again, data))
	}
	return nil
}

func strict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %w", ErrFormat, err)
	}
	if dec.More() {
		return fmt.Errorf("%w: data after the JSON object", ErrFormat)
	}
	return nil
}

// strictValue decodes one JSON value that an UnmarshalJSON method was given, with unknown
// members refused (the outer decoder's setting does not reach inside an UnmarshalJSON).
func strictValue(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// Trust is what an auditor pins: a chain id and its validator set (CometBFT's JSON of the
// validators, as its /validators endpoint returns them, with proposer priorities set to 0),
// and the height whose header that set signs. Trust files made before Height existed have
// none (0): their set is taken to be the one the bundle's light chain starts from.
type Trust struct {
	Format     string          `json:"format"`
	ChainID    string          `json:"chain_id"`
	Height     int64           `json:"height,omitempty"`
	Validators json.RawMessage `json:"validators"`
}

// Marshal returns the trust file's canonical encoding.
func (t *Trust) Marshal() ([]byte, error) {
	c := *t
	var buf bytes.Buffer
	if err := json.Compact(&buf, c.Validators); err != nil {
		return nil, fmt.Errorf("%w: validators: %w", ErrFormat, err)
	}
	c.Validators = buf.Bytes()
	out, err := json.MarshalIndent(&c, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}

// ParseTrust decodes a trust file (known fields only, the right format). Whitespace is free:
// people keep trust files in their own tooling.
func ParseTrust(data []byte) (*Trust, error) {
	var t Trust
	if err := strict(data, &t); err != nil {
		return nil, err
	}
	if t.Format != TrustFormat {
		return nil, fmt.Errorf("%w: trust file format %q, want %q", ErrFormat, t.Format, TrustFormat)
	}
	if t.ChainID == "" || len(t.Validators) == 0 {
		return nil, fmt.Errorf("%w: trust file needs chain_id and validators", ErrFormat)
	}
	if t.Height < 0 {
		return nil, fmt.Errorf("%w: trust file height %d is negative", ErrFormat, t.Height)
	}
	return &t, nil
}
