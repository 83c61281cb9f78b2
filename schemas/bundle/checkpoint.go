package bundle

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// CheckpointFormat is the format of a log checkpoint.
const CheckpointFormat = "anchorline.checkpoint/v1"

// Checkpoint is what an auditor keeps of the ledger's log: its size and root, the members
// needed to recompute the app hash of the header that commits them, and that header (with
// commit and validator set) as a light block. A later log is checked against it with a
// consistency proof (../proof.md, "Checkpoints").
//
// Under app hash v1 (AppHashVersion 0, not written out) RegistryRoot is the registry root the
// app hash commits and StateRoot is empty; under v2 (AppHashVersion 2) StateRoot is the state
// root the app hash commits and RegistryRoot is empty: the registry is one of its sub-roots,
// of no concern to the log.
type Checkpoint struct {
	Format         string `json:"format"`
	ChainID        string `json:"chain_id"`
	Height         int64  `json:"height"` // of the header in light_block
	LogSize        uint64 `json:"log_size"`
	LogRoot        Hex    `json:"log_root"`
	RegistryRoot   Hex    `json:"registry_root,omitempty"`    // v1 only
	AppHashVersion uint64 `json:"app_hash_version,omitempty"` // v2 only: 2
	StateRoot      Hex    `json:"state_root,omitempty"`       // v2 only
	// LightBlock is CometBFT's JSON of the signed header at Height, normalised as a bundle's
	// ledger.light_block.
	LightBlock json.RawMessage `json:"light_block"`
	// LightChain leads from earlier validator sets to LightBlock's, oldest first, as a
	// bundle's ledger.light_chain; absent while the set never changed.
	LightChain []json.RawMessage `json:"light_chain,omitempty"`
}

// V2 reports whether c's header carries an app hash of the second version.
func (c *Checkpoint) V2() bool { return c.AppHashVersion == AppHashV2 }

// checkVersion checks that c carries exactly the app hash members of its version.
func (c *Checkpoint) checkVersion() error {
	switch c.AppHashVersion {
	case 0:
		if len(c.RegistryRoot) == 0 || len(c.StateRoot) != 0 {
			return fmt.Errorf("%w: a checkpoint without app_hash_version (v1) has registry_root and no state_root", ErrFormat)
		}
	case AppHashV2:
		if len(c.StateRoot) == 0 || len(c.RegistryRoot) != 0 {
			return fmt.Errorf("%w: a checkpoint with app_hash_version %d has state_root and no registry_root", ErrFormat, AppHashV2)
		}
	default:
		return fmt.Errorf("%w: app_hash_version %d: a checkpoint has none (v1) or %d", ErrFormat, c.AppHashVersion, AppHashV2)
	}
	return nil
}

// UnmarshalJSON decodes a checkpoint strictly (known members only) and refuses an
// app_hash_version that is written out but not 2.
func (c *Checkpoint) UnmarshalJSON(b []byte) error {
	type plain Checkpoint
	var w struct {
		*plain
		AppHashVersion *uint64 `json:"app_hash_version"` // shadows plain's, to see it present
	}
	var cp Checkpoint
	w.plain = (*plain)(&cp)
	if err := strictValue(b, &w); err != nil {
		return err
	}
	if w.AppHashVersion != nil {
		if *w.AppHashVersion != AppHashV2 {
			return fmt.Errorf("app_hash_version %d: a checkpoint has none (v1) or %d", *w.AppHashVersion, AppHashV2)
		}
		cp.AppHashVersion = *w.AppHashVersion
	}
	*c = cp
	return nil
}

// Marshal returns the canonical encoding: two-space indented JSON in field order, the light
// blocks compacted then indented like the rest, and a final newline. It refuses a checkpoint
// that mixes the members of the two app hash versions (ErrFormat).
func (c *Checkpoint) Marshal() ([]byte, error) {
	if err := c.checkVersion(); err != nil {
		return nil, err
	}
	if len(c.LightBlock) == 0 {
		return nil, fmt.Errorf("%w: checkpoint has no light_block", ErrFormat)
	}
	cp := *c
	var err error
	if cp.LightBlock, err = compactRaw(c.LightBlock); err != nil {
		return nil, fmt.Errorf("%w: light_block: %w", ErrFormat, err)
	}
	cp.LightChain = nil
	for i, lb := range c.LightChain {
		raw, err := compactRaw(lb)
		if err != nil {
			return nil, fmt.Errorf("%w: light_chain[%d]: %w", ErrFormat, i, err)
		}
		cp.LightChain = append(cp.LightChain, raw)
	}
	out, err := json.MarshalIndent(&cp, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}

func compactRaw(raw json.RawMessage) (json.RawMessage, error) {
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// ParseCheckpoint decodes a checkpoint strictly: known members only, lower-case hex, the right
// format, the members of one app hash version, and exactly the canonical encoding (Marshal of
// the result gives the same bytes; ErrNotCanonical otherwise).
func ParseCheckpoint(data []byte) (*Checkpoint, error) {
	var c Checkpoint
	if err := strict(data, &c); err != nil {
		return nil, err
	}
	if err := wantFormat(c.Format, CheckpointFormat); err != nil {
		return nil, err
	}
	if c.ChainID == "" {
		return nil, fmt.Errorf("%w: checkpoint has no chain_id", ErrFormat)
	}
	if c.Height < 1 {
		return nil, fmt.Errorf("%w: checkpoint height %d, want 1 or more", ErrFormat, c.Height)
	}
	if err := canonical(data, c.Marshal); err != nil {
		return nil, err
	}
	return &c, nil
}
