package proof

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/anchorline/anchorline/anchor/merkle"
	"github.com/anchorline/anchorline/schemas/bundle"
	"github.com/anchorline/anchorline/schemas/entry"
	"github.com/anchorline/anchorline/schemas/reading"
)

// commit appends e to the synthetic log, committed by a header at the next height, and returns
// the index of e in the log.
func (s *synth) commit(e []byte) uint64 {
	s.log = append(s.log, e)
	s.height += 2
	s.at = s.at.Add(2 * time.Second)
	return uint64(len(s.log) - 1)
}

// restate returns p with the ledger members of the synthetic ledger's state now: its log
// (with the path of p's anchor entry in it), registry and a header committing them.
func (s *synth) restate(p Parts) Parts {
	t := s.t
	t.Helper()
	leaves := make([]merkle.Hash, len(s.log))
	for i, e := range s.log {
		leaves[i] = merkle.EntryLeaf(e)
	}
	logRoot, err := merkle.Root(leaves)
	if err != nil {
		t.Fatal(err)
	}
	if p.LogPath, err = merkle.InclusionPath(leaves, p.LogIndex); err != nil {
		t.Fatal(err)
	}
	regRoot, err := merkle.RegistryFromLeaves(s.reg)
	if err != nil {
		t.Fatal(err)
	}
	if p.RegistryPath, err = merkle.InclusionPath(s.reg, s.regIdx); err != nil {
		t.Fatal(err)
	}
	app := merkle.AppHash(uint64(len(s.log)), logRoot, regRoot)
	p.LogSize, p.LogRoot, p.RegistryRoot, p.Record, p.RegistrySize = uint64(len(s.log)), logRoot, regRoot, s.record, uint64(len(s.reg))
	p.LightBlock, p.LightChain, p.Shared = synthBlock(t, s.height, s.at, app[:], s.set, s.pvs), slices.Clone(s.chain), nil
	return p
}

// eraseParts marks the parts of the readings with seqs in [from, to] as erased under the erase
// entry at log index idx (their bytes gone, their leaves kept) and gives each, as its
// Erasure.Head, its single bundle's parts in the synthetic ledger's state now.
func (s *synth) eraseParts(parts []Parts, from, to, idx uint64) []Parts {
	t := s.t
	t.Helper()
	leaves := make([]merkle.Hash, len(s.log))
	for i, e := range s.log {
		leaves[i] = merkle.EntryLeaf(e)
	}
	path, err := merkle.InclusionPath(leaves, idx)
	if err != nil {
		t.Fatal(err)
	}
	out := slices.Clone(parts)
	for i := range out {
		p := &out[i]
		if p.Seq < from || p.Seq > to {
			continue
		}
		head := s.restate(*p)
		head.Leaf, head.Raw = merkle.ReadingLeaf(p.Raw), nil
		head.Erasure = &Erasure{Entry: s.log[idx], LogIndex: idx, LogPath: path}
		p.Leaf, p.Raw = head.Leaf, nil
		p.Erasure = &Erasure{Entry: s.log[idx], LogIndex: idx, Head: &head}
	}
	return out
}

// erasedRange is the parts of seqs 1..8 of a synthetic ledger (two anchors of a batch each),
// of which seqs 2..4 were erased by an admin and seq 7 by an owner (by device time), both
// after the last anchor. Everything in it is fixed: it builds the same bytes every run.
func erasedRange(t testing.TB) (*synth, []Parts) {
	ed := reading.NewEd25519Key(ed25519.NewKeyFromSeed(seeded(2)))
	admin := ed25519.NewKeyFromSeed(seeded(1))
	s, parts := synthRange(t, ed, 2, 1, 6, 4, true)
	e1, err := entry.NewEraseByAdmin(admin, s.dev, entry.EraseBySeq, 2, 4, "court order 17", s.at)
	if err != nil {
		t.Fatal(err)
	}
	erased := s.eraseParts(parts, 2, 4, s.commit(e1))
	owner := reading.NewEd25519Key(ed25519.NewKeyFromSeed(seeded(9)))
	e2, err := entry.NewEraseByOwner(owner, s.dev, entry.EraseByTS, 0, 1<<62, "", s.at)
	if err != nil {
		t.Fatal(err)
	}
	erased = s.eraseParts(erased, 7, 7, s.commit(e2))
	for i := range erased {
		if erased[i].Seq == 7 {
			erased[i].TS, erased[i].Erasure.Head.TS = 1_764_000_000_015, 1_764_000_000_015
		}
	}
	return s, erased
}

// The golden range with erased readings (testdata/range-erased.json, -update writes it) is
// what erasedRange builds, byte for byte; it verifies, and every single-byte change of it is
// refused, but for a wider from or to (reported incomplete) and an erased reading's device
// time that stays inside its erase entry's range (the store's claim: the bytes that signed it
// are gone). The light blocks, checked as in any range (TestRangeEveryByteMatters), are left
// out: they are most of the bytes. (Under -race, every byteStride-th byte.)
func TestGoldenRangeErased(t *testing.T) {
	s, parts := erasedRange(t)
	r, err := BuildRange(s.dev, 1, 8, parts, s.prover())
	if err != nil {
		t.Fatal(err)
	}
	built := marshalRange(t, r)
	if *update {
		if err := os.WriteFile(filepath.Join("testdata", "range-erased.json"), built, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join("testdata", "range-erased-trust.json"), s.trust(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	data, trust := readGolden(t, "range-erased.json", "range-erased-trust.json", "TestGoldenRangeErased")
	if !bytes.Equal(data, built) || !bytes.Equal(trust, s.trust()) {
		t.Fatal("the golden range with erased readings is not what erasedRange builds (run with -update if the format changed on purpose)")
	}
	if rep := mustVerifyRange(t, data, trust); rep.Erased != 4 || !rep.Complete {
		t.Fatalf("%+v", rep)
	}
	tsAt := bytes.Index(data, []byte(`"ts": 1764000000015`)) + len(`"ts": `)
	skip := make([]bool, len(data)) // the light blocks' lines
	for at := 0; at < len(data); {
		end := at + bytes.IndexByte(data[at:], '\n') + 1
		if bytes.Contains(data[at:end], []byte(`"light_block": `)) {
			for i := at; i < end; i++ {
				skip[i] = true
			}
		}
		at = end
	}
	everyByteMatters(t, data, trust, 1, 8, func(i int) bool { return skip[i] },
		func(i int, rep RangeReport) bool { return i >= tsAt && i < tsAt+13 && rep.Complete })
}

// Ranges holding erased readings: the erase entries proven in a head of their own (erased
// after the last anchor) or in the last anchors' head (erased before it), the erased readings
// counted and their links kept; any change to an erased reading, its entry or the entry's log
// place fails at the step that checks it.
func TestRangeErased(t *testing.T) {
	s, erased := erasedRange(t)
	r, err := BuildRange(s.dev, 1, 8, erased, s.prover())
	if err != nil {
		t.Fatal(err)
	}
	data := marshalRange(t, r)
	rep := mustVerifyRange(t, data, s.trust())
	if rep.Erased != 4 || rep.Ed25519 != 4 || rep.Heads != 2 || len(r.Erasures) != 2 || r.Erasures[0].Head != 1 || r.Erasures[1].Head != 1 {
		t.Fatalf("erased after the last anchor: %+v, erasures %+v", rep, r.Erasures)
	}
	// Seqs 2..4 and 7 lost their prev: the links into them are gone, those out of them kept;
	// the seqs are consecutive, so nothing can be missing.
	if !rep.Complete || rep.Chained != 3 {
		t.Fatalf("completeness: %+v", rep)
	}
	var buf bytes.Buffer
	rep.Print(&buf)
	t.Logf("range with erased readings:\n%s", buf.String())
	for _, want := range []string{"(Ed25519 ×4, ES256 ×0, erased ×4: nothing signed left to check)",
		"✓ erased reading     4 readings of synth-device proven by their leaves, erased under 2 erase entries (log indices 3, 4)",
		"4 entries (2 anchors, 2 erase entries) in the log of 2 heads", "✓ complete"} {
		if !strings.Contains(buf.String(), want) {
			t.Fatalf("report lacks %q:\n%s", want, buf.String())
		}
	}

	// Seq 6 left out: the gap before an erased reading is named as such.
	var without []Parts
	for _, p := range erased {
		if p.Seq != 6 {
			without = append(without, p)
		}
	}
	r2, err := BuildRange(s.dev, 1, 8, without, s.prover())
	if err != nil {
		t.Fatal(err)
	}
	rep = mustVerifyRange(t, marshalRange(t, r2), s.trust())
	if rep.Complete || len(rep.Gaps) != 1 || !strings.Contains(rep.Gaps[0].Reason, "seq 7 was erased, and its prev with its bytes") {
		t.Fatalf("gap before an erased reading: %+v", rep)
	}

	// Tampering.
	for name, tc := range map[string]struct {
		mutate func(r *bundle.Range)
		step   string
		names  string
	}{
		"erased leaf": {func(r *bundle.Range) { r.Readings[2].Leaf = flipLast(r.Readings[2].Leaf) }, "batch", "seqs 1, 2, 3, 4"},
		"erase entry": {func(r *bundle.Range) { r.Erasures[0].Entry = flipLast(r.Erasures[0].Entry) }, "erased reading", "erasures[0]"},
		"not covered": {func(r *bundle.Range) {
			leaf := merkle.ReadingLeaf(r.Readings[4].Raw)
			r.Readings[4].Raw, r.Readings[4].Leaf, r.Readings[4].Erase = nil, leaf[:], r.Readings[2].Erase
		}, "erased reading", "does not cover synth-device seq 5"},
		"log index": {func(r *bundle.Range) { r.Erasures[1].LogIndex = 5 }, "ledger log", "erasures 0 to 1"},
		"erased ts": {func(r *bundle.Range) { r.Readings[6].TS = 1 << 63 }, "erased reading", "does not cover synth-device seq 7"},
	} {
		t.Run(name, func(t *testing.T) {
			c := cloneRange(t, data)
			tc.mutate(c)
			rep, err := VerifyRange(marshalRange(t, c), s.trust())
			if !errors.Is(err, ErrVerify) {
				t.Fatalf("verified: %v", err)
			}
			last := rep.Steps[len(rep.Steps)-1]
			if last.OK || last.Name != tc.step || !strings.Contains(last.Detail, tc.names) {
				t.Fatalf("failed at %q (%s), want %q naming %q", last.Name, last.Detail, tc.step, tc.names)
			}
		})
	}
}

// An erase entry committed before the range's last anchor is proven in that anchor's head: no
// head of its own. Without a log prover, a head of several entries cannot be built.
func TestRangeErasedBeforeLastAnchor(t *testing.T) {
	ed := reading.NewEd25519Key(ed25519.NewKeyFromSeed(seeded(2)))
	admin := ed25519.NewKeyFromSeed(seeded(1))
	s := newSynth(t, "synth-device", ed.Public())
	raws := chained(t, ed, s.dev, []uint64{1, 2, 3, 4, 5, 6, 7, 8}, nil)
	first := s.anchor(0, []testBatch{batchOf(0, 10, []uint64{0, 3, 6, 9}, raws[:4])})
	e, err := entry.NewEraseByAdmin(admin, s.dev, entry.EraseBySeq, 2, 3, "retention order", s.at)
	if err != nil {
		t.Fatal(err)
	}
	first = s.eraseParts(first, 2, 3, s.commit(e))
	second := s.anchor(1, []testBatch{batchOf(1, 5, []uint64{0, 1, 2, 4}, raws[4:])})
	parts := append(first, second...)
	r, err := BuildRange(s.dev, 1, 8, parts, s.prover())
	if err != nil {
		t.Fatal(err)
	}
	rep := mustVerifyRange(t, marshalRange(t, r), s.trust())
	if rep.Heads != 1 || rep.Erased != 2 || len(r.Erasures) != 1 || r.Erasures[0].Head != 0 || !rep.Complete || rep.Chained != 5 {
		t.Fatalf("%+v, erasures %+v", rep, r.Erasures)
	}
	if _, err := BuildRange(s.dev, 1, 8, parts, nil); !errors.Is(err, ErrInconsistent) || !strings.Contains(err.Error(), "needs a log prover") {
		t.Fatalf("without a prover: %v", err)
	}
	// An erased reading whose entry is after the last anchor needs the parts of a state that
	// holds it.
	late, err := entry.NewEraseByAdmin(admin, s.dev, entry.EraseBySeq, 8, 8, "late", s.at)
	if err != nil {
		t.Fatal(err)
	}
	parts = s.eraseParts(parts, 8, 8, s.commit(late))
	parts[7].Erasure.Head = nil
	if _, err := BuildRange(s.dev, 1, 8, parts, s.prover()); !errors.Is(err, ErrInconsistent) || !strings.Contains(err.Error(), "no parts of a state that holds it") {
		t.Fatalf("no head: %v", err)
	}
}

// A device revoked before its readings were erased: the head of the erase entry holds the
// revoked record, and the range verifies (the anchors' heads hold the key in force then).
func TestRangeErasedRevoked(t *testing.T) {
	ed := reading.NewEd25519Key(ed25519.NewKeyFromSeed(seeded(2)))
	admin := ed25519.NewKeyFromSeed(seeded(1))
	s, parts := synthRange(t, ed, 1, 1, 6, 3, true) // seqs 1..3
	rec, err := entry.Record{Dev: s.dev, Alg: reading.Ed25519, Key: ed.Public().Key, Status: entry.StatusRevoked, Height: 7}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	s.record, s.reg[1] = rec, merkle.LeafHash(rec)
	e, err := entry.NewEraseByAdmin(admin, s.dev, entry.EraseBySeq, 1, 2, "device retired", s.at)
	if err != nil {
		t.Fatal(err)
	}
	r, err := BuildRange(s.dev, 1, 3, s.eraseParts(parts, 1, 2, s.commit(e)), s.prover())
	if err != nil {
		t.Fatal(err)
	}
	rep := mustVerifyRange(t, marshalRange(t, r), s.trust())
	if rep.Heads != 2 || rep.Erased != 2 || !strings.Contains(rep.Steps[4].Detail, "revoked in the state after its erasures") {
		t.Fatalf("%+v", rep)
	}
}
