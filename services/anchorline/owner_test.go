package main

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/anchorline/anchorline/internal/await"
)

// TestOwnerCommands runs owner keygen, bind, show, release, consent grant, list, withdraw,
// user, and erase (by the owner and by an admin) against a dev stack, with the refusals a user
// meets: a consent signed by someone else, an erase without a signer or with a bad range; then
// status shows the erasures carried out.
func TestOwnerCommands(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	st := startCLIStack(ctx, t)
	dir := t.TempDir()
	must := func(want string, args ...string) string { t.Helper(); return st.must(t, want, args...) }
	fails := func(code int, want string, args ...string) { t.Helper(); st.fails(t, code, want, args...) }
	devKey, alice, bob := filepath.Join(dir, "dev.key"), filepath.Join(dir, "alice.key"), filepath.Join(dir, "bob.key")
	must("written to", "device", "keygen", "--id", "own-1", "--out", devKey)
	must("registered own-1", "device", "register", devKey)
	must("owner alice (es256) public key", "owner", "keygen", "--id", "alice", "--alg", "es256", "--out", alice)
	must("owner bob", "owner", "keygen", "--id", "bob", "--out", bob)
	for i := 1; i <= 5; i++ {
		must(fmt.Sprintf("published own-1 seq %d", i), "device", "publish", devKey, "--metric", fmt.Sprintf("temp=%d.5", 20+i))
	}

	fails(exitFailed, "is not the device's owner", "consent", "grant", "own-1", "research", "--key", alice)
	must("owner bind: device own-1", "owner", "bind", "own-1", "--key", alice)
	fails(exitFailed, "release it first", "owner", "bind", "own-1", "--key", bob)
	var v ownerView
	if err := json.Unmarshal([]byte(must("", "owner", "show", "own-1")), &v); err != nil || v.Status != "bound" || v.Alg != "es256" || v.Proof == "" {
		t.Fatalf("owner show: %+v %v", v, err)
	}
	fails(exitBadInput, "audience", "consent", "grant", "own-1", "Research!", "--key", alice)
	fails(exitFailed, "is not the device's owner", "consent", "grant", "own-1", "research", "--key", bob)
	must("consent grant: device own-1, audience research", "consent", "grant", "own-1", "research", "--key", alice)
	if out := must("1 consents in force", "consent", "list"); !strings.Contains(out, "own-1") || !strings.Contains(out, "research") {
		t.Fatalf("consent list:\n%s", out)
	}
	must("consent withdraw", "consent", "withdraw", "own-1", "research", "--key", alice)
	must("0 consents in force", "consent", "list", "--device", "own-1")
	if out := must("<allow_databases>", "consent", "user", "research", "--user", "ana", "--password-sha256", strings.Repeat("ab", 32)); !strings.Contains(out, "_aud_research</database>") {
		t.Fatalf("consent user:\n%s", out)
	}
	fails(exitBadInput, "--password-sha256", "consent", "user", "research", "--user", "ana", "--password-sha256", "xyz")

	await.Until(t, ctx, "own-1's 5 readings stored", func() (bool, string) {
		var n uint64
		err := st.ch.QueryRow(ctx, "SELECT count() FROM "+st.database+".readings WHERE device_id = 'own-1'").Scan(&n)
		return err == nil && n == 5, fmt.Sprint(n, err)
	})
	// Erasure: refused without a signer, with a bad range, by a stranger; then by the owner
	// and by an admin with a reason; status counts them once carried out.
	fails(exitBadInput, "--key", "erase", "own-1", "--seq", "1..2")
	fails(exitBadInput, "FROM..TO", "erase", "own-1", "--seq", "3..1", "--key", alice)
	fails(exitBadInput, "one of --seq", "erase", "own-1", "--key", alice)
	fails(exitFailed, "neither the device's owner nor an admin", "erase", "own-1", "--seq", "1..2", "--key", bob)
	must("erase of own-1, seq 1..2", "erase", "own-1", "--seq", "1..2", "--key", alice)
	must("erase of own-1, ts 0..1", "erase", "own-1", "--ts", "0..1", "--reason", "test of an admin's erasure")
	await.Until(t, ctx, "status shows the 2 erasures carried out", func() (bool, string) {
		out, err := st.run("status", "--rates=false")
		return err == nil && strings.Contains(out, "erasures:     2 carried out (2 readings), 0 pending"), out
	})
	must("owner release: device own-1", "owner", "release", "own-1", "--key", alice)
}
