package stack

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/anchorline/anchorline/anchor/merkle"
	"github.com/anchorline/anchorline/internal/await"
	"github.com/anchorline/anchorline/internal/chserver"
	"github.com/anchorline/anchorline/schemas/entry"
	"github.com/anchorline/anchorline/schemas/reading"
	"github.com/anchorline/anchorline/services/access"
)

// analyst connects to ClickHouse as a new analyst of audience (a users.d file made by
// access.UserXML), once the server has loaded the user.
func analyst(t *testing.T, ctx context.Context, chAddr, database, audience string) driver.Conn {
	t.Helper()
	user, password := database+"_"+audience, "pw-"+audience
	sum := sha256.Sum256([]byte(password))
	chserver.AddUsers(t, user, access.UserXML(database, audience, user, hex.EncodeToString(sum[:])))
	var conn driver.Conn
	await.Until(t, ctx, "ClickHouse loads analyst "+user, func() (bool, string) {
		c, err := chserver.OpenAs(chAddr, access.AudienceDatabase(database, audience), user, password)
		if err == nil {
			if err = c.Ping(ctx); err == nil {
				conn = c
				return true, ""
			}
			c.Close()
		}
		return false, err.Error()
	})
	t.Cleanup(func() { conn.Close() })
	return conn
}

// devicesIn lists the devices an analyst of audience sees rows of in table (sorted), or the
// error ClickHouse gives.
func devicesIn(ctx context.Context, conn driver.Conn, database, audience, table string) ([]string, error) {
	rows, err := conn.Query(ctx, fmt.Sprintf("SELECT DISTINCT device_id FROM %s.%s ORDER BY device_id", access.AudienceDatabase(database, audience), table))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []string{}
	for rows.Next() {
		var d string
		if err := rows.Scan(&d); err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// TestConsent runs consent end to end on real servers: owners bound and consent granted on
// the ledger become, within seconds, exactly the rows analysts of each audience see in
// readings, metrics, the rollups and events (real ClickHouse users, each allowed only their
// audience's database); a withdrawal or a release takes the rows away again; the analysts
// cannot read the base tables or the views behind theirs; the operator's user sees everything.
func TestConsent(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	chAddr, database, ch := chserver.NewDatabase(t)
	t.Cleanup(func() {
		for _, db := range []string{access.AudienceDatabase(database, "research"), access.AudienceDatabase(database, "billing"), access.ViewsDatabase(database)} {
			_ = ch.Exec(context.Background(), "DROP DATABASE IF EXISTS "+db)
		}
	})
	cfg := devConfig(t, chAddr, database, t.TempDir())
	d, _, js := startTestDev(t, ctx, cfg)
	client := d.APIClient()

	// Three devices with 20 readings each, stored before anyone consents.
	var devs []*testDevice
	for i := range 3 {
		dv := newDevice(t, fmt.Sprintf("cs-%d", i), reading.Ed25519)
		register(t, ctx, client, d.AdminKey, dv.ID, dv.Key.Public())
		devs = append(devs, dv)
	}
	for range 20 {
		for _, dv := range devs {
			publish(t, js, reading.Subject(dv.ID), reading.MsgID(dv.ID, dv.Seq+1), dv.next(t))
		}
	}
	await.Until(t, ctx, "60 readings stored", func() (bool, string) {
		n := count(t, ctx, ch, "SELECT count() FROM "+database+".readings")
		return n == 60, fmt.Sprintf("%d stored", n)
	})

	submit := func(e []byte, err error) time.Time {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := d.Ledger.Submit(ctx, e); err != nil {
			t.Fatal(err)
		}
		return time.Now()
	}
	alice, err := reading.GenerateKey(reading.Ed25519)
	if err != nil {
		t.Fatal(err)
	}
	bob, err := reading.GenerateKey(reading.ES256)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Now()
	next := func() time.Time { at = at.Add(time.Millisecond); return at }
	submit(entry.NewOwner(d.AdminKey, alice, entry.OpBind, "cs-0", next()))
	submit(entry.NewOwner(d.AdminKey, alice, entry.OpBind, "cs-1", next()))
	submit(entry.NewOwner(d.AdminKey, bob, entry.OpBind, "cs-2", next()))
	submit(entry.NewConsent(alice, entry.OpGrant, "cs-0", "research", next()))
	submit(entry.NewConsent(bob, entry.OpGrant, "cs-2", "research", next()))
	granted := submit(entry.NewConsent(bob, entry.OpGrant, "cs-2", "billing", next()))

	research := analyst(t, ctx, chAddr, database, "research")
	billing := analyst(t, ctx, chAddr, database, "billing")
	sees := func(conn driver.Conn, audience string, want ...string) time.Duration {
		t.Helper()
		start := time.Now()
		for _, table := range access.Tables {
			if table == "events" {
				continue // no rule here; events are checked for access below
			}
			await.Until(t, ctx, fmt.Sprintf("%s analysts see %v in %s", audience, want, table), func() (bool, string) {
				got, err := devicesIn(ctx, conn, database, audience, table)
				if err != nil {
					return false, err.Error()
				}
				return slices.Equal(got, want), fmt.Sprintf("they see %v", got)
			})
		}
		return time.Since(start)
	}
	sees(research, "research", "cs-0", "cs-2")
	sees(billing, "billing", "cs-2")
	t.Logf("grants in force in ClickHouse %s after the last one's block", time.Since(granted).Round(time.Millisecond))
	var n uint64
	if err := research.QueryRow(ctx, fmt.Sprintf("SELECT count() FROM %s.readings", access.AudienceDatabase(database, "research"))).Scan(&n); err != nil || n != 40 {
		t.Fatalf("research analysts count %d readings (%v), want 40", n, err)
	}
	if _, err := devicesIn(ctx, research, database, "research", "events"); err != nil {
		t.Fatalf("research analysts cannot read their events table: %v", err)
	}

	// What the analysts may not do: read the base tables, the views behind theirs, another
	// audience's database, or change a setting.
	for _, q := range []string{
		"SELECT count() FROM " + database + ".readings",
		"SELECT count() FROM " + access.ViewsDatabase(database) + ".readings__research",
		"SELECT count() FROM " + access.AudienceDatabase(database, "billing") + ".readings",
		"SELECT count() FROM " + access.AudienceDatabase(database, "research") + ".readings SETTINGS prefer_localhost_replica = 1",
		"INSERT INTO " + access.AudienceDatabase(database, "research") + ".readings (device_id) VALUES ('x')",
	} {
		if err := research.Exec(ctx, q); err == nil {
			t.Fatalf("a research analyst may run %q", q)
		} else if !strings.Contains(err.Error(), "denied") && !strings.Contains(err.Error(), "readonly") {
			t.Fatalf("%q: %v, want access denied or readonly", q, err)
		}
	}

	// A withdrawal takes cs-2's rows away from research (billing keeps them); a release by
	// alice takes cs-0's: consent counts only under the binding it was given in.
	withdrawn := submit(entry.NewConsent(bob, entry.OpWithdraw, "cs-2", "research", next()))
	sees(research, "research", "cs-0")
	t.Logf("withdrawal in force in ClickHouse %s after its block", time.Since(withdrawn).Round(time.Millisecond))
	sees(billing, "billing", "cs-2")
	submit(entry.NewOwner(d.AdminKey, alice, entry.OpRelease, "cs-0", next()))
	sees(research, "research")

	// The operator's own user sees everything.
	if got := count(t, ctx, ch, "SELECT uniqExact(device_id) FROM "+database+".readings"); got != 3 {
		t.Fatalf("the operator sees %d devices, want 3", got)
	}

	// A device registered to need consent to collection: its readings before the owner's
	// grant are rejected as no_consent, keeping the leaf and not the bytes; after it, stored.
	opt := newDevice(t, "cs-opt", reading.ES256)
	reg, err := entry.NewRegisterOptIn(d.AdminKey, opt.ID, opt.Key.Public(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.SubmitDeviceEvent(ctx, reg); err != nil {
		t.Fatal(err)
	}
	var leaves []string
	for range 3 {
		raw := opt.next(t)
		leaf := merkle.LeafHash(raw)
		leaves = append(leaves, string(leaf[:]))
		publish(t, js, reading.Subject(opt.ID), reading.MsgID(opt.ID, opt.Seq), raw)
	}
	await.Until(t, ctx, "3 no_consent rejects of cs-opt", func() (bool, string) {
		n := count(t, ctx, ch, "SELECT count() FROM "+database+".rejected WHERE device_id = 'cs-opt' AND reason = 'no_consent'")
		return n == 3, fmt.Sprintf("%d", n)
	})
	if n := count(t, ctx, ch, "SELECT count() FROM "+database+".rejected WHERE device_id = 'cs-opt' AND raw = '' AND leaf IN (?, ?, ?)", leaves[0], leaves[1], leaves[2]); n != 3 {
		t.Fatalf("%d of the 3 no_consent rejects keep the leaf without the bytes", n)
	}
	carol, err := reading.GenerateKey(reading.Ed25519)
	if err != nil {
		t.Fatal(err)
	}
	submit(entry.NewOwner(d.AdminKey, carol, entry.OpBind, opt.ID, next()))
	submit(entry.NewConsent(carol, entry.OpGrant, opt.ID, entry.AudienceCollect, next()))
	// The grant reaches ingest within a second (access.Grants): publish until one is stored.
	await.Until(t, ctx, "cs-opt's readings stored after the grant", func() (bool, string) {
		raw := opt.next(t)
		publish(t, js, reading.Subject(opt.ID), reading.MsgID(opt.ID, opt.Seq), raw)
		n := count(t, ctx, ch, "SELECT count() FROM "+database+".readings WHERE device_id = 'cs-opt'")
		return n > 0, fmt.Sprintf("%d stored", n)
	})
}
