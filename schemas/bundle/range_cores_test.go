package bundle

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"testing"
)

// pattern is n bytes that differ with a and b and use every hex digit.
func pattern(n, a, b int) Hex {
	out := make(Hex, n)
	for k := range out {
		out[k] = byte(a*7 + b*31 + k*13)
	}
	return out
}

// bigRange is a well-formed range whose anchors, batches and readings are each more than
// onEveryCoreFrom bytes, so that ParseRange reads each of them on every core.
func bigRange() *Range {
	r := sampleRange()
	r.Anchors, r.Batches, r.Readings = nil, nil, nil
	const anchors, batchesPer, readings = 50, 3, 450
	for a := range anchors {
		head := uint64(0)
		if a >= anchors/2 {
			head = 1
		}
		r.Anchors = append(r.Anchors, RangeAnchor{ID: pattern(16, a, 1), Batches: 2 * batchesPer, Root: pattern(32, a, 2),
			Proof: []Hex{pattern(32, a, 3), pattern(32, a, 4)}, Head: head, Entry: pattern(600, a, 5), LogIndex: uint64(2*a + 1)})
		for b := range batchesPer {
			proof := make([]Hex, 5)
			for j := range proof {
				proof[j] = pattern(32, a*batchesPer+b, j)
			}
			r.Batches = append(r.Batches, RangeBatch{ID: pattern(16, a, 10+b), Size: 1000, Root: pattern(32, a, 20+b),
				Anchor: uint64(a), BatchIndex: uint64(2 * b), Proof: proof})
		}
	}
	r.Erasures = []RangeErasure{{Entry: pattern(90, 0, 7), LogIndex: 2, Head: 0}, {Entry: pattern(90, 1, 7), LogIndex: 100, Head: 1}}
	for i := range readings {
		rd := RangeReading{Seq: uint64(3*i + 1), Batch: uint64(i % len(r.Batches)), LeafIndex: uint64(i / len(r.Batches))}
		if i%10 == 9 { // erased, every tenth: half with a device time
			rd.Leaf, rd.Erase = pattern(32, i, 8), ptr(uint64(i%20/10))
			if i%20 == 9 {
				rd.TS = uint64(1_700_000_000_000 + i)
			}
		} else {
			rd.Raw = pattern(40+i%7, i, 6)
		}
		r.Readings = append(r.Readings, rd)
	}
	return r
}

// parseOn is ParseRange of data with GOMAXPROCS n.
func parseOn(data []byte, n int) (*Range, error) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(n))
	return ParseRange(data)
}

type fastResult struct {
	r  *Range
	ok bool
}

// fastOn is parseRangeFast of data with GOMAXPROCS n.
func fastOn(t *testing.T, data []byte, n int) fastResult {
	t.Helper()
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(n))
	r, ok, err := parseRangeFast(data)
	if err != nil {
		t.Fatalf("on %d cores: error %v before the anchors", n, err)
	}
	return fastResult{r, ok}
}

// arrayBounds returns where the items of the range's anchors, batches and readings begin and
// end, as array finds them.
func arrayBounds(t *testing.T, data []byte) (from, to [3]int) {
	t.Helper()
	for k, name := range []string{"anchors", "batches", "readings"} {
		open := []byte(fmt.Sprintf("\n  %q: [", name))
		s := scanner{b: data, i: bytes.Index(data, open) + len(open), ok: true}
		from[k], to[k] = s.i, s.arrayEnd()
		if from[k] < len(open) || to[k] < 0 {
			t.Fatalf("%s: no array", name)
		}
	}
	return from, to
}

// testProcs are the GOMAXPROCS the tests parse on, besides one: more than the machine may have
// cores, which changes nothing but the number of chunks.
var testProcs = []int{2, 3, 5}

// ParseRange reads a range whose arrays are many bytes on every core, into the range it reads
// on one.
func TestParseRangeOnEveryCore(t *testing.T) {
	data, err := bigRange().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	from, to := arrayBounds(t, data)
	for k := range from {
		if to[k]-from[k] <= onEveryCoreFrom {
			t.Fatalf("array %d has %d bytes of items: too few to be read on every core", k, to[k]-from[k])
		}
		for _, n := range testProcs {
			if cuts := cutPoints(data[:to[k]], from[k], n); len(cuts) != n-1 {
				t.Fatalf("array %d on %d cores: %d cuts", k, n, len(cuts))
			}
		}
	}
	one := fastOn(t, data, 1)
	if !one.ok {
		t.Fatal("the fast path refuses the canonical encoding on one core")
	}
	for _, n := range testProcs {
		got := fastOn(t, data, n)
		if !got.ok {
			t.Fatalf("on %d cores: the fast path refuses the canonical encoding", n)
		}
		if !reflect.DeepEqual(got.r, one.r) {
			t.Fatalf("on %d cores: a different range than on one", n)
		}
		r, err := parseOn(data, n)
		if err != nil {
			t.Fatalf("on %d cores: %v", n, err)
		}
		if again, err := r.Marshal(); err != nil || !bytes.Equal(again, data) {
			t.Fatalf("on %d cores: round trip: %v", n, err)
		}
	}
}

// mutation is a change of a range's encoding, tried on one core and on procs cores.
type mutation struct {
	name  string
	at    int
	f     func(b []byte, at int) []byte
	procs []int
}

func flipBit(d byte) func([]byte, int) []byte {
	return func(b []byte, at int) []byte { b[at] ^= d; return b }
}

func deleteByte(b []byte, at int) []byte { return append(b[:at], b[at+1:]...) }

func insertByte(c byte) func([]byte, int) []byte {
	return func(b []byte, at int) []byte { return append(b[:at], append([]byte{c}, b[at:]...)...) }
}

// upperHex upper-cases the first of the hex digits a to f in the string that begins at at.
func upperHex(b []byte, at int) []byte {
	for i := at; b[i] != '"'; i++ {
		if b[i] >= 'a' && b[i] <= 'f' {
			b[i] -= 'a' - 'A'
			break
		}
	}
	return b
}

// mutationStride is the step between the changes TestParseRangeOnEveryCoreRefuses tries: 1,
// every change, but under the race detector (range_race_test.go).
var mutationStride = 1

// A changed byte near where the arrays are cut into chunks, and typical changes in the first,
// middle and last items of every array, are refused on every core exactly as on one (and a
// change that is accepted gives the same range): the chunks are no weaker than one scanner.
func TestParseRangeOnEveryCoreRefuses(t *testing.T) {
	good, err := bigRange().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	from, to := arrayBounds(t, good)
	var near, typical []mutation
	nearBy := func(name string, at int, procs []int) {
		for d := -3; d <= 7; d++ {
			near = append(near, mutation{fmt.Sprintf("%s%+d ^1", name, d), at + d, flipBit(1), procs},
				mutation{fmt.Sprintf("%s%+d ^0x20", name, d), at + d, flipBit(0x20), procs},
				mutation{fmt.Sprintf("%s%+d deleted", name, d), at + d, deleteByte, procs})
		}
	}
	after := func(at int, s string) int { return at + bytes.Index(good[at:], []byte(s)) + len(s) }
	for k := range from {
		nearBy(fmt.Sprintf("array %d start", k), from[k], testProcs)
		nearBy(fmt.Sprintf("array %d end", k), to[k]-4, testProcs)
		for _, n := range testProcs {
			for _, c := range cutPoints(good[:to[k]], from[k], n) {
				nearBy(fmt.Sprintf("array %d cut on %d cores", k, n), c, []int{n})
			}
		}
		var seps []int
		for i := from[k]; ; {
			j := bytes.Index(good[i:to[k]], []byte(itemSep))
			if j < 0 {
				break
			}
			seps = append(seps, i+j)
			i += j + 1
		}
		if len(seps) < 3 {
			t.Fatalf("array %d: %d items", k, len(seps)+1)
		}
		for _, at := range []int{seps[0], seps[len(seps)/2], seps[len(seps)-1]} {
			name := fmt.Sprintf("array %d item after byte %d", k, at)
			value := after(at, `": "`) // the item's first hex string
			typical = append(typical,
				mutation{name + ": no separator", at, deleteByte, testProcs},
				mutation{name + ": two separators", at, insertByte(','), testProcs},
				mutation{name + ": extra indent", at + 2, insertByte(' '), testProcs},
				mutation{name + ": extra space", value - 1, insertByte(' '), testProcs},
				mutation{name + ": no comma", after(value, `"`), deleteByte, testProcs},
				mutation{name + ": upper-case hex", value, upperHex, testProcs},
				mutation{name + ": odd-length hex", value, deleteByte, testProcs},
				mutation{name + ": not hex", value, func(b []byte, at int) []byte { b[at] = 'g'; return b }, testProcs})
			if bytes.Contains(good[at:to[k]], []byte("[\n        \"")) { // a proof hash
				list := after(at, "[\n        \"")
				typical = append(typical,
					mutation{name + ": upper-case hex in a list", list, upperHex, testProcs},
					mutation{name + ": odd-length hex in a list", list, deleteByte, testProcs},
					mutation{name + ": no comma in a list", after(list, `"`), deleteByte, testProcs})
			}
		}
	}
	all := append(near, typical...)
	for i := 0; i < len(all); i += mutationStride {
		m := all[i]
		c := m.f(bytes.Clone(good), m.at)
		one := fastOn(t, c, 1)
		for _, n := range m.procs {
			if got := fastOn(t, c, n); got.ok != one.ok || !reflect.DeepEqual(got.r, one.r) {
				t.Fatalf("%s: on %d cores ok %v, on one ok %v (or a different range)", m.name, n, got.ok, one.ok)
			}
		}
	}
	// ParseRange words the error of each typical change on every core as on one.
	n := testProcs[len(testProcs)-1]
	for i := 0; i < len(typical); i += mutationStride {
		m := typical[i]
		c := m.f(bytes.Clone(good), m.at)
		_, oneErr := parseOn(c, 1)
		if !errors.Is(oneErr, ErrFormat) && !errors.Is(oneErr, ErrNotCanonical) {
			t.Fatalf("%s: %v, want ErrFormat or ErrNotCanonical", m.name, oneErr)
		}
		_, err := parseOn(c, n)
		if err == nil || err.Error() != oneErr.Error() {
			t.Fatalf("%s: on %d cores %v, on one %v", m.name, n, err, oneErr)
		}
		for _, sentinel := range []error{ErrFormat, ErrNotCanonical, ErrErased} {
			if errors.Is(err, sentinel) != errors.Is(oneErr, sentinel) {
				t.Fatalf("%s: on %d cores %v, on one %v", m.name, n, err, oneErr)
			}
		}
	}
}
