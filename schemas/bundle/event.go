package bundle

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/anchorline/anchorline/schemas/rule"
)

// EventFormat is the format of an event bundle: the proof that a rule fired as recorded
// (schemas/proof.md, "Event bundles").
const EventFormat = "anchorline.event/v1"

// Event proves one rule event: the event as the rules stage stored and published it, the rule
// version that was in force at the event's height with its proofs, and the readings the
// decision used as a range bundle.
type Event struct {
	Format string     `json:"format"`
	Event  rule.Event `json:"event"`
	Rule   EventRule  `json:"rule"`
	// Readings is the range bundle (RangeFormat) of the event's device from its first to its
	// last used seq; a verifier reads it in its canonical encoding (RangeBytes).
	Readings json.RawMessage `json:"readings"`
}

// EventRule is the rule version of an event with what proves it was in force at the event's
// height H: the entry that made it and the entry's inclusion in the log at H, the rule's
// record in the rules tree at H and the tree's root in the state root at H, and a checkpoint
// whose signed header (at H+1) commits that log and state root.
type EventRule struct {
	Entry      Hex        `json:"entry"`       // the rule entry, deterministic CBOR
	Record     Hex        `json:"record"`      // the rule record at H (entry.RuleRecord)
	RulesProof Hex        `json:"rules_proof"` // the record's membership proof in the rules tree (anchor/smt)
	StateProof StateProof `json:"state_proof"` // the "rules" sub-root's proof in the state root; its root is the tree's
	RulesRoot  Hex        `json:"rules_root"`
	LogIndex   uint64     `json:"log_index"` // the entry's, in the log of the checkpoint's size
	LogPath    []Hex      `json:"log_path"`
	// Checkpoint (CheckpointFormat, app hash v2) commits the log and the state root at H; a
	// verifier reads it in its canonical encoding (CheckpointBytes).
	Checkpoint json.RawMessage `json:"checkpoint"`
}

// Marshal returns the canonical encoding: two-space indented JSON in field order, the range
// and the checkpoint compacted then indented like the rest, arrays as [] when empty, and a
// final newline.
func (e *Event) Marshal() ([]byte, error) {
	if err := wantFormat(e.Format, EventFormat); err != nil {
		return nil, err
	}
	cp := *e
	var err error
	if cp.Readings, err = compactRaw(e.Readings); err != nil {
		return nil, fmt.Errorf("%w: readings: %w", ErrFormat, err)
	}
	if cp.Rule.Checkpoint, err = compactRaw(e.Rule.Checkpoint); err != nil {
		return nil, fmt.Errorf("%w: rule.checkpoint: %w", ErrFormat, err)
	}
	if cp.Event.Seqs == nil {
		cp.Event.Seqs = []uint64{}
	}
	if cp.Event.Actions == nil {
		cp.Event.Actions = []string{}
	}
	if cp.Rule.LogPath == nil {
		cp.Rule.LogPath = []Hex{}
	}
	if cp.Rule.StateProof.Path == nil {
		cp.Rule.StateProof.Path = []Hex{}
	}
	out, err := json.MarshalIndent(&cp, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}

// ParseEvent decodes an event bundle strictly: known members only, lower-case hex, the right
// format, and exactly the canonical encoding.
func ParseEvent(data []byte) (*Event, error) {
	var e Event
	if err := strict(data, &e); err != nil {
		return nil, err
	}
	if err := wantFormat(e.Format, EventFormat); err != nil {
		return nil, err
	}
	if len(e.Readings) == 0 || len(e.Rule.Checkpoint) == 0 {
		return nil, fmt.Errorf("%w: an event bundle has readings and rule.checkpoint", ErrFormat)
	}
	if err := canonical(data, e.Marshal); err != nil {
		return nil, err
	}
	return &e, nil
}

// RangeBytes is the canonical encoding of the bundle's range, as ParseRange reads it.
func (e *Event) RangeBytes() ([]byte, error) { return indented(e.Readings) }

// CheckpointBytes is the canonical encoding of the rule's checkpoint, as ParseCheckpoint
// reads it.
func (e *Event) CheckpointBytes() ([]byte, error) { return indented(e.Rule.Checkpoint) }

// indented is a top-level document's canonical layout of raw: two-space indented, a final
// newline.
func indented(raw json.RawMessage) ([]byte, error) {
	var buf bytes.Buffer
	if err := json.Indent(&buf, raw, "", "  "); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrFormat, err)
	}
	buf.WriteByte('\n')
	return buf.Bytes(), nil
}
