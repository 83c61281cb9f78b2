package ledger

import (
	"bytes"
	"context"
	"fmt"
	"strings"

	"github.com/anchorline/anchorline/anchor/merkle"
	"github.com/anchorline/anchorline/schemas/entry"
)

// Query paths of owners and consent.
const (
	PathOwner    = "/owner"    // KeyedRequest{Key: device} -> KeptProof of an entry.OwnerRecord
	PathConsent  = "/consent"  // KeyedRequest{Key: entry.ConsentKey} -> KeptProof of an entry.ConsentRecord
	PathConsents = "/consents" // ConsentsRequest -> Consents
)

// KeyedRequest asks for one owner or consent record at Height with its proofs.
type KeyedRequest struct {
	Key    string `json:"key"`
	Height uint64 `json:"height"`
}

// KeptProof is a record of the owners or consent tree at Height, the entry that made it, the
// record's membership proof in the tree (anchor/smt encoding) and the tree's root, and that
// root's proof as the named sub-root of the state root at Height.
type KeptProof struct {
	Record     []byte            `json:"record"`
	Entry      []byte            `json:"entry"`
	Height     uint64            `json:"height"`
	SMTProof   []byte            `json:"smt_proof"`
	Root       merkle.Hash       `json:"root"`
	StateRoot  merkle.Hash       `json:"state_root"`
	StateProof merkle.StateProof `json:"state_proof"`
}

// ConsentsRequest asks for the consent records as of Height (0: the latest): of one device
// (Dev), or of every device.
type ConsentsRequest struct {
	Height uint64 `json:"height"`
	Dev    string `json:"dev,omitempty"`
}

// Consents are consent records at a height, sorted by device and audience, with the owner
// record of each device they name (a consent counts only while its key is the device's bound
// owner).
type Consents struct {
	Height   uint64   `json:"height"`
	Consents [][]byte `json:"consents"` // entry.ConsentRecord
	Owners   [][]byte `json:"owners"`   // entry.OwnerRecord, one per device named, sorted
}

// ownerAt is a device's owner record as of height, the block's staged one first (st non-nil).
func (s *state) ownerAt(dev string, height uint64, st *staged) (entry.OwnerRecord, bool, error) {
	k, ok := kept{}, false
	if st != nil {
		k, ok = st.kept[kindOwners][dev]
	}
	if !ok {
		var err error
		if k, ok, err = s.kinds[kindOwners].at(dev, height, s.height); err != nil || !ok {
			return entry.OwnerRecord{}, false, err
		}
	}
	r, err := entry.DecodeOwnerRecord(k.record)
	if err != nil {
		return entry.OwnerRecord{}, false, fmt.Errorf("ledger db: owner of %s: %w", dev, err)
	}
	return r, true, nil
}

// consentAt is a device's consent record for an audience as of height.
func (s *state) consentAt(key string, height uint64, st *staged) (entry.ConsentRecord, bool, error) {
	k, ok := kept{}, false
	if st != nil {
		k, ok = st.kept[kindConsent][key]
	}
	if !ok {
		var err error
		if k, ok, err = s.kinds[kindConsent].at(key, height, s.height); err != nil || !ok {
			return entry.ConsentRecord{}, false, err
		}
	}
	r, err := entry.DecodeConsentRecord(k.record)
	if err != nil {
		return entry.ConsentRecord{}, false, fmt.Errorf("ledger db: consent %q: %w", key, err)
	}
	return r, true, nil
}

func v2Only(s *state, what string) error {
	if s.version != merkle.AppHashV2 {
		return &txError{CodeConflict, fmt.Sprintf("%s: owners and consent are ledger state under app hash version 2 (DESIGN 2.2); this chain is of version 1", what)}
	}
	return nil
}

// checkOwner validates an owner entry (its admin already checked) against the committed state
// plus the block's earlier changes (st, nil for CheckTx).
func (s *state) checkOwner(dec entry.Entry, st *staged) error {
	e := dec.Owner
	if err := v2Only(s, "owner of "+e.Dev); err != nil {
		return err
	}
	dev, known, err := s.recordAt(e.Dev, s.height)
	if err != nil {
		return err
	}
	if st != nil {
		if v, ok := st.records[e.Dev]; ok {
			dev, known = v, true
		}
	}
	cur, has, err := s.ownerAt(e.Dev, s.height, st)
	if err != nil {
		return err
	}
	if has && e.Time <= cur.Time {
		return &txError{CodeConflict, fmt.Sprintf("owner of %s: time %d is not later than the last owner entry's (%d)", e.Dev, e.Time, cur.Time)}
	}
	bound := has && cur.Bound()
	switch e.Op {
	case entry.OpBind:
		if !known || dev.rec.Status != entry.StatusActive {
			return &txError{CodeConflict, fmt.Sprintf("owner of %s: the device is not registered", e.Dev)}
		}
		if bound {
			return &txError{CodeConflict, fmt.Sprintf("device %s is bound to owner %x: release it first", e.Dev, cur.Key)}
		}
	case entry.OpRelease:
		if !bound {
			return &txError{CodeConflict, fmt.Sprintf("device %s has no owner", e.Dev)}
		}
		if !bytes.Equal(cur.Key, e.Key) {
			return &txError{CodeUnauthorised, fmt.Sprintf("device %s is bound to owner %x, not %x", e.Dev, cur.Key, e.Key)}
		}
	}
	return nil
}

// checkConsent validates a consent entry: its signer must be the device's bound owner.
func (s *state) checkConsent(dec entry.Entry, st *staged) error {
	e := dec.Consent
	if err := v2Only(s, "consent of "+e.Dev); err != nil {
		return err
	}
	owner, ok, err := s.ownerAt(e.Dev, s.height, st)
	if err != nil {
		return err
	}
	if !ok || !owner.Bound() || !bytes.Equal(owner.Key, e.Key) {
		return &txError{CodeUnauthorised, fmt.Sprintf("consent of %s: key %x is not the device's owner", e.Dev, e.Key)}
	}
	cur, known, err := s.consentAt(entry.ConsentKey(e.Dev, e.Audience), s.height, st)
	if err != nil {
		return err
	}
	if !known {
		return nil
	}
	if e.Time <= cur.Time {
		return &txError{CodeConflict, fmt.Sprintf("consent of %s for %s: time %d is not later than the last consent entry's (%d)", e.Dev, e.Audience, e.Time, cur.Time)}
	}
	return nil
}

// stageOwner adds a valid owner entry, the block's next log entry (index), to st.
func stageOwner(st *staged, e *entry.Owner, raw []byte, index, height uint64) error {
	status := entry.OwnerBound
	if e.Op == entry.OpRelease {
		status = entry.OwnerReleased
	}
	leaf := merkle.EntryLeaf(raw)
	b, err := entry.OwnerRecord{Dev: e.Dev, Alg: e.Alg, Key: e.Key, Status: status, Time: e.Time, Entry: leaf[:], Index: index, Height: height}.Encode()
	if err != nil {
		return err
	}
	st.kept[kindOwners][e.Dev] = newKept(height, b)
	return nil
}

// stageConsent adds a valid consent entry to st.
func stageConsent(st *staged, e *entry.Consent, raw []byte, index, height uint64) error {
	status := entry.ConsentGranted
	if e.Op == entry.OpWithdraw {
		status = entry.ConsentWithdrawn
	}
	leaf := merkle.EntryLeaf(raw)
	b, err := entry.ConsentRecord{Dev: e.Dev, Audience: e.Audience, Status: status, Alg: e.Alg, Key: e.Key, Time: e.Time, Entry: leaf[:], Index: index, Height: height}.Encode()
	if err != nil {
		return err
	}
	st.kept[kindConsent][entry.ConsentKey(e.Dev, e.Audience)] = newKept(height, b)
	return nil
}

// proveKept is a record of kind k at height with the entry that made it and its proofs.
func (s *state) proveKept(k kind, key string, height uint64) (KeptProof, error) {
	kd := s.kinds[k]
	v, ok, err := kd.at(key, height, s.height)
	if err != nil {
		return KeptProof{}, err
	}
	if !ok || !kd.has(height) {
		return KeptProof{}, notFound("no %s record of %q on the ledger at height %d", kd.name, strings.ReplaceAll(key, "\x00", " "), height)
	}
	var index uint64
	switch k {
	case kindOwners:
		r, err := entry.DecodeOwnerRecord(v.record)
		if err != nil {
			return KeptProof{}, err
		}
		index = r.Index
	default:
		r, err := entry.DecodeConsentRecord(v.record)
		if err != nil {
			return KeptProof{}, err
		}
		index = r.Index
	}
	e, _, err := s.entryAt(index)
	if err != nil {
		return KeptProof{}, err
	}
	p, root, err := kd.prove(key, v, height)
	if err != nil {
		return KeptProof{}, err
	}
	c, err := s.committedAt(height)
	if err != nil {
		return KeptProof{}, err
	}
	sp, err := merkle.ProveSubRoot(c.subRoots, kd.name)
	if err != nil {
		return KeptProof{}, err
	}
	return KeptProof{Record: v.record, Entry: e, Height: height, SMTProof: p, Root: root, StateRoot: c.stateRoot, StateProof: sp}, nil
}

// consentsAt lists consent records as of height, of one device or of all.
func (s *state) consentsAt(height uint64, dev string) (Consents, error) {
	prefix := ""
	if dev != "" {
		prefix = dev + "\x00"
	}
	keys, err := s.kinds[kindConsent].keys(prefix)
	if err != nil {
		return Consents{}, err
	}
	out := Consents{Height: height, Consents: [][]byte{}, Owners: [][]byte{}}
	last := ""
	for _, key := range keys {
		v, ok, err := s.kinds[kindConsent].at(key, height, s.height)
		if err != nil {
			return Consents{}, err
		}
		if !ok {
			continue
		}
		out.Consents = append(out.Consents, v.record)
		d, _, _ := strings.Cut(key, "\x00")
		if d == last {
			continue
		}
		last = d
		o, ok, err := s.kinds[kindOwners].at(d, height, s.height)
		if err != nil {
			return Consents{}, err
		}
		if ok {
			out.Owners = append(out.Owners, o.record)
		}
	}
	return out, nil
}

// Grant is one effective consent: the audience may read the device's data.
type Grant struct {
	Dev      string
	Audience string
	Height   uint64 // the block of the consent entry
}

// EffectiveGrants returns the consents of c that are in force: granted after the device's
// current binding (a later log index) by the key it binds, sorted by device and audience. A
// new owner starts with no consent, and an owner bound again does not get back the grants of
// an earlier binding.
func (c Consents) EffectiveGrants() ([]Grant, error) {
	owners := make(map[string]entry.OwnerRecord, len(c.Owners))
	for _, b := range c.Owners {
		o, err := entry.DecodeOwnerRecord(b)
		if err != nil {
			return nil, err
		}
		owners[o.Dev] = o
	}
	var out []Grant
	for _, b := range c.Consents {
		r, err := entry.DecodeConsentRecord(b)
		if err != nil {
			return nil, err
		}
		o, ok := owners[r.Dev]
		if r.Status == entry.ConsentGranted && ok && o.Bound() && bytes.Equal(o.Key, r.Key) && r.Index > o.Index {
			out = append(out, Grant{Dev: r.Dev, Audience: r.Audience, Height: r.Height})
		}
	}
	return out, nil
}

// Owner returns a device's owner record at height (0: the latest) with its proofs.
func (c *Client) Owner(ctx context.Context, dev string, height int64) (entry.OwnerRecord, KeptProof, error) {
	var p KeptProof
	if err := c.query(ctx, PathOwner, KeyedRequest{Key: dev, Height: uint64(height)}, &p); err != nil {
		return entry.OwnerRecord{}, KeptProof{}, err
	}
	r, err := entry.DecodeOwnerRecord(p.Record)
	return r, p, err
}

// Consent returns a device's consent record for audience at height (0: the latest) with its
// proofs.
func (c *Client) Consent(ctx context.Context, dev, audience string, height int64) (entry.ConsentRecord, KeptProof, error) {
	var p KeptProof
	if err := c.query(ctx, PathConsent, KeyedRequest{Key: entry.ConsentKey(dev, audience), Height: uint64(height)}, &p); err != nil {
		return entry.ConsentRecord{}, KeptProof{}, err
	}
	r, err := entry.DecodeConsentRecord(p.Record)
	return r, p, err
}

// Consents returns the consent records at height (0: the latest) of dev, or of every device
// for dev "".
func (c *Client) Consents(ctx context.Context, dev string, height int64) (Consents, error) {
	var out Consents
	err := c.query(ctx, PathConsents, ConsentsRequest{Height: uint64(height), Dev: dev}, &out)
	return out, err
}
