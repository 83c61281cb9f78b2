package rule

import (
	"cmp"
	"slices"

	"github.com/google/cel-go/cel"
	celast "github.com/google/cel-go/common/ast"
	"github.com/google/cel-go/common/operators"
	"github.com/google/cel-go/common/types"
)

// The common conditions (comparisons of a metric, a window aggregate, seq, ts, size, a tag or
// the device with a constant, joined by &&, || and !, and has() of a metric or tag) are
// evaluated natively, without CEL's interpreter and the maps it reads: the same decision at a
// fraction of the cost. Their results are CEL's, error cases included (TestNativeIsCEL holds
// them to it on random inputs); anything else is evaluated by CEL.

// tri is a condition's value: CEL's false, true or error. && and || absorb errors as CEL's
// commutative operators do; an error at the top counts as false (eval).
type tri uint8

const (
	triFalse tri = iota
	triTrue
	triErr
)

func triOf(b bool) tri {
	if b {
		return triTrue
	}
	return triFalse
}

// condition is a natively evaluated condition.
type condition func(s *Sample, a *Aggregates) tri

// nativeOf is ast's native form, or nil when it has a part the native form does not cover.
func nativeOf(ast *cel.Ast) condition {
	return native(ast.NativeRep().Expr())
}

func native(e celast.Expr) condition {
	switch e.Kind() {
	case celast.LiteralKind:
		if b, ok := e.AsLiteral().(types.Bool); ok {
			v := triOf(bool(b))
			return func(*Sample, *Aggregates) tri { return v }
		}
	case celast.SelectKind:
		return nativeHas(e.AsSelect())
	case celast.CallKind:
		call := e.AsCall()
		if call.IsMemberFunction() {
			return nil
		}
		args := call.Args()
		switch fn := call.FunctionName(); fn {
		case operators.LogicalAnd, operators.LogicalOr:
			if len(args) != 2 {
				return nil
			}
			x, y := native(args[0]), native(args[1])
			if x == nil || y == nil {
				return nil
			}
			if fn == operators.LogicalAnd {
				return func(s *Sample, a *Aggregates) tri {
					l := x(s, a)
					if l == triFalse {
						return triFalse
					}
					r := y(s, a)
					if r == triFalse {
						return triFalse
					}
					return max(l, r) // true and true: true; an error otherwise
				}
			}
			return func(s *Sample, a *Aggregates) tri {
				l := x(s, a)
				if l == triTrue {
					return triTrue
				}
				r := y(s, a)
				if r == triTrue {
					return triTrue
				}
				return max(l, r) // false or false: false; an error otherwise
			}
		case operators.LogicalNot:
			if len(args) != 1 {
				return nil
			}
			x := native(args[0])
			if x == nil {
				return nil
			}
			return func(s *Sample, a *Aggregates) tri {
				switch x(s, a) {
				case triFalse:
					return triTrue
				case triTrue:
					return triFalse
				}
				return triErr
			}
		case operators.Less, operators.LessEquals, operators.Greater, operators.GreaterEquals, operators.Equals, operators.NotEquals:
			if len(args) == 2 {
				return nativeCompare(fn, args[0], args[1])
			}
		}
	}
	return nil
}

// nativeHas is has(metrics.X) or has(tags.X).
func nativeHas(sel celast.SelectExpr) condition {
	if !sel.IsTestOnly() || sel.Operand().Kind() != celast.IdentKind {
		return nil
	}
	name := sel.FieldName()
	switch sel.Operand().AsIdent() {
	case varMetrics:
		return func(s *Sample, _ *Aggregates) tri {
			_, ok := s.metric(name)
			return triOf(ok)
		}
	case varTags:
		return func(s *Sample, _ *Aggregates) tri {
			_, ok := s.Tags[name]
			return triOf(ok)
		}
	}
	return nil
}

// num is a number of one of CEL's kinds.
type num struct {
	d float64 // a double
	i int64   // an int
	u uint64  // a uint
}

// operand reads a number of a reading; ok false is CEL's error (no such key).
type operand func(s *Sample, a *Aggregates) (num, bool)

// strOperand reads a string of a reading.
type strOperand func(s *Sample) (string, bool)

// flip is the operator with its operands swapped: c < x is x > c.
func flip(op string) string {
	switch op {
	case operators.Less:
		return operators.Greater
	case operators.LessEquals:
		return operators.GreaterEquals
	case operators.Greater:
		return operators.Less
	case operators.GreaterEquals:
		return operators.LessEquals
	}
	return op
}

func nativeCompare(op string, x, y celast.Expr) condition {
	if x.Kind() == celast.LiteralKind && y.Kind() != celast.LiteralKind {
		x, y, op = y, x, flip(op)
	}
	if y.Kind() != celast.LiteralKind {
		return nil
	}
	lit := y.AsLiteral()
	if str, ok := lit.(types.String); ok {
		get := stringOperand(x)
		if get == nil || op != operators.Equals && op != operators.NotEquals {
			return nil
		}
		want, eq := string(str), op == operators.Equals
		return func(s *Sample, _ *Aggregates) tri {
			v, ok := get(s)
			if !ok {
				return triErr
			}
			return triOf((v == want) == eq)
		}
	}
	// The checker admits comparisons of like types only (no cross-type numeric comparisons
	// in Format's environment): a double with a double, an int with an int, a uint with a uint.
	get, kind := numOperand(x) // 'd', 'i' or 'u'
	if get == nil {
		return nil
	}
	switch v := lit.(type) {
	case types.Double:
		if kind == 'd' {
			return doubleCompare(op, get, float64(v))
		}
	case types.Int:
		if kind == 'i' {
			return intCompare(op, get, 'i', num{i: int64(v)})
		}
	case types.Uint:
		if kind == 'u' {
			return intCompare(op, get, 'u', num{u: uint64(v)})
		}
	}
	return nil
}

// intCompare is get op c for an int or a uint.
func intCompare(op string, get operand, kind byte, c num) condition {
	test := outcome(op)
	return func(s *Sample, a *Aggregates) tri {
		v, ok := get(s, a)
		if !ok {
			return triErr
		}
		if kind == 'i' {
			return triOf(test(cmp.Compare(v.i, c.i)))
		}
		return triOf(test(cmp.Compare(v.u, c.u)))
	}
}

// doubleCompare is get op k, one closure per operator.
func doubleCompare(op string, get operand, k float64) condition {
	read := func(s *Sample, a *Aggregates) (float64, bool) {
		v, ok := get(s, a)
		return v.d, ok
	}
	var test func(float64) bool
	switch op {
	case operators.Less:
		test = func(d float64) bool { return d < k }
	case operators.LessEquals:
		test = func(d float64) bool { return d <= k }
	case operators.Greater:
		test = func(d float64) bool { return d > k }
	case operators.GreaterEquals:
		test = func(d float64) bool { return d >= k }
	case operators.Equals:
		test = func(d float64) bool { return d == k }
	default:
		test = func(d float64) bool { return d != k }
	}
	return func(s *Sample, a *Aggregates) tri {
		d, ok := read(s, a)
		if !ok {
			return triErr
		}
		return triOf(test(d))
	}
}

// outcome is what op makes of a comparison's sign.
func outcome(op string) func(int) bool {
	switch op {
	case operators.Less:
		return func(c int) bool { return c < 0 }
	case operators.LessEquals:
		return func(c int) bool { return c <= 0 }
	case operators.Greater:
		return func(c int) bool { return c > 0 }
	case operators.GreaterEquals:
		return func(c int) bool { return c >= 0 }
	case operators.Equals:
		return func(c int) bool { return c == 0 }
	}
	return func(c int) bool { return c != 0 }
}

// numOperand is the number x reads (metrics.X, window.AGG.X, seq, ts, size), and its kind;
// nil when x is none of these.
func numOperand(x celast.Expr) (operand, byte) {
	switch x.Kind() {
	case celast.IdentKind:
		switch x.AsIdent() {
		case varSeq:
			return func(s *Sample, _ *Aggregates) (num, bool) { return num{u: s.Seq}, true }, 'u'
		case varTS:
			return func(s *Sample, _ *Aggregates) (num, bool) { return num{i: int64(s.TS)}, true }, 'i'
		case varSize:
			return func(_ *Sample, a *Aggregates) (num, bool) { return num{i: int64(a.Size)}, true }, 'i'
		}
		return nil, 0
	}
	base, key, ok := keyOf(x)
	if !ok {
		return nil, 0
	}
	if base.Kind() == celast.IdentKind && base.AsIdent() == varMetrics {
		return func(s *Sample, _ *Aggregates) (num, bool) {
			v, ok := s.metric(key)
			return num{d: v}, ok
		}, 'd'
	}
	outer, agg, ok := keyOf(base)
	if !ok || outer.Kind() != celast.IdentKind || outer.AsIdent() != varWindow {
		return nil, 0
	}
	i := slices.Index(aggNames[:], agg)
	if i < 0 {
		// No such aggregate: CEL's no-such-key error, whatever the reading.
		return func(*Sample, *Aggregates) (num, bool) { return num{}, false }, 'd'
	}
	return func(_ *Sample, a *Aggregates) (num, bool) {
		a.compute()
		for j := range a.accs {
			if a.accs[j].name == key {
				return num{d: a.accs[j].of(i)}, true
			}
		}
		return num{}, false
	}, 'd'
}

// stringOperand is the string x reads (tags.X, device); nil when x is neither.
func stringOperand(x celast.Expr) strOperand {
	if x.Kind() == celast.IdentKind && x.AsIdent() == varDevice {
		return func(s *Sample) (string, bool) { return s.Device, true }
	}
	base, key, ok := keyOf(x)
	if !ok || base.Kind() != celast.IdentKind || base.AsIdent() != varTags {
		return nil
	}
	return func(s *Sample) (string, bool) {
		v, ok := s.Tags[key]
		return v, ok
	}
}

// keyOf splits m.key and m["key"] into m and key.
func keyOf(x celast.Expr) (celast.Expr, string, bool) {
	switch x.Kind() {
	case celast.SelectKind:
		sel := x.AsSelect()
		if sel.IsTestOnly() {
			return nil, "", false
		}
		return sel.Operand(), sel.FieldName(), true
	case celast.CallKind:
		call := x.AsCall()
		if call.FunctionName() != operators.Index || call.IsMemberFunction() || len(call.Args()) != 2 {
			return nil, "", false
		}
		k := call.Args()[1]
		if k.Kind() != celast.LiteralKind {
			return nil, "", false
		}
		str, ok := k.AsLiteral().(types.String)
		return call.Args()[0], string(str), ok
	}
	return nil, "", false
}

// metric is the value of the reading's metric name (the last, if a name repeats, as the CEL
// map of metricsValue keeps it).
func (s *Sample) metric(name string) (float64, bool) {
	for i := len(s.Metrics) - 1; i >= 0; i-- {
		if s.Metrics[i].Name == name {
			return s.Metrics[i].Value, true
		}
	}
	return 0, false
}
