package stack

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/anchorline/anchorline/internal/await"
	"github.com/anchorline/anchorline/internal/chserver"
	"github.com/anchorline/anchorline/schemas/entry"
	"github.com/anchorline/anchorline/schemas/reading"
	"github.com/anchorline/anchorline/schemas/reading/connect"
	"github.com/anchorline/anchorline/schemas/stream"
	"github.com/anchorline/anchorline/services/auth"
)

// TestIdentityAtTheBroker runs dev as a user would and checks the broker's side of device
// identity against the real ledger: a registered device publishes as itself and its readings
// are stored; a plain-text client, an anonymous client and an unregistered device are refused
// at connect; a device
// revoked through the API and one revoked straight on the ledger (the auth service learns of it
// only by following blocks) are disconnected and cannot come back; a device publishing on
// another's subject is refused by the server; the refusals show in /metrics.
func TestIdentityAtTheBroker(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	chAddr, database, ch := chserver.NewDatabase(t)
	cfg := devConfig(t, chAddr, database, t.TempDir())
	d, err := StartDev(ctx, cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg = d.Config()
	defer d.Stop()
	client := d.APIClient()
	devs := registerAll(t, ctx, client, d, "broker", 3) // Ed25519, ES256, Ed25519

	connectDevice := func(dv *testDevice, closed chan struct{}) (*nats.Conn, error) {
		opts, err := connect.Options(dv.ID, dv.Key)
		if err != nil {
			t.Fatal(err)
		}
		opts = append(append(opts, d.NATSTLS()...), nats.MaxReconnects(0))
		if closed != nil {
			opts = append(opts, nats.ClosedHandler(func(*nats.Conn) { close(closed) }))
		}
		nc, err := nats.Connect(cfg.NATS.URL, opts...)
		if err == nil {
			t.Cleanup(nc.Close)
		}
		return nc, err
	}

	// Plain text is refused (dev serves NATS with TLS required); anonymous clients, as before
	// this issue anyone could be, and strangers are refused.
	if answer := plainText(t, d.natsServer().Addr().String()); answer != "EOF" && !strings.HasPrefix(answer, "-ERR") {
		t.Fatalf("a plain-text client's CONNECT and PING were answered with %q, want the connection closed", answer)
	}
	if _, err := nats.Connect(cfg.NATS.URL, append(d.NATSTLS(), nats.MaxReconnects(0))...); !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("anonymous client: err = %v, want an authorization violation", err)
	}
	if _, err := connectDevice(newDevice(t, "broker-stranger", reading.Ed25519), nil); !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("unregistered device: err = %v, want an authorization violation", err)
	}

	// Each device publishes its readings itself; they are verified and stored as always.
	closed := make([]chan struct{}, len(devs))
	for i, dv := range devs {
		closed[i] = make(chan struct{})
		nc, err := connectDevice(dv, closed[i])
		if err != nil {
			t.Fatalf("%s cannot connect: %v", dv.ID, err)
		}
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		for range 5 {
			publish(t, js, reading.Subject(dv.ID), reading.MsgID(dv.ID, dv.Seq+1), dv.next(t))
		}
	}
	await.Until(t, ctx, "every device's readings stored", func() (bool, string) {
		n := count(t, ctx, ch, "SELECT count() FROM "+database+".readings")
		return n == 15, fmt.Sprintf("%d of 15", n)
	})

	// Revoked through the API (which refreshes the auth service at once), and straight on the
	// ledger (the auth service follows the blocks).
	rev, err := entry.NewRevoke(d.AdminKey, devs[0].ID, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.SubmitDeviceEvent(ctx, rev); err != nil {
		t.Fatal(err)
	}
	rev, err = entry.NewRevoke(d.AdminKey, devs[1].ID, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Node.Client().Submit(ctx, rev); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		select {
		case <-closed[i]:
		case <-ctx.Done():
			t.Fatalf("revoked device %s is still connected", devs[i].ID)
		}
		if _, err := connectDevice(devs[i], nil); !errors.Is(err, nats.ErrAuthorization) {
			t.Fatalf("revoked device %s reconnects: err = %v, want an authorization violation", devs[i].ID, err)
		}
	}
	select {
	case <-closed[2]:
		t.Fatalf("%s was disconnected, but only the others were revoked", devs[2].ID)
	default:
	}

	// A device publishing on another device's subject is refused by the server, and counted.
	forger, err := connectDevice(devs[2], nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := forger.Publish(reading.Subject(devs[0].ID), devs[2].next(t)); err != nil {
		t.Fatal(err)
	}
	if err := forger.Flush(); err != nil {
		t.Fatal(err)
	}

	// The refusals are counted in the metrics (and the stats).
	await.Until(t, ctx, "refusals in /metrics", func() (bool, string) {
		_, m := get(t, ctx, client, "/metrics")
		for _, want := range []string{`reason="revoked_kicked"} 2`, `reason="unknown_device"} 1`, `reason="revoked"} 2`, `reason="permission_violation"} 1`} {
			if !strings.Contains(m, want) {
				return false, "no " + want + " in\n" + grepLines(m, "anchorline_auth")
			}
		}
		return true, ""
	})

	// Services keep their own rights: the ingest credential cannot publish a reading.
	nc, err := nats.Connect(cfg.NATS.URL, d.NATSOptions(auth.RoleIngest)...)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ijs, _ := jetstream.New(nc)
	pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
	defer pcancel()
	if _, err := ijs.Publish(pctx, reading.Subject(devs[2].ID), devs[2].next(t)); err == nil {
		t.Fatal("the ingest credential published a reading")
	}
	if _, err := ijs.Stream(ctx, stream.Readings); err != nil {
		t.Fatalf("the ingest credential cannot read its stream's info: %v", err)
	}
}

// plainText speaks the NATS protocol without TLS, as a client that ignores the server's
// tls_required would: it sends CONNECT and PING in clear and returns what the server answers.
func plainText(t *testing.T, addr string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	info, err := r.ReadString('\n')
	if err != nil || !strings.Contains(info, `"tls_required":true`) {
		t.Fatalf("server INFO %q (%v): want tls_required", info, err)
	}
	if _, err := c.Write([]byte("CONNECT {\"verbose\":false}\r\nPING\r\n")); err != nil {
		return err.Error()
	}
	answer, err := r.ReadString('\n')
	if err != nil {
		return answer + err.Error()
	}
	return answer
}

func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
