package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// audit on a real stack: clean data passes; then rows are changed, deleted and added behind
// the system's back in ClickHouse, and audit names each reading and exits 1.
func TestAudit(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	st := startCLIStack(ctx, t)
	dir, database, ch, run := t.TempDir(), st.database, st.ch, st.run
	exec := func(q string) {
		t.Helper()
		if err := ch.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	count := func(q string) uint64 {
		t.Helper()
		var n uint64
		if err := ch.QueryRow(ctx, q).Scan(&n); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		return n
	}

	for _, dev := range []string{"au-a", "au-b"} {
		key := filepath.Join(dir, dev+".key")
		for _, args := range [][]string{{"device", "keygen", "--id", dev, "--out", key}, {"device", "register", key}} {
			if out, err := run(args...); err != nil {
				t.Fatalf("%v: %v\n%s", args, err, out)
			}
		}
		for i := range 4 {
			if out, err := run("device", "publish", key, "--metric", fmt.Sprintf("temp=%d", 20+i)); err != nil {
				t.Fatalf("publish: %v\n%s", err, out)
			}
		}
	}
	// Wait until all eight readings are stored and every batch is anchored, its anchor recorded
	// too (the anchoring service writes batch_anchors first, then anchors).
	for count("SELECT count() FROM "+database+".readings") < 8 || count("SELECT toUInt64(sum(size)) FROM "+database+".batches") < 8 ||
		count("SELECT count() FROM "+database+".batches WHERE batch_id NOT IN (SELECT batch_id FROM "+database+".batch_anchors)") > 0 ||
		count("SELECT count() FROM "+database+".batch_anchors WHERE anchor_id NOT IN (SELECT anchor_id FROM "+database+".anchors)") > 0 {
		select {
		case <-ctx.Done():
			t.Fatal("readings not stored and anchored in time")
		case <-time.After(100 * time.Millisecond):
		}
	}
	out, err := run("audit")
	if err != nil || !strings.Contains(out, "every stored reading in range matches its anchor on the ledger") || !strings.Contains(out, ", 8 readings,") {
		t.Fatalf("audit of untouched data: %v\n%s", err, out)
	}

	// With the trust file, the log the node serves must rebuild a root signed by the validators.
	trustFile := filepath.Join(dir, "trust.json")
	if out, err := run("trust", "export", "--out", trustFile); err != nil {
		t.Fatalf("trust export: %v\n%s", err, out)
	}
	out, err = run("audit", "--trust", trustFile)
	if err != nil || !strings.Contains(out, "rebuilt to the log root a header signed by the trusted validators commits") {
		t.Fatalf("audit --trust: %v\n%s", err, out)
	}
	b, err := os.ReadFile(trustFile)
	if err != nil {
		t.Fatal(err)
	}
	otherChain, other := filepath.Join(dir, "other.json"), bytes.Replace(b, []byte(`"anchorline-dev"`), []byte(`"some-other-chain"`), 1)
	if bytes.Equal(other, b) {
		t.Fatalf("trust file without the chain id anchorline-dev:\n%s", b)
	}
	if err := os.WriteFile(otherChain, other, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := run("audit", "--trust", otherChain); exitCode(err) != exitIncomplete {
		t.Fatalf("audit with another chain's trust file: %v, want exit status 3\n%s", err, out)
	}

	// A worker killed between a batch's rows and its record leaves rows without a record whose
	// readings were stored again in an anchored batch: copies, not findings.
	exec("INSERT INTO " + database + ".readings SELECT device_id, seq, ts, time, toDateTime('2020-01-01 00:00:00'), raw, leaf, toFixedString('interrupted-wri!', 16), leaf_index, erased_by FROM " + database + ".readings WHERE device_id = 'au-a' AND seq = 3")
	out, err = run("audit", "--trust", trustFile)
	if err != nil || !strings.Contains(out, "1 rows without a batch record are copies of audited readings") || !strings.Contains(out, "modified 0, missing 0, inserted 0, unanchored 0") {
		t.Fatalf("audit with an interrupted write's copy: %v\n%s", err, out)
	}

	// Behind the system's back: change a stored reading's bytes, delete another, add one to an
	// anchored batch and one with a batch nobody recorded, and record a batch nobody anchored.
	// (The stack keeps running: the audit reads the ledger through its node.)
	r := database + ".readings"
	exec("ALTER TABLE " + r + " UPDATE raw = concat(raw, 'x') WHERE device_id = 'au-a' AND seq = 2")
	exec("ALTER TABLE " + r + " DELETE WHERE device_id = 'au-b' AND seq = 3")
	exec("INSERT INTO " + r + " SELECT device_id, 99, ts, time, received_at, raw, leaf, batch_id, 1000, 0 FROM " + r + " WHERE device_id = 'au-a' AND seq = 1")
	exec("INSERT INTO " + r + " SELECT device_id, 98, ts, time, toDateTime('2020-01-01 00:00:00'), raw, leaf, toFixedString('forged-batch-id!', 16), 0, 0 FROM " + r + " WHERE device_id = 'au-b' AND seq = 1")
	exec("INSERT INTO " + database + ".batches SELECT toFixedString('unanchored-batch', 16), root, 1, toDateTime('2020-01-01 00:00:00'), 'w', ts_min, ts_max FROM " + database + ".batches LIMIT 1")
	exec("INSERT INTO " + r + " SELECT device_id, 97, ts, time, received_at, raw, leaf, toFixedString('unanchored-batch', 16), 0, 0 FROM " + r + " WHERE device_id = 'au-b' AND seq = 2")
	for count("SELECT count() FROM system.mutations WHERE database = '"+database+"' AND NOT is_done") > 0 {
		select {
		case <-ctx.Done():
			t.Fatal("mutations not done")
		case <-time.After(50 * time.Millisecond):
		}
	}

	out, err = run("audit", "--trust", trustFile)
	if exitCode(err) != exitFailed {
		t.Fatalf("audit of tampered data: %v\n%s", err, out)
	}
	for _, want := range []string{
		"rebuilt to the log root a header signed by the trusted validators commits",
		"modified 1, missing 1, inserted 2, unanchored 1",
		"modified   au-a seq 2 ",
		"missing    (unknown reading)",
		"inserted   au-a seq 99 ",
		"inserted   au-b seq 98 ",
		"unanchored au-b seq 97 ",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("audit output lacks %q:\n%s", want, out)
		}
	}
	t.Logf("audit of tampered data:\n%s", out)
	out, _ = run("audit", "--device", "au-a")
	if strings.Contains(out, "au-b seq") || !strings.Contains(out, "au-a seq 2") {
		t.Errorf("audit --device au-a:\n%s", out)
	}
	// The anchor's record goes: its batch cannot be checked. (Within --grace the batch would
	// count as too recent: it might be between the anchoring service's two writes.)
	exec("TRUNCATE TABLE " + database + ".anchors")
	if out, _ := run("audit"); strings.Contains(out, "(0 batches too recent to be anchored)") || !strings.Contains(out, "batches too recent to be anchored)") ||
		strings.Contains(out, "no record of it is stored") {
		t.Fatalf("audit within the grace period without the anchor record:\n%s", out)
	}
	out, err = run("audit", "--grace", "0s")
	if exitCode(err) != exitFailed || !strings.Contains(out, "its batches name it, but no record of it is stored") {
		t.Fatalf("audit without the anchor record: %v\n%s", err, out)
	}

	// Everything stored goes: the ledger still lists the anchor, so its readings are missing.
	for _, table := range []string{"readings", "batches", "batch_anchors"} {
		exec("TRUNCATE TABLE " + database + "." + table)
	}
	out, err = run("audit")
	// The eight readings may be in more than one anchor: each is missing, with all its readings.
	missing := regexp.MustCompile(`commits \d+ batches with (\d+) readings; none of it is stored`).FindAllStringSubmatch(out, -1)
	sum := 0
	for _, m := range missing {
		n, _ := strconv.Atoi(m[1])
		sum += n
	}
	if exitCode(err) != exitFailed || len(missing) == 0 || !strings.Contains(out, fmt.Sprintf("missing %d,", len(missing))) || sum != 8 {
		t.Fatalf("audit of an emptied database: %v\n%s", err, out)
	}
	if _, err := run("audit", "--ledger.rpc", closedAddr(t)); exitCode(err) != exitIncomplete {
		t.Errorf("audit without a ledger: %v, want exit status 3", err)
	}
	if _, err := run("audit", "--from", "yesterday"); exitCode(err) != exitBadInput || !strings.Contains(err.Error(), "--from") {
		t.Errorf("audit --from yesterday: %v", err)
	}
}
