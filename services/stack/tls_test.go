package stack

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/anchorline/anchorline/anchor/ledger"
	"github.com/anchorline/anchorline/internal/await"
	"github.com/anchorline/anchorline/schemas/reading"
	"github.com/anchorline/anchorline/schemas/reading/connect"
)

// TestTLSEverywhere runs dev with its private ClickHouse on TLS too (clickhouse.secure): NATS,
// the API, ClickHouse and the ledger's RPC all speak TLS with dev's certificate; a reading
// published by a device is stored and served over them; plain ClickHouse and plain-HTTP ledger
// clients are refused.
func TestTLSEverywhere(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0") // a free port for the private server
	if err != nil {
		t.Fatal(err)
	}
	chAddr := ln.Addr().String()
	ln.Close()
	cfg := devConfig(t, chAddr, "tls_everywhere", filepath.Join(dir, "data"))
	cfg.ClickHouse.Embedded, cfg.ClickHouse.Secure = true, true
	d, err := StartDev(ctx, cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Stop()
	if !d.ClickHouse.Secure {
		t.Fatal("the private ClickHouse does not serve TLS")
	}
	client := d.APIClient()
	dv := registerAll(t, ctx, client, d, "tls", 1)[0]
	opts, err := connect.Options(dv.ID, dv.Key)
	if err != nil {
		t.Fatal(err)
	}
	nc, js, err := ConnectNATS(ctx, d.Config().NATS.URL, "tls-device", testLogger(t), append(d.NATSTLS(), opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	publish(t, js, reading.Subject(dv.ID), reading.MsgID(dv.ID, dv.Seq+1), dv.next(t))
	await.Until(t, ctx, "the reading served by the API", func() (bool, string) {
		code, body := get(t, ctx, client, "/v1/readings/"+dv.ID+"/1")
		return code == http.StatusOK, fmt.Sprint(code, " ", body)
	})
	// A client without TLS gets nothing from the private ClickHouse.
	plain, err := clickhouse.Open(&clickhouse.Options{Addr: []string{d.ClickHouse.Addr}, DialTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if err := plain.Ping(ctx); err == nil {
		t.Fatal("a plain-text ClickHouse client was answered")
	}
	// The ledger's RPC, as separate services reach it.
	tc, err := ClientTLS(d.Config())
	if err != nil || tc == nil {
		t.Fatalf("ledger TLS: %v %v", tc, err)
	}
	for _, c := range []struct {
		tls  *tls.Config
		want bool
	}{{tc, true}, {nil, false}} {
		rpc, err := ledger.NewRPC(d.LedgerRPC, c.tls)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := rpc.Status(ctx); (err == nil) != c.want {
			t.Fatalf("ledger RPC with TLS %v: err = %v", c.tls != nil, err)
		}
	}
}
