package proof

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cometbft/cometbft/crypto/tmhash"
	cmtproto "github.com/cometbft/cometbft/proto/tendermint/types"
	cmtversion "github.com/cometbft/cometbft/proto/tendermint/version"
	"github.com/cometbft/cometbft/types"
	"github.com/cometbft/cometbft/version"

	"github.com/anchorline/anchorline/anchor/merkle"
	"github.com/anchorline/anchorline/schemas/bundle"
	"github.com/anchorline/anchorline/schemas/entry"
	"github.com/anchorline/anchorline/schemas/reading"
)

// testBatch is one batch of an anchor a range test makes: leaves, of which those in raws
// (leaf index → raw) are the range device's readings.
type testBatch struct {
	id     [16]byte
	leaves []merkle.Hash
	raws   map[uint64][]byte
}

// batchOf places the device's readings raws at the leaf indices at of a batch of size leaves,
// the other leaves standing for other devices' readings.
func batchOf(idByte byte, size int, at []uint64, raws [][]byte) testBatch {
	b := testBatch{leaves: make([]merkle.Hash, size), raws: map[uint64][]byte{}}
	b.id[0], b.id[15] = 0xb0, idByte
	for i := range b.leaves {
		b.leaves[i] = merkle.LeafHash([]byte(fmt.Sprintf("other reading %d of batch %d", i, idByte)))
	}
	for j, x := range at {
		b.leaves[x] = merkle.ReadingLeaf(raws[j])
		b.raws[x] = raws[j]
	}
	return b
}

// anchorBatches is the anchor's batch list: a batch without the device's readings first (so
// that the anchor's multiproof is not empty), then bs; and the anchor's root.
func anchorBatches(t testing.TB, bs []testBatch) ([]AnchorBatch, merkle.Hash, uint64) {
	t.Helper()
	var other [16]byte
	other[0] = 0xbf
	ab := []AnchorBatch{{ID: other, Size: 9, Root: merkle.LeafHash([]byte("other batch"))}}
	readings := uint64(9)
	for _, b := range bs {
		root, err := merkle.Root(b.leaves)
		if err != nil {
			t.Fatal(err)
		}
		ab = append(ab, AnchorBatch{ID: b.id, Size: uint64(len(b.leaves)), Root: root})
		readings += uint64(len(b.leaves))
	}
	leaves := make([]merkle.Hash, len(ab))
	for i, b := range ab {
		leaves[i] = merkle.AnchorLeaf(b.ID, b.Size, b.Root)
	}
	root, err := merkle.Root(leaves)
	if err != nil {
		t.Fatal(err)
	}
	return ab, root, readings
}

// partsOf is one Parts per reading of bs, all sharing the anchor's parts in base.
func partsOf(base Parts, ab []AnchorBatch, bs []testBatch) []Parts {
	var out []Parts
	for j, b := range bs {
		for _, x := range slices.Sorted(maps.Keys(b.raws)) {
			raw := b.raws[x]
			msg, err := reading.Decode(raw)
			if err != nil {
				panic(err) // the tests' own readings
			}
			p := base
			p.Raw, p.Device, p.Seq = raw, msg.Reading.Device, msg.Reading.Seq
			p.BatchID, p.BatchLeaves, p.LeafIndex = b.id, b.leaves, x
			p.AnchorBatches, p.BatchIndex = ab, uint64(j+1)
			out = append(out, p)
		}
	}
	return out
}

// anchorOn anchors bs on the real ledger and returns their readings' parts.
// prover proves log entries with the ledger's log multiproof query.
func (c *chain) prover(t *testing.T) LogProver {
	return func(indices []uint64, size uint64) ([]merkle.Hash, error) {
		return c.lc.LogMultiProof(t.Context(), indices, size)
	}
}

func (c *chain) anchorOn(t *testing.T, dev string, idByte byte, bs []testBatch) []Parts {
	t.Helper()
	ctx := context.Background()
	ab, root, readings := anchorBatches(t, bs)
	var id [16]byte
	id[0], id[15] = 0xa0, idByte
	e, err := entry.NewAnchor(id, root, uint64(len(ab)), readings, time.UnixMilli(1_764_000_000_000))
	if err != nil {
		t.Fatal(err)
	}
	rc, err := c.lc.Submit(ctx, e)
	if err != nil {
		t.Fatal(err)
	}
	ep, err := c.lc.EntryProof(ctx, rc.LogIndex, rc.Height)
	if err != nil {
		t.Fatal(err)
	}
	dp, err := c.lc.Device(ctx, dev, rc.Height)
	if err != nil {
		t.Fatal(err)
	}
	lb, err := c.lc.LightBlock(ctx, rc.Height+1)
	if err != nil {
		t.Fatal(err)
	}
	lchain, err := c.lc.LightChain(ctx, rc.Height+1)
	if err != nil {
		t.Fatal(err)
	}
	base := Parts{AnchorID: id, ChainID: "proof-test", Entry: ep.Entry, LogIndex: ep.LogIndex, LogSize: ep.LogSize, LogPath: ep.Path,
		LogRoot: ep.LogRoot, RegistryRoot: ep.RegistryRoot, Version: ep.Version, StateRoot: ep.StateRoot, StateProof: ep.StateProof,
		Record: dp.RecordBytes, RegistryIndex: dp.Index, RegistrySize: dp.Size, RegistryPath: dp.Path, SMTProof: dp.SMTProof, LightBlock: lb, LightChain: lchain}
	return partsOf(base, ab, bs)
}

// chained signs readings seqs of dev, each with the previous one's leaf as prev (the first
// with prev, the leaf of before, if given).
func chained(t testing.TB, k reading.PrivateKey, dev string, seqs []uint64, before []byte) [][]byte {
	t.Helper()
	out := make([][]byte, len(seqs))
	prev := before
	for i, seq := range seqs {
		r := reading.Reading{Device: dev, Seq: seq, TS: 1_764_000_000_000 + seq, Metrics: []reading.Metric{{Name: "temp", Value: float64(seq) / 4}}}
		if prev != nil {
			r.Prev = prev
		}
		raw, err := reading.Sign(r, k)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = raw
		l := reading.Leaf(raw)
		prev = l[:]
	}
	return out
}

func marshalRange(t testing.TB, r *bundle.Range) []byte {
	t.Helper()
	out, err := r.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func mustVerifyRange(t testing.TB, data, trust []byte) RangeReport {
	t.Helper()
	rep, err := VerifyRange(data, trust)
	if err != nil {
		var buf bytes.Buffer
		rep.Print(&buf)
		t.Fatalf("does not verify: %v\n%s", err, buf.String())
	}
	return rep
}

func goldenRange(t testing.TB) (r, trust []byte) {
	return readGolden(t, "range.json", "range-trust.json", "TestGoldenRange")
}

// The golden range (a real ledger: two anchors, the first with two batches of the device,
// nine chained readings) verifies, forever, and is complete.
func TestGoldenRange(t *testing.T) {
	if *update {
		c := newChain(t)
		ed := reading.NewEd25519Key(ed25519.NewKeyFromSeed(seeded(2)))
		c.register(t, "range-device", ed)
		raws := chained(t, ed, "range-device", []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9}, nil)
		parts := c.anchorOn(t, "range-device", 1, []testBatch{batchOf(1, 7, []uint64{1, 2, 5}, raws[0:3]), batchOf(2, 5, []uint64{0, 3, 4}, raws[3:6])})
		parts = append(parts, c.anchorOn(t, "range-device", 2, []testBatch{batchOf(3, 6, []uint64{0, 2, 5}, raws[6:9])})...)
		r, err := BuildRange("range-device", 1, 9, parts, c.prover(t))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join("testdata", "range.json"), marshalRange(t, r), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join("testdata", "range-trust.json"), c.trust(t), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	data, trust := goldenRange(t)
	if !IsRange(data) {
		t.Fatal("IsRange: the golden range is not a range")
	}
	b, _ := golden(t)
	if IsRange(b) {
		t.Fatal("IsRange: a single bundle is a range")
	}
	rep := mustVerifyRange(t, data, trust)
	if !rep.Complete || len(rep.Gaps) != 0 || rep.Readings != 9 || rep.Anchors != 2 || rep.Heads != 1 || rep.Batches != 3 || rep.Chained != 8 || rep.Ed25519 != 9 {
		t.Fatalf("report %+v", rep)
	}
	var buf bytes.Buffer
	rep.Print(&buf)
	out := buf.String()
	t.Logf("\n%s", out)
	names := []string{"bundle", "trust", "reading signature", "device record", "batch", "anchor", "anchor entry", "ledger log", "app hash", "signed header"}
	if len(rep.Steps) != len(names) {
		t.Fatalf("%d steps:\n%s", len(rep.Steps), out)
	}
	for i, n := range names {
		if rep.Steps[i].Name != n || !rep.Steps[i].OK {
			t.Fatalf("step %d is %q, want %q:\n%s", i, rep.Steps[i].Name, n, out)
		}
	}
	for _, want := range []string{"✓ complete           seqs 1..9: 9 readings, 8 of 8 consecutive pairs linked by prev; no reading missing",
		"3 batch roots rebuilt from the leaves of 9 readings", "2 anchor roots rebuilt", "(Ed25519 ×9, ES256 ×0)"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}

// Every single-byte change of the golden range is refused, but for a wider from or to: that
// claims seqs the range holds no reading of, and the range is then reported incomplete.
// (Under -race, every byteStride-th byte.)
func TestRangeEveryByteMatters(t *testing.T) {
	data, trust := goldenRange(t)
	everyByteMatters(t, data, trust, 1, 9, nil, nil)
}

// everyByteMatters changes every byteStride-th byte of a range of seqs from..to (two ways
// each, on every core) but those skip names, and fails unless each change is refused or, for
// a from or to widened, verifies as an incomplete range with one gap; or tolerated (nil: none)
// accepts the changed byte i's report.
func everyByteMatters(t *testing.T, data, trust []byte, from, to uint64, skip func(i int) bool, tolerated func(i int, rep RangeReport) bool) {
	t.Helper()
	var widened atomic.Int64
	var wg sync.WaitGroup
	workers := runtime.GOMAXPROCS(0)
	for w := range workers {
		wg.Go(func() {
			for i := w * byteStride; i < len(data); i += workers * byteStride {
				if skip != nil && skip(i) {
					continue
				}
				for _, d := range []byte{1, 0x20} {
					c := bytes.Clone(data)
					c[i] ^= d
					rep, err := VerifyRange(c, trust)
					if err != nil || tolerated != nil && tolerated(i, rep) {
						continue
					}
					if rep.Complete || len(rep.Gaps) != 1 || rep.From >= from && rep.To <= to {
						t.Errorf("byte %d changed (%q -> %q) still verifies: %+v", i, data[i], c[i], rep)
						return
					}
					widened.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if widened.Load() == 0 && byteStride == 1 {
		t.Fatal("no change of from or to verified (as incomplete)")
	}
}

func cloneRange(t testing.TB, data []byte) *bundle.Range {
	t.Helper()
	r, err := bundle.ParseRange(data)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// Each member of the golden range changed on its own, re-encoded canonically, fails at the
// step that checks it, naming the reading, batch or anchor.
func TestRangeTamper(t *testing.T) {
	data, trust := goldenRange(t)
	flip := func(h bundle.Hex) bundle.Hex { h = bytes.Clone(h); h[len(h)/2] ^= 1; return h }
	other := reading.NewEd25519Key(ed25519.NewKeyFromSeed(seeded(9)))
	for name, tc := range map[string]struct {
		mutate func(*bundle.Range)
		step   string
		names  string
	}{
		"raw byte":          {func(r *bundle.Range) { r.Readings[4].Raw = flip(r.Readings[4].Raw) }, "reading signature", "seq 5"},
		"raw signature":     {func(r *bundle.Range) { r.Readings[6].Raw = flipLast(r.Readings[6].Raw) }, "reading signature", "seq 7"},
		"seq moved":         {func(r *bundle.Range) { r.Readings[8].Seq = 10; r.To = 10 }, "reading signature", "seq 10"},
		"other device":      {func(r *bundle.Range) { r.Device = "other-device" }, "reading signature", "head 0"},
		"public key":        {func(r *bundle.Range) { r.Heads[0].Device.PublicKey = other.Public().Key }, "reading signature", "seq 1"},
		"device status":     {func(r *bundle.Range) { r.Heads[0].Device.Status = "revoked" }, "device record", "head 0"},
		"record":            {func(r *bundle.Range) { r.Heads[0].Device.Record = flip(r.Heads[0].Device.Record) }, "device record", "head 0"},
		"registry proof":    {func(r *bundle.Range) { r.Heads[0].Device.RegistryProof = flip(r.Heads[0].Device.RegistryProof) }, "device record", "head 0"},
		"registry root":     {func(r *bundle.Range) { r.Heads[0].RegistryRoot = flip(r.Heads[0].RegistryRoot) }, "device record", "head 0"},
		"batch proof node":  {func(r *bundle.Range) { r.Batches[0].Proof[1] = flip(r.Batches[0].Proof[1]) }, "batch", "batch 0"},
		"batch proof short": {func(r *bundle.Range) { r.Batches[1].Proof = r.Batches[1].Proof[1:] }, "batch", "batch 1"},
		"batch root":        {func(r *bundle.Range) { r.Batches[2].Root = flip(r.Batches[2].Root) }, "batch", "batch 2"},
		"leaf index":        {func(r *bundle.Range) { r.Readings[0].LeafIndex = 0 }, "batch", "batch 0"},
		"same leaf":         {func(r *bundle.Range) { r.Readings[1].LeafIndex = r.Readings[0].LeafIndex }, "batch", "seq 1 and seq 2"},
		"reading swapped":   {func(r *bundle.Range) { r.Readings[0].Raw, r.Readings[1].Raw = r.Readings[1].Raw, r.Readings[0].Raw }, "reading signature", "seq 1"},
		"batch size":        {func(r *bundle.Range) { r.Batches[0].Size++ }, "anchor", "anchor 0"},
		"batch id":          {func(r *bundle.Range) { r.Batches[1].ID = flip(r.Batches[1].ID) }, "anchor", "anchor 0"},
		"batch index":       {func(r *bundle.Range) { r.Batches[2].BatchIndex = 0 }, "anchor", "anchor 1"},
		"anchor proof node": {func(r *bundle.Range) { r.Anchors[0].Proof[0] = flip(r.Anchors[0].Proof[0]) }, "anchor", "anchor 0"},
		"anchor root":       {func(r *bundle.Range) { r.Anchors[1].Root = flip(r.Anchors[1].Root) }, "anchor", "anchor 1"},
		"anchor batches":    {func(r *bundle.Range) { r.Anchors[0].Batches = 4 }, "anchor", "anchor 0"},
		"anchor id":         {func(r *bundle.Range) { r.Anchors[1].ID = flip(r.Anchors[1].ID) }, "anchor entry", "anchor 1"},
		"entry":             {func(r *bundle.Range) { r.Anchors[0].Entry = flip(r.Anchors[0].Entry) }, "anchor entry", "anchor 0"},
		"entries swapped":   {func(r *bundle.Range) { r.Anchors[0].Entry, r.Anchors[1].Entry = r.Anchors[1].Entry, r.Anchors[0].Entry }, "anchor entry", "anchor 0"},
		"log proof":         {func(r *bundle.Range) { r.Heads[0].LogProof[0] = flip(r.Heads[0].LogProof[0]) }, "ledger log", "head 0"},
		"log proof short":   {func(r *bundle.Range) { r.Heads[0].LogProof = nil }, "ledger log", "head 0"},
		"log index":         {func(r *bundle.Range) { r.Anchors[0].LogIndex = 0 }, "ledger log", "anchors 0 to 1"},
		"log size":          {func(r *bundle.Range) { r.Heads[0].LogSize++ }, "ledger log", "head 0"},
		"log root":          {func(r *bundle.Range) { r.Heads[0].LogRoot = flip(r.Heads[0].LogRoot) }, "ledger log", "head 0"},
		"state root":        {func(r *bundle.Range) { r.Heads[0].StateRoot = flip(r.Heads[0].StateRoot) }, "app hash", "head 0"},
		"light block hash": {func(r *bundle.Range) {
			r.Heads[0].LightBlock = changeAfter(t, r.Heads[0].LightBlock, `"app_hash":"`)
		}, "app hash", "head 0"},
		"light block sig": {func(r *bundle.Range) {
			r.Heads[0].LightBlock = flipSignature(t, r.Heads[0].LightBlock)
		}, "signed header", "head 0"},
		"height":   {func(r *bundle.Range) { r.Heads[0].Height++ }, "signed header", "head 0"},
		"chain id": {func(r *bundle.Range) { r.ChainID = "other" }, "signed header", "head 0"},
	} {
		t.Run(name, func(t *testing.T) {
			r := cloneRange(t, data)
			tc.mutate(r)
			rep, err := VerifyRange(marshalRange(t, r), trust)
			if !errors.Is(err, ErrVerify) {
				t.Fatalf("verified: %v", err)
			}
			last := rep.Steps[len(rep.Steps)-1]
			if last.OK || last.Name != tc.step || !strings.Contains(last.Detail, tc.names) {
				t.Fatalf("failed at %q (%s), want %q naming %q", last.Name, last.Detail, tc.step, tc.names)
			}
		})
	}
	// A trust file for another chain refuses the genuine range.
	if _, err := VerifyRange(data, bytes.Replace(trust, []byte(`"proof-test"`), []byte(`"proof-tess"`), 1)); !errors.Is(err, ErrVerify) {
		t.Fatalf("other chain: %v", err)
	}
	// Members the format does not know, and those it reserves for erased readings, are refused.
	for name, tc := range map[string]struct {
		edit func([]byte) []byte
		want error
	}{
		"erased": {func(b []byte) []byte {
			return bytes.Replace(b, []byte(`"leaf_index": 5,`), []byte(`"leaf_index": 5,
      "leaf": "00",`), 1)
		}, bundle.ErrErased},
		"unknown": {func(b []byte) []byte { return bytes.Replace(b, []byte(`"from": 1,`), []byte(`"from": 1, "x": 1,`), 1) }, bundle.ErrFormat},
	} {
		c := tc.edit(data)
		if bytes.Equal(c, data) {
			t.Fatalf("%s: no edit", name)
		}
		rep, err := VerifyRange(c, trust)
		if !errors.Is(err, ErrVerify) || !errors.Is(err, tc.want) || rep.Steps[0].Name != "bundle" {
			t.Fatalf("%s: %v", name, err)
		}
	}
}

func flipLast(h bundle.Hex) bundle.Hex { h = bytes.Clone(h); h[len(h)-1] ^= 1; return h }

// synth is a ledger made from synthetic parts, as in v2_test.go but under app hash v1 with
// the device's record in a sorted registry: one register entry, then anchors, each committed
// by a header signed by four validators of the tests' own keys.
type synth struct {
	t      testing.TB
	dev    string
	log    [][]byte
	reg    []merkle.Hash // sorted registry leaves
	regIdx uint64
	record []byte
	set    *types.ValidatorSet
	pvs    []types.PrivValidator
	height int64
	at     time.Time
	chain  []*types.LightBlock // light blocks around the set changes so far
}

const synthChain = "range-test"

func newSynth(t testing.TB, dev string, key reading.PublicKey) *synth {
	t.Helper()
	at := time.UnixMilli(1_764_000_000_000)
	admin := ed25519.NewKeyFromSeed(seeded(1))
	reg, err := entry.NewRegister(admin, dev, key, at)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := entry.Record{Dev: dev, Alg: key.Alg, Key: key.Key, Status: entry.StatusActive, Height: 1}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	keys := make([]ed25519.PrivateKey, 4)
	for i := range keys {
		keys[i] = ed25519.NewKeyFromSeed(seeded(byte(60 + i)))
	}
	s := &synth{t: t, dev: dev, log: [][]byte{reg}, record: rec, height: 2, at: at}
	s.set, s.pvs = testSet(t, keys)
	// The device's record between two others, so that its registry path is not empty.
	s.reg = []merkle.Hash{merkle.LeafHash([]byte("a record")), merkle.LeafHash(rec), merkle.LeafHash([]byte("z record"))}
	s.regIdx = 1
	return s
}

func (s *synth) trust() []byte {
	tr, err := TrustFileAt(synthChain, 1, s.set)
	if err != nil {
		s.t.Fatal(err)
	}
	return tr
}

// prover proves entries of the synthetic log, as the ledger's log multiproof query does.
func (s *synth) prover() LogProver {
	return func(indices []uint64, size uint64) ([]merkle.Hash, error) {
		leaves := make([]merkle.Hash, size)
		for i := range leaves {
			leaves[i] = merkle.EntryLeaf(s.log[i])
		}
		p, _, err := merkle.MultiProof(leaves, indices)
		return p, err
	}
}

// anchor appends an anchor of bs to the log and returns their readings' parts, the header
// after it at the next height.
func (s *synth) anchor(idByte byte, bs []testBatch) []Parts {
	t := s.t
	t.Helper()
	ab, root, readings := anchorBatches(t, bs)
	var id [16]byte
	id[0], id[15] = 0xa0, idByte
	e, err := entry.NewAnchor(id, root, uint64(len(ab)), readings, s.at)
	if err != nil {
		t.Fatal(err)
	}
	s.log = append(s.log, e)
	leaves := make([]merkle.Hash, len(s.log))
	for i, e := range s.log {
		leaves[i] = merkle.EntryLeaf(e)
	}
	logRoot, err := merkle.Root(leaves)
	if err != nil {
		t.Fatal(err)
	}
	logPath, err := merkle.InclusionPath(leaves, uint64(len(s.log)-1))
	if err != nil {
		t.Fatal(err)
	}
	regRoot, err := merkle.RegistryFromLeaves(s.reg)
	if err != nil {
		t.Fatal(err)
	}
	regPath, err := merkle.InclusionPath(s.reg, s.regIdx)
	if err != nil {
		t.Fatal(err)
	}
	s.height += 2
	s.at = s.at.Add(2 * time.Second)
	app := merkle.AppHash(uint64(len(s.log)), logRoot, regRoot)
	lb := synthBlock(t, s.height, s.at, app[:], s.set, s.pvs)
	base := Parts{AnchorID: id, ChainID: synthChain, Entry: e, LogIndex: uint64(len(s.log) - 1), LogSize: uint64(len(s.log)), LogPath: logPath,
		LogRoot: logRoot, RegistryRoot: regRoot, Record: s.record, RegistryIndex: s.regIdx, RegistrySize: uint64(len(s.reg)), RegistryPath: regPath,
		LightBlock: lb, LightChain: slices.Clone(s.chain)}
	return partsOf(base, ab, bs)
}

// changeSet replaces the validators by those of keys: the last block of the old set (naming
// the new one next) and the first of the new go into the light chain.
func (s *synth) changeSet(keys []ed25519.PrivateKey) {
	set, pvs := testSet(s.t, keys)
	app := tmhash.Sum([]byte("app"))
	s.at = s.at.Add(time.Second)
	s.chain = append(s.chain, synthBlockNext(s.t, s.height+1, s.at, app, s.set, set, s.pvs))
	s.at = s.at.Add(time.Second)
	s.chain = append(s.chain, synthBlockNext(s.t, s.height+2, s.at, app, set, set, pvs))
	s.height += 2
	s.set, s.pvs = set, pvs
}

// synthBlock is testBlockApp for a testing.TB: a light block at height signed by all of set.
func synthBlock(t testing.TB, height int64, at time.Time, appHash []byte, set *types.ValidatorSet, pvs []types.PrivValidator) *types.LightBlock {
	return synthBlockNext(t, height, at, appHash, set, set, pvs)
}

func synthBlockNext(t testing.TB, height int64, at time.Time, appHash []byte, set, next *types.ValidatorSet, pvs []types.PrivValidator) *types.LightBlock {
	t.Helper()
	h := &types.Header{
		Version: cmtversion.Consensus{Block: version.BlockProtocol}, ChainID: synthChain, Height: height, Time: at,
		ValidatorsHash: set.Hash(), NextValidatorsHash: next.Hash(), DataHash: tmhash.Sum(nil),
		AppHash: appHash, ConsensusHash: tmhash.Sum([]byte("cons")), LastResultsHash: tmhash.Sum(nil),
		ProposerAddress: set.Validators[0].Address,
	}
	id := types.BlockID{Hash: h.Hash(), PartSetHeader: types.PartSetHeader{Total: 1, Hash: tmhash.Sum([]byte("parts"))}}
	vs := types.NewVoteSet(synthChain, height, 0, cmtproto.PrecommitType, set)
	ext, err := types.MakeExtCommit(id, height, 0, vs, pvs, at, false)
	if err != nil {
		t.Fatal(err)
	}
	return &types.LightBlock{SignedHeader: &types.SignedHeader{Header: h, Commit: ext.ToCommit()}, ValidatorSet: set}
}

// synthRange makes the parts of seqs 1..anchors·batches·perBatch of one device, chained or
// not, perBatch readings in each batch of size leaves, batches batches per anchor.
func synthRange(t testing.TB, k reading.PrivateKey, anchors, batches, size, perBatch int, chain bool) (*synth, []Parts) {
	t.Helper()
	const dev = "synth-device"
	s := newSynth(t, dev, k.Public())
	n := anchors * batches * perBatch
	seqs := make([]uint64, n)
	for i := range seqs {
		seqs[i] = uint64(i + 1)
	}
	var raws [][]byte
	if chain {
		raws = chained(t, k, dev, seqs, nil)
	} else {
		for _, seq := range seqs {
			raws = append(raws, chained(t, k, dev, []uint64{seq}, nil)[0])
		}
	}
	var parts []Parts
	next := 0
	for a := range anchors {
		var bs []testBatch
		for b := range batches {
			at := make([]uint64, perBatch)
			for j := range at {
				at[j] = uint64(j * size / perBatch)
			}
			bs = append(bs, batchOf(byte(a*batches+b), size, at, raws[next:next+perBatch]))
			next += perBatch
		}
		parts = append(parts, s.anchor(byte(a), bs)...)
	}
	return s, parts
}

// Ranges of synthetic parts: complete, with a reading left out, unchained, wider than their
// readings, of ES256, with a bad signature among many, and parts that do not fit together.
func TestRangeVerify(t *testing.T) {
	ed := reading.NewEd25519Key(ed25519.NewKeyFromSeed(seeded(2)))
	s, parts := synthRange(t, ed, 2, 2, 10, 4, true) // seqs 1..16
	trust := s.trust()
	build := func(s *synth, from, to uint64, ps []Parts) []byte {
		t.Helper()
		r, err := BuildRange("synth-device", from, to, ps, s.prover())
		if err != nil {
			t.Fatal(err)
		}
		return marshalRange(t, r)
	}
	rep := mustVerifyRange(t, build(s, 1, 16, parts), trust)
	if !rep.Complete || rep.Chained != 15 || rep.Anchors != 2 || rep.Heads != 1 || rep.Batches != 4 {
		t.Fatalf("%+v", rep)
	}

	// Seq 6 left out: the rest verifies, the range is not complete, and the gap is named.
	var without []Parts
	for _, p := range parts {
		if p.Seq != 6 {
			without = append(without, p)
		}
	}
	rep = mustVerifyRange(t, build(s, 1, 16, without), trust)
	if rep.Complete || len(rep.Gaps) != 1 || rep.Gaps[0].From != 6 || rep.Gaps[0].To != 6 || !strings.Contains(rep.Gaps[0].Reason, "seq 7's prev is not seq 5's leaf") {
		t.Fatalf("%+v", rep)
	}
	var buf bytes.Buffer
	rep.Print(&buf)
	t.Logf("seq 6 left out:\n%s", buf.String())
	if !strings.Contains(buf.String(), "! complete           not shown") || !strings.Contains(buf.String(), "! gap                seqs 6..6: seq 7's prev") {
		t.Fatalf("report:\n%s", buf.String())
	}

	// A range wider than its readings: the ends cannot be shown empty by prev.
	rep = mustVerifyRange(t, build(s, 0, 20, parts), trust)
	if rep.Complete || len(rep.Gaps) != 2 || rep.Gaps[0] != (Gap{0, 0, rep.Gaps[0].Reason}) || rep.Gaps[1].From != 17 || rep.Gaps[1].To != 20 {
		t.Fatalf("%+v", rep)
	}

	// Unchained readings: complete where seqs are consecutive, a gap where one is left out.
	s2, plain := synthRange(t, ed, 1, 2, 8, 3, false) // seqs 1..6
	rep = mustVerifyRange(t, build(s2, 1, 6, plain), s2.trust())
	if !rep.Complete || rep.Chained != 0 {
		t.Fatalf("%+v", rep)
	}
	rep = mustVerifyRange(t, build(s2, 1, 6, slices.DeleteFunc(plain, func(p Parts) bool { return p.Seq == 3 })), s2.trust())
	if rep.Complete || len(rep.Gaps) != 1 || !strings.Contains(rep.Gaps[0].Reason, "has no prev") {
		t.Fatalf("%+v", rep)
	}

	// ES256.
	es := es256Key(t, 7)
	s3, esParts := synthRange(t, es, 2, 1, 5, 3, true)
	rep = mustVerifyRange(t, build(s3, 1, 6, esParts), s3.trust())
	if rep.ES256 != 6 || rep.Ed25519 != 0 || !rep.Complete {
		t.Fatalf("%+v", rep)
	}

	// A bad signature among hundreds, verified in batches over the CPUs, is found and named.
	s4, many := synthRange(t, ed, 2, 2, 300, 200, false) // 800 readings
	r, err := BuildRange("synth-device", 1, 800, many, s4.prover())
	if err != nil {
		t.Fatal(err)
	}
	mustVerifyRange(t, marshalRange(t, r), s4.trust())
	for _, i := range []int{0, 533, 799} {
		bad := cloneRange(t, marshalRange(t, r))
		bad.Readings[i].Raw = flipLast(bad.Readings[i].Raw)
		rep, err := VerifyRange(marshalRange(t, bad), s4.trust())
		last := rep.Steps[len(rep.Steps)-1]
		if !errors.Is(err, ErrVerify) || last.Name != "reading signature" || !strings.Contains(last.Detail, fmt.Sprintf("reading seq %d ", i+1)) {
			t.Fatalf("bad signature of seq %d: %v (%s)", i+1, err, last.Detail)
		}
	}

	// Parts that do not fit together.
	for name, mutate := range map[string]func([]Parts) []Parts{
		"none":           func([]Parts) []Parts { return nil },
		"other device":   func(ps []Parts) []Parts { ps[3].Device = "x"; return ps },
		"outside":        func(ps []Parts) []Parts { ps[3].Seq = 40; return ps },
		"repeated seq":   func(ps []Parts) []Parts { ps[3].Seq = ps[4].Seq; return ps },
		"other entry":    func(ps []Parts) []Parts { ps[1].Entry = ps[len(ps)-1].Entry; return ps },
		"other leaves":   func(ps []Parts) []Parts { ps[1].BatchLeaves = ps[len(ps)-1].BatchLeaves; return ps },
		"wrong leaf":     func(ps []Parts) []Parts { ps[2].LeafIndex++; return ps },
		"same leaf":      func(ps []Parts) []Parts { ps[2].LeafIndex, ps[2].Raw = ps[1].LeafIndex, ps[1].Raw; return ps },
		"other chain":    func(ps []Parts) []Parts { ps[5].ChainID = "x"; return ps },
		"other record":   func(ps []Parts) []Parts { ps[1].Record = []byte{1}; return ps },
		"other block":    func(ps []Parts) []Parts { ps[1].LightBlock = ps[len(ps)-1].LightBlock; return ps },
		"batch index":    func(ps []Parts) []Parts { ps[1].BatchIndex = 0; return ps },
		"anchor batches": func(ps []Parts) []Parts { ps[0].AnchorBatches = ps[0].AnchorBatches[:1]; return ps },
	} {
		t.Run(name, func(t *testing.T) {
			ps := mutate(append([]Parts(nil), parts...))
			if _, err := BuildRange("synth-device", 1, 16, ps, s.prover()); !errors.Is(err, ErrInconsistent) {
				t.Fatalf("BuildRange: %v, want ErrInconsistent", err)
			}
		})
	}
	// A log proof that does not rebuild the head's log root, or none.
	for name, prove := range map[string]LogProver{
		"wrong proof": func(idx []uint64, size uint64) ([]merkle.Hash, error) {
			p, err := s.prover()(idx, size)
			p[0][0] ^= 1
			return p, err
		},
		"ledger error": func([]uint64, uint64) ([]merkle.Hash, error) { return nil, errors.New("ledger down") },
	} {
		if _, err := BuildRange("synth-device", 1, 16, parts, prove); !errors.Is(err, ErrInconsistent) {
			t.Fatalf("%s: BuildRange: %v, want ErrInconsistent", name, err)
		}
	}
}

// A range across a change of the validator set: the anchors' light chains are written once,
// and each header is checked from the blocks below it, as its bundle would be.
func TestRangeLightChain(t *testing.T) {
	ed := reading.NewEd25519Key(ed25519.NewKeyFromSeed(seeded(2)))
	s := newSynth(t, "synth-device", ed.Public())
	trust := s.trust() // the first set, at height 1
	raws := chained(t, ed, s.dev, []uint64{1, 2, 3, 4, 5, 6}, nil)
	parts := s.anchor(1, []testBatch{batchOf(1, 4, []uint64{0, 3}, raws[0:2])})
	keys := make([]ed25519.PrivateKey, 3)
	for i := range keys {
		keys[i] = ed25519.NewKeyFromSeed(seeded(byte(80 + i)))
	}
	s.changeSet(keys) // a complete replacement: only the adjacent hop crosses it
	parts = append(parts, s.anchor(2, []testBatch{batchOf(2, 4, []uint64{1, 2}, raws[2:4])})...)
	parts = append(parts, s.anchor(3, []testBatch{batchOf(3, 4, []uint64{0, 1}, raws[4:6])})...)
	// With a log prover, one head (the last anchor's) and its chain.
	one, err := BuildRange(s.dev, 1, 6, parts, s.prover())
	if err != nil {
		t.Fatal(err)
	}
	rep := mustVerifyRange(t, marshalRange(t, one), trust)
	var buf bytes.Buffer
	rep.Print(&buf)
	if len(one.Heads) != 1 || len(one.LightChain) != 2 || !strings.Contains(buf.String(), "✓ light chain        2 hops below") || !rep.Complete {
		t.Fatalf("one head: %d heads, %d light blocks:\n%s", len(one.Heads), len(one.LightChain), buf.String())
	}
	// Without, a head per anchor, each header checked from the blocks below it.
	r, err := BuildRange(s.dev, 1, 6, parts, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.LightChain) != 2 || len(r.Heads) != 3 {
		t.Fatalf("%d light blocks, %d heads", len(r.LightChain), len(r.Heads))
	}
	data := marshalRange(t, r)
	rep = mustVerifyRange(t, data, trust)
	buf.Reset()
	rep.Print(&buf)
	out := buf.String()
	// Anchor 1's header has no block below it; anchors 2 and 3 hop over both.
	if !strings.Contains(out, "✓ light chain        2 light blocks, heights 5 to 6") || !strings.Contains(out, "✓ light chain        4 hops below") || !rep.Complete {
		t.Fatalf("report:\n%s", out)
	}
	// Without the chain, the headers of the new set are not trusted.
	bad := cloneRange(t, data)
	bad.LightChain = nil
	rep, err = VerifyRange(marshalRange(t, bad), trust)
	if last := rep.Steps[len(rep.Steps)-1]; !errors.Is(err, ErrVerify) || last.Name != "signed header" || !strings.Contains(last.Detail, "head 1") {
		t.Fatalf("no light chain: %v", err)
	}
	// Nor with the first set's last block dropped.
	bad = cloneRange(t, data)
	bad.LightChain = bad.LightChain[1:]
	rep, err = VerifyRange(marshalRange(t, bad), trust)
	if last := rep.Steps[len(rep.Steps)-1]; !errors.Is(err, ErrVerify) || last.Name != "light chain" || !strings.Contains(last.Detail, "head 1") {
		t.Fatalf("light chain without the old set's last block: %v", err)
	}
	// A block above every header is checked by nothing, so it is refused.
	bad = cloneRange(t, data)
	top, err := encodeLightBlock(synthBlock(t, 99, s.at.Add(time.Minute), tmhash.Sum(nil), s.set, s.pvs))
	if err != nil {
		t.Fatal(err)
	}
	bad.LightChain = append(bad.LightChain, top)
	rep, err = VerifyRange(marshalRange(t, bad), trust)
	if last := rep.Steps[len(rep.Steps)-1]; !errors.Is(err, ErrVerify) || last.Name != "light chain" || !strings.Contains(last.Detail, "not below any head's header") {
		t.Fatalf("block above the headers: %v", err)
	}
	// A trust file of the new set verifies the range too: the old set's blocks lie before its
	// height, and anchor 0's header, older than the trusted height, must be signed by it.
	newTrust, err := TrustFileAt(synthChain, 6, s.set)
	if err != nil {
		t.Fatal(err)
	}
	rep, err = VerifyRange(data, newTrust)
	if last := rep.Steps[len(rep.Steps)-1]; !errors.Is(err, ErrVerify) || last.Name != "signed header" || !strings.Contains(last.Detail, "head 0") {
		t.Fatalf("new set's trust file: %v", err)
	}
}

// A reading anchored after its device was revoked does not verify; nor does a range of
// anchors of two ledgers.
func TestRangeRevoked(t *testing.T) {
	ed := reading.NewEd25519Key(ed25519.NewKeyFromSeed(seeded(2)))
	s, parts := synthRange(t, ed, 2, 1, 4, 2, true)
	rec, err := entry.Record{Dev: s.dev, Alg: reading.Ed25519, Key: ed.Public().Key, Status: entry.StatusRevoked, Height: 5}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	s.record = rec
	s.reg[1] = merkle.LeafHash(rec)
	raws := chained(t, ed, s.dev, []uint64{5}, nil)
	late := s.anchor(9, []testBatch{batchOf(9, 3, []uint64{1}, raws)})
	r, err := BuildRange(s.dev, 1, 5, append(parts, late...), s.prover())
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Heads) != 2 || r.Anchors[1].Head != 0 || r.Anchors[2].Head != 1 {
		t.Fatalf("the record changed after anchor 1: %d heads, want one for anchors 0 and 1 and one for anchor 2", len(r.Heads))
	}
	rep, err := VerifyRange(marshalRange(t, r), s.trust())
	last := rep.Steps[len(rep.Steps)-1]
	if !errors.Is(err, ErrVerify) || last.Name != "device record" || !strings.Contains(last.Detail, "head 1") || !strings.Contains(last.Detail, "revoked") {
		t.Fatalf("revoked: %v (%s)", err, last.Detail)
	}
}

// asServed sets in parts what a proof server keeps (stack.Proofs): each anchor's Shared and
// each batch's tree, made once.
func asServed(t testing.TB, parts []Parts) []Parts {
	t.Helper()
	out := slices.Clone(parts)
	shared := map[[16]byte]*Shared{}
	trees := map[[16]byte]*merkle.Tree{}
	for i := range out {
		p := &out[i]
		if shared[p.AnchorID] == nil {
			s, err := NewShared(*p)
			if err != nil {
				t.Fatal(err)
			}
			shared[p.AnchorID] = s
		}
		if trees[p.BatchID] == nil {
			var tr merkle.Tree
			for _, l := range p.BatchLeaves {
				tr.Append(l)
			}
			trees[p.BatchID] = &tr
		}
		p.Shared, p.BatchTree = shared[p.AnchorID], trees[p.BatchID]
	}
	return out
}

// BenchmarkRange builds, encodes and verifies the range of 10,000 readings of one device over
// two anchors of five batches of 1,000 (Ed25519, then ES256), and, for reference, verifies
// the same Ed25519 signatures one by one. readings/s counts end to end.
//
//	go test -run '^$' -bench Range -benchtime 3x ./anchor/proof/
func BenchmarkRange(b *testing.B) {
	for _, alg := range []reading.Alg{reading.Ed25519, reading.ES256} {
		var k reading.PrivateKey
		if alg == reading.Ed25519 {
			k = reading.NewEd25519Key(ed25519.NewKeyFromSeed(seeded(2)))
		} else {
			var err error
			if k, err = reading.GenerateKey(reading.ES256); err != nil {
				b.Fatal(err)
			}
		}
		s, parts := synthRange(b, k, 2, 5, 1000, 1000, true)
		parts = asServed(b, parts)
		trust := s.trust()
		b.Run(fmt.Sprintf("%s-10000", alg), func(b *testing.B) {
			var size int
			for b.Loop() {
				r, err := BuildRange(s.dev, 1, 10000, parts, s.prover())
				if err != nil {
					b.Fatal(err)
				}
				data, err := r.Marshal()
				if err != nil {
					b.Fatal(err)
				}
				size = len(data)
				if rep, err := VerifyRange(data, trust); err != nil || !rep.Complete {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(parts)*b.N)/b.Elapsed().Seconds(), "readings/s")
			b.ReportMetric(float64(size)/float64(len(parts)), "bytes/reading")
		})
		if alg != reading.Ed25519 {
			continue
		}
		// The shape of a device among many: 10 readings in each batch of 1,000, one batch
		// per anchor, 100 anchors (each with its light block of four validators).
		s2, sparse := synthRange(b, k, 100, 1, 1000, 10, true)
		sparse = asServed(b, sparse)
		trust2 := s2.trust()
		b.Run("ed25519-1000-over-100-anchors", func(b *testing.B) {
			for b.Loop() {
				r, err := BuildRange(s2.dev, 1, 1000, sparse, s2.prover())
				if err != nil {
					b.Fatal(err)
				}
				data, err := r.Marshal()
				if err != nil {
					b.Fatal(err)
				}
				if _, err := VerifyRange(data, trust2); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(sparse)*b.N)/b.Elapsed().Seconds(), "readings/s")
		})
		b.Run("ed25519-single-reference", func(b *testing.B) {
			msgs := make([]*reading.Message, len(parts))
			for i, p := range parts {
				m, err := reading.Decode(p.Raw)
				if err != nil {
					b.Fatal(err)
				}
				msgs[i] = m
			}
			for b.Loop() {
				for _, m := range msgs {
					if err := m.Verify(k.Public()); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(len(msgs)*b.N)/b.Elapsed().Seconds(), "verifies/s")
		})
	}
}

// FuzzVerifyRange: nothing but the golden range verifies, but for the golden range with a
// wider from or to (reported incomplete).
func FuzzVerifyRange(f *testing.F) {
	data, trust := goldenRange(f)
	golden := cloneRange(f, data)
	f.Add(data)
	f.Add(bytes.Replace(data, []byte(`"seq": 3,`), []byte(`"seq": 4,`), 1))
	f.Add([]byte(`{"format":"anchorline.range/v1"}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		rep, err := VerifyRange(in, trust)
		if err != nil || bytes.Equal(in, data) {
			return
		}
		r := cloneRange(t, in)
		if rep.Complete || r.From > golden.From || r.To < golden.To {
			t.Fatalf("a range other than the golden one verified:\n%s", in)
		}
		r.From, r.To = golden.From, golden.To
		if !bytes.Equal(marshalRange(t, r), data) {
			t.Fatalf("a range other than the golden one verified:\n%s", in)
		}
	})
}
