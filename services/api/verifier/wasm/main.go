//go:build js && wasm

package main

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"syscall/js"

	"github.com/anchorline/anchorline/anchor/proof"
)

// main sets globalThis.anchorline = {verify, sha256} and then serves calls for as long as the
// page lives.
//
// verify(bundle, trust) takes each file as a Uint8Array of its exact bytes (or a string, taken
// as UTF-8) and returns {ok, steps: [{name, ok, detail}], lines, range, error}: the report of
// proof.Verify, of proof.VerifyRange for a range bundle (range true) or of proof.VerifyEvent
// for an event bundle (event true), its steps, and lines,
// exactly what `anchorline verify` prints of it (for a range, the completeness lines too); ok
// is true only if every step held. sha256(bytes)
// returns the lower-case hex SHA-256 of a Uint8Array or string, for pages served where the
// browser's crypto.subtle is not available (plain http to another host).
func main() {
	verify := js.FuncOf(func(_ js.Value, args []js.Value) any {
		if len(args) != 2 {
			return result(proof.Report{}, fmt.Errorf("anchorline.verify takes 2 arguments (the bundle, the trust file), got %d", len(args)))
		}
		b, err := bytesOf(args[0], "bundle")
		if err != nil {
			return result(proof.Report{}, err)
		}
		t, err := bytesOf(args[1], "trust file")
		if err != nil {
			return result(proof.Report{}, err)
		}
		if proof.IsEvent(b) {
			r, err := proof.VerifyEvent(b, t)
			out := result(proof.Report{Steps: r.Steps}, err)
			out["lines"] = printed(r.Print)
			out["event"] = true
			return out
		}
		if proof.IsRange(b) {
			r, err := proof.VerifyRange(b, t)
			out := result(proof.Report{Steps: r.Steps}, err)
			out["lines"] = printed(r.Print)
			out["range"] = true
			return out
		}
		r, err := proof.Verify(b, t)
		out := result(r, err)
		out["lines"] = printed(r.Print)
		return out
	})
	sum := js.FuncOf(func(_ js.Value, args []js.Value) any {
		if len(args) != 1 {
			return js.Null()
		}
		b, err := bytesOf(args[0], "input")
		if err != nil {
			return js.Null()
		}
		h := sha256.Sum256(b)
		return hex.EncodeToString(h[:])
	})
	js.Global().Set("anchorline", js.ValueOf(map[string]any{"verify": verify, "sha256": sum}))
	select {}
}

// bytesOf copies a Uint8Array's bytes, or a string's UTF-8.
func bytesOf(v js.Value, what string) ([]byte, error) {
	switch {
	case v.Type() == js.TypeString:
		return []byte(v.String()), nil
	case v.InstanceOf(js.Global().Get("Uint8Array")):
		b := make([]byte, v.Get("length").Int())
		js.CopyBytesToGo(b, v)
		return b, nil
	}
	return nil, errors.New("the " + what + " is neither a Uint8Array nor a string")
}

// printed is what print writes (a report's Print: the lines `anchorline verify` prints), a line
// each.
func printed(print func(io.Writer)) []any {
	var b strings.Builder
	print(&b)
	var out []any
	for l := range strings.SplitSeq(strings.TrimSuffix(b.String(), "\n"), "\n") {
		if l != "" {
			out = append(out, l)
		}
	}
	return out
}

// result is a report as a JavaScript object.
func result(r proof.Report, err error) map[string]any {
	steps := make([]any, len(r.Steps))
	ok := err == nil && len(r.Steps) > 0
	for i, s := range r.Steps {
		steps[i] = map[string]any{"name": s.Name, "ok": s.OK, "detail": s.Detail}
		ok = ok && s.OK
	}
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	return map[string]any{"ok": ok, "steps": steps, "error": msg}
}
