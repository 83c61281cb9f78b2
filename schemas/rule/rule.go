package rule

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/anchorline/anchorline/schemas/reading"
)

// Format is the version of the rule language: the variables of a condition and the rules of
// evaluation in this package. A change to either is a new format, so that a rule committed
// under this one is evaluated exactly as it was.
const Format = "anchorline.rule/v1"

// ErrInvalid: a rule that does not validate or whose condition does not compile.
var ErrInvalid = errors.New("rule: invalid")

// Limits of a rule, so that the ledger entry and the evaluation stay bounded.
const (
	MaxDevices    = 10_000
	MaxTags       = 16
	MaxExprLen    = 4096
	MaxActions    = 8
	MaxWindowLast = 1000
	MaxWindowSpan = uint64(24 * time.Hour / time.Millisecond)
	MaxArgs       = 16
)

// Rule is one version of a rule as the ledger commits it (its CBOR map inside a rule entry,
// schemas/ledger.md). Fields with their zero value are absent from the encoding.
type Rule struct {
	ID      string            `cbor:"id" json:"id"`
	Version uint64            `cbor:"version" json:"version"`
	Devices []string          `cbor:"devices,omitempty" json:"devices,omitempty"` // selected devices, sorted, unique
	Tags    map[string]string `cbor:"tags,omitempty" json:"tags,omitempty"`       // selected by reading tags: every pair present
	When    string            `cbor:"when,omitempty" json:"when,omitempty"`       // CEL condition, bool
	Clear   string            `cbor:"clear,omitempty" json:"clear,omitempty"`     // CEL re-arming condition (hysteresis); absent: !when
	Last    uint64            `cbor:"last,omitempty" json:"last,omitempty"`       // window: the device's last N readings
	SpanMS  uint64            `cbor:"span_ms,omitempty" json:"span_ms,omitempty"` // window: the device's readings of the last T of device time
	// AbsentMS makes an absence rule: it fires when a selected device sent nothing for this
	// long (the rules stage's clock, schemas/rule.md); such a rule has no when, clear or window.
	AbsentMS uint64   `cbor:"absent_ms,omitempty" json:"absent_ms,omitempty"`
	Actions  []Action `cbor:"actions,omitempty" json:"actions"`
}

// Action kinds.
const (
	ActionEvent   = "event"   // the event itself (published and stored)
	ActionCommand = "command" // a signed command to the device (COSE_Sign1 on iot.commands.<device>)
	ActionWebhook = "webhook" // an HTTP POST of the event, signed, with retries
)

// Action is what a firing does besides recording the event.
type Action struct {
	Kind    string            `cbor:"kind" json:"kind"`
	Command string            `cbor:"command,omitempty" json:"command,omitempty"` // command name
	Args    map[string]string `cbor:"args,omitempty" json:"args,omitempty"`       // command arguments
	URL     string            `cbor:"url,omitempty" json:"url,omitempty"`         // webhook target (http or https)
}

// Absence reports whether r is an absence rule.
func (r *Rule) Absence() bool { return r.AbsentMS > 0 }

// Selects reports whether r applies to a reading of dev with these tags: dev is one of
// Devices, or Tags is set and the reading carries every pair of it; a rule with neither
// selects every device.
func (r *Rule) Selects(dev string, tags map[string]string) bool {
	if len(r.Devices) == 0 && len(r.Tags) == 0 {
		return true
	}
	if _, ok := slices.BinarySearch(r.Devices, dev); ok {
		return true
	}
	if len(r.Tags) == 0 {
		return false
	}
	for k, v := range r.Tags {
		if got, ok := tags[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// Validate checks the fields (not the conditions: Compile does) and names the first that is
// wrong, wrapping ErrInvalid.
func (r *Rule) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: rule %q: %s", ErrInvalid, r.ID, fmt.Sprintf(format, args...))
	}
	if !reading.ValidDeviceID(r.ID) {
		return fmt.Errorf("%w: rule id %q: want 1 to 64 of A-Z a-z 0-9 _ - (it is a NATS subject token)", ErrInvalid, r.ID)
	}
	if r.Version == 0 {
		return bad("version must be at least 1")
	}
	if len(r.Devices) > MaxDevices {
		return bad("%d devices, at most %d (select by tags instead)", len(r.Devices), MaxDevices)
	}
	for i, d := range r.Devices {
		if !reading.ValidDeviceID(d) {
			return bad("devices[%d] %q is not a device id", i, d)
		}
		if i > 0 && r.Devices[i-1] >= d {
			return bad("devices must be sorted and unique (%q after %q)", d, r.Devices[i-1])
		}
	}
	if len(r.Tags) > MaxTags {
		return bad("%d tags, at most %d", len(r.Tags), MaxTags)
	}
	for _, k := range slices.Sorted(maps.Keys(r.Tags)) {
		if k == "" {
			return bad("a tag name is empty")
		}
	}
	if len(r.When) > MaxExprLen || len(r.Clear) > MaxExprLen {
		return bad("a condition is longer than %d bytes", MaxExprLen)
	}
	switch {
	case r.Absence():
		if r.When != "" || r.Clear != "" || r.Last != 0 || r.SpanMS != 0 {
			return bad("an absence rule (absent) has no when, clear, last or span")
		}
	case strings.TrimSpace(r.When) == "":
		return bad("when is empty: a rule needs a condition, or absent for an absence rule")
	}
	if r.Last > 0 && r.SpanMS > 0 {
		return bad("a window is either last (readings) or span (device time), not both")
	}
	if r.Last > MaxWindowLast {
		return bad("last %d, at most %d readings", r.Last, MaxWindowLast)
	}
	if r.SpanMS > MaxWindowSpan || r.AbsentMS > MaxWindowSpan {
		return bad("span and absent are at most 24h")
	}
	if len(r.Actions) == 0 || len(r.Actions) > MaxActions {
		return bad("%d actions, want 1 to %d (an event alone is [{kind: event}])", len(r.Actions), MaxActions)
	}
	for i, a := range r.Actions {
		if err := a.validate(); err != nil {
			return bad("actions[%d]: %v", i, err)
		}
	}
	return nil
}

func (a Action) validate() error {
	switch a.Kind {
	case ActionEvent:
		if a.Command != "" || a.URL != "" || len(a.Args) > 0 {
			return errors.New("an event action has no command, args or url")
		}
	case ActionCommand:
		if a.Command == "" || len(a.Command) > 64 || a.URL != "" {
			return errors.New("a command action names its command (1 to 64 bytes) and has no url")
		}
		if len(a.Args) > MaxArgs {
			return fmt.Errorf("%d args, at most %d", len(a.Args), MaxArgs)
		}
	case ActionWebhook:
		if !strings.HasPrefix(a.URL, "http://") && !strings.HasPrefix(a.URL, "https://") || a.Command != "" || len(a.Args) > 0 {
			return errors.New("a webhook action has an http:// or https:// url and nothing else")
		}
	default:
		return fmt.Errorf("kind %q: want event, command or webhook", a.Kind)
	}
	return nil
}

// window reports how many of a device's latest readings, or how much device time, r's
// window spans; a rule without a window sees the current reading alone.
func (r *Rule) window() (last uint64, span uint64) {
	if r.Last == 0 && r.SpanMS == 0 {
		return 1, 0
	}
	return r.Last, r.SpanMS
}
