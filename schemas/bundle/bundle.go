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
}

// Reading is the reading as the device sent it.
type Reading struct {
	Device string `json:"device"`
	Seq    uint64 `json:"seq"`
	Raw    Hex    `json:"raw"`
}

// Device is the device's registry record in the state the header commits, with its proof.
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
	ChainID      string          `json:"chain_id"`
	Height       int64           `json:"height"` // of the header in light_block
	Entry        Hex             `json:"entry"`
	LogIndex     uint64          `json:"log_index"`
	LogSize      uint64          `json:"log_size"`
	LogPath      []Hex           `json:"log_path"`
	LogRoot      Hex             `json:"log_root"`
	RegistryRoot Hex             `json:"registry_root"`
	LightBlock   json.RawMessage `json:"light_block"`
	// LightChain holds the light blocks (oldest first, each in the same JSON as LightBlock)
	// that lead from an earlier validator set to LightBlock's. Absent when the set never
	// changed, so bundles made before it existed keep their bytes.
	LightChain []json.RawMessage `json:"light_chain,omitempty"`
}

func nonNil(p []Hex) []Hex {
	if p == nil {
		return []Hex{}
	}
	return p
}

// Marshal returns the canonical encoding: two-space indented JSON in field order, paths as []
// when empty, the light block compacted then indented like the rest, and a final newline.
func (b *Bundle) Marshal() ([]byte, error) {
	c := *b
	c.Device.RegistryPath = nonNil(c.Device.RegistryPath)
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
	if b.Format != Format {
		return nil, fmt.Errorf("%w: format %q, want %q", ErrFormat, b.Format, Format)
	}
	again, err := b.Marshal()
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(again, data) {
		return nil, fmt.Errorf("%w: re-encoding differs at byte %d", ErrNotCanonical, firstDiff(again, data))
	}
	return &b, nil
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
