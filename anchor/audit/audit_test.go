package audit

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/anchorline/anchorline/anchor/merkle"
)

// batchOf returns a batch of n rows and its true (anchored) record.
func batchOf(t *testing.T, n int) (Batch, []Reading) {
	t.Helper()
	id := [16]byte{1}
	var rows []Reading
	var leaves []merkle.Hash
	for i := range n {
		raw := fmt.Appendf(nil, "reading %d", i)
		l := merkle.ReadingLeaf(raw)
		rows = append(rows, Reading{Device: "d", Seq: uint64(i + 1), Raw: raw, Leaf: l, BatchID: id, LeafIndex: uint32(i)})
		leaves = append(leaves, l)
	}
	root, err := merkle.Root(leaves)
	if err != nil {
		t.Fatal(err)
	}
	return Batch{ID: id, Root: root, Size: uint32(n)}, rows
}

func kinds(fs []Finding) []string {
	var out []string
	for _, f := range fs {
		out = append(out, fmt.Sprintf("%s %d", f.Kind, f.Seq))
	}
	slices.Sort(out)
	return out
}

func TestCheckBatch(t *testing.T) {
	for _, tc := range []struct {
		name   string
		tamper func([]Reading) []Reading
		want   []string
	}{
		{"untouched", func(r []Reading) []Reading { return r }, nil},
		{"stored twice by a retried insert", func(r []Reading) []Reading { return append(r, r[2]) }, nil},
		{"raw changed", func(r []Reading) []Reading { r[1].Raw = []byte("forged"); return r }, []string{"modified 2"}},
		{"raw and leaf rewritten together", func(r []Reading) []Reading {
			r[1].Raw = []byte("forged")
			r[1].Leaf = merkle.ReadingLeaf(r[1].Raw)
			return r
		}, []string{"modified 1", "modified 2", "modified 3", "modified 4"}},
		{"deleted", func(r []Reading) []Reading { return slices.Delete(r, 2, 3) }, []string{"missing 0"}},
		{"a second row at a position", func(r []Reading) []Reading {
			x := Reading{Device: "d", Seq: 9, Raw: []byte("extra"), BatchID: r[0].BatchID, LeafIndex: 3}
			x.Leaf = merkle.ReadingLeaf(x.Raw)
			return append(r, x)
		}, []string{"inserted 9"}},
		{"a second row at a position, read first", func(r []Reading) []Reading {
			x := Reading{Device: "d", Seq: 9, Raw: []byte("extra"), BatchID: r[0].BatchID, LeafIndex: 3}
			x.Leaf = merkle.ReadingLeaf(x.Raw)
			return append(r[:3], x, r[3])
		}, []string{"inserted 9"}},
		{"beyond the batch", func(r []Reading) []Reading {
			x := r[0]
			x.Seq, x.LeafIndex = 7, 4
			return append(r, x)
		}, []string{"inserted 7"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			truth, rows := batchOf(t, 4)
			var rep Report
			rep.checkBatch(Query{}, truth, tc.tamper(rows))
			if got := kinds(rep.Findings); !slices.Equal(got, tc.want) {
				t.Fatalf("findings %v, want %v\n%+v", got, tc.want, rep.Findings)
			}
		})
	}
}

// A position without a row is expired when retention dropped its month (its batch's months
// recorded), else when its batch is older than every month dropped or its position was
// recorded; otherwise it is missing.
func TestExpiredPositions(t *testing.T) {
	jan := time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC) // the end of January
	for _, tc := range []struct {
		name   string
		expiry Expiry
		months []uint32
		tsMax  uint64
		want   []string // the findings
		n      int      // expired
	}{
		{"month dropped, position's month recorded", Expiry{Months: map[uint32]bool{202601: true}, Before: jan}, []uint32{202601, 202601, 202603, 202603}, uint64(jan.UnixMilli()) + 1, []string{"missing 0"}, 1},
		{"months recorded, batch older than the months dropped", Expiry{Months: map[uint32]bool{202601: true}, Before: jan}, []uint32{202512, 202512, 202512, 202512}, 0, []string{"missing 0", "missing 0"}, 0},
		{"months not recorded, batch older", Expiry{Months: map[uint32]bool{202601: true}, Before: jan}, nil, 0, nil, 2},
		{"months not recorded, position recorded", Expiry{Months: map[uint32]bool{202601: true}, Before: jan, Positions: map[[16]byte]map[uint32]bool{{1}: {2: true}}}, nil, uint64(jan.UnixMilli()), []string{"missing 0"}, 1},
		{"months of another batch size", Expiry{Months: map[uint32]bool{202601: true}, Before: jan}, []uint32{202601}, uint64(jan.UnixMilli()), []string{"missing 0", "missing 0"}, 0},
		{"nothing dropped", Expiry{}, []uint32{202601, 202601, 202603, 202603}, 0, []string{"missing 0", "missing 0"}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			truth, rows := batchOf(t, 4)
			truth.TSMax = tc.tsMax
			rows = slices.Delete(rows, 1, 3) // positions 1 (January) and 2 (March)
			out := item{id: truth.ID, size: truth.Size, truth: truth}.outcome(Query{}, rows, nil, tc.expiry, tc.months)
			if got := kinds(out.findings); !slices.Equal(got, tc.want) || out.expired != tc.n {
				t.Fatalf("findings %v, expired %d; want %v, %d", got, out.expired, tc.want, tc.n)
			}
		})
	}
	if !lacksRow(3, []Reading{{LeafIndex: 0}, {LeafIndex: 0}, {LeafIndex: 2}}) || lacksRow(2, []Reading{{LeafIndex: 1}, {LeafIndex: 0}, {LeafIndex: 1}}) {
		t.Fatal("lacksRow: a position stored twice hides a missing one, or is counted as missing")
	}
}

// servedLog is a ledger node serving entries, two at a time; it can be made to lie.
type servedLog [][]byte

func (l servedLog) Entries(_ context.Context, from uint64) ([]LogEntry, uint64, error) {
	var out []LogEntry
	for i := from; i < uint64(len(l)) && i < from+2; i++ {
		out = append(out, LogEntry{Index: i, Entry: l[i]})
	}
	return out, uint64(len(l)), nil
}

// With a signed head, the log the node serves must rebuild its root, read in pieces.
func TestReadLogAgainstHead(t *testing.T) {
	var log servedLog
	var leaves []merkle.Hash
	for i := range 5 {
		e := fmt.Appendf(nil, "entry %d", i)
		log = append(log, e)
		leaves = append(leaves, merkle.EntryLeaf(e))
	}
	root, err := merkle.Root(leaves)
	if err != nil {
		t.Fatal(err)
	}
	head := &Head{Height: 9, LogSize: 5, LogRoot: root}
	var rep Report
	if _, err := rep.readLog(context.Background(), log, Query{Head: head}); err != nil || !rep.Verified || rep.Entries != 5 || len(rep.Unmatched) != 0 {
		t.Fatalf("honest log: %v %+v", err, rep)
	}
	// A longer log (entries appended since the head) is read up to the head's size.
	rep = Report{}
	if _, err := rep.readLog(context.Background(), append(log, []byte("later")), Query{Head: head}); err != nil || !rep.Verified {
		t.Fatalf("log grown since the head: %v %+v", err, rep)
	}
	lying := slices.Clone(log)
	lying[3] = []byte("rewritten")
	rep = Report{}
	if _, err := rep.readLog(context.Background(), lying, Query{Head: head}); err != nil || rep.Verified || len(rep.Unmatched) != 1 {
		t.Fatalf("rewritten log: %v %+v", err, rep)
	}
	rep = Report{}
	if _, err := rep.readLog(context.Background(), log[:4], Query{Head: head}); err != nil || rep.Verified || len(rep.Unmatched) != 1 {
		t.Fatalf("shortened log: %v %+v", err, rep)
	}
}
