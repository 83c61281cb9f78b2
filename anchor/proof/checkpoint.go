package proof

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cometbft/cometbft/types"
	tdproof "github.com/transparency-dev/merkle/proof"

	"github.com/anchorline/anchorline/anchor/merkle"
	"github.com/anchorline/anchorline/schemas/bundle"
)

// LogHead is a state of the ledger's log that a signed header commits: what a checkpoint
// holds once VerifyCheckpoint has checked it against a trust file.
type LogHead struct {
	ChainID string
	Height  int64 // of the header; the state is the one after block Height-1
	Time    time.Time
	LogSize uint64
	LogRoot merkle.Hash
	AppHash []byte // the header's
	// ValidatorsHash is the hash of the validator set that signed the header.
	ValidatorsHash []byte
}

// String says which header commits which log state, for evidence.
func (h LogHead) String() string {
	return fmt.Sprintf("header %d of %s (app hash %X, signed by validator set %X) commits log size %d, root %s",
		h.Height, h.ChainID, h.AppHash, h.ValidatorsHash, h.LogSize, h.LogRoot)
}

// BuildCheckpoint makes the checkpoint of the log state st that lb's header commits (st is
// the state after block lb.Height-1, ledger.Client.State(lb.Height-1).AppState()), with chain
// the light blocks that lead to lb from earlier validator sets (ledger.Client.LightChain;
// empty while the set never changed). It fails with ErrInconsistent if lb's app hash is not
// st's.
func BuildCheckpoint(chainID string, st merkle.AppState, lb *types.LightBlock, chain []*types.LightBlock) (*bundle.Checkpoint, error) {
	if lb == nil || lb.SignedHeader == nil || lb.Header == nil || lb.ValidatorSet == nil {
		return nil, fmt.Errorf("%w: no light block", ErrInconsistent)
	}
	want, err := st.AppHash()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInconsistent, err)
	}
	if !bytes.Equal(lb.Header.AppHash, want[:]) {
		return nil, fmt.Errorf("%w: the header at %d does not commit log size %d, root %s (app hash v%d)", ErrInconsistent, lb.Height, st.LogSize, st.LogRoot, max(st.Version, 1))
	}
	raw, err := encodeLightBlock(lb)
	if err != nil {
		return nil, err
	}
	c := &bundle.Checkpoint{Format: bundle.CheckpointFormat, ChainID: chainID, Height: lb.Height, LogSize: st.LogSize,
		LogRoot: bytes.Clone(st.LogRoot[:]), LightBlock: raw}
	if st.Version == merkle.AppHashV2 {
		c.AppHashVersion, c.StateRoot = bundle.AppHashV2, bytes.Clone(st.StateRoot[:])
	} else {
		c.RegistryRoot = bytes.Clone(st.RegistryRoot[:])
	}
	for i, l := range chain {
		if l == nil || l.SignedHeader == nil || l.ValidatorSet == nil || l.Height >= lb.Height || i > 0 && l.Height <= chain[i-1].Height {
			return nil, fmt.Errorf("%w: light chain block %d is missing or out of order", ErrInconsistent, i)
		}
		raw, err := encodeLightBlock(l)
		if err != nil {
			return nil, err
		}
		c.LightChain = append(c.LightChain, raw)
	}
	return c, nil
}

// VerifyCheckpoint checks a checkpoint offline against a trust file, step by step as Verify
// checks a bundle (schemas/proof.md, "Checkpoints"): its canonical encoding, the trust file,
// the header's app hash over the log size and root, the light chain if any, and the signed
// header. It returns the log head it proves, the report of every step it ran, and an error
// wrapping ErrVerify unless all of them hold (the head is then the zero value).
func VerifyCheckpoint(checkpointJSON, trustJSON []byte) (LogHead, Report, error) {
	v := &verifier{}
	var c *bundle.Checkpoint
	v.step("checkpoint", func() (string, error) {
		var err error
		if c, err = bundle.ParseCheckpoint(checkpointJSON); err != nil {
			return "", err
		}
		return fmt.Sprintf("%s, canonical encoding (%d bytes)", c.Format, len(checkpointJSON)), nil
	})
	var trusted *types.ValidatorSet
	var t *bundle.Trust
	v.step("trust", func() (string, error) {
		var err error
		if t, err = bundle.ParseTrust(trustJSON); err != nil {
			return "", err
		}
		if trusted, err = parseValidators(t.Validators); err != nil {
			return "", err
		}
		at := ""
		if t.Height > 0 {
			at = fmt.Sprintf(" at height %d", t.Height)
		}
		return fmt.Sprintf("chain %s, %d validators, set %X%s", t.ChainID, trusted.Size(), trusted.Hash(), at), nil
	})
	var lb *types.LightBlock
	var logRoot merkle.Hash
	v.step("app hash", func() (string, error) {
		var err error
		if logRoot, err = hash(c.LogRoot, "log_root"); err != nil {
			return "", err
		}
		if lb, err = parseLightBlock(c.LightBlock); err != nil {
			return "", err
		}
		want, what, err := checkpointAppHash(c, logRoot)
		if err != nil {
			return "", err
		}
		if !bytes.Equal(lb.Header.AppHash, want[:]) {
			return "", fmt.Errorf("header app hash %X, log size %d, log root and %s give %X", lb.Header.AppHash, c.LogSize, what, want[:])
		}
		return fmt.Sprintf("%X at height %d commits log size %d, log root %s and %s", want[:], lb.Height, c.LogSize, short(logRoot[:]), what), nil
	})
	if v.err != nil {
		return LogHead{}, v.r, v.err
	}
	lc := &lightChain{chainID: t.ChainID, trusted: trusted, trustHeight: t.Height}
	v.followChain(lc, c.LightChain, lb)
	v.step("signed header", func() (string, error) {
		if lb.ChainID != t.ChainID || c.ChainID != t.ChainID {
			return "", fmt.Errorf("chain %q (header) / %q (checkpoint), the trust file is for %q", lb.ChainID, c.ChainID, t.ChainID)
		}
		if lb.Height != c.Height {
			return "", fmt.Errorf("header height %d, the checkpoint says %d", lb.Height, c.Height)
		}
		hops := len(lc.blocks)
		d, err := lc.hop(hops - 1)
		if err != nil {
			return "", err
		}
		if hops == 1 {
			return fmt.Sprintf("block %d of %s committed by the trusted validators (%d signatures)", lb.Height, t.ChainID, len(lb.Commit.Signatures)), nil
		}
		return fmt.Sprintf("hop %d of %d: %s %s (%d signatures)", hops, hops, t.ChainID, d, len(lb.Commit.Signatures)), nil
	})
	if v.err != nil {
		return LogHead{}, v.r, v.err
	}
	head := LogHead{ChainID: t.ChainID, Height: lb.Height, Time: lb.Time, LogSize: c.LogSize, LogRoot: logRoot,
		AppHash: bytes.Clone(lb.Header.AppHash), ValidatorsHash: bytes.Clone(lb.ValidatorsHash)}
	return head, v.r, nil
}

// checkpointAppHash is the app hash c's members give, and what they are, for the report.
func checkpointAppHash(c *bundle.Checkpoint, logRoot merkle.Hash) (merkle.Hash, string, error) {
	if c.V2() {
		stateRoot, err := hash(c.StateRoot, "state_root")
		if err != nil {
			return merkle.Hash{}, "", err
		}
		return merkle.AppHashV2Of(c.LogSize, logRoot, stateRoot), fmt.Sprintf("state root %s (app hash v2)", short(stateRoot[:])), nil
	}
	regRoot, err := hash(c.RegistryRoot, "registry_root")
	if err != nil {
		return merkle.Hash{}, "", err
	}
	return merkle.AppHash(c.LogSize, logRoot, regRoot), fmt.Sprintf("registry root %s", short(regRoot[:])), nil
}

// followChain parses the light chain (if any) into lc, appends lb, and checks every hop but
// the last (lb's, which the caller checks as its "signed header" step), one step each.
func (v *verifier) followChain(lc *lightChain, chain []json.RawMessage, lb *types.LightBlock) {
	if len(chain) > 0 {
		v.step("light chain", func() (string, error) {
			for i, raw := range chain {
				l, err := parseLightBlock(raw)
				if err != nil {
					return "", fmt.Errorf("light_chain[%d]: %w", i, err)
				}
				lc.blocks = append(lc.blocks, l)
			}
			first, last := lc.blocks[0].Height, lc.blocks[len(lc.blocks)-1].Height
			return fmt.Sprintf("%d light blocks, heights %d to %d, in canonical form", len(lc.blocks), first, last), nil
		})
	}
	if v.err != nil {
		return
	}
	lc.blocks = append(lc.blocks, lb)
	hops := len(lc.blocks)
	for i := range hops - 1 {
		v.step("light chain", func() (string, error) {
			d, err := lc.hop(i)
			return fmt.Sprintf("hop %d of %d: %s", i+1, hops, d), err
		})
	}
}

// ErrNotExtended means the ledger's log today does not extend a kept checkpoint: it shrank,
// or no consistency proof joins the two signed heads (the history was rewritten). The error
// is an *ExtensionError carrying the evidence.
var ErrNotExtended = errors.New("proof: the log does not extend the checkpoint")

// ExtensionError is the evidence that the log of head New does not extend the log of head
// Old, both heads verified against one trust file: the two signed heads, the consistency
// proof that was checked, and, when the proof was well formed but led to another root, which
// root it rebuilt.
type ExtensionError struct {
	Old, New LogHead
	Proof    []merkle.Hash
	Reason   string
	// At, Rebuilt and Signed: the proof rebuilds root Rebuilt for the log of size At, where
	// the signed head of that size commits Signed. Zero when the proof did not get that far.
	At              uint64
	Rebuilt, Signed []byte
	Err             error // the Merkle check's error, if any
}

func (e *ExtensionError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", ErrNotExtended, e.Reason, e.Err)
	}
	return fmt.Sprintf("%s: %s", ErrNotExtended, e.Reason)
}

// Unwrap makes errors.Is(err, ErrVerify) and errors.Is(err, ErrNotExtended) hold, and
// errors.Is(err, merkle.ErrProof) when the consistency proof did not verify.
func (e *ExtensionError) Unwrap() []error {
	errs := []error{ErrVerify, ErrNotExtended}
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	return errs
}

// Evidence is the finding in lines an auditor can keep and anyone with the trust file can
// check: the two signed heads, the proof, and what the proof rebuilt.
func (e *ExtensionError) Evidence() []string {
	lines := []string{
		"evidence: " + e.Reason,
		"  kept:  " + e.Old.String(),
		"  today: " + e.New.String(),
	}
	if e.Old.LogSize < e.New.LogSize {
		hs := make([]string, len(e.Proof))
		for i, h := range e.Proof {
			hs[i] = h.String()
		}
		lines = append(lines, fmt.Sprintf("  consistency proof %d→%d served by the ledger (%d hashes): [%s]", e.Old.LogSize, e.New.LogSize, len(e.Proof), strings.Join(hs, ", ")))
	}
	if e.Rebuilt != nil {
		lines = append(lines, fmt.Sprintf("  the proof rebuilds root %x for the log of size %d; the signed header commits %x", e.Rebuilt, e.At, e.Signed))
	}
	if e.Err != nil && e.Rebuilt == nil {
		lines = append(lines, "  check: "+e.Err.Error())
	}
	return lines
}

// VerifyExtends checks that the log of head newer extends the log of head old (the log only
// grew): proof is the consistency proof from old.LogSize to newer.LogSize (ledger.Client
// Consistency). Both heads must have been verified against the same trust file
// (VerifyCheckpoint). It returns the step for the report and, on failure, an *ExtensionError
// with the evidence: the log shrank, two heads commit different roots for one size, or the
// proof does not join the two roots.
func VerifyExtends(old, newer LogHead, proof []merkle.Hash) (Step, error) {
	fail := func(e *ExtensionError) (Step, error) {
		e.Old, e.New, e.Proof = old, newer, proof
		return Step{Name: "consistency", Detail: e.Reason}, e
	}
	switch {
	case old.ChainID != newer.ChainID:
		return fail(&ExtensionError{Reason: fmt.Sprintf("the checkpoint is of chain %q, the ledger is %q", old.ChainID, newer.ChainID)})
	case newer.LogSize < old.LogSize:
		return fail(&ExtensionError{Reason: fmt.Sprintf("the log shrank: %d entries at header %d, %d at header %d", old.LogSize, old.Height, newer.LogSize, newer.Height)})
	case newer.LogSize == old.LogSize && newer.LogRoot != old.LogRoot:
		return fail(&ExtensionError{Reason: fmt.Sprintf("headers %d and %d commit different roots for the same log size %d", old.Height, newer.Height, old.LogSize),
			At: old.LogSize, Rebuilt: bytes.Clone(newer.LogRoot[:]), Signed: bytes.Clone(old.LogRoot[:])})
	}
	if err := merkle.VerifyConsistency(old.LogSize, newer.LogSize, proof, old.LogRoot, newer.LogRoot); err != nil {
		e := &ExtensionError{Reason: fmt.Sprintf("the consistency proof from log size %d to %d does not verify", old.LogSize, newer.LogSize), Err: err}
		var mismatch tdproof.RootMismatchError
		if errors.As(err, &mismatch) {
			e.Rebuilt, e.Signed, e.At = bytes.Clone(mismatch.CalculatedRoot), bytes.Clone(mismatch.ExpectedRoot), newer.LogSize
			if bytes.Equal(mismatch.ExpectedRoot, old.LogRoot[:]) {
				e.At = old.LogSize
				e.Reason += fmt.Sprintf(": the ledger's first %d entries are not the checkpoint's", old.LogSize)
			}
			e.Err = fmt.Errorf("%w: rebuilt root %x, signed root %x", merkle.ErrProof, e.Rebuilt, e.Signed)
		}
		return fail(e)
	}
	return Step{Name: "consistency", OK: true, Detail: fmt.Sprintf("log size %d (root %s, header %d) extends to %d (root %s, header %d): proof of %d hashes verifies",
		old.LogSize, short(old.LogRoot[:]), old.Height, newer.LogSize, short(newer.LogRoot[:]), newer.Height, len(proof))}, nil
}
