package stack

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/anchorline/anchorline/internal/await"
	"github.com/anchorline/anchorline/internal/chserver"
	"github.com/anchorline/anchorline/schemas/reading"
	"github.com/anchorline/anchorline/schemas/reading/connect"
	"github.com/anchorline/anchorline/services/auth"
)

// TestPrometheusFiles checks deployments/prometheus with promtool (Debian's prometheus package,
// scripts/install-prometheus.sh), parses every query of the Grafana dashboard
// (deployments/grafana) the same way, and checks that every Anchorline metric the rules and
// the dashboard name is one a running dev exports, once it has ingested, rejected, anchored and
// refused something.
func TestPrometheusFiles(t *testing.T) {
	promtool := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("promtool", args...).CombinedOutput(); err != nil {
			t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	promtool("check", "config", "../../deployments/prometheus/prometheus.yml")
	promtool("check", "rules", "../../deployments/prometheus/alerts.yml")
	rules, err := os.ReadFile("../../deployments/prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	// The dashboard's queries, parsed by promtool as recording rules.
	b, err := os.ReadFile("../../deployments/grafana/anchorline.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("dashboard: %v", err)
	}
	var rec strings.Builder
	rec.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	queries := 0
	for i, p := range dash.Panels {
		for _, q := range p.Targets {
			fmt.Fprintf(&rec, "      - record: dashboard:panel_%d\n        expr: %q\n", i, q.Expr)
			queries++
		}
	}
	if queries < 10 {
		t.Fatalf("the dashboard has %d queries", queries)
	}
	recFile := filepath.Join(t.TempDir(), "dashboard.yml")
	if err := os.WriteFile(recFile, []byte(rec.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	promtool("check", "rules", recFile)
	var names []string
	for _, m := range regexp.MustCompile(`\banchorline_[a-z_]+`).FindAllString(string(rules)+rec.String(), -1) {
		if !slices.Contains(names, m) {
			names = append(names, m)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	chAddr, database, _ := chserver.NewDatabase(t)
	d, err := StartDev(ctx, devConfig(t, chAddr, database, t.TempDir()), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Stop()
	cfg := d.Config()
	client := d.APIClient()
	dv := registerAll(t, ctx, client, d, "prom", 1)[0]
	nc, err := nats.Connect(cfg.NATS.URL, d.NATSOptions(auth.RoleSimulator)...)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	publish(t, js, reading.Subject(dv.ID), reading.MsgID(dv.ID, dv.Seq+1), dv.next(t))
	publish(t, js, reading.Subject(dv.ID), "garbage-1", []byte("not a reading")) // rejected: bad_cbor
	stranger := newDevice(t, "prom-stranger", reading.Ed25519)
	opts, _ := connect.Options(stranger.ID, stranger.Key)
	if _, err := nats.Connect(cfg.NATS.URL, append(d.NATSTLS(), append(opts, nats.MaxReconnects(0))...)...); err == nil {
		t.Fatal("an unregistered device connected")
	}
	await.Until(t, ctx, "every metric the rules name exported", func() (bool, string) {
		_, m := get(t, ctx, client, "/metrics")
		var missing []string
		for _, n := range names {
			if !regexp.MustCompile(`(?m)^` + n + `[{ ]`).MatchString(m) {
				missing = append(missing, n)
			}
		}
		return len(missing) == 0, fmt.Sprintf("not exported (yet): %v", missing)
	})
}
