package reading

import (
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// Commands to devices (schemas/rule.md "commands"). A command is a reading of the commander,
// the rules stage's own identity on the ledger (a device record, "rules-<shard>", whose key
// is rules.key): signed like any reading, published on the commander's subject so that ingest
// verifies, stores, batches and anchors it as one, and delivered to the target device on
// CommandsSubject(target). The device verifies it against the commander's registered key and
// answers with an acknowledgement, a reading of its own that names the command's leaf; so both
// are provable with the same bundles as every reading.
//
// A command reading carries the metric CommandMetric = 1 and the tags:
//
//	cmd       the command's name
//	to        the target device
//	event     the id of the rule event that caused it
//	arg.<k>   the command's arguments
//
// An acknowledgement carries the metric AckMetric = 1 and the tags ack (the command reading's
// leaf, hex), status (AckDone, or AckRefused with reason) and cmd.
const (
	CommandMetric = "command"
	AckMetric     = "ack"
	AckDone       = "done"
	AckRefused    = "refused"
	argPrefix     = "arg."
)

// ErrNotCommand: a message on a device's command subject that is not a command to it, or not
// signed by the commander's key.
var ErrNotCommand = errors.New("not a command")

// Command is a verified command.
type Command struct {
	Commander string // the commander's device id
	Seq       uint64 // the command reading's seq
	To        string
	Name      string
	Args      map[string]string
	Event     string   // the rule event id
	Leaf      [32]byte // of Raw
	Raw       []byte
}

// NewCommand signs a command to device to, as reading seq of commander.
func NewCommand(key PrivateKey, commander string, seq uint64, at time.Time, to, name string, args map[string]string, event string) ([]byte, error) {
	if !ValidDeviceID(to) || name == "" {
		return nil, fmt.Errorf("command %q to %q: a command names its device and itself", name, to)
	}
	tags := map[string]string{"cmd": name, "to": to, "event": event}
	for _, k := range slices.Sorted(maps.Keys(args)) {
		tags[argPrefix+k] = args[k]
	}
	return Sign(Reading{Device: commander, Seq: seq, TS: uint64(at.UnixMilli()), Metrics: []Metric{{Name: CommandMetric, Value: 1}}, Tags: tags}, key)
}

// VerifyCommand checks that raw is a command to device signed by commander's key, and
// returns it; anything else is an error wrapping ErrNotCommand.
func VerifyCommand(raw []byte, commander string, key PublicKey, device string) (Command, error) {
	m, err := Decode(raw)
	if err != nil {
		return Command{}, fmt.Errorf("%w: %w", ErrNotCommand, err)
	}
	r := m.Reading
	if r.Device != commander {
		return Command{}, fmt.Errorf("%w: signed as %q, the commander is %q", ErrNotCommand, r.Device, commander)
	}
	if err := m.Verify(key); err != nil {
		return Command{}, fmt.Errorf("%w: %w", ErrNotCommand, err)
	}
	if len(r.Metrics) != 1 || r.Metrics[0].Name != CommandMetric || r.Tags["to"] != device || r.Tags["cmd"] == "" {
		return Command{}, fmt.Errorf("%w: a reading of the commander that is not a command to %s", ErrNotCommand, device)
	}
	c := Command{Commander: r.Device, Seq: r.Seq, To: r.Tags["to"], Name: r.Tags["cmd"], Event: r.Tags["event"], Args: map[string]string{}, Leaf: Leaf(raw), Raw: raw}
	for k, v := range r.Tags {
		if a, ok := strings.CutPrefix(k, argPrefix); ok {
			c.Args[a] = v
		}
	}
	return c, nil
}

// Ack signs the device's acknowledgement of c: its next reading, with status AckDone, or
// AckRefused and a reason.
func (d *Device) Ack(c Command, status, reason string) ([]byte, error) {
	tags := map[string]string{"ack": hex.EncodeToString(c.Leaf[:]), "status": status, "cmd": c.Name}
	if reason != "" {
		tags["reason"] = reason
	}
	return d.Next([]Metric{{Name: AckMetric, Value: 1}}, tags)
}
