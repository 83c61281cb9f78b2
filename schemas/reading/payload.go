package reading

import (
	"math"
	"slices"
	"strings"
	"unicode/utf8"
)

// The fast path of the payload decoder. decodePayloadSlow decodes any valid CBOR encoding of
// the payload (DESIGN 2.1) through fxamacker/cbor's reflection, which costs a map, an
// interface value per metric and a string per name. fastPayload reads the payloads devices
// actually send by hand: definite lengths of any width, integers and floats of 16, 32 or 64
// bits, unknown keys with scalar values (or arrays of them). Every string of the reading is a
// substring of one copy of the message, and the metrics go to a buffer inside the Message.
//
// It is a pure accelerator: it reports false on anything it does not handle or that is not a
// valid reading (indefinite lengths, tags, duplicate keys, a bad name, NaN, a missing field...),
// and the slow decoder then decides and words the error. It never accepts what the slow
// decoder refuses, and reads the same Reading: FuzzFastPayload checks both against each other.

// cborReader reads CBOR data items from b; s holds the same bytes as a string, so that text
// strings are substrings of it rather than new allocations.
type cborReader struct {
	b []byte
	s string
	i int
}

// head reads an item's initial byte and argument; only definite lengths (additional info up
// to 27) are read, in any width.
func (r *cborReader) head() (major byte, arg uint64, ok bool) {
	if r.i >= len(r.b) {
		return 0, 0, false
	}
	c := r.b[r.i]
	major, ai := c>>5, c&0x1f
	r.i++
	var n int
	switch {
	case ai < 24:
		return major, uint64(ai), true
	case ai == 24:
		n = 1
	case ai == 25:
		n = 2
	case ai == 26:
		n = 4
	case ai == 27:
		n = 8
	default:
		return 0, 0, false
	}
	if len(r.b)-r.i < n {
		return 0, 0, false
	}
	for _, c := range r.b[r.i : r.i+n] {
		arg = arg<<8 | uint64(c)
	}
	r.i += n
	return major, arg, true
}

// span reads the n content bytes of a string item.
func (r *cborReader) span(n uint64) (from, to int, ok bool) {
	if n > uint64(len(r.b)-r.i) {
		return 0, 0, false
	}
	from, r.i = r.i, r.i+int(n)
	return from, r.i, true
}

// text reads a definite-length text string of valid UTF-8.
func (r *cborReader) text() (string, bool) {
	major, n, ok := r.head()
	if !ok || major != 3 {
		return "", false
	}
	from, to, ok := r.span(n)
	if !ok || !utf8.ValidString(r.s[from:to]) {
		return "", false
	}
	return r.s[from:to], true
}

// uint reads an unsigned integer.
func (r *cborReader) uint() (uint64, bool) {
	major, n, ok := r.head()
	return n, ok && major == 0
}

// mapLen reads the header of a definite-length map.
func (r *cborReader) mapLen() (uint64, bool) {
	major, n, ok := r.head()
	return n, ok && major == 5 && n <= uint64(len(r.b)-r.i)/2
}

// number reads a finite integer or float as the slow decoder converts it.
func (r *cborReader) number() (float64, bool) {
	start := r.i
	major, n, ok := r.head()
	if !ok {
		return 0, false
	}
	var f float64
	switch major {
	case 0:
		return float64(n), true
	case 1:
		if n > math.MaxInt64 {
			return 0, false // a big.Int for the slow decoder: not a number
		}
		return float64(-1 - int64(n)), true
	case 7:
		switch r.i - start {
		case 3:
			f = half(uint16(n))
		case 5:
			f = float64(math.Float32frombits(uint32(n)))
		case 9:
			f = math.Float64frombits(n)
		default:
			return 0, false // simple values
		}
	default:
		return 0, false
	}
	return f, !math.IsNaN(f) && !math.IsInf(f, 0)
}

// half converts an IEEE 754 half-precision float (RFC 8949 appendix D).
func half(h uint16) float64 {
	exp, mant := int(h>>10&0x1f), float64(h&0x3ff)
	var f float64
	switch exp {
	case 0:
		f = math.Ldexp(mant, -24)
	case 31:
		f = math.Inf(1)
		if mant != 0 {
			f = math.NaN()
		}
	default:
		f = math.Ldexp(mant+1024, exp-25)
	}
	if h&0x8000 != 0 {
		return -f
	}
	return f
}

// skip passes over the value of an unknown key: a scalar, or an array of scalars.
func (r *cborReader) skip(depth int) bool {
	if r.i >= len(r.b) {
		return false
	}
	if c := r.b[r.i]; c>>5 == 7 {
		// false, true, null, undefined, and floats of any value (the slow decoder does not
		// look inside unknown keys); not the other simple values.
		switch ai := c & 0x1f; {
		case 20 <= ai && ai <= 23:
			r.i++
			return true
		case 25 <= ai && ai <= 27:
			_, _, ok := r.head()
			return ok
		}
		return false
	}
	major, n, ok := r.head()
	if !ok {
		return false
	}
	switch major {
	case 0, 1:
		return true
	case 2:
		_, _, ok := r.span(n)
		return ok
	case 3:
		from, to, ok := r.span(n)
		return ok && utf8.ValidString(r.s[from:to])
	case 4:
		if depth > 0 || n > uint64(len(r.b)-r.i) {
			return false
		}
		for range n {
			if !r.skip(depth + 1) {
				return false
			}
		}
		return true
	}
	return false // maps (whose duplicate keys would need checking) and tags
}

// fastPayload decodes a payload p (whose bytes s also holds) into a valid Reading, appending
// its metrics to metrics; ok is false if the slow decoder must decide.
func fastPayload(p []byte, s string, metrics []Metric) (rd Reading, ok bool) {
	r := &cborReader{b: p, s: s}
	n, ok := r.mapLen()
	if !ok {
		return Reading{}, false
	}
	var haveDev, haveSeq, haveTS, haveM, haveTags, havePrev bool
	var unknown [8]string
	nUnknown := 0
	for range n {
		key, ok := r.text()
		if !ok {
			return Reading{}, false
		}
		switch key {
		case "dev":
			if haveDev {
				return Reading{}, false
			}
			haveDev = true
			if rd.Device, ok = r.text(); !ok || !ValidDeviceID(rd.Device) {
				return Reading{}, false
			}
		case "seq":
			if haveSeq {
				return Reading{}, false
			}
			haveSeq = true
			if rd.Seq, ok = r.uint(); !ok {
				return Reading{}, false
			}
		case "ts":
			if haveTS {
				return Reading{}, false
			}
			haveTS = true
			if rd.TS, ok = r.uint(); !ok {
				return Reading{}, false
			}
		case "m":
			if haveM {
				return Reading{}, false
			}
			haveM = true
			if metrics, ok = r.metrics(metrics); !ok {
				return Reading{}, false
			}
		case "tags":
			if haveTags {
				return Reading{}, false
			}
			haveTags = true
			if rd.Tags, ok = r.tags(); !ok {
				return Reading{}, false
			}
		case "prev":
			if havePrev {
				return Reading{}, false
			}
			havePrev = true
			major, n, ok := r.head()
			if !ok || major != 2 || n != 32 {
				return Reading{}, false
			}
			from, to, ok := r.span(n)
			if !ok {
				return Reading{}, false
			}
			rd.Prev = p[from:to:to]
		default:
			if nUnknown == len(unknown) || slices.Contains(unknown[:nUnknown], key) || !r.skip(0) {
				return Reading{}, false
			}
			unknown[nUnknown] = key
			nUnknown++
		}
	}
	if r.i != len(p) || !haveDev || !haveSeq || !haveTS || !haveM {
		return Reading{}, false
	}
	rd.Metrics = metrics
	return rd, true
}

// metrics reads the m map: valid names, finite numbers, no name twice; sorted by name.
func (r *cborReader) metrics(out []Metric) ([]Metric, bool) {
	n, ok := r.mapLen()
	if !ok || n == 0 {
		return nil, false
	}
	for range n {
		name, ok := r.text()
		if !ok || !validMetricName(name) {
			return nil, false
		}
		v, ok := r.number()
		if !ok {
			return nil, false
		}
		out = append(out, Metric{Name: name, Value: v})
	}
	slices.SortFunc(out, func(a, b Metric) int { return strings.Compare(a.Name, b.Name) })
	for i := 1; i < len(out); i++ {
		if out[i].Name == out[i-1].Name {
			return nil, false
		}
	}
	return out, true
}

// tags reads the tags map of text to text, no key twice.
func (r *cborReader) tags() (map[string]string, bool) {
	n, ok := r.mapLen()
	if !ok {
		return nil, false
	}
	out := make(map[string]string, n)
	for range n {
		k, ok := r.text()
		if !ok {
			return nil, false
		}
		v, ok := r.text()
		if !ok {
			return nil, false
		}
		if _, dup := out[k]; dup {
			return nil, false
		}
		out[k] = v
	}
	return out, true
}
