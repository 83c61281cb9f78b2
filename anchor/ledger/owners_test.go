package ledger

import (
	"bytes"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/anchorline/anchorline/anchor/merkle"
	"github.com/anchorline/anchorline/anchor/smt"
	"github.com/anchorline/anchorline/schemas/entry"
	"github.com/anchorline/anchorline/schemas/reading"
)

func ownerKey(t *testing.T, alg reading.Alg) reading.PrivateKey {
	t.Helper()
	k, err := reading.GenerateKey(alg)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// grants lists the effective grants at height as "dev/audience".
func (c *chain) grants(height uint64) []string {
	c.t.Helper()
	var cs Consents
	c.query(PathConsents, ConsentsRequest{Height: height}, &cs)
	gs, err := cs.EffectiveGrants()
	if err != nil {
		c.t.Fatal(err)
	}
	out := []string{}
	for _, g := range gs {
		out = append(out, g.Dev+"/"+g.Audience)
	}
	return out
}

// checkKeptProof checks a record of the owners or consent tree at height against the app hash
// the chain reported for that height, and returns the record's bytes.
func checkKeptProof(t *testing.T, c *chain, path, key, subRoot string, height uint64) []byte {
	t.Helper()
	var p KeptProof
	c.query(path, KeyedRequest{Key: key, Height: height}, &p)
	leaf := merkle.LeafHash(p.Record)
	if err := smt.Verify(smt.Hash(p.Root), smt.KeyOf(key), leaf[:], p.SMTProof); err != nil {
		t.Fatalf("%s %q at %d: tree proof: %v", path, key, height, err)
	}
	if p.StateProof.Name != subRoot || p.StateProof.Root != p.Root {
		t.Fatalf("%s: state proof of %q, want %q", path, p.StateProof.Name, subRoot)
	}
	if err := merkle.VerifySubRoot(p.StateProof, p.StateRoot); err != nil {
		t.Fatal(err)
	}
	s := c.state(height)
	if merkle.AppHashV2Of(s.LogSize, s.LogRoot, p.StateRoot) != s.AppHash || !bytes.Equal(c.hashes[height-1], s.AppHash[:]) {
		t.Fatalf("%s %q at %d: the state root is not what the app hash commits", path, key, height)
	}
	return p.Record
}

func TestOwnersAndConsent(t *testing.T) {
	for _, alg := range []reading.Alg{reading.Ed25519, reading.ES256} {
		t.Run(string(alg), func(t *testing.T) { testOwnersAndConsent(t, alg) })
	}
}

func testOwnersAndConsent(t *testing.T, alg reading.Alg) {
	admin, stranger := key(1), key(2)
	alice, bob := ownerKey(t, alg), ownerKey(t, alg)
	c := newChain(t, fmt.Sprintf(`{"admins": ["%x"], "app_hash_version": 2}`, pub(admin)), key(9))
	m := must(t)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	reg := m(entry.NewRegister(admin, "dev-1", reading.PublicKey{Alg: reading.Ed25519, Key: pub(key(7))}, t0))
	reg2 := m(entry.NewRegister(admin, "dev-2", reading.PublicKey{Alg: reading.Ed25519, Key: pub(key(8))}, t0))
	wantCodes(t, c.block(reg, reg2), CodeOK, CodeOK)
	before := c.state(1)

	// Height 2: binding needs an admin and a registered device; consent needs the owner.
	wantCodes(t, c.block(
		m(entry.NewOwner(stranger, alice, entry.OpBind, "dev-1", at(1))),
		m(entry.NewOwner(admin, alice, entry.OpBind, "dev-9", at(1))),
		m(entry.NewConsent(alice, entry.OpGrant, "dev-1", "research", at(1))),
		m(entry.NewOwner(admin, alice, entry.OpBind, "dev-1", at(1))),
		m(entry.NewOwner(admin, bob, entry.OpBind, "dev-1", at(2))),
		m(entry.NewConsent(bob, entry.OpGrant, "dev-1", "research", at(2))),
		m(entry.NewConsent(alice, entry.OpGrant, "dev-1", "research", at(3))),
		m(entry.NewConsent(alice, entry.OpGrant, "dev-1", "billing", at(3))),
	), CodeUnauthorised, CodeConflict, CodeUnauthorised, CodeOK, CodeConflict, CodeUnauthorised, CodeOK, CodeOK)
	if again := c.state(1); again.AppHash != before.AppHash {
		t.Fatal("the state at height 1 changed when owners came")
	}
	if got := c.grants(2); !slices.Equal(got, []string{"dev-1/billing", "dev-1/research"}) {
		t.Fatalf("grants at 2: %v", got)
	}
	rec, err := entry.DecodeOwnerRecord(checkKeptProof(t, c, PathOwner, "dev-1", merkle.SubRootOwners, 2))
	if err != nil || !rec.Bound() || !bytes.Equal(rec.Key, alice.Public().Key) {
		t.Fatalf("owner of dev-1 at 2: %+v %v", rec, err)
	}
	cr, err := entry.DecodeConsentRecord(checkKeptProof(t, c, PathConsent, entry.ConsentKey("dev-1", "research"), merkle.SubRootConsent, 2))
	if err != nil || cr.Status != entry.ConsentGranted {
		t.Fatalf("consent at 2: %+v %v", cr, err)
	}

	// Height 3: a stale consent (time not later) is refused; withdrawal applies from its block.
	wantCodes(t, c.block(
		m(entry.NewConsent(alice, entry.OpWithdraw, "dev-1", "research", at(3))),
		m(entry.NewConsent(alice, entry.OpWithdraw, "dev-1", "research", at(4))),
	), CodeConflict, CodeOK)
	if got := c.grants(3); !slices.Equal(got, []string{"dev-1/billing"}) {
		t.Fatalf("grants at 3: %v", got)
	}
	if got := c.grants(2); !slices.Equal(got, []string{"dev-1/billing", "dev-1/research"}) {
		t.Fatalf("grants at 2, asked at 3: %v", got)
	}

	// Height 4: alice releases (bob cannot); bob binds, and alice's grants stop counting.
	wantCodes(t, c.block(
		m(entry.NewOwner(admin, bob, entry.OpRelease, "dev-1", at(5))),
		m(entry.NewOwner(admin, alice, entry.OpRelease, "dev-1", at(5))),
		m(entry.NewOwner(admin, bob, entry.OpBind, "dev-1", at(6))),
		m(entry.NewConsent(bob, entry.OpGrant, "dev-1", "research", at(6))),
	), CodeUnauthorised, CodeOK, CodeOK, CodeOK)
	if got := c.grants(4); !slices.Equal(got, []string{"dev-1/research"}) {
		t.Fatalf("grants at 4: %v", got)
	}

	// Height 5: bob releases and alice is bound again: her grants of the first binding do not
	// come back.
	wantCodes(t, c.block(
		m(entry.NewOwner(admin, bob, entry.OpRelease, "dev-1", at(7))),
		m(entry.NewOwner(admin, alice, entry.OpBind, "dev-1", at(8))),
	), CodeOK, CodeOK)
	if got := c.grants(5); len(got) != 0 {
		t.Fatalf("grants at 5: %v", got)
	}

	// A restart keeps the state and the app hashes.
	last := c.state(0)
	c.reopen()
	if got := c.state(0); got.AppHash != last.AppHash {
		t.Fatal("the app hash changed across a restart")
	}
	c.block()
	checkKeptProof(t, c, PathOwner, "dev-1", merkle.SubRootOwners, uint64(c.height))
}

// TestOwnerEntryTampered: a changed byte or a missing signature of either signer is refused.
func TestOwnerEntryTampered(t *testing.T) {
	admin := key(1)
	alice := ownerKey(t, reading.ES256)
	e, err := entry.NewOwner(admin, alice, entry.OpBind, "dev-1", t0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := entry.Decode(e); err != nil {
		t.Fatal(err)
	}
	for i := range e {
		b := bytes.Clone(e)
		b[i] ^= 1
		if _, err := entry.Decode(b); err == nil {
			t.Fatalf("byte %d flipped: accepted", i)
		}
	}
}

func TestOwnersNeedAppHashV2(t *testing.T) {
	admin := key(1)
	c := newChain(t, fmt.Sprintf(`{"admins": ["%x"]}`, pub(admin)), key(9))
	m := must(t)
	wantCodes(t, c.block(m(entry.NewRegister(admin, "dev-1", reading.PublicKey{Alg: reading.Ed25519, Key: pub(key(7))}, t0))), CodeOK)
	wantCodes(t, c.block(m(entry.NewOwner(admin, ownerKey(t, reading.Ed25519), entry.OpBind, "dev-1", t0))), CodeConflict)
}

// TestEraseEntries: an erasure is signed by the device's owner, or by an admin with a reason;
// /erasures lists the committed ones in log order.
func TestEraseEntries(t *testing.T) {
	admin, stranger := key(1), key(2)
	alice := ownerKey(t, reading.ES256)
	c := newChain(t, fmt.Sprintf(`{"admins": ["%x"], "app_hash_version": 2}`, pub(admin)), key(9))
	m := must(t)
	wantCodes(t, c.block(m(entry.NewRegister(admin, "dev-1", reading.PublicKey{Alg: reading.Ed25519, Key: pub(key(7))}, t0)),
		m(entry.NewOwner(admin, alice, entry.OpBind, "dev-1", t0))), CodeOK, CodeOK)
	byOwner := m(entry.NewEraseByOwner(alice, "dev-1", entry.EraseBySeq, 3, 9, "", t0))
	byAdmin := m(entry.NewEraseByAdmin(admin, "dev-1", entry.EraseByTS, 0, 1000, "court order 17", t0))
	noReason := m(entry.NewEraseByOwner(reading.NewEd25519Key(admin), "dev-1", entry.EraseBySeq, 1, 1, "", t0))
	wantCodes(t, c.block(
		m(entry.NewEraseByOwner(reading.NewEd25519Key(stranger), "dev-1", entry.EraseBySeq, 1, 2, "", t0)),
		noReason,
		m(entry.NewEraseByAdmin(admin, "dev-9", entry.EraseBySeq, 1, 2, "typo", t0)),
		byOwner, byAdmin,
	), CodeUnauthorised, CodeUnauthorised, CodeConflict, CodeOK, CodeOK)
	var es Erasures
	c.query(PathErasures, ErasuresRequest{From: 0, Max: 10}, &es)
	if len(es.Erasures) != 2 || !bytes.Equal(es.Erasures[0].Entry, byOwner) || !bytes.Equal(es.Erasures[1].Entry, byAdmin) || es.Erasures[0].Height != 2 {
		t.Fatalf("erasures: %+v", es)
	}
	c.query(PathErasures, ErasuresRequest{From: es.Erasures[1].Index, Max: 10}, &es)
	if len(es.Erasures) != 1 {
		t.Fatalf("erasures from the second's index: %d", len(es.Erasures))
	}
	e, err := entry.EraseOf(byOwner)
	if err != nil || !e.Covers("dev-1", 3, 0) || e.Covers("dev-1", 10, 0) || e.Covers("dev-2", 5, 0) {
		t.Fatalf("erase entry %+v %v", e, err)
	}
}
