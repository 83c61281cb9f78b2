package rule

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"sigs.k8s.io/yaml"
)

// File is the YAML (or JSON) form of a rule that `anchorline rule put FILE` reads; durations
// are Go durations ("30s", "5m"), whole milliseconds. Version may be left out: put then
// commits the next one.
type File struct {
	ID      string            `json:"id"`
	Version uint64            `json:"version,omitempty"`
	Devices []string          `json:"devices,omitempty"`
	Tags    map[string]string `json:"tags,omitempty"`
	When    string            `json:"when,omitempty"`
	Clear   string            `json:"clear,omitempty"`
	Window  *struct {
		Last uint64 `json:"last,omitempty"`
		Span string `json:"span,omitempty"`
	} `json:"window,omitempty"`
	Absent  string   `json:"absent,omitempty"`
	Actions []Action `json:"actions"`
}

// ParseFile reads a rule file strictly (unknown fields are errors naming them) into a Rule
// with its devices sorted; it does not compile the conditions (Compile does).
func ParseFile(data []byte) (Rule, error) {
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return Rule{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	var f File
	if err := dec.Decode(&f); err != nil {
		return Rule{}, fmt.Errorf("%w: %w (fields: id, version, devices, tags, when, clear, window {last | span}, absent, actions)", ErrInvalid, err)
	}
	r := Rule{ID: f.ID, Version: f.Version, Devices: slices.Compact(slices.Sorted(slices.Values(f.Devices))), Tags: f.Tags,
		When: f.When, Clear: f.Clear, Actions: f.Actions}
	if len(r.Devices) == 0 {
		r.Devices = nil
	}
	if len(r.Tags) == 0 {
		r.Tags = nil
	}
	ms := func(field, s string) (uint64, error) {
		if s == "" {
			return 0, nil
		}
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 || d%time.Millisecond != 0 {
			return 0, fmt.Errorf("%w: rule %q: %s %q: want a positive duration of whole milliseconds, as 30s or 5m", ErrInvalid, f.ID, field, s)
		}
		return uint64(d / time.Millisecond), nil
	}
	if f.Window != nil {
		r.Last = f.Window.Last
		if r.SpanMS, err = ms("window.span", f.Window.Span); err != nil {
			return Rule{}, err
		}
	}
	if r.AbsentMS, err = ms("absent", f.Absent); err != nil {
		return Rule{}, err
	}
	return r, nil
}
