package rule

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
)

// Event kinds.
const (
	KindFire   = "fire"   // a condition rule fired on a reading
	KindAbsent = "absent" // an absence rule fired: the device's last reading was Seq
)

// EventID is the id of the event of rule version (id, version) for device at seq: the first
// 16 bytes of SHA-256("anchorline/event/v1" ‖ 0x00 ‖ len-prefixed rule id ‖ version (u64 BE) ‖
// len-prefixed device ‖ seq (u64 BE) ‖ len-prefixed kind), lower-case hex. A redelivered or
// re-evaluated reading gives the same id, which is what makes events exactly once: NATS
// drops a repeated Nats-Msg-Id and ClickHouse keeps one row per id.
func EventID(ruleID string, version uint64, device string, seq uint64, kind string) string {
	h := sha256.New()
	b := []byte("anchorline/event/v1\x00")
	b = appendString(b, ruleID)
	b = binary.BigEndian.AppendUint64(b, version)
	b = appendString(b, device)
	b = binary.BigEndian.AppendUint64(b, seq)
	b = appendString(b, kind)
	h.Write(b)
	return hex.EncodeToString(h.Sum(nil)[:16])
}

func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

// Subject is the NATS subject of the events of rule for device.
func Subject(ruleID, device string) string { return SubjectPrefix + ruleID + "." + device }

// SubjectPrefix is the prefix of every event subject (iot.events.<rule>.<device>).
const SubjectPrefix = "iot.events."

// Event is one firing, as published on Subject and stored in ClickHouse `events`
// (schemas/rule.md). JSON.
type Event struct {
	ID        string   `json:"id"`
	Rule      string   `json:"rule"`
	Version   uint64   `json:"version"`
	RuleIndex uint64   `json:"rule_index"` // log index of the rule entry of Version
	Height    uint64   `json:"height"`     // the ledger height whose rule state the stage applied
	Device    string   `json:"device"`
	Kind      string   `json:"kind"`
	Seq       uint64   `json:"seq"`      // the reading that fired (absent: the device's last reading)
	ArmedAt   uint64   `json:"armed_at"` // the reading that armed the rule (fire only)
	Seqs      []uint64 `json:"seqs"`     // the readings the decision used, ascending
	Partial   bool     `json:"partial,omitempty"`
	Time      int64    `json:"time_ms"`      // the stage's clock when it decided, Unix ms
	LastSeen  int64    `json:"last_seen_ms"` // absent: the stage's clock when it evaluated Seq
	Actions   []string `json:"actions"`      // the kinds of the rule's actions
}

// Commander is the device id under which the rules stage signs commands (schemas/reading
// "commands"): its device record on the ledger holds the rules stage's key (rules.key), so
// the registry proves which key may command devices, from which height.
const Commander = "rules"
