package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	cmted25519 "github.com/cometbft/cometbft/crypto/ed25519"
	"github.com/fxamacker/cbor/v2"

	"github.com/anchorline/anchorline/anchor/ledger"
	"github.com/anchorline/anchorline/schemas/entry"
	"github.com/anchorline/anchorline/schemas/reading"
	"github.com/anchorline/anchorline/services/stack"
)

// TestLedgerAuthority runs the operator's authority commands against a dev stack (one admin,
// threshold 1, one validator of power 10): an anchoring key added and removed; a validator of
// power 1 added by a proposal signed once and removed again, each visible in CometBFT's
// validator set while the chain keeps committing; the threshold raised to 2 with a second
// admin, after which a proposal signed by one admin is refused by submit (exit 2, with the
// counts) and, forced, by the ledger (exit 1, its reason), and commits once both signed.
func TestLedgerAuthority(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	st := startCLIStack(ctx, t)
	dir := t.TempDir()
	must := func(want string, args ...string) string { t.Helper(); return st.must(t, want, args...) }
	fails := func(code int, want string, args ...string) error {
		t.Helper()
		out, err := st.run(args...)
		if exitCode(err) != code || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
			t.Fatalf("anchorline %s: exit %d, %v\n%s\nwant exit %d and one line with %q", strings.Join(args, " "), exitCode(err), err, out, code, want)
		}
		return err
	}
	authority := func() ledger.Authority {
		t.Helper()
		var a ledger.Authority
		if err := json.Unmarshal([]byte(must("", "ledger", "authority", "--json")), &a); err != nil {
			t.Fatal(err)
		}
		return a
	}
	l, err := remoteLedger(st.dev.Config(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	// cometPower polls CometBFT's validator set at the latest height until pub has power want
	// there (0: absent), then waits for two more blocks: the chain still commits.
	cometPower := func(pub ed25519.PublicKey, want int64) {
		t.Helper()
		addr := cmted25519.PubKey(pub).Address()
		var h int64
		pollLedger(ctx, t, "validator power in CometBFT's set", func() (bool, error) {
			var err error
			if h, err = l.Height(ctx); err != nil {
				return false, err
			}
			vals, err := l.Validators(ctx, h)
			if err != nil {
				return false, err
			}
			_, v := vals.GetByAddress(addr)
			return (v == nil && want == 0) || (v != nil && v.VotingPower == want), nil
		})
		if err := l.WaitHeight(ctx, h+2); err != nil {
			t.Fatalf("the chain stopped after the validator change: %v", err)
		}
	}

	dev, err := stack.LoadAdminKey(filepath.Join(st.dev.Config().DataDir, "admin.key"))
	if err != nil {
		t.Fatal(err)
	}
	devPub := hex.EncodeToString(reading.Ed25519Public(dev))
	out := must("(ledger.admin_key)", "ledger", "authority")
	for _, want := range []string{devPub, "need 1 of their signatures", "power 10", "from block 1 only anchors signed"} {
		if !strings.Contains(out, want) {
			t.Fatalf("ledger authority does not say %q:\n%s", want, out)
		}
	}
	a := authority()
	if !slices.Equal(a.Admins, []string{devPub}) || a.Threshold != 1 || len(a.AnchorKeys) != 1 || a.AnchorRuleFrom != 1 || len(a.Validators) != 1 || a.Validators[0].Power != 10 {
		t.Fatalf("dev authority: %+v", a)
	}

	// An anchoring key, added and removed; a key file that is no admin's cannot.
	anchorFile := filepath.Join(dir, "anchor2.key")
	anchorPub := keyFromOutput(t, must("written to", "ledger", "keygen", "--out", anchorFile))
	must("authorised anchoring key "+anchorPub+" at ledger height", "ledger", "anchor-key", "add", anchorPub)
	if a := authority(); !slices.Contains(a.AnchorKeys, anchorPub) || len(a.AnchorKeys) != 2 {
		t.Fatalf("anchor key not added: %v", a.AnchorKeys)
	}
	err = fails(exitFailed, "already authorised", "ledger", "anchor-key", "add", anchorPub)
	if !errors.Is(err, ledger.ErrRejected) {
		t.Fatalf("a refused anchor_key entry: %v", err)
	}
	must("withdrew anchoring key "+anchorPub, "ledger", "anchor-key", "remove", anchorPub)
	if a := authority(); slices.Contains(a.AnchorKeys, anchorPub) || len(a.AnchorKeys) != 1 {
		t.Fatalf("anchor key not removed: %v", a.AnchorKeys)
	}
	fails(exitBadInput, "is not one of the 1 admins of this ledger", "ledger", "anchor-key", "add", anchorPub, "--ledger.admin_key", anchorFile)

	// A validator of power 1 beside the dev validator's 10 (which keeps more than 2/3): added
	// by a proposal with the one signature the dev genesis needs, then removed.
	valPub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	add := filepath.Join(dir, "add.json")
	must("proposal written to "+add, "ledger", "validator", "--pubkey", base64.StdEncoding.EncodeToString(valPub), "--power", "1", "--out", add)
	fails(exitBadInput, "has 0 admin signature(s), the ledger needs 1 (of its 1 admins", "ledger", "submit", add)
	must("1 of the 1 signatures it needs", "ledger", "sign", add)
	fails(exitBadInput, "signed it already", "ledger", "sign", add)
	must("CometBFT applies the validator change from height", "ledger", "submit", add)
	cometPower(valPub, 1)
	if a := authority(); len(a.Validators) != 2 {
		t.Fatalf("validators after the add: %+v", a.Validators)
	}
	remove := filepath.Join(dir, "remove.json")
	must("remove validator", "ledger", "validator", "--pubkey", hex.EncodeToString(valPub), "--power", "0", "--out", remove)
	must("1 of the 1", "ledger", "sign", remove)
	must("committed", "ledger", "submit", remove)
	cometPower(valPub, 0)

	// A second admin and threshold 2: one signature is no longer enough.
	admin2 := filepath.Join(dir, "admin2.key")
	admin2Pub := keyFromOutput(t, must("written to", "ledger", "keygen", "--out", admin2))
	admins := filepath.Join(dir, "admins.json")
	must("then 2 admin signatures are needed", "ledger", "admins", "--add", admin2Pub, "--threshold", "2", "--out", admins)
	must("1 of the 1", "ledger", "sign", admins)
	must("committed", "ledger", "submit", admins)
	if a := authority(); !slices.Equal(a.Admins, []string{devPub, admin2Pub}) || a.Threshold != 2 {
		t.Fatalf("admins after the change: %v, threshold %d", a.Admins, a.Threshold)
	}
	two := filepath.Join(dir, "two.json")
	must("it needs 2 of the 2 admins' signatures", "ledger", "validator", "--pubkey", hex.EncodeToString(valPub), "--power", "1", "--out", two)
	fails(exitBadInput, "is not one of the 2 admins of proposal", "ledger", "sign", two, "--ledger.admin_key", anchorFile)
	must("1 of the 2 signatures", "ledger", "sign", two)
	fails(exitBadInput, "has 1 admin signature(s), the ledger needs 2 (of its 2 admins", "ledger", "submit", two)
	err = fails(exitFailed, "signed by 1 admins, needs 2 of 2", "ledger", "submit", two, "--force")
	if !errors.Is(err, ledger.ErrRejected) {
		t.Fatalf("a forced submit with too few signatures: %v", err)
	}
	must("2 of the 2 signatures", "ledger", "sign", two, "--ledger.admin_key", admin2)
	out = must("committed", "ledger", "submit", two)
	cometPower(valPub, 1)
	t.Logf("%s%s", out, must("2, total power 11", "ledger", "authority"))
}

// TestAuthorityBadInput gives the authority commands malformed keys, flags and proposal files
// and expects exit status 2 with one line, before any server is asked anything (there are
// none); and signs a proposal without a ledger.
func TestAuthorityBadInput(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	f := func(name string) string { return filepath.Join(dir, name) }
	badInputFiles(t, dir)
	admin, err := stack.LoadOrCreateAdminKey(f("admin.key"))
	if err != nil {
		t.Fatal(err)
	}
	other, err := stack.LoadOrCreateAdminKey(f("other.key"))
	if err != nil {
		t.Fatal(err)
	}
	adminPub := hex.EncodeToString(reading.Ed25519Public(admin))
	auth := ledger.Authority{Height: 7, Admins: []string{adminPub}, Threshold: 1}
	valPub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	valHex := hex.EncodeToString(valPub)
	unsigned, err := entry.NewValidator(valPub, 3, time.UnixMilli(1_800_000_000_000))
	if err != nil {
		t.Fatal(err)
	}
	signed, err := entry.NewValidator(valPub, 3, time.UnixMilli(1_800_000_000_000), admin)
	if err != nil {
		t.Fatal(err)
	}
	anchorKey, err := entry.NewAnchorKey(admin, entry.OpAdd, valPub, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var fields map[string]any
	if err := cbor.Unmarshal(unsigned, &fields); err != nil {
		t.Fatal(err)
	}
	fields["note"] = "x"
	extra, err := cbor.Marshal(fields)
	if err != nil {
		t.Fatal(err)
	}
	badSig := bytes.Clone(signed)
	badSig[len(badSig)-1] ^= 1
	write := func(name string, e []byte, edit func(*proposalFile)) string {
		t.Helper()
		p, err := newProposal(unsigned, "chain-x", auth)
		if err != nil {
			t.Fatal(err)
		}
		p.Entry = hex.EncodeToString(e)
		if edit != nil {
			edit(&p.proposalFile)
		}
		b, err := p.encode()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f(name), b, 0o644); err != nil {
			t.Fatal(err)
		}
		return f(name)
	}
	good := write("good.json", unsigned, nil)
	signedFile := write("signed.json", signed, nil)
	withKey := []string{"--ledger.admin_key", f("admin.key")}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"ledger", "anchor-key", "add", "zz"}, `anchoring key "zz": not hex`},
		{[]string{"ledger", "anchor-key", "remove", "abcd"}, `anchoring key "abcd": 2 bytes, want 32`},
		{[]string{"ledger", "anchor-key", "add"}, "anchorline ledger anchor-key add: accepts 1 arg(s), received 0"},
		{[]string{"ledger", "anchor-key", "add", valHex}, "admin key not found"},
		{[]string{"ledger", "keygen"}, "--out: name the key file to write"},
		{[]string{"ledger", "keygen", "--out", f("admin.key")}, "--out " + f("admin.key") + ": the file exists"},
		{[]string{"ledger", "validator", "--power", "1", "--out", f("v.json")}, "--pubkey: give the validator's"},
		{[]string{"ledger", "validator", "--pubkey", "zz", "--power", "1", "--out", f("v.json")}, `--pubkey "zz": want 32 bytes in hex or base64`},
		{[]string{"ledger", "validator", "--pubkey", valHex[:62], "--power", "1", "--out", f("v.json")}, "want 32 bytes in hex or base64"},
		{[]string{"ledger", "validator", "--pubkey", valHex, "--out", f("v.json")}, "--power: give the validator's new voting power"},
		{[]string{"ledger", "validator", "--pubkey", valHex, "--power", "-1", "--out", f("v.json")}, `--power "-1": want a whole number, 0 or more`},
		{[]string{"ledger", "validator", "--pubkey", valHex, "--power", "2305843009213693952", "--out", f("v.json")}, "--power 2305843009213693952: validator power 2305843009213693952 is above"},
		{[]string{"ledger", "validator", "--pubkey", valHex, "--power", "1"}, "--out: name the proposal file to write"},
		{[]string{"ledger", "validator", "--pubkey", valHex, "--power", "1", "--out", good}, "--out " + good + ": the file exists"},
		{[]string{"ledger", "admins", "--add", "zz", "--threshold", "1", "--out", f("a.json")}, `--add "zz": not hex`},
		{[]string{"ledger", "admins", "--remove", "abcd", "--threshold", "1", "--out", f("a.json")}, `--remove "abcd": 2 bytes, want 32`},
		{[]string{"ledger", "admins", "--add", valHex, "--out", f("a.json")}, "--threshold: give M"},
		{[]string{"ledger", "admins", "--add", valHex, "--threshold", "0", "--out", f("a.json")}, "threshold must be at least 1"},
		{[]string{"ledger", "admins", "--add", valHex, "--remove", valHex, "--threshold", "1", "--out", f("a.json")}, "is named twice"},
		{[]string{"ledger", "admins", "--add", valHex, "--threshold", "1"}, "--out: name the proposal file to write"},
		{[]string{"ledger", "sign"}, "anchorline ledger sign: accepts 1 arg(s), received 0"},
		{[]string{"ledger", "sign", f("missing.json")}, "proposal file " + f("missing.json") + ": no such file"},
		{[]string{"ledger", "sign", f("folder")}, "proposal file " + f("folder") + ": is a directory, not a file"},
		{[]string{"ledger", "sign", f("empty.json")}, "proposal file " + f("empty.json") + ": is empty"},
		{[]string{"ledger", "sign", f("notjson.json")}, "proposal file " + f("notjson.json") + ": not JSON"},
		{[]string{"ledger", "sign", f("trust.json")}, "proposal file " + f("trust.json") + ": is a trust file, not a proposal file"},
		{[]string{"ledger", "sign", f("good.key")}, "proposal file " + f("good.key") + ": is a key file, not a proposal file"},
		{[]string{"ledger", "sign", write("format.json", unsigned, func(p *proposalFile) { p.Format = "x/v2" })}, `format "x/v2", want "` + proposalFormat + `"`},
		{[]string{"ledger", "sign", write("chain.json", unsigned, func(p *proposalFile) { p.ChainID = "" })}, ": no chain_id"},
		{[]string{"ledger", "sign", write("admins.json", unsigned, func(p *proposalFile) { p.Admins = []string{"ab"} })}, `admin "ab": want 32 bytes of lower-case hex`},
		{[]string{"ledger", "sign", write("threshold.json", unsigned, func(p *proposalFile) { p.Threshold = 2 })}, "threshold 2, want 1 up to the 1 admins"},
		{[]string{"ledger", "sign", write("nothex.json", unsigned, func(p *proposalFile) { p.Entry = "zz" })}, "entry: want the entry's CBOR in hex"},
		{[]string{"ledger", "sign", write("anchorkey.json", anchorKey, nil)}, `entry: a "anchor_key" entry, not a validator or admins change`},
		{[]string{"ledger", "sign", write("extra.json", extra, nil)}, "entry: not the deterministic encoding of a validator entry, or a field is missing or unknown"},
		{[]string{"ledger", "sign", write("badsig.json", badSig, nil)}, "entry: bad signature: by admin " + adminPub},
		{[]string{"ledger", "sign", write("edited.json", unsigned, func(p *proposalFile) { p.Description = "set the voting power of nobody" })}, "does not say what its entry does"},
		{[]string{"ledger", "submit", write("edited2.json", unsigned, func(p *proposalFile) { p.Description = "x" })}, "does not say what its entry does"},
		{[]string{"ledger", "sign", good}, "admin key not found"},
		{[]string{"ledger", "sign", good, "--ledger.admin_key", f("other.key")}, "key " + hex.EncodeToString(reading.Ed25519Public(other)) + " is not one of the 1 admins of proposal " + good + " (chain chain-x at height 7)"},
		{append([]string{"ledger", "sign", signedFile}, withKey...), "proposal file " + signedFile + ": admin " + adminPub + " signed it already"},
	} {
		name := strings.Join(tc.args, " ")
		out, err := runOffline(ctx, t, tc.args...)
		if code := exitCode(err); code != exitBadInput || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("anchorline %s\n  exit %d: %v\n  want exit 2: %s\n%s", name, code, err, tc.want, out)
			continue
		}
		if strings.Contains(err.Error(), "\n") || out != "" {
			t.Errorf("anchorline %s: not one line on its own: %q, printed %q", name, err, out)
		}
	}

	// sign needs no ledger, and gives the bytes entry.NewValidator gives for the same signer.
	out, err := runOffline(ctx, t, append([]string{"ledger", "sign", good}, withKey...)...)
	if err != nil || !strings.Contains(out, "1 of the 1 signatures it needs") {
		t.Fatalf("offline sign: %v\n%s", err, out)
	}
	p, err := readProposal(good)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(p.entry, signed) {
		t.Fatalf("signed entry %x, want %x", p.entry, signed)
	}
}

// keyFromOutput is the public key `ledger keygen` printed.
func keyFromOutput(t *testing.T, out string) string {
	t.Helper()
	m := regexp.MustCompile(`public key ([0-9a-f]{64}) written to`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no public key in %q", out)
	}
	return m[1]
}

// pollLedger calls cond until it holds; it fails the test, with the last error, if ctx ends
// first.
func pollLedger(ctx context.Context, t *testing.T, what string, cond func() (bool, error)) {
	t.Helper()
	for {
		ok, err := cond()
		if ok {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: not reached before the test's deadline (last error: %v)", what, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
