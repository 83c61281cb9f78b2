package proof

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cometbft/cometbft/types"

	"github.com/anchorline/anchorline/anchor/merkle"
	"github.com/anchorline/anchorline/schemas/bundle"
	"github.com/anchorline/anchorline/schemas/entry"
)

func goldenCheckpoint(t testing.TB) (c, trust []byte) {
	return readGolden(t, "checkpoint.json", "checkpoint-trust.json", "TestGoldenCheckpoint")
}

// ledgerCheckpoint is the checkpoint of c's latest signed header, as `log checkpoint` makes it.
func (c *chain) checkpoint(t *testing.T) []byte {
	t.Helper()
	ctx := context.Background()
	h, err := c.lc.Height(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st, err := c.lc.State(ctx, h-1)
	if err != nil {
		t.Fatal(err)
	}
	lb, err := c.lc.LightBlock(ctx, h)
	if err != nil {
		t.Fatal(err)
	}
	lchain, err := c.lc.LightChain(ctx, h)
	if err != nil {
		t.Fatal(err)
	}
	cp, err := BuildCheckpoint(lb.ChainID, st.AppState(), lb, lchain)
	if err != nil {
		t.Fatal(err)
	}
	b, err := cp.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustVerifyCheckpoint(t *testing.T, c, trust []byte) (LogHead, string) {
	t.Helper()
	head, r, err := VerifyCheckpoint(c, trust)
	var buf bytes.Buffer
	r.Print(&buf)
	if err != nil {
		t.Fatalf("checkpoint does not verify: %v\n%s", err, buf.String())
	}
	return head, buf.String()
}

// The golden checkpoint (a real ledger's light block, app hash v2) verifies, forever: it pins
// the format. -update writes it and its trust file from a fresh ledger holding three anchors.
func TestGoldenCheckpoint(t *testing.T) {
	if *update {
		c := newChain(t)
		var last int64
		for i := range 3 {
			var id, root [16]byte
			id[0], id[1], root[0] = 0xc0, byte(i), byte(i)
			e, err := entry.NewAnchor(id, [32]byte(bytes.Repeat(root[:1], 32)), 1, 1, time.UnixMilli(1_764_000_000_000+int64(i)))
			if err != nil {
				t.Fatal(err)
			}
			last = c.submit(t, e)
		}
		// The header after the last block commits all three.
		if err := c.lc.WaitHeight(context.Background(), last+1); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join("testdata", "checkpoint.json"), c.checkpoint(t), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join("testdata", "checkpoint-trust.json"), c.trustAt1(t), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, trust := goldenCheckpoint(t)
	head, out := mustVerifyCheckpoint(t, b, trust)
	for _, want := range []string{"✓ checkpoint         anchorline.checkpoint/v1, canonical encoding", "✓ trust ", "✓ app hash           ", "(app hash v2)",
		"✓ signed header      block "} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	cp, err := bundle.ParseCheckpoint(b)
	if err != nil {
		t.Fatal(err)
	}
	if head.LogSize != cp.LogSize || !bytes.Equal(head.LogRoot[:], cp.LogRoot) || head.Height != cp.Height || head.ChainID != cp.ChainID || head.LogSize < 3 {
		t.Fatalf("head %+v, checkpoint %+v", head, cp)
	}
}

// trustAt1 is the trust file of c's genesis set, pinned at height 1 (what `trust export` writes
// while the set never changed).
func (c *chain) trustAt1(t *testing.T) []byte {
	t.Helper()
	ctx := context.Background()
	id, err := c.lc.ChainID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	vals, err := c.lc.Validators(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := TrustFileAt(id, 1, vals)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// Every single-byte change of the golden checkpoint is refused.
func TestEveryByteMattersCheckpoint(t *testing.T) {
	b, trust := goldenCheckpoint(t)
	for i := range b {
		for _, d := range []byte{1, 0x20} {
			c := bytes.Clone(b)
			c[i] ^= d
			if _, _, err := VerifyCheckpoint(c, trust); err == nil {
				t.Fatalf("byte %d changed (%q -> %q) still verifies", i, b[i], c[i])
			}
		}
	}
}

// A checkpoint changed in one field, and re-encoded canonically, fails at the step that checks
// that field.
func TestCheckpointTampered(t *testing.T) {
	b, trust := goldenCheckpoint(t)
	orig, err := bundle.ParseCheckpoint(b)
	if err != nil {
		t.Fatal(err)
	}
	other := otherTrust(t, ed25519.NewKeyFromSeed(seeded(99)))
	for name, tc := range map[string]struct {
		mutate func(c *bundle.Checkpoint)
		trust  []byte
		raw    func([]byte) []byte
		step   string
	}{
		"log size":       {mutate: func(c *bundle.Checkpoint) { c.LogSize++ }, step: "app hash"},
		"log size 0":     {mutate: func(c *bundle.Checkpoint) { c.LogSize = 0 }, step: "app hash"},
		"log root":       {mutate: func(c *bundle.Checkpoint) { c.LogRoot[0] ^= 1 }, step: "app hash"},
		"short log root": {mutate: func(c *bundle.Checkpoint) { c.LogRoot = c.LogRoot[:31] }, step: "app hash"},
		"state root":     {mutate: func(c *bundle.Checkpoint) { c.StateRoot[31] ^= 0x80 }, step: "app hash"},
		"read as v1":     {mutate: func(c *bundle.Checkpoint) { c.AppHashVersion, c.RegistryRoot, c.StateRoot = 0, c.StateRoot, nil }, step: "app hash"},
		"height":         {mutate: func(c *bundle.Checkpoint) { c.Height++ }, step: "signed header"},
		"chain id":       {mutate: func(c *bundle.Checkpoint) { c.ChainID = "other-chain" }, step: "signed header"},
		"signature":      {mutate: func(c *bundle.Checkpoint) { c.LightBlock = flipSignature(t, compacted(t, c.LightBlock)) }, step: "signed header"},
		"light chain": {mutate: func(c *bundle.Checkpoint) {
			c.LightChain = []json.RawMessage{flipSignature(t, compacted(t, c.LightBlock))}
		}, step: "light chain"},
		"other validators": {trust: other, step: "signed header"},
		"app hash member": {raw: func(b []byte) []byte {
			return bytes.Replace(b, []byte(`"app_hash_version": 2`), []byte(`"app_hash_version": 1`), 1)
		}, step: "checkpoint"},
		"extra space":    {raw: func(b []byte) []byte { return bytes.Replace(b, []byte(`"log_size": `), []byte(`"log_size":  `), 1) }, step: "checkpoint"},
		"a bundle":       {raw: func([]byte) []byte { g, _ := golden(t); return g }, step: "checkpoint"},
		"bad trust file": {trust: []byte(`{"format":"anchorline.trust/v1"}`), step: "trust"},
	} {
		t.Run(name, func(t *testing.T) {
			data, tr := b, trust
			if tc.mutate != nil {
				c := *orig
				c.LogRoot, c.StateRoot = bytes.Clone(orig.LogRoot), bytes.Clone(orig.StateRoot)
				tc.mutate(&c)
				var err error
				if data, err = c.Marshal(); err != nil {
					t.Fatal(err)
				}
			}
			if tc.raw != nil {
				data = tc.raw(b)
			}
			if tc.trust != nil {
				tr = tc.trust
			}
			_, r, err := VerifyCheckpoint(data, tr)
			if !errors.Is(err, ErrVerify) {
				t.Fatalf("verifies: %v", err)
			}
			last := r.Steps[len(r.Steps)-1]
			if last.OK || last.Name != tc.step {
				var buf bytes.Buffer
				r.Print(&buf)
				t.Fatalf("failed at %q, want %q:\n%s", last.Name, tc.step, buf.String())
			}
		})
	}
}

// synthHeads signs checkpoints of a log of its own under the test's validator keys, at app
// hash v1 or v2, for what a real ledger of today does not make (v1 checkpoints, validator
// sets replaced).
type synthHeads struct {
	chainID string
	set     *types.ValidatorSet
	pvs     []types.PrivValidator
	trust   []byte
}

const checkpointChain = "checkpoint-test"

func newSynthHeads(t *testing.T, seed byte) synthHeads {
	t.Helper()
	keys := make([]ed25519.PrivateKey, 4)
	for i := range keys {
		keys[i] = ed25519.NewKeyFromSeed(seeded(seed + byte(i)))
	}
	set, pvs := testSet(t, keys)
	trust, err := TrustFileAt(checkpointChain, 1, set)
	if err != nil {
		t.Fatal(err)
	}
	return synthHeads{chainID: checkpointChain, set: set, pvs: pvs, trust: trust}
}

// block is a light block at height whose header commits st, signed by s's set (next is the
// set it names next; nil: the same).
func (s synthHeads) block(t *testing.T, height int64, st merkle.AppState, next *types.ValidatorSet) *types.LightBlock {
	t.Helper()
	app, err := st.AppHash()
	if err != nil {
		t.Fatal(err)
	}
	if next == nil {
		next = s.set
	}
	return testBlockApp(t, s.chainID, height, time.Date(2026, 1, 1, 0, 0, int(height), 0, time.UTC), app[:], s.set, next, s.pvs)
}

func logOf(t *testing.T, entries ...string) *merkle.Tree {
	t.Helper()
	var tr merkle.Tree
	for _, e := range entries {
		tr.Append(merkle.EntryLeaf([]byte(e)))
	}
	return &tr
}

// A v1 checkpoint (registry root in the app hash) verifies; BuildCheckpoint refuses a state
// the header does not commit.
func TestCheckpointV1(t *testing.T) {
	s := newSynthHeads(t, 60)
	log := logOf(t, "a", "b", "c")
	st := merkle.AppState{Version: merkle.AppHashV1, LogSize: 3, LogRoot: log.Root(), RegistryRoot: merkle.LeafHash([]byte("registry"))}
	lb := s.block(t, 5, st, nil)
	cp, err := BuildCheckpoint(s.chainID, st, lb, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cp.V2() || len(cp.RegistryRoot) != 32 || cp.StateRoot != nil {
		t.Fatalf("v1 checkpoint %+v", cp)
	}
	b, err := cp.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	head, out := mustVerifyCheckpoint(t, b, s.trust)
	if head.LogSize != 3 || head.LogRoot != log.Root() || head.Height != 5 || !strings.Contains(out, "and registry root") {
		t.Fatalf("head %+v\n%s", head, out)
	}
	wrong := st
	wrong.LogSize = 4
	if _, err := BuildCheckpoint(s.chainID, wrong, lb, nil); !errors.Is(err, ErrInconsistent) {
		t.Fatalf("a state the header does not commit: %v, want ErrInconsistent", err)
	}
}

// A checkpoint after the validator set was replaced entirely verifies from the trust file of
// the old set through its light chain, one hop per block; without the chain it does not.
func TestCheckpointLightChain(t *testing.T) {
	old, repl := newSynthHeads(t, 70), newSynthHeads(t, 80)
	log := logOf(t, "a", "b")
	st := merkle.AppState{Version: merkle.AppHashV1, LogSize: 2, LogRoot: log.Root(), RegistryRoot: merkle.LeafHash([]byte("r"))}
	last := old.block(t, 9, st, repl.set) // the last the old set signed; names the new set next
	first := repl.block(t, 10, st, nil)   // the first the new set signed
	lb := repl.block(t, 14, st, nil)
	cp, err := BuildCheckpoint(checkpointChain, st, lb, []*types.LightBlock{last, first})
	if err != nil {
		t.Fatal(err)
	}
	b, err := cp.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	_, out := mustVerifyCheckpoint(t, b, old.trust)
	for _, want := range []string{"✓ light chain        2 light blocks, heights 9 to 10", "hop 1 of 3: height 9", "hop 2 of 3: height 10", "✓ signed header      hop 3 of 3"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	cp.LightChain = nil
	b, _ = cp.Marshal()
	if _, r, err := VerifyCheckpoint(b, old.trust); !errors.Is(err, ErrLightChain) || r.Steps[len(r.Steps)-1].Name != "signed header" {
		t.Fatalf("without its light chain: %v, want ErrLightChain at the signed header", err)
	}
}

func head(t *testing.T, log *merkle.Tree, size uint64, height int64) LogHead {
	t.Helper()
	root, err := log.RootAt(size)
	if err != nil {
		t.Fatal(err)
	}
	return LogHead{ChainID: checkpointChain, Height: height, LogSize: size, LogRoot: root}
}

func consistency(t *testing.T, log *merkle.Tree, size1, size2 uint64) []merkle.Hash {
	t.Helper()
	p, err := log.ConsistencyProof(size1, size2)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// VerifyExtends accepts a log that grew from the kept one and refuses, with the evidence, one
// that shrank, one rewritten (different entries at the same or at greater sizes, with the
// node's own honest proof), a tampered proof and another chain.
func TestVerifyExtends(t *testing.T) {
	a := logOf(t, "a0", "a1", "a2", "a3", "a4", "a5", "a6", "a7", "a8")
	b := logOf(t, "a0", "a1", "a2", "b3", "b4", "b5", "b6", "b7", "b8") // rewritten from entry 3 on
	tamper := func(p []merkle.Hash) []merkle.Hash {
		p = append([]merkle.Hash(nil), p...)
		p[len(p)-1][0] ^= 1
		return p
	}
	for name, tc := range map[string]struct {
		old, new LogHead
		proof    []merkle.Hash
		ok       bool
		at       uint64 // of the rebuilt root in the evidence, if any
		reason   string
	}{
		"grew 3 to 5":        {old: head(t, a, 3, 4), new: head(t, a, 5, 9), proof: consistency(t, a, 3, 5), ok: true},
		"grew 4 to 9":        {old: head(t, a, 4, 4), new: head(t, a, 9, 20), proof: consistency(t, a, 4, 9), ok: true},
		"grew 1 to 2":        {old: head(t, a, 1, 2), new: head(t, a, 2, 3), proof: consistency(t, a, 1, 2), ok: true},
		"same":               {old: head(t, a, 5, 4), new: head(t, a, 5, 9), ok: true},
		"from empty":         {old: LogHead{ChainID: checkpointChain, Height: 2}, new: head(t, a, 3, 9), ok: true},
		"rewritten 5 to 7":   {old: head(t, a, 5, 4), new: head(t, b, 7, 9), proof: consistency(t, b, 5, 7), at: 5, reason: "the ledger's first 5 entries are not the checkpoint's"},
		"rewritten 4 to 9":   {old: head(t, a, 4, 4), new: head(t, b, 9, 9), proof: consistency(t, b, 4, 9), at: 9, reason: "does not verify"},
		"rewritten same":     {old: head(t, a, 6, 4), new: head(t, b, 6, 9), at: 6, reason: "commit different roots for the same log size 6"},
		"shrank":             {old: head(t, a, 6, 4), new: head(t, b, 3, 3), reason: "the log shrank: 6 entries at header 4, 3 at header 3"},
		"tampered proof":     {old: head(t, a, 3, 4), new: head(t, a, 7, 9), proof: tamper(consistency(t, a, 3, 7)), reason: "does not verify"},
		"short proof":        {old: head(t, a, 3, 4), new: head(t, a, 7, 9), proof: consistency(t, a, 3, 7)[1:], reason: "does not verify"},
		"proof for same log": {old: head(t, a, 5, 4), new: head(t, a, 5, 9), proof: consistency(t, a, 3, 5), reason: "does not verify"},
		"other chain":        {old: head(t, a, 3, 4), new: LogHead{ChainID: "other", LogSize: 5}, reason: `the checkpoint is of chain "checkpoint-test", the ledger is "other"`},
	} {
		t.Run(name, func(t *testing.T) {
			step, err := VerifyExtends(tc.old, tc.new, tc.proof)
			if step.Name != "consistency" || step.OK != (err == nil) {
				t.Fatalf("step %+v for error %v", step, err)
			}
			if tc.ok {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			var ext *ExtensionError
			if !errors.As(err, &ext) || !errors.Is(err, ErrNotExtended) || !errors.Is(err, ErrVerify) {
				t.Fatalf("accepted or without evidence: %v", err)
			}
			if !strings.Contains(err.Error(), tc.reason) {
				t.Fatalf("error %q does not say %q", err, tc.reason)
			}
			if tc.at != 0 && ext.At != tc.at {
				t.Fatalf("evidence is for size %d, want %d: %v", ext.At, tc.at, err)
			}
			ev := strings.Join(ext.Evidence(), "\n")
			for _, want := range []string{"evidence: ", "kept:  header 4 of checkpoint-test", tc.old.LogRoot.String()} {
				if !strings.Contains(ev, want) {
					t.Fatalf("evidence lacks %q:\n%s", want, ev)
				}
			}
			switch {
			case tc.at == 0:
			case tc.at == tc.old.LogSize:
				// The rewritten log's own root at the kept size, against the kept signed root.
				want, _ := b.RootAt(tc.at)
				if !bytes.Equal(ext.Rebuilt, want[:]) || !bytes.Equal(ext.Signed, tc.old.LogRoot[:]) {
					t.Fatalf("rebuilt root %x, signed %x; want the rewritten log's %x and the kept %s", ext.Rebuilt, ext.Signed, want, tc.old.LogRoot)
				}
			case tc.at == tc.new.LogSize:
				if !bytes.Equal(ext.Signed, tc.new.LogRoot[:]) || bytes.Equal(ext.Rebuilt, ext.Signed) || len(ext.Rebuilt) != 32 {
					t.Fatalf("rebuilt root %x, signed %x; want today's signed %s and another", ext.Rebuilt, ext.Signed, tc.new.LogRoot)
				}
			}
			if tc.at != 0 && !strings.Contains(ev, "the proof rebuilds root") {
				t.Fatalf("evidence does not name the rebuilt root:\n%s", ev)
			}
			if tc.proof != nil && !errors.Is(err, merkle.ErrProof) {
				t.Fatalf("a proof that does not verify is not merkle.ErrProof: %v", err)
			}
		})
	}
}

// FuzzVerifyCheckpoint: nothing but the golden checkpoint verifies against its trust file.
func FuzzVerifyCheckpoint(f *testing.F) {
	b, trust := goldenCheckpoint(f)
	f.Add(b)
	f.Add(bytes.Replace(b, []byte(`"app_hash_version": 2`), []byte(`"app_hash_version": 1`), 1))
	f.Add([]byte(`{"format":"anchorline.checkpoint/v1"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		if _, _, err := VerifyCheckpoint(data, trust); err == nil && !bytes.Equal(data, b) {
			t.Fatalf("a checkpoint other than the golden one verified:\n%s", data)
		}
	})
}
