package ledger

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"

	abci "github.com/cometbft/cometbft/abci/types"
	cmted25519 "github.com/cometbft/cometbft/crypto/ed25519"
	"github.com/cometbft/cometbft/types"

	"github.com/anchorline/anchorline/anchor/merkle"
	"github.com/anchorline/anchorline/schemas/entry"
)

// keyAuthority holds the authority state as JSON (authority); a database without it is of a
// chain that predates authorised writers (its admins are under keyAdmins).
var keyAuthority = []byte("meta/authority")

// authority is who may write what on the ledger: the admins and their threshold, the
// anchoring keys, and the validator set the app has told CometBFT about. It changes only
// through log entries (anchor_key, validator, admins) and genesis, so the log root of the app
// hash commits it.
type authority struct {
	Admins    [][]byte `json:"admins"`    // Ed25519 public keys, in the order they were added
	Threshold uint64   `json:"threshold"` // admin signatures a validator or admins entry needs
	// AnchorKeys are the authorised anchoring keys, sorted.
	AnchorKeys [][]byte `json:"anchor_keys"`
	// AnchorRuleFrom is the first height at which only signed anchors by an authorised key
	// are accepted; 0 while the rule does not hold yet (a chain older than it, until its
	// first anchor_key entry).
	AnchorRuleFrom uint64 `json:"anchor_rule_from"`
	// Validators is the validator set after every update the app returned, sorted by address;
	// PubKey is nil for a validator the app learnt from a commit (a chain older than this
	// state) until an entry names its key. ValidatorsKnown is false until then.
	Validators      []validator `json:"validators"`
	ValidatorsKnown bool        `json:"validators_known"`
	// GovTime is the time of the last validator or admins entry: a later one must be newer,
	// so that an old entry cannot be replayed with another subset of its signatures.
	GovTime uint64 `json:"gov_time"`
}

type validator struct {
	Address []byte `json:"address"`
	PubKey  []byte `json:"pub_key,omitempty"`
	Power   int64  `json:"power"`
}

// defaultThreshold is M for a genesis that does not set admin_threshold: 1 for one admin, a
// majority of several, so that no single admin of several can change the validators or admins.
func defaultThreshold(admins int) uint64 {
	if admins <= 1 {
		return 1
	}
	return uint64(admins/2 + 1)
}

func (a *authority) clone() *authority {
	c := *a
	c.Admins = slices.Clone(a.Admins)
	c.AnchorKeys = slices.Clone(a.AnchorKeys)
	c.Validators = slices.Clone(a.Validators)
	return &c
}

func (a *authority) isAdmin(k []byte) bool {
	return slices.ContainsFunc(a.Admins, func(x []byte) bool { return bytes.Equal(x, k) })
}

func (a *authority) anchorKey(k []byte) (int, bool) {
	return slices.BinarySearchFunc(a.AnchorKeys, k, bytes.Compare)
}

func (a *authority) validator(addr []byte) (int, bool) {
	return slices.BinarySearchFunc(a.Validators, addr, func(v validator, addr []byte) int { return bytes.Compare(v.Address, addr) })
}

// enforcesAnchors reports whether anchors in the block at height must be signed by an
// authorised key.
func (a *authority) enforcesAnchors(height uint64) bool {
	return a.AnchorRuleFrom != 0 && height >= a.AnchorRuleFrom
}

func (a *authority) totalPower() int64 {
	var t int64
	for _, v := range a.Validators {
		t += v.Power
	}
	return t
}

// genesisAuthority builds the authority of a new chain from its app_state and validators.
func genesisAuthority(g Genesis, vals []abci.ValidatorUpdate) (*authority, error) {
	a := &authority{AnchorKeys: [][]byte{}, Validators: []validator{}, ValidatorsKnown: true}
	for _, h := range g.Admins {
		k, err := hexKey(h)
		if err != nil {
			return nil, fmt.Errorf("ledger: genesis app_state: admin %q: %w", h, err)
		}
		if a.isAdmin(k) {
			return nil, fmt.Errorf("ledger: genesis app_state: admin %s is listed twice", h)
		}
		a.Admins = append(a.Admins, k)
	}
	a.Threshold = defaultThreshold(len(a.Admins))
	if g.AdminThreshold != nil {
		m := *g.AdminThreshold
		if m < 1 || (len(a.Admins) > 0 && m > uint64(len(a.Admins))) || (len(a.Admins) == 0 && m != 1) {
			return nil, fmt.Errorf("ledger: genesis app_state: admin_threshold %d must be between 1 and the number of admins (%d)", m, len(a.Admins))
		}
		a.Threshold = m
	}
	if g.AnchorKeys != nil {
		a.AnchorRuleFrom = 1 // from genesis, whatever its initial height
		for _, h := range *g.AnchorKeys {
			k, err := hexKey(h)
			if err != nil {
				return nil, fmt.Errorf("ledger: genesis app_state: anchor key %q: %w", h, err)
			}
			i, found := a.anchorKey(k)
			if !found {
				a.AnchorKeys = slices.Insert(a.AnchorKeys, i, k)
			}
		}
	}
	for _, v := range vals {
		pk := v.PubKey.GetEd25519()
		if len(pk) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("ledger: genesis validator of key type %T: only Ed25519 validators are supported", v.PubKey.Sum)
		}
		addr := cmted25519.PubKey(pk).Address()
		i, found := a.validator(addr)
		if found {
			return nil, fmt.Errorf("ledger: genesis validator %X is listed twice", addr)
		}
		a.Validators = slices.Insert(a.Validators, i, validator{Address: addr, PubKey: pk, Power: v.Power})
	}
	return a, nil
}

func hexKey(h string) ([]byte, error) {
	k, err := hex.DecodeString(h)
	if err != nil || len(k) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("not a hex Ed25519 public key")
	}
	return k, nil
}

// learnValidators fills in the validator set of a chain older than this state from the votes
// of the last commit (addresses and powers; every node sees the same commit).
func (a *authority) learnValidators(votes []abci.VoteInfo) {
	a.Validators = []validator{}
	for _, v := range votes {
		if v.Validator.Power <= 0 {
			continue
		}
		i, found := a.validator(v.Validator.Address)
		if !found {
			a.Validators = slices.Insert(a.Validators, i, validator{Address: bytes.Clone(v.Validator.Address), Power: v.Validator.Power})
		}
	}
	a.ValidatorsKnown = len(a.Validators) > 0
}

// checkAuthority validates an anchor or an authority entry against a (the committed authority,
// or the block's staged one) for the block at height.
func checkAuthority(a *authority, dec entry.Entry, height uint64) error {
	switch {
	case dec.Anchor != nil:
		return checkAnchor(a, dec.Anchor, height)
	case dec.AnchorKey != nil:
		k := dec.AnchorKey
		if !a.isAdmin(k.Admin) {
			return &txError{CodeUnauthorised, fmt.Sprintf("anchor_key %s %x: key %x is not an admin of this ledger", k.Op, k.Key, k.Admin)}
		}
		_, found := a.anchorKey(k.Key)
		switch {
		case k.Op == entry.OpAdd && found:
			return &txError{CodeConflict, fmt.Sprintf("anchoring key %x is already authorised", k.Key)}
		case k.Op == entry.OpRemove && !found:
			return &txError{CodeConflict, fmt.Sprintf("anchoring key %x is not authorised", k.Key)}
		}
		return nil
	case dec.Validator != nil:
		if err := checkThreshold(a, dec, dec.Validator.Time); err != nil {
			return err
		}
		return checkValidator(a, dec.Validator)
	case dec.Admins != nil:
		if err := checkThreshold(a, dec, dec.Admins.Time); err != nil {
			return err
		}
		return checkAdmins(a, dec.Admins)
	}
	return nil
}

func checkAnchor(a *authority, an *entry.Anchor, height uint64) error {
	if !a.enforcesAnchors(height) {
		return nil // an older chain before its first anchor_key entry: as the first release
	}
	if !an.Signed() {
		return &txError{CodeUnauthorised, fmt.Sprintf("anchor %x is not signed: this ledger accepts only anchors signed by an authorised anchoring key (from block %d)", an.ID, a.AnchorRuleFrom)}
	}
	if _, ok := a.anchorKey(an.Key); !ok {
		return &txError{CodeUnauthorised, fmt.Sprintf("anchor %x: key %x is not an authorised anchoring key", an.ID, an.Key)}
	}
	return nil
}

// checkThreshold requires every signer of a threshold-signed entry to be an admin, at least
// the threshold of them, and the entry newer than the last one.
func checkThreshold(a *authority, dec entry.Entry, t uint64) error {
	signers := dec.Signers()
	for _, k := range signers {
		if !a.isAdmin(k) {
			return &txError{CodeUnauthorised, fmt.Sprintf("%s entry: signer %x is not an admin of this ledger", dec.Type, []byte(k))}
		}
	}
	if uint64(len(signers)) < a.Threshold {
		return &txError{CodeUnauthorised, fmt.Sprintf("%s entry: signed by %d admins, needs %d of %d", dec.Type, len(signers), a.Threshold, len(a.Admins))}
	}
	if t <= a.GovTime {
		return &txError{CodeConflict, fmt.Sprintf("%s entry: time %d is not after the last validator or admins entry (%d)", dec.Type, t, a.GovTime)}
	}
	return nil
}

func checkValidator(a *authority, v *entry.Validator) error {
	addr := cmted25519.PubKey(v.PubKey).Address()
	if !a.ValidatorsKnown { // a chain older than this state, before its first block with a commit
		return &txError{CodeConflict, "validator entry: the ledger does not know the validator set yet; submit it again after the next block"}
	}
	i, found := a.validator(addr)
	total := a.totalPower()
	if found {
		total -= a.Validators[i].Power
	}
	switch {
	case v.Power == 0 && !found:
		return &txError{CodeConflict, fmt.Sprintf("validator %X is not in the validator set", addr)}
	case v.Power == 0 && total == 0:
		return &txError{CodeConflict, fmt.Sprintf("validator %X is the last one: the validator set must not become empty", addr)}
	case total+int64(v.Power) > types.MaxTotalVotingPower:
		return &txError{CodeConflict, fmt.Sprintf("validator %X: total voting power would exceed %d", addr, types.MaxTotalVotingPower)}
	}
	return nil
}

func checkAdmins(a *authority, ch *entry.Admins) error {
	for _, k := range ch.Add {
		if a.isAdmin(k) {
			return &txError{CodeConflict, fmt.Sprintf("admins entry: %x is an admin already", k)}
		}
	}
	for _, k := range ch.Remove {
		if !a.isAdmin(k) {
			return &txError{CodeConflict, fmt.Sprintf("admins entry: %x is not an admin", k)}
		}
	}
	n := uint64(len(a.Admins) + len(ch.Add) - len(ch.Remove))
	if n == 0 {
		return &txError{CodeConflict, "admins entry: the admin set must not become empty"}
	}
	if ch.Threshold > n {
		return &txError{CodeConflict, fmt.Sprintf("admins entry: threshold %d is above the %d admins it leaves", ch.Threshold, n)}
	}
	return nil
}

// applyAuthority applies a checked entry of the block at height to a (the block's staged
// authority) and returns the validator update it makes, if any.
func applyAuthority(a *authority, dec entry.Entry, height uint64) *abci.ValidatorUpdate {
	switch {
	case dec.AnchorKey != nil:
		k := dec.AnchorKey
		i, found := a.anchorKey(k.Key)
		switch {
		case k.Op == entry.OpAdd && !found:
			a.AnchorKeys = slices.Insert(a.AnchorKeys, i, bytes.Clone(k.Key))
			if a.AnchorRuleFrom == 0 {
				a.AnchorRuleFrom = height + 1
			}
		case k.Op == entry.OpRemove && found:
			a.AnchorKeys = slices.Delete(a.AnchorKeys, i, i+1)
		}
	case dec.Validator != nil:
		v := dec.Validator
		a.GovTime = v.Time
		addr := cmted25519.PubKey(v.PubKey).Address()
		i, found := a.validator(addr)
		switch {
		case v.Power == 0 && found:
			a.Validators = slices.Delete(a.Validators, i, i+1)
		case found:
			a.Validators[i] = validator{Address: addr, PubKey: bytes.Clone(v.PubKey), Power: int64(v.Power)}
		case v.Power > 0:
			a.Validators = slices.Insert(a.Validators, i, validator{Address: addr, PubKey: bytes.Clone(v.PubKey), Power: int64(v.Power)})
		}
		u := abci.Ed25519ValidatorUpdate(bytes.Clone(v.PubKey), int64(v.Power))
		return &u
	case dec.Admins != nil:
		ch := dec.Admins
		a.GovTime = ch.Time
		a.Admins = slices.DeleteFunc(a.Admins, func(k []byte) bool {
			return slices.ContainsFunc(ch.Remove, func(r []byte) bool { return bytes.Equal(r, k) })
		})
		for _, k := range ch.Add {
			a.Admins = append(a.Admins, bytes.Clone(k))
		}
		a.Threshold = ch.Threshold
	}
	return nil
}

func (a *authority) encode() ([]byte, error) { return json.Marshal(a) }

// Authority is the answer of PathAuthority: the committed authority state (binary values
// hex).
type Authority struct {
	Height     uint64   `json:"height"`
	Admins     []string `json:"admins"`
	Threshold  uint64   `json:"threshold"`
	AnchorKeys []string `json:"anchor_keys"`
	// AnchorRuleFrom is the first block that accepts only anchors signed by one of
	// AnchorKeys; 0 while the ledger still accepts unsigned anchors.
	AnchorRuleFrom uint64           `json:"anchor_rule_from"`
	Validators     []ValidatorPower `json:"validators"`
}

// ValidatorPower is a validator as the app last told CometBFT (PubKey "" if only its address
// is known).
type ValidatorPower struct {
	Address string `json:"address"`
	PubKey  string `json:"pub_key"`
	Power   int64  `json:"power"`
}

func (a *authority) view(height uint64) Authority {
	out := Authority{Height: height, Admins: []string{}, Threshold: a.Threshold, AnchorKeys: []string{}, AnchorRuleFrom: a.AnchorRuleFrom, Validators: []ValidatorPower{}}
	for _, k := range a.Admins {
		out.Admins = append(out.Admins, hex.EncodeToString(k))
	}
	for _, k := range a.AnchorKeys {
		out.AnchorKeys = append(out.AnchorKeys, hex.EncodeToString(k))
	}
	for _, v := range a.Validators {
		out.Validators = append(out.Validators, ValidatorPower{Address: fmt.Sprintf("%X", v.Address), PubKey: hex.EncodeToString(v.PubKey), Power: v.Power})
	}
	return out
}

// Authority returns the ledger's committed authority state (PathAuthority): admins,
// threshold, anchoring keys and the validator set the app believes in.
func (c *Client) Authority(ctx context.Context) (Authority, error) {
	var a Authority
	err := c.query(ctx, PathAuthority, struct{}{}, &a)
	return a, err
}

// NewGenesis is the app_state of a new chain: its admins, their threshold M (0: leave it out,
// which means 1 for one admin and a majority of several) and the anchoring keys it authorises
// from its first block (nil: leave anchor_keys out, as a genesis older than authorised writers;
// such a chain accepts unsigned anchors until an admin's first anchor_key entry). A new chain
// has the second app hash version, whose registry is a sparse Merkle tree in the app's database.
func NewGenesis(admins, anchorKeys []ed25519.PublicKey, threshold int) Genesis {
	g := Genesis{Admins: []string{}, AppHashVersion: merkle.AppHashV2}
	for _, a := range admins {
		g.Admins = append(g.Admins, hex.EncodeToString(a))
	}
	if anchorKeys != nil {
		keys := make([]string, 0, len(anchorKeys))
		for _, k := range anchorKeys {
			keys = append(keys, hex.EncodeToString(k))
		}
		g.AnchorKeys = &keys
	}
	if threshold > 0 {
		m := uint64(threshold)
		g.AdminThreshold = &m
	}
	return g
}
