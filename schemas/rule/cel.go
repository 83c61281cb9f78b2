package rule

import (
	"fmt"
	"strings"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/interpreter"
)

// The variables of a condition (Format anchorline.rule/v1):
//
//	device   string                        the reading's device id
//	seq      uint                          its seq
//	ts       int                           its device time, Unix ms
//	metrics  map(string, double)           its metrics
//	tags     map(string, string)           its tags (empty map when it has none)
//	window   map(string, map(string, double))
//	         window.<agg>.<metric>: agg one of count, min, max, sum, avg, rate over the
//	         readings of the rule's window that carry the metric (rate: change per second of
//	         device time from the first to the last of them, 0 for one reading)
//	size     int                           readings in the window, the current one included
const (
	varDevice  = "device"
	varSeq     = "seq"
	varTS      = "ts"
	varMetrics = "metrics"
	varTags    = "tags"
	varWindow  = "window"
	varSize    = "size"
)

// env is the CEL environment of Format.
func env() (*cel.Env, error) {
	return cel.NewEnv(
		cel.Variable(varDevice, cel.StringType),
		cel.Variable(varSeq, cel.UintType),
		cel.Variable(varTS, cel.IntType),
		cel.Variable(varMetrics, cel.MapType(cel.StringType, cel.DoubleType)),
		cel.Variable(varTags, cel.MapType(cel.StringType, cel.StringType)),
		cel.Variable(varWindow, cel.MapType(cel.StringType, cel.MapType(cel.StringType, cel.DoubleType))),
		cel.Variable(varSize, cel.IntType),
	)
}

// CompileError is a condition that does not compile, with where.
type CompileError struct {
	Field  string // "when" or "clear"
	Line   int    // 1-based
	Column int    // 1-based
	Msg    string
}

func (e *CompileError) Error() string {
	return fmt.Sprintf("%s: line %d, column %d: %s", e.Field, e.Line, e.Column, e.Msg)
}

func (e *CompileError) Unwrap() error { return ErrInvalid }

// Compiled is a validated rule with its conditions compiled: what the rules stage and the
// verifier evaluate. It is safe for concurrent use.
type Compiled struct {
	Rule  Rule
	when  cel.Program
	clear cel.Program // nil: !when
	// The conditions' native forms (native.go), nil where CEL evaluates them.
	whenN, clearN condition
	// none is the aggregates of rules that read neither window nor size: never read.
	none *Aggregates
	// window reports whether a condition reads window or size, so that the stage computes the
	// aggregates only for rules that use them.
	window bool
	aggs   aggMask // the window aggregates the conditions read
}

// Compile validates r and compiles its conditions. A condition that does not compile, or is
// not a bool, is an error wrapping ErrInvalid that says where (a *CompileError).
func Compile(r Rule) (*Compiled, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	c := &Compiled{Rule: r, none: &Aggregates{Size: 1}}
	if r.Absence() {
		return c, nil
	}
	e, err := env()
	if err != nil {
		return nil, fmt.Errorf("rule: CEL environment: %w", err)
	}
	if c.when, c.whenN, err = program(e, "when", r.When); err != nil {
		return nil, err
	}
	if r.Clear != "" {
		if c.clear, c.clearN, err = program(e, "clear", r.Clear); err != nil {
			return nil, err
		}
	}
	c.aggs = maskOf(r.When, r.Clear)
	c.window = strings.Contains(r.When, varWindow) || strings.Contains(r.Clear, varWindow) ||
		strings.Contains(r.When, varSize) || strings.Contains(r.Clear, varSize)
	return c, nil
}

// program compiles a condition, and its native form if it has one.
func program(e *cel.Env, field, src string) (cel.Program, condition, error) {
	ast, iss := e.Compile(src)
	if iss != nil && iss.Err() != nil {
		errs := iss.Errors()
		if len(errs) == 0 {
			return nil, nil, fmt.Errorf("%w: %s: %w", ErrInvalid, field, iss.Err())
		}
		first := errs[0]
		return nil, nil, &CompileError{Field: field, Line: first.Location.Line(), Column: first.Location.Column() + 1, Msg: first.Message}
	}
	if ast.OutputType() != cel.BoolType {
		return nil, nil, &CompileError{Field: field, Line: 1, Column: 1, Msg: fmt.Sprintf("the condition is of type %s, want bool", ast.OutputType())}
	}
	// No runtime cost tracking: it doubles an evaluation's time, and what a condition can
	// iterate is bounded already (its length, MaxExprLen; a reading's metrics and tags, which
	// ingest limits; a window's aggregates, one map per metric).
	p, err := e.Program(ast)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %s: %w", ErrInvalid, field, err)
	}
	return p, nativeOf(ast), nil
}

// activation binds the variables of one evaluation without a map.
type activation struct {
	s   *Sample
	agg *Aggregates
}

func (a *activation) ResolveName(name string) (any, bool) {
	switch name {
	case varDevice:
		return a.s.Device, true
	case varSeq:
		return a.s.Seq, true
	case varTS:
		return int64(a.s.TS), true
	case varMetrics:
		return a.s.metricsValue(), true
	case varTags:
		return a.s.tagsValue(), true
	case varWindow:
		return a.agg.value(), true
	case varSize:
		return int64(a.agg.Size), true
	}
	return nil, false
}

func (a *activation) Parent() interpreter.Activation { return nil }

// eval runs p; an evaluation error (a metric the reading does not carry, a cost above the
// limit) counts as false, here and in every verifier, so the decision stays deterministic.
func eval(p cel.Program, n condition, s *Sample, agg *Aggregates) bool {
	if n != nil {
		return n(s, agg) == triTrue
	}
	out, _, err := p.Eval(&activation{s: s, agg: agg})
	if err != nil {
		return false
	}
	b, ok := out.(types.Bool)
	return ok && bool(b)
}
