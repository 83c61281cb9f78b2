package reading

import (
	"fmt"
	"time"
)

// Device is the Go device SDK: it signs successive readings of one device, numbering them
// and chaining each to the previous one through prev. It is not safe for concurrent use.
type Device struct {
	ID   string
	Key  PrivateKey
	Seq  uint64   // the seq of the last reading signed; the next one gets Seq+1
	Prev [32]byte // leaf of the last reading signed; zero before the first
	Now  func() time.Time
}

// Next signs a reading with the next seq, the current time and prev set to the leaf of the
// previous reading (omitted for the device's first reading). It returns the COSE bytes.
func (d *Device) Next(metrics []Metric, tags map[string]string) ([]byte, error) {
	now := time.Now
	if d.Now != nil {
		now = d.Now
	}
	r := Reading{Device: d.ID, Seq: d.Seq + 1, TS: uint64(now().UnixMilli()), Metrics: metrics, Tags: tags}
	if d.Prev != ([32]byte{}) {
		r.Prev = d.Prev[:]
	}
	raw, err := Sign(r, d.Key)
	if err != nil {
		return nil, fmt.Errorf("device %s seq %d: %w", d.ID, r.Seq, err)
	}
	d.Seq = r.Seq
	d.Prev = Leaf(raw)
	return raw, nil
}

// SubjectPrefix begins every subject a device publishes to.
const SubjectPrefix = "iot.readings."

// Subject is the NATS subject a device publishes to: iot.readings.<device id>.
func Subject(device string) string { return SubjectPrefix + device }

// MsgID is the Nats-Msg-Id header value, <device id>:<seq>, which lets JetStream drop
// retransmissions inside its duplicate window.
func MsgID(device string, seq uint64) string { return fmt.Sprintf("%s:%d", device, seq) }
