package chain

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Workers settle each other's suspects over core NATS. A worker with suspects asks on
// AskSubject "who stored these leaves?" (the leaves, 32 bytes each, at most maxAsk in one
// message; reply subject TellSubject(its instance); header InstanceHeader its instance, so that
// it ignores its own question). A worker that stored some answers on the reply subject with
// their records, len(device) u8 ‖ device ‖ seq u64 BE ‖ leaf. A worker alone asks nobody, so it
// pays nothing (it keeps what it stored only once asked: the first questions after a second
// worker starts go unanswered); a lost message only delays a link until it is looked up in
// ClickHouse.
const (
	AskSubject        = "anchorline.ingest.chain.ask"
	TellSubjectPrefix = "anchorline.ingest.chain.tell."
	InstanceHeader    = "Anchorline-Instance"
	maxAsk            = 16 << 10 // leaves per question
)

// TellSubject is the subject a worker's questions are answered on.
func TellSubject(instance string) string { return TellSubjectPrefix + instance }

// ErrMalformedAnswer: an answer ends in the middle of a record.
var ErrMalformedAnswer = errors.New("malformed chain answer")

// appendAsk appends a question about leaves.
func appendAsk(dst []byte, leaves [][32]byte) []byte {
	for _, l := range leaves {
		dst = append(dst, l[:]...)
	}
	return dst
}

// parseAsk returns the leaves of a question; trailing bytes short of a leaf are ignored.
func parseAsk(data []byte) [][32]byte {
	out := make([][32]byte, 0, len(data)/32)
	for ; len(data) >= 32; data = data[32:] {
		out = append(out, [32]byte(data[:32]))
	}
	return out
}

// appendAnswer appends the records of stored readings. A device id longer than 255 bytes
// cannot be framed and is left out (device ids are at most 64): the asker looks that link up
// in ClickHouse.
func appendAnswer(dst []byte, rs []Reading) []byte {
	for _, r := range rs {
		if len(r.Device) > 255 {
			continue
		}
		dst = append(dst, byte(len(r.Device)))
		dst = append(dst, r.Device...)
		dst = binary.BigEndian.AppendUint64(dst, r.Seq)
		dst = append(dst, r.Leaf[:]...)
	}
	return dst
}

// parseAnswer returns the records of an answer. If the answer is cut short it returns the
// records before the cut and an error wrapping ErrMalformedAnswer.
func parseAnswer(data []byte) ([]Reading, error) {
	var out []Reading
	for len(data) > 0 {
		n := int(data[0])
		if len(data) < 1+n+8+32 {
			return out, fmt.Errorf("%w: record %d needs %d bytes, %d left", ErrMalformedAnswer, len(out), 1+n+8+32, len(data))
		}
		out = append(out, Reading{Device: string(data[1 : 1+n]), Seq: binary.BigEndian.Uint64(data[1+n:]),
			Leaf: [32]byte(data[1+n+8 : 1+n+8+32])})
		data = data[1+n+8+32:]
	}
	return out, nil
}
