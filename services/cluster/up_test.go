package cluster

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/anchorline/anchorline/deployments"
	"github.com/anchorline/anchorline/internal/pki"
	"github.com/anchorline/anchorline/services/auth"
	"github.com/anchorline/anchorline/services/config"
)

// TestServiceConfigs: each service of the cluster runs on its deployment file
// (deployments/config/<role>.yaml): every key of that file keeps its value unless it names the
// host's layout (addresses, keys, certificates), and the file the cluster writes loads and
// validates as the service will load it.
func TestServiceConfigs(t *testing.T) {
	dir := t.TempDir()
	c := &Cluster{opts: Options{Dir: dir, Database: "anchorline"}, certs: pki.Dir(filepath.Join(dir, "tls")),
		info: Info{NATSURLs: []string{"nats://127.0.0.1:4001", "nats://127.0.0.1:4002", "nats://127.0.0.1:4003"},
			ClickHouseAddr: "127.0.0.1:9441,127.0.0.1:9442", LedgerRPC: []string{"127.0.0.1:26601", "127.0.0.1:26611"},
			AuthDir: filepath.Join(dir, "auth"), AdminKey: filepath.Join(dir, "admin.key"), AnchorKey: filepath.Join(dir, "anchor.key"),
			CAFile: filepath.Join(dir, "tls", "ca.pem")}}
	// Files that Load checks exist.
	if _, err := auth.Init(c.info.AuthDir); err != nil {
		t.Fatal(err)
	}
	if err := c.certs.Ensure(certHTTP, []string{"127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	for i, s := range []service{{name: "auth-1", command: "auth", role: auth.RoleAuth},
		{name: "ingest-1", command: "ingest", role: auth.RoleIngest, conf: map[string]map[string]any{"ingest": {"worker": "ingest-1"}}},
		{name: "anchor-1", command: "anchor", role: auth.RoleAnchoring}, {name: "api-1", command: "api"}} {
		conf, httpAddr, err := c.serviceConfig(s, i)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		base, err := deployments.ConfigFile(s.command)
		if err != nil {
			t.Fatal(err)
		}
		file, err := sections(base)
		if err != nil {
			t.Fatal(err)
		}
		layout := map[string]bool{"nats.url": true, "nats.credentials": true, "nats.auth_dir": true, "nats.replicas": true,
			"clickhouse.addr": true, "clickhouse.database": true, "clickhouse.cluster": true, "clickhouse.secure": true,
			"ledger.rpc": true, "ledger.chain_id": true, "ledger.admin_key": true, "anchor.key": true,
			"http.addr": true, "http.tls_cert": true, "http.tls_key": true, "tls.ca": true, "ingest.worker": true, "log.format": true}
		kept := 0
		for sec, keys := range file {
			for k, v := range keys {
				if layout[sec+"."+k] {
					continue
				}
				kept++
				if !reflect.DeepEqual(conf[sec][k], v) {
					t.Errorf("%s: %s.%s = %v, want the deployment file's %v", s.name, sec, k, conf[sec][k], v)
				}
			}
		}
		path := filepath.Join(dir, "config", s.name+".yaml")
		if err := writeYAML(path, "# test\n", conf, filepath.Join(dir, "data", s.name)); err != nil {
			t.Fatal(err)
		}
		fs := pflag.NewFlagSet(s.name, pflag.ContinueOnError)
		config.Flags(fs)
		if err := fs.Parse([]string{"--config", path}); err != nil {
			t.Fatal(err)
		}
		cfg, err := config.Load(fs)
		if err != nil {
			b, _ := os.ReadFile(path)
			t.Fatalf("%s: the cluster's file does not load: %v\n%s", s.name, err, b)
		}
		if (httpAddr != "" && cfg.HTTP.Addr != httpAddr) || cfg.TLS.CA != c.info.CAFile || !cfg.ClickHouse.Secure || !strings.HasPrefix(cfg.NATS.URL, "nats://127.0.0.1:") {
			t.Errorf("%s: http %q ca %q secure %v nats %q: want the cluster's layout", s.name, cfg.HTTP.Addr, cfg.TLS.CA, cfg.ClickHouse.Secure, cfg.NATS.URL)
		}
		t.Logf("%s: %d keys of deployments/config/%s.yaml kept", s.name, kept, s.command)
	}
}
