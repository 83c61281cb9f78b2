package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"github.com/anchorline/anchorline/anchor/proof"
	"github.com/anchorline/anchorline/schemas/bundle"
	"github.com/anchorline/anchorline/schemas/reading"
)

// The files commands read. Each reader checks its file before the command asks anything of a
// server, and says in one line what is wrong with it, as bad input (exit status 2).

// deviceIDRule is the form of a device id (reading.ValidDeviceID), for messages.
const deviceIDRule = "^[A-Za-z0-9_-]{1,64}$"

// maxInputFile bounds what a command reads of a file: a proof bundle is a few kB.
const maxInputFile = 16 << 20

// maxRangeFile is the largest range bundle read: stack.MaxRangeReadings readings of up to 8 KiB
// (hex, twice that) would not fit, but readings are a few hundred bytes.
const maxRangeFile = 512 << 20

// fileKind names a kind of file in messages.
type fileKind string

const (
	kindBundle     fileKind = "proof bundle"
	kindRange      fileKind = "range bundle"
	kindEvent      fileKind = "event bundle"
	kindCheckpoint fileKind = "checkpoint"
	kindTrust      fileKind = "trust file"
	kindKey        fileKind = "key file"
	kindState      fileKind = "state file"
	kindUnknown    fileKind = ""
)

// badFile is the bad-input error for a file of kind at path that is wrong as reason says.
func badFile(kind fileKind, path, reason string) error {
	return badInput(fmt.Errorf("%s %s: %s", kind, path, reason))
}

// readInput reads the file of kind at path: it must exist, be a file, be readable and not
// empty.
func readInput(kind fileKind, path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, badFile(kind, path, describeOpen(err))
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, badFile(kind, path, describeOpen(err))
	}
	if st.IsDir() {
		return nil, badFile(kind, path, "is a directory, not a file")
	}
	limit := int64(maxInputFile)
	if kind == kindBundle { // or a range bundle: up to MaxRangeReadings readings
		limit = maxRangeFile
	}
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	switch {
	case err != nil:
		return nil, badFile(kind, path, describeOpen(err))
	case int64(len(b)) > limit:
		return nil, badFile(kind, path, fmt.Sprintf("is larger than %d MiB; not a %s", limit>>20, kind))
	case len(bytes.TrimSpace(b)) == 0:
		return nil, badFile(kind, path, "is empty")
	}
	return b, nil
}

func describeOpen(err error) string {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "no such file"
	case errors.Is(err, fs.ErrPermission):
		return "permission denied"
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// kindOf tells which of our files b is, by its fields, so that a file given in the wrong
// place is named for what it is.
func kindOf(b []byte) fileKind {
	var fields map[string]json.RawMessage
	if json.Unmarshal(b, &fields) != nil {
		return kindUnknown
	}
	var format string
	_ = json.Unmarshal(fields["format"], &format)
	switch {
	case format == bundle.Format:
		return kindBundle
	case format == bundle.RangeFormat:
		return kindRange
	case format == bundle.EventFormat:
		return kindEvent
	case format == bundle.CheckpointFormat:
		return kindCheckpoint
	case format == bundle.TrustFormat:
		return kindTrust
	case fields["private_key"] != nil:
		return kindKey
	case fields["seq"] != nil && fields["prev"] != nil && len(fields) == 2:
		return kindState
	}
	return kindUnknown
}

// notA is the reason a file of another kind is not of kind want, or "" if it may be one.
func notA(b []byte, want fileKind) string {
	if got := kindOf(b); got != kindUnknown && got != want {
		return fmt.Sprintf("is a %s, not a %s", got, want)
	}
	return ""
}

// describeJSON says what is wrong with a file that did not decode, without the layers of
// prefixes its decoders add.
func describeJSON(b []byte, err error) string {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.As(err, &syntax) && syntax.Error() == "unexpected end of JSON input":
		return fmt.Sprintf("truncated: the JSON ends after %d bytes, inside the object", len(b))
	case errors.As(err, &syntax):
		return fmt.Sprintf("not JSON (%s, at byte %d)", syntax, syntax.Offset)
	case errors.As(err, &typ) && typ.Field != "":
		return fmt.Sprintf("field %s is a JSON %s, want %s", typ.Field, typ.Value, typ.Type)
	case errors.As(err, &typ):
		return fmt.Sprintf("is a JSON %s, want an object", typ.Value)
	}
	msg := err.Error()
	for _, prefix := range []string{bundle.ErrFormat.Error() + ": ", reading.ErrBadKey.Error() + ": ", "json: ", "trust file "} {
		msg = strings.TrimPrefix(msg, prefix)
	}
	return msg
}

// readBundleFile reads a proof bundle (or a range bundle) and checks that it is one. A bundle that is well formed
// but not in canonical encoding is left to proof.Verify: that is a verification step.
func readBundleFile(path string) ([]byte, error) {
	b, err := readInput(kindBundle, path)
	if err != nil {
		return nil, err
	}
	switch kindOf(b) {
	case kindRange:
		if _, err := bundle.ParseRange(b); err != nil && !errors.Is(err, bundle.ErrNotCanonical) {
			return nil, badFile(kindRange, path, describeJSON(b, err))
		}
		return b, nil
	case kindEvent:
		if _, err := bundle.ParseEvent(b); err != nil && !errors.Is(err, bundle.ErrNotCanonical) {
			return nil, badFile(kindEvent, path, describeJSON(b, err))
		}
		return b, nil
	}
	if reason := notA(b, kindBundle); reason != "" {
		return nil, badFile(kindBundle, path, reason)
	}
	if _, err := bundle.Parse(b); err != nil && !errors.Is(err, bundle.ErrNotCanonical) {
		return nil, badFile(kindBundle, path, describeJSON(b, err))
	}
	return b, nil
}

// readOptionalTrust is readTrustFile of path, or nil without an error if path is empty (a
// command's --trust left out).
func readOptionalTrust(path string) ([]byte, error) {
	if path == "" {
		return nil, nil
	}
	return readTrustFile(path)
}

// readTrustFile reads a trust file and checks that verification can use it.
func readTrustFile(path string) ([]byte, error) {
	b, err := readInput(kindTrust, path)
	if err != nil {
		return nil, err
	}
	if reason := notA(b, kindTrust); reason != "" {
		return nil, badFile(kindTrust, path, reason)
	}
	if err := proof.CheckTrust(b); err != nil {
		return nil, badFile(kindTrust, path, describeJSON(b, err))
	}
	return b, nil
}

// readKeyFile reads a device key file (from `device keygen`) and checks it: its id, algorithm,
// and a private key that matches its public key.
func readKeyFile(path string) (reading.KeyFile, reading.PrivateKey, error) {
	b, err := readInput(kindKey, path)
	if err != nil {
		return reading.KeyFile{}, reading.PrivateKey{}, err
	}
	bad := func(reason string) (reading.KeyFile, reading.PrivateKey, error) {
		return reading.KeyFile{}, reading.PrivateKey{}, badFile(kindKey, path, reason)
	}
	if reason := notA(b, kindKey); reason != "" {
		return bad(reason)
	}
	var f reading.KeyFile
	if err := json.Unmarshal(b, &f); err != nil {
		return bad(describeJSON(b, err))
	}
	_, algErr := reading.ParseAlg(string(f.Alg))
	switch {
	case f.ID == "":
		return bad("no id (the device id)")
	case !reading.ValidDeviceID(f.ID):
		return bad(fmt.Sprintf("id %q must match %s", f.ID, deviceIDRule))
	case algErr != nil:
		return bad(fmt.Sprintf("alg %q: want ed25519 or es256", f.Alg))
	case f.PrivateKey == "":
		return bad("no private_key")
	}
	k, err := f.Key()
	if err != nil {
		return bad(describeJSON(b, err))
	}
	return f, k, nil
}
