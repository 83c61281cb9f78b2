package cluster

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/anchorline/anchorline/anchor/proof"
	"github.com/anchorline/anchorline/internal/await"
	"github.com/anchorline/anchorline/schemas/clickhouse"
	"github.com/anchorline/anchorline/services/api"
)

// checkErasure erases, with the cluster's admin key and a reason, seqs 1..5 of device dev
// through the CLI, and checks erasure on the ClickHouse cluster: on both replicas (ch, ch2)
// those readings keep their leaves but lose their bytes in readings and reading_lookup and
// their metric values, and seq 6 keeps its bytes; the audit reports them erased, not as
// findings; and the device's range bundle from the cluster's API verifies with them erased.
func checkErasure(t *testing.T, ctx context.Context, bin string, info Info, schema clickhouse.Schema, ch, ch2 driver.Conn, client *api.Client, trust []byte, dev string) {
	t.Helper()
	if out, err := exec.CommandContext(ctx, bin, "erase", dev, "--seq", "1..5", "--reason", "cluster test", "--config", info.ClientConfig).CombinedOutput(); err != nil {
		t.Fatalf("erase: %v\n%s", err, out)
	}
	await.Until(t, ctx, "the erasure carried out", func() (bool, string) {
		n := count(t, ctx, ch, "SELECT count() FROM anchorline.erasures WHERE device_id = '"+dev+"'")
		return n > 0, fmt.Sprintf("%d erasures of %s recorded", n, dev)
	})
	for i, c := range []driver.Conn{ch, ch2} {
		await.Until(t, ctx, fmt.Sprintf("clickhouse-%d synced", i+1), func() (bool, string) {
			err := schema.Sync(ctx, c)
			return err == nil, fmt.Sprint(err)
		})
		for q, want := range map[string]uint64{
			"SELECT uniqExact(seq) FROM anchorline.readings WHERE device_id = '%s' AND seq <= 5 AND raw = '' AND erased_by > 0":        5,
			"SELECT count() FROM anchorline.readings WHERE device_id = '%s' AND seq <= 5 AND (raw != '' OR leaf = '')":                 0,
			"SELECT count() FROM anchorline.reading_lookup WHERE device_id = '%s' AND seq <= 5 AND raw != ''":                          0,
			"SELECT count() FROM anchorline.metrics WHERE device_id = '%s' AND seq <= 5":                                               0,
			"SELECT toUInt64(count() > 0) FROM anchorline.readings WHERE device_id = '%s' AND seq = 6 AND raw != '' AND erased_by = 0": 1,
		} {
			if got := count(t, ctx, c, fmt.Sprintf(q, dev)); got != want {
				t.Errorf("clickhouse-%d: %s: %d, want %d", i+1, fmt.Sprintf(q, dev), got, want)
			}
		}
	}
	var auditOut []byte
	await.Until(t, ctx, "an audit that reports the erasure", func() (bool, string) {
		out, err := exec.CommandContext(ctx, bin, "audit", "--config", info.ClientConfig, "--trust", info.TrustFile).CombinedOutput()
		auditOut = out
		return err == nil && strings.Contains(string(out), "modified 0, missing 0, inserted 0, unanchored 0") && strings.Contains(string(out), "readings under the erase entry"),
			fmt.Sprintf("%v\n%s", err, out)
	})
	t.Logf("audit after the erasure: %s", firstLine(auditOut))
	data, err := client.RangeProof(ctx, dev, 1, 10)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := proof.VerifyRange(data, trust)
	if err != nil || rep.Erased != 5 || rep.Readings != 10 || !rep.Complete {
		t.Fatalf("the range of %s after its erasure: %v, %+v", dev, err, rep)
	}
}
