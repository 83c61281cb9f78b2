package stack

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/anchorline/anchorline/anchor/merkle"
	"github.com/anchorline/anchorline/anchor/proof"
	"github.com/anchorline/anchorline/internal/await"
	"github.com/anchorline/anchorline/internal/chserver"
	"github.com/anchorline/anchorline/schemas/bundle"
	"github.com/anchorline/anchorline/schemas/lookup"
	"github.com/anchorline/anchorline/schemas/reading"
	"github.com/anchorline/anchorline/services/store"
)

// TestErasureRange: the API's range bundle of a device's readings holds its erased readings
// (their leaves and the erase entries, proven in the ledger's log) and verifies offline, with
// the range still complete; its bytes hold no erased reading's signature, and changing an
// erased reading's leaf or claiming another reading erased fails verification.
func TestErasureRange(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	chAddr, database, ch := chserver.NewDatabase(t)
	cfg := devConfig(t, chAddr, database, t.TempDir())
	cfg.Anchor.Interval = 200 * time.Millisecond
	d, _, js := startTestDev(t, ctx, cfg)
	client := d.APIClient()
	dv := newDevice(t, "eg-1", reading.Ed25519)
	register(t, ctx, client, d.AdminKey, dv.ID, dv.Key.Public())
	raws := map[uint64][]byte{}
	for range 12 {
		raw := dv.next(t)
		raws[dv.Seq] = raw
		publish(t, js, reading.Subject(dv.ID), reading.MsgID(dv.ID, dv.Seq), raw)
	}
	await.Until(t, ctx, "12 readings anchored", func() (bool, string) {
		n := count(t, ctx, ch, "SELECT count() FROM "+database+".readings r ANY INNER JOIN "+database+".batch_anchors b USING batch_id")
		return n == 12, fmt.Sprintf("%d", n)
	})
	trust, err := client.Trust(ctx)
	if err != nil {
		t.Fatal(err)
	}
	erase := func(from, to uint64, entries uint64) {
		t.Helper()
		submitErase(t, ctx, d, dv.ID, from, to, "test")
		await.Until(t, ctx, "the erasure carried out", func() (bool, string) {
			n := count(t, ctx, ch, "SELECT count(DISTINCT entry_index) FROM "+database+".erasures")
			return n == entries, fmt.Sprintf("%d erase entries carried out", n)
		})
	}
	verify := func(data []byte) (proof.RangeReport, error) {
		t.Helper()
		rep, err := proof.VerifyRange(data, trust)
		var b bytes.Buffer
		rep.Print(&b)
		t.Logf("range:\n%s", b.String())
		return rep, err
	}

	erase(4, 6, 1)
	data, err := client.RangeProof(ctx, dv.ID, 1, 12)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := verify(data)
	if err != nil || rep.Erased != 3 || rep.Ed25519 != 9 || !rep.Complete {
		t.Fatalf("range with seqs 4..6 erased: %v, %+v", err, rep)
	}
	for seq := uint64(4); seq <= 6; seq++ {
		if r := raws[seq]; bytes.Contains(data, []byte(fmt.Sprintf("%x", r[len(r)-64:]))) {
			t.Fatalf("the range holds erased seq %d's signature", seq)
		}
	}

	// A second erasure: two entries, both proven.
	erase(11, 11, 2)
	data, err = client.RangeProof(ctx, dv.ID, 1, 12)
	if err != nil {
		t.Fatal(err)
	}
	rep, err = verify(data)
	r, perr := bundle.ParseRange(data)
	if err != nil || perr != nil || rep.Erased != 4 || len(r.Erasures) != 2 || !rep.Complete {
		t.Fatalf("range with two erasures: %v %v, %+v", err, perr, rep)
	}
	for name, change := range map[string]func(*bundle.Range){
		"an erased reading's leaf": func(r *bundle.Range) { r.Readings[4].Leaf[0] ^= 1 },
		"seq 7 claimed erased": func(r *bundle.Range) {
			leaf := merkle.ReadingLeaf(r.Readings[6].Raw)
			r.Readings[6].Raw, r.Readings[6].Leaf, r.Readings[6].Erase = nil, leaf[:], r.Readings[4].Erase
		},
	} {
		c, err := bundle.ParseRange(data)
		if err != nil {
			t.Fatal(err)
		}
		change(c)
		out, err := c.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := proof.VerifyRange(out, trust); !errors.Is(err, proof.ErrVerify) {
			t.Errorf("%s changed: %v", name, err)
		}
	}
	// The single proof of an erased reading still verifies next to the range.
	single, err := client.Proof(ctx, dv.ID, 5)
	if err != nil {
		t.Fatal(err)
	}
	if srep, err := proof.Verify(single, trust); err != nil || !slices.ContainsFunc(srep.Steps, func(s proof.Step) bool { return s.Name == "erased reading" && s.OK }) {
		t.Fatalf("the single proof of erased seq 5: %v", err)
	}

	// An anchor whose batch records are written but whose own row is not yet (the anchoring
	// service writes them in that order): a proof is "not anchored yet" (409, ask again), not
	// an inconsistency (500). Here the anchor's row is deleted to stand for that moment.
	if err := ch.Exec(ctx, "ALTER TABLE "+database+".anchors DELETE WHERE 1"); err != nil {
		t.Fatal(err)
	}
	await.Until(t, ctx, "the anchors' rows gone", func() (bool, string) {
		n := count(t, ctx, ch, "SELECT count() FROM "+database+".anchors")
		return n == 0, fmt.Sprintf("%d rows", n)
	})
	if _, err := NewProofs(store.New(ch, database), d.Ledger).Proof(ctx, dv.ID, 1); !errors.Is(err, lookup.ErrNotAnchored) {
		t.Fatalf("the proof of a reading whose anchor is being recorded: %v, want lookup.ErrNotAnchored", err)
	}
}
