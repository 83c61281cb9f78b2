package smt

import (
	"errors"
	"fmt"
)

var (
	// ErrBadProof: the proof does not show what was claimed for this root, key and value.
	// Distrust the claim; every error from Verify wraps it.
	ErrBadProof = errors.New("smt: proof does not verify")
	// ErrMalformedProof: the proof bytes do not decode. It wraps ErrBadProof.
	ErrMalformedProof = fmt.Errorf("%w: malformed proof", ErrBadProof)
	// ErrUnknownVersion: no root was committed at that version.
	ErrUnknownVersion = errors.New("smt: version not committed")
	// ErrVersionOrder: Commit was given a version not above the latest committed one.
	ErrVersionOrder = errors.New("smt: version must be above the latest committed version")
	// ErrCorrupt: the store lacks a node the tree refers to, or holds one that does not decode.
	// The store is damaged; stop and repair it.
	ErrCorrupt = errors.New("smt: store corrupt")
)

// RootMismatchError is returned by Verify when the proof is well formed but leads to another
// root. It carries the evidence and matches ErrBadProof.
type RootMismatchError struct {
	Key      Hash
	Want     Hash // the root given to Verify
	Computed Hash // the root the proof leads to
}

func (e *RootMismatchError) Error() string {
	return fmt.Sprintf("smt: proof for key %x leads to root %x, want %x", e.Key, e.Computed, e.Want)
}

// Is makes errors.Is(err, ErrBadProof) true.
func (e *RootMismatchError) Is(target error) bool { return target == ErrBadProof }
