package proof

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"

	cmted25519 "github.com/cometbft/cometbft/crypto/ed25519"
	cmtjson "github.com/cometbft/cometbft/libs/json"
	"github.com/cometbft/cometbft/types"

	"github.com/anchorline/anchorline/anchor/merkle"
	"github.com/anchorline/anchorline/anchor/smt"
	"github.com/anchorline/anchorline/schemas/bundle"
	"github.com/anchorline/anchorline/schemas/entry"
	"github.com/anchorline/anchorline/schemas/reading"
)

// ErrVerify wraps every verification failure.
var ErrVerify = errors.New("proof: verification failed")

// Step is one verification step and its outcome.
type Step struct {
	Name   string
	OK     bool
	Detail string
}

// Report lists the steps verification went through; it stops at the first that fails.
type Report struct {
	Steps []Step
}

// Print writes one line per step.
func (r Report) Print(w io.Writer) {
	for _, s := range r.Steps {
		mark := "✓"
		if !s.OK {
			mark = "✗"
		}
		fmt.Fprintf(w, "%s %-18s %s\n", mark, s.Name, s.Detail)
	}
}

// verifier runs the steps, recording each.
type verifier struct {
	r   Report
	err error
}

// errSkip, returned by a step's function, leaves the step out of the report: it does not apply.
var errSkip = errors.New("step does not apply")

func (v *verifier) step(name string, f func() (string, error)) bool {
	if v.err != nil {
		return false
	}
	detail, err := f()
	if errors.Is(err, errSkip) {
		return true
	}
	if err != nil {
		v.r.Steps = append(v.r.Steps, Step{Name: name, Detail: err.Error()})
		v.err = fmt.Errorf("%w: %s: %w", ErrVerify, name, err)
		return false
	}
	v.r.Steps = append(v.r.Steps, Step{Name: name, OK: true, Detail: detail})
	return true
}

func hash(h bundle.Hex, what string) (merkle.Hash, error) {
	if len(h) != merkle.Size {
		return merkle.Hash{}, fmt.Errorf("%s is %d bytes, want %d", what, len(h), merkle.Size)
	}
	return merkle.HashFromBytes(h)
}

func path(p []bundle.Hex, what string) ([]merkle.Hash, error) {
	out := make([]merkle.Hash, len(p))
	for i, h := range p {
		var err error
		if out[i], err = hash(h, fmt.Sprintf("%s[%d]", what, i)); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func short(b []byte) string {
	s := hex.EncodeToString(b)
	if len(s) > 16 {
		return s[:16] + "…"
	}
	return s
}

// Verify checks a proof bundle offline against a trust file. It returns the report of every
// step it ran and an error wrapping ErrVerify unless all of them hold.
func Verify(bundleJSON, trustJSON []byte) (Report, error) {
	v := &verifier{}
	var b *bundle.Bundle
	var trusted *types.ValidatorSet
	var chainID string
	var trustHeight int64
	v.step("bundle", func() (string, error) {
		var err error
		b, err = bundle.Parse(bundleJSON)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("%s, canonical encoding (%d bytes)", b.Format, len(bundleJSON)), nil
	})
	v.step("trust", func() (string, error) {
		t, err := bundle.ParseTrust(trustJSON)
		if err != nil {
			return "", err
		}
		if trusted, err = parseValidators(t.Validators); err != nil {
			return "", err
		}
		chainID, trustHeight = t.ChainID, t.Height
		at := ""
		if t.Height > 0 {
			at = fmt.Sprintf(" at height %d", t.Height)
		}
		return fmt.Sprintf("chain %s, %d validators, set %X%s", chainID, trusted.Size(), trusted.Hash(), at), nil
	})
	var msg *reading.Message
	var pub reading.PublicKey
	var readingLeaf merkle.Hash
	var erased *entry.Erase
	if b != nil && b.Erasure != nil {
		// An erased reading: its leaf stands for the bytes, and the erase entry that removed
		// them must be in the same log as the anchor entry and cover the reading.
		v.step("erased reading", func() (string, error) {
			var err error
			if readingLeaf, err = hash(b.Reading.Leaf, "reading.leaf"); err != nil {
				return "", err
			}
			if b.Device.ID != b.Reading.Device {
				return "", fmt.Errorf("device record is for %s, the reading is from %s", b.Device.ID, b.Reading.Device)
			}
			if erased, err = entry.EraseOf(b.Erasure.Entry); err != nil {
				return "", fmt.Errorf("erasure.entry: %w", err)
			}
			if !erased.Covers(b.Reading.Device, b.Reading.Seq, b.Reading.TS) {
				return "", fmt.Errorf("the erase entry (%s, %s %d..%d) does not cover %s seq %d (device time %d)", erased.Dev, erased.By, erased.From, erased.To, b.Reading.Device, b.Reading.Seq, b.Reading.TS)
			}
			logRoot, err := hash(b.Ledger.LogRoot, "ledger.log_root")
			if err != nil {
				return "", err
			}
			p, err := path(b.Erasure.LogPath, "erasure.log_path")
			if err != nil {
				return "", err
			}
			if err := merkle.VerifyInclusion(b.Erasure.LogIndex, b.Ledger.LogSize, merkle.EntryLeaf(b.Erasure.Entry), p, logRoot); err != nil {
				return "", fmt.Errorf("erasure: %w", err)
			}
			return fmt.Sprintf("%s seq %d: leaf %s; its bytes were erased under log entry %d of %d (%s %d..%d)", b.Reading.Device, b.Reading.Seq, short(readingLeaf[:]), b.Erasure.LogIndex, b.Ledger.LogSize, erased.By, erased.From, erased.To), nil
		})
	}
	v.step("reading signature", func() (string, error) {
		if erased != nil || (b != nil && b.Erasure != nil) {
			return "", errSkip // erased: nothing signed is left to check
		}
		var err error
		if msg, err = reading.Decode(b.Reading.Raw); err != nil {
			return "", err
		}
		if msg.Reading.Device != b.Reading.Device || msg.Reading.Seq != b.Reading.Seq {
			return "", fmt.Errorf("raw is %s seq %d, the bundle says %s seq %d", msg.Reading.Device, msg.Reading.Seq, b.Reading.Device, b.Reading.Seq)
		}
		if b.Device.ID != msg.Reading.Device {
			return "", fmt.Errorf("device record is for %s, the reading is from %s", b.Device.ID, msg.Reading.Device)
		}
		alg, err := reading.ParseAlg(b.Device.Alg)
		if err != nil {
			return "", err
		}
		if pub, err = reading.ParsePublicKey(alg, b.Device.PublicKey); err != nil {
			return "", err
		}
		if err := msg.Verify(pub); err != nil {
			return "", err
		}
		readingLeaf = merkle.ReadingLeaf(b.Reading.Raw)
		return fmt.Sprintf("%s seq %d, %s signature under key %s", msg.Reading.Device, msg.Reading.Seq, alg, short(pub.Key)), nil
	})
	var regRoot merkle.Hash
	v.step("device record", func() (string, error) {
		rec, err := entry.DecodeRecord(b.Device.Record)
		if err != nil {
			return "", err
		}
		if rec.Dev != b.Device.ID || string(rec.Alg) != b.Device.Alg || !bytes.Equal(rec.Key, b.Device.PublicKey) ||
			string(rec.Status) != b.Device.Status || rec.Height != b.Device.Height {
			return "", errors.New("the record's bytes do not say what the device fields say")
		}
		// An erased reading's bundle is of a state after its erasure, when the device may
		// have been revoked since: the record shows the device and key, nothing is signed.
		if rec.Status != entry.StatusActive && erased == nil {
			return "", fmt.Errorf("device %s is %s (since height %d)", rec.Dev, rec.Status, rec.Height)
		}
		if regRoot, err = hash(b.Ledger.RegistryRoot, "ledger.registry_root"); err != nil {
			return "", err
		}
		if b.V2() {
			n, err := verifyRegistrySMT(b.Device, regRoot)
			if err != nil {
				return "", err
			}
			return fmt.Sprintf("%s active since height %d, record in registry %s (sparse Merkle tree, %d siblings)", rec.Dev, rec.Height, short(regRoot[:]), n), nil
		}
		p, err := path(b.Device.RegistryPath, "device.registry_path")
		if err != nil {
			return "", err
		}
		if err := merkle.VerifyRegistry(b.Device.RegistryIndex, b.Device.RegistrySize, merkle.LeafHash(b.Device.Record), p, regRoot); err != nil {
			return "", err
		}
		return fmt.Sprintf("%s active since height %d, record %d of %d in registry %s", rec.Dev, rec.Height, b.Device.RegistryIndex, b.Device.RegistrySize, short(regRoot[:])), nil
	})
	var batchRoot merkle.Hash
	v.step("batch", func() (string, error) {
		var err error
		if batchRoot, err = hash(b.Batch.Root, "batch.root"); err != nil {
			return "", err
		}
		p, err := path(b.Batch.Path, "batch.path")
		if err != nil {
			return "", err
		}
		if len(b.Batch.ID) != 16 {
			return "", fmt.Errorf("batch.id is %d bytes, want 16", len(b.Batch.ID))
		}
		if err := merkle.VerifyInclusion(b.Batch.LeafIndex, b.Batch.Size, readingLeaf, p, batchRoot); err != nil {
			return "", err
		}
		return fmt.Sprintf("leaf %d of %d in batch %s, root %s", b.Batch.LeafIndex, b.Batch.Size, hex.EncodeToString(b.Batch.ID), short(batchRoot[:])), nil
	})
	var anchorRoot merkle.Hash
	v.step("anchor", func() (string, error) {
		var err error
		if anchorRoot, err = hash(b.Anchor.Root, "anchor.root"); err != nil {
			return "", err
		}
		p, err := path(b.Anchor.Path, "anchor.path")
		if err != nil {
			return "", err
		}
		var id [16]byte
		copy(id[:], b.Batch.ID)
		leaf := merkle.AnchorLeaf(id, b.Batch.Size, batchRoot)
		if err := merkle.VerifyInclusion(b.Anchor.BatchIndex, b.Anchor.Batches, leaf, p, anchorRoot); err != nil {
			return "", err
		}
		return fmt.Sprintf("batch %d of %d in anchor %s, root %s", b.Anchor.BatchIndex, b.Anchor.Batches, hex.EncodeToString(b.Anchor.ID), short(anchorRoot[:])), nil
	})
	v.step("anchor entry", func() (string, error) {
		e, err := entry.Decode(b.Ledger.Entry)
		if err != nil {
			return "", err
		}
		a := e.Anchor
		if a == nil {
			return "", fmt.Errorf("the ledger entry is a %s, not an anchor", e.Type)
		}
		if !bytes.Equal(a.ID, b.Anchor.ID) || !bytes.Equal(a.Root, anchorRoot[:]) || a.Batches != b.Anchor.Batches {
			return "", errors.New("the entry commits a different anchor id, root or batch count")
		}
		return fmt.Sprintf("anchor of %d batches, %d readings", a.Batches, a.Readings), nil
	})
	var logRoot merkle.Hash
	v.step("ledger log", func() (string, error) {
		var err error
		if logRoot, err = hash(b.Ledger.LogRoot, "ledger.log_root"); err != nil {
			return "", err
		}
		p, err := path(b.Ledger.LogPath, "ledger.log_path")
		if err != nil {
			return "", err
		}
		if err := merkle.VerifyInclusion(b.Ledger.LogIndex, b.Ledger.LogSize, merkle.EntryLeaf(b.Ledger.Entry), p, logRoot); err != nil {
			return "", err
		}
		return fmt.Sprintf("entry %d of %d in log %s", b.Ledger.LogIndex, b.Ledger.LogSize, short(logRoot[:])), nil
	})
	var lb *types.LightBlock
	v.step("app hash", func() (string, error) {
		var err error
		if lb, err = parseLightBlock(b.Ledger.LightBlock); err != nil {
			return "", err
		}
		st, err := appState(b, logRoot, regRoot)
		if err != nil {
			return "", err
		}
		want, err := st.AppHash()
		if err != nil {
			return "", err
		}
		if !bytes.Equal(lb.Header.AppHash, want[:]) {
			return "", fmt.Errorf("header app hash %X, the log and registry give %X", lb.Header.AppHash, want[:])
		}
		if st.Version == merkle.AppHashV2 {
			return fmt.Sprintf("%X at height %d commits log size, log root and state root %s (app hash v2; registry root is sub-root %d of %d)",
				want[:], lb.Height, short(st.StateRoot[:]), st.StateProof.Index+1, st.StateProof.Size), nil
		}
		return fmt.Sprintf("%X at height %d commits log size, log root and registry root", want[:], lb.Height), nil
	})
	if v.err != nil {
		return v.r, v.err
	}
	lc := &lightChain{chainID: chainID, trusted: trusted, trustHeight: trustHeight}
	v.followChain(lc, b.Ledger.LightChain, lb)
	hops := len(b.Ledger.LightChain) + 1
	v.step("signed header", func() (string, error) {
		if lb.ChainID != chainID || b.Ledger.ChainID != chainID {
			return "", fmt.Errorf("chain %q (header) / %q (bundle), the trust file is for %q", lb.ChainID, b.Ledger.ChainID, chainID)
		}
		if lb.Height != b.Ledger.Height {
			return "", fmt.Errorf("header height %d, the bundle says %d", lb.Height, b.Ledger.Height)
		}
		d, err := lc.hop(hops - 1)
		if err != nil {
			return "", err
		}
		if hops == 1 {
			return fmt.Sprintf("block %d of %s committed by the trusted validators (%d signatures)", lb.Height, chainID, len(lb.Commit.Signatures)), nil
		}
		return fmt.Sprintf("hop %d of %d: %s %s (%d signatures)", hops, hops, chainID, d, len(lb.Commit.Signatures)), nil
	})
	return v.r, v.err
}

// verifyRegistrySMT checks a v2 bundle's device record in the registry's sparse Merkle tree
// under root (key SHA-256(device id), value the record's leaf hash) and returns the number of
// siblings on its path.
func verifyRegistrySMT(d bundle.Device, root merkle.Hash) (int, error) {
	p, err := smt.DecodeProof(d.RegistryProof)
	if err != nil {
		return 0, fmt.Errorf("device.registry_proof: %w", err)
	}
	leaf := merkle.LeafHash(d.Record)
	if err := p.Verify(smt.Hash(root), smt.KeyOf(d.ID), leaf[:]); err != nil {
		return 0, fmt.Errorf("device.registry_proof: %w", err)
	}
	return len(p.Siblings), nil
}

// appState is the state a bundle says its header's app hash commits.
func appState(b *bundle.Bundle, logRoot, regRoot merkle.Hash) (merkle.AppState, error) {
	st := merkle.AppState{Version: merkle.AppHashV1, LogSize: b.Ledger.LogSize, LogRoot: logRoot, RegistryRoot: regRoot}
	if !b.V2() {
		return st, nil
	}
	st.Version = merkle.AppHashV2
	var err error
	if st.StateRoot, err = hash(b.Ledger.StateRoot, "ledger.state_root"); err != nil {
		return st, err
	}
	sp := b.Ledger.StateProof
	p, err := path(sp.Path, "ledger.state_proof.path")
	if err != nil {
		return st, err
	}
	st.StateProof = &merkle.StateProof{Name: sp.Name, Root: regRoot, Index: sp.Index, Size: sp.Size, Path: p}
	return st, nil
}

// VerifyHead checks that lb commits the ledger state st through its app hash (of st's version;
// under v2 st's registry sub-root proof is checked against its state root) and that lb is
// trusted from the trust file's validator set by following chain (light blocks older than lb,
// oldest first, as ledger.Client.LightChain returns them; empty while the set never changed)
// by the same rules as a bundle's light_chain. An auditor who holds the trust file can then
// trust any log entry that rebuilds st.LogRoot.
func VerifyHead(trustJSON []byte, chain []*types.LightBlock, lb *types.LightBlock, st merkle.AppState) error {
	t, err := bundle.ParseTrust(trustJSON)
	if err != nil {
		return err
	}
	trusted, err := parseValidators(t.Validators)
	if err != nil {
		return err
	}
	blocks := append(slices.Clone(chain), lb)
	for _, b := range blocks {
		if b == nil || b.SignedHeader == nil || b.Header == nil || b.Commit == nil || b.ValidatorSet == nil {
			return errors.New("light block: signed header, commit and validator set are required")
		}
	}
	lc := &lightChain{chainID: t.ChainID, trusted: trusted, trustHeight: t.Height, blocks: blocks}
	for i := range blocks {
		if _, err := lc.hop(i); err != nil {
			return fmt.Errorf("header %d: %w", blocks[i].Height, err)
		}
	}
	want, err := st.AppHash()
	if err != nil {
		return fmt.Errorf("ledger state after block %d: %w", lb.Height-1, err)
	}
	if !bytes.Equal(lb.Header.AppHash, want[:]) {
		return fmt.Errorf("header %d app hash %X, the ledger's state gives %X (app hash v%d)", lb.Height, lb.Header.AppHash, want[:], max(st.Version, 1))
	}
	return nil
}

// CheckTrust checks that trustJSON is a trust file Verify and VerifyHead can use: the format,
// a chain id and a well-formed validator set. A command calls it to refuse a bad trust file
// before it asks anything of a ledger.
func CheckTrust(trustJSON []byte) error {
	t, err := bundle.ParseTrust(trustJSON)
	if err != nil {
		return err
	}
	_, err = parseValidators(t.Validators)
	return err
}

// canonicalValidators returns vals with proposer priorities zeroed and the proposer chosen from
// that: what ledger.Client.Validators serves, and the only form a bundle or trust file may hold.
func canonicalValidators(vals []*types.Validator) (*types.ValidatorSet, error) {
	cp := make([]*types.Validator, len(vals))
	for i, v := range vals {
		if v == nil {
			return nil, errors.New("nil validator")
		}
		// CometBFT panics on an Ed25519 key of the wrong length (PubKey.Address).
		if k, ok := v.PubKey.(cmted25519.PubKey); ok && len(k) != cmted25519.PubKeySize {
			return nil, fmt.Errorf("validator %d: ed25519 pub_key is %d bytes, want %d", i, len(k), cmted25519.PubKeySize)
		}
		if v.VotingPower <= 0 {
			return nil, fmt.Errorf("validator %d: voting_power %d, want a positive number", i, v.VotingPower)
		}
		c := *v
		c.ProposerPriority = 0
		cp[i] = &c
	}
	return types.ValidatorSetFromExistingValidators(cp)
}

func parseValidators(raw []byte) (*types.ValidatorSet, error) {
	var vals []*types.Validator
	if err := cmtjson.Unmarshal(raw, &vals); err != nil {
		return nil, fmt.Errorf("trust file validators: %w", err)
	}
	if len(vals) == 0 {
		return nil, errors.New("trust file has no validators")
	}
	set, err := canonicalValidators(vals)
	if err != nil {
		return nil, fmt.Errorf("trust file validators: %w", err)
	}
	if err := set.ValidateBasic(); err != nil {
		return nil, fmt.Errorf("trust file validators: %w", err)
	}
	return set, nil
}

// parseLightBlock decodes CometBFT's JSON of a light block and requires it to be exactly the
// canonical encoding of what it decodes to, so that no byte of it goes unchecked.
func parseLightBlock(raw []byte) (*types.LightBlock, error) {
	var lb types.LightBlock
	if err := cmtjson.Unmarshal(raw, &lb); err != nil {
		return nil, fmt.Errorf("light_block: %w", err)
	}
	if lb.SignedHeader == nil || lb.Header == nil || lb.Commit == nil || lb.ValidatorSet == nil {
		return nil, errors.New("light_block: signed header, commit and validator set are required")
	}
	canon, err := canonicalValidators(lb.ValidatorSet.Validators)
	if err != nil {
		return nil, fmt.Errorf("light_block: %w", err)
	}
	lb.ValidatorSet = canon
	again, err := cmtjson.Marshal(&lb)
	if err != nil {
		return nil, err
	}
	var compact bytes.Buffer
	if err := compactJSON(&compact, raw); err != nil {
		return nil, err
	}
	if !bytes.Equal(again, compact.Bytes()) {
		return nil, errors.New("light_block: not in canonical form (a field that no signature covers was changed, or it was not produced by anchorline)")
	}
	return &lb, nil
}
