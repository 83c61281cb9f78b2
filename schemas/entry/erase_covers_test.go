package entry

import "testing"

// An erase entry covers its device's readings inside its range, both ends included; a
// device-time range covers no reading without a device time.
func TestEraseCovers(t *testing.T) {
	bySeq := Erase{Dev: "d", By: EraseBySeq, From: 5, To: 7}
	byTS := Erase{Dev: "d", By: EraseByTS, From: 0, To: 100}
	for _, c := range []struct {
		e       Erase
		dev     string
		seq, ts uint64
		want    bool
	}{
		{bySeq, "d", 5, 0, true}, {bySeq, "d", 7, 0, true}, {bySeq, "d", 4, 0, false}, {bySeq, "d", 8, 6, false}, {bySeq, "e", 6, 0, false},
		{byTS, "d", 1, 100, true}, {byTS, "d", 1, 1, true}, {byTS, "d", 1, 101, false}, {byTS, "d", 1, 0, false}, {byTS, "e", 1, 50, false},
	} {
		if got := c.e.Covers(c.dev, c.seq, c.ts); got != c.want {
			t.Errorf("%s %d..%d covers %s seq %d ts %d: %v, want %v", c.e.By, c.e.From, c.e.To, c.dev, c.seq, c.ts, got, c.want)
		}
	}
}
