package cluster

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/anchorline/anchorline/internal/pki"
	"github.com/anchorline/anchorline/internal/retry"
	"github.com/anchorline/anchorline/services/auth"
)

// NATSServerBinary is the nats-server command of the version go.mod pins, built as a Go tool
// (`go tool -n nats-server` builds it once and prints its path).
func NATSServerBinary(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "tool", "-n", "nats-server").Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return "", fmt.Errorf("go tool -n nats-server: %w: %s", err, ee.Stderr)
		}
		return "", fmt.Errorf("go tool -n nats-server: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// NATSNode is one nats-server process of a NATSCluster.
type NATSNode struct {
	Name       string
	ClientAddr string // host:port of its clients
	RouteAddr  string // host:port of its cluster routes
	Dir        string // its configuration, JetStream store and log

	proc *child // its nats-server process (stopped with SIGTERM)
}

// NATSCluster is a JetStream cluster of nats-server processes on loopback, each with
// Anchorline's accounts and auth callout.
type NATSCluster struct {
	Nodes []*NATSNode
	bin   string
	certs pki.Dir     // its CA and the nodes' certificate "nats"; "" without TLS
	tls   *tls.Config // how its clients connect with TLS (trusting certs' CA); nil without
	log   *slog.Logger
}

// URLs is what clients list in nats.url: every node.
func (c *NATSCluster) URLs() string {
	urls := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		urls[i] = "nats://" + n.ClientAddr
	}
	return strings.Join(urls, ",")
}

// StartNATSCluster starts n nats-server processes (bin) forming one JetStream cluster, under
// dir/nats-<i>, each including setup's auth.conf, and waits until JetStream has a meta leader.
// Their ports are free loopback ports. With certs (not ""), every node requires TLS of its
// clients and of its routes (mutual TLS between the nodes), with the certificate "nats" that
// certs' CA issues for loopback.
func StartNATSCluster(ctx context.Context, bin, dir string, n int, setup auth.Setup, certs pki.Dir, log *slog.Logger) (*NATSCluster, error) {
	if n < 1 {
		return nil, fmt.Errorf("nats cluster: %d nodes", n)
	}
	c := &NATSCluster{bin: bin, certs: certs, log: log}
	if certs != "" {
		if err := certs.Ensure("nats", []string{"127.0.0.1", "localhost"}); err != nil {
			return nil, fmt.Errorf("nats cluster: %w", err)
		}
		var err error
		if c.tls, err = pki.ClientConfig(certs.CAFile()); err != nil {
			return nil, fmt.Errorf("nats cluster: %w", err)
		}
	}
	for i := range n {
		client, err := freeAddr()
		if err != nil {
			return nil, err
		}
		route, err := freeAddr()
		if err != nil {
			return nil, err
		}
		c.Nodes = append(c.Nodes, &NATSNode{Name: fmt.Sprintf("nats-%d", i), ClientAddr: client, RouteAddr: route,
			Dir: filepath.Join(dir, fmt.Sprintf("nats-%d", i))})
	}
	for _, node := range c.Nodes {
		if err := c.writeConfig(node, setup); err != nil {
			return nil, err
		}
	}
	for i := range c.Nodes {
		if err := c.Start(i); err != nil {
			c.Stop()
			return nil, err
		}
	}
	if err := c.waitReady(ctx, setup); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("nats cluster: free port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// writeConfig writes a node's configuration: its ports, JetStream store, the routes to every
// node, and an include of the auth setup (copied beside it: include paths are relative).
func (c *NATSCluster) writeConfig(node *NATSNode, setup auth.Setup) error {
	if err := os.MkdirAll(node.Dir, 0o700); err != nil {
		return fmt.Errorf("nats cluster: %w", err)
	}
	authConf, err := os.ReadFile(setup.ConfFile())
	if err != nil {
		return fmt.Errorf("nats cluster: %w", err)
	}
	if err := os.WriteFile(filepath.Join(node.Dir, "auth.conf"), authConf, 0o600); err != nil {
		return fmt.Errorf("nats cluster: %w", err)
	}
	var routes []string
	for _, o := range c.Nodes {
		routes = append(routes, fmt.Sprintf("%q", "nats-route://"+o.RouteAddr))
	}
	var clientTLS, routeTLS string
	if c.certs != "" {
		files := fmt.Sprintf("cert_file: %q, key_file: %q, ca_file: %q", c.certs.CertFile("nats"), c.certs.KeyFile("nats"), c.certs.CAFile())
		clientTLS = "tls { " + files + ", timeout: 5 }\n"
		routeTLS = "  tls { " + files + ", verify: true, timeout: 5 }\n"
	}
	conf := fmt.Sprintf(`server_name: %q
listen: %q
%sjetstream { store_dir: %q }
cluster {
  name: "anchorline"
  listen: %q
  routes: [ %s ]
%s}
include "auth.conf"
`, node.Name, node.ClientAddr, clientTLS, filepath.Join(node.Dir, "jetstream"), node.RouteAddr, strings.Join(routes, ", "), routeTLS)
	return os.WriteFile(filepath.Join(node.Dir, "server.conf"), []byte(conf), 0o600)
}

// ClientOptions are opts with, on a cluster with TLS, the option that trusts its CA.
func (c *NATSCluster) ClientOptions(opts ...nats.Option) []nats.Option {
	if c.tls == nil {
		return opts
	}
	return append(opts, nats.Secure(c.tls.Clone()))
}

// Start starts node i's process (again, after Kill: it keeps its store).
func (c *NATSCluster) Start(i int) error {
	node := c.Nodes[i]
	if node.proc == nil {
		node.proc = &child{name: node.Name, bin: c.bin, args: []string{"-c", filepath.Join(node.Dir, "server.conf")},
			log: filepath.Join(node.Dir, "server.log"), stopSignal: syscall.SIGTERM}
	}
	if err := node.proc.start(); err != nil {
		return fmt.Errorf("nats cluster: %w", err)
	}
	return nil
}

// Process returns node i's process id and a channel closed when that process has exited.
func (c *NATSCluster) Process(i int) (pid int, done <-chan struct{}) {
	return c.Nodes[i].proc.process()
}

// Kill kills node i's process (SIGKILL) and waits for it to end.
func (c *NATSCluster) Kill(i int) {
	if p := c.Nodes[i].proc; p != nil {
		p.kill()
	}
}

// Stop stops every node (SIGTERM, then SIGKILL after 10 s).
func (c *NATSCluster) Stop() {
	for i := range c.Nodes {
		c.stopNode(i)
	}
}

// stopNode stops node i (SIGTERM, then SIGKILL after 10 s) and waits for it.
func (c *NATSCluster) stopNode(i int) {
	if p := c.Nodes[i].proc; p != nil {
		p.stop(10 * time.Second)
	}
}

// jszReply is the part of a server's JSZ answer that says whether JetStream has a leader.
type jszReply struct {
	Data struct {
		MetaCluster struct {
			Leader   string `json:"leader"`
			Replicas []struct {
				Current bool `json:"current"`
			} `json:"replicas"`
		} `json:"meta_cluster"`
	} `json:"data"`
}

// waitReady waits until every node answers and JetStream's meta group has a leader that sees
// every other node current, asking through the system account.
func (c *NATSCluster) waitReady(ctx context.Context, setup auth.Setup) error {
	opts, err := auth.ConnectOptions(auth.RoleSystem, setup.File(auth.RoleSystem))
	if err != nil {
		return err
	}
	_, err = retry.Do(ctx, retry.Within(time.Minute), func(ctx context.Context) (struct{}, error) {
		nc, err := nats.Connect(c.URLs(), append(c.ClientOptions(opts...), nats.Timeout(2*time.Second))...)
		if err != nil {
			return struct{}{}, err
		}
		defer nc.Close()
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		msg, err := nc.RequestWithContext(rctx, "$SYS.REQ.SERVER.PING.JSZ", []byte(`{"leader_only":true}`))
		if err != nil {
			return struct{}{}, err
		}
		var r jszReply
		if err := json.Unmarshal(msg.Data, &r); err != nil {
			return struct{}{}, err
		}
		mc := r.Data.MetaCluster
		if mc.Leader == "" || len(mc.Replicas) != len(c.Nodes)-1 {
			return struct{}{}, fmt.Errorf("jetstream meta leader %q with %d peers, want %d", mc.Leader, len(mc.Replicas), len(c.Nodes)-1)
		}
		for _, p := range mc.Replicas {
			if !p.Current {
				return struct{}{}, errors.New("a jetstream peer is not current yet")
			}
		}
		return struct{}{}, nil
	}, func(err error, next time.Duration) {
		c.log.Debug("nats cluster not ready yet", "err", err, "retry_in", next)
	})
	if err != nil {
		for i, n := range c.Nodes {
			if _, done := c.Process(i); isClosed(done) {
				b, _ := os.ReadFile(filepath.Join(n.Dir, "server.log"))
				if len(b) > 2000 {
					b = b[len(b)-2000:]
				}
				return fmt.Errorf("nats cluster: %s exited while starting (its log ends:\n%s): %w", n.Name, b, err)
			}
		}
		b, _ := os.ReadFile(filepath.Join(c.Nodes[0].Dir, "server.log"))
		if len(b) > 2000 {
			b = b[len(b)-2000:]
		}
		return fmt.Errorf("nats cluster: not ready (logs in %s): %w; %s's log ends:\n%s", filepath.Dir(c.Nodes[0].Dir), err, c.Nodes[0].Name, b)
	}
	return nil
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
