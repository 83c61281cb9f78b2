package reading

import (
	"encoding/hex"
	"errors"
	"testing"
	"time"
)

func TestCommandRoundTrip(t *testing.T) {
	commander, err := GenerateKey(Ed25519)
	if err != nil {
		t.Fatal(err)
	}
	other, err := GenerateKey(Ed25519)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := NewCommand(commander, "rules-0", 7, time.UnixMilli(1_700_000_000_000), "valve-1", "close", map[string]string{"valve": "2"}, "c72a9eec78e6eb078b504438d6aed47d")
	if err != nil {
		t.Fatal(err)
	}
	c, err := VerifyCommand(raw, "rules-0", commander.Public(), "valve-1")
	if err != nil {
		t.Fatal(err)
	}
	if c.Name != "close" || c.Args["valve"] != "2" || c.Event != "c72a9eec78e6eb078b504438d6aed47d" || c.Seq != 7 || c.Leaf != Leaf(raw) {
		t.Fatalf("command %+v", c)
	}
	for name, check := range map[string]func() error{
		"another key":       func() error { _, err := VerifyCommand(raw, "rules-0", other.Public(), "valve-1"); return err },
		"another device":    func() error { _, err := VerifyCommand(raw, "rules-0", commander.Public(), "valve-2"); return err },
		"another commander": func() error { _, err := VerifyCommand(raw, "rules-1", commander.Public(), "valve-1"); return err },
	} {
		if err := check(); !errors.Is(err, ErrNotCommand) {
			t.Errorf("%s: %v, want ErrNotCommand", name, err)
		}
	}
	d := Device{ID: "valve-1", Key: other}
	ack, err := d.Ack(c, AckDone, "")
	if err != nil {
		t.Fatal(err)
	}
	m, err := Decode(ack)
	if err != nil || m.Verify(other.Public()) != nil {
		t.Fatalf("ack: %v", err)
	}
	if m.Reading.Tags["ack"] != hex.EncodeToString(c.Leaf[:]) || m.Reading.Tags["status"] != AckDone || m.Reading.Metrics[0].Name != AckMetric {
		t.Fatalf("ack reading %+v", m.Reading)
	}
}
