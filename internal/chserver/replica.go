package chserver

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"regexp"
	"strconv"
	"strings"
)

// ReplicaOptions makes a server one replica of a shard of a cluster (StartReplica).
type ReplicaOptions struct {
	ZooKeeper string   // host:port of the ZooKeeper the replicas share
	Cluster   string   // cluster name for ON CLUSTER and Distributed: letters, digits, _
	Shard     string   // {shard} macro
	Replica   string   // {replica} macro: unique among the shard's replicas
	Peers     []string // native host:port of every replica of the shard, this one's addr included
	// peer is the plain native port a TLS replica keeps for the others (StartReplicaTLS); 0
	// for a replica without TLS, whose addr is its one native port.
	peer int
}

var clusterName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

func (o *ReplicaOptions) check(addr string) error {
	if _, _, err := net.SplitHostPort(o.ZooKeeper); err != nil {
		return fmt.Errorf("clickhouse replica: zookeeper %q: %w", o.ZooKeeper, err)
	}
	if !clusterName.MatchString(o.Cluster) {
		return fmt.Errorf("clickhouse replica: cluster name %q: want letters, digits and _ (it is an XML element name)", o.Cluster)
	}
	if o.Shard == "" || o.Replica == "" {
		return fmt.Errorf("clickhouse replica: shard %q and replica %q must not be empty", o.Shard, o.Replica)
	}
	self := false
	if o.peer != 0 {
		h, _, _ := net.SplitHostPort(addr)
		addr = net.JoinHostPort(h, strconv.Itoa(o.peer))
	}
	for _, p := range o.Peers {
		if _, _, err := net.SplitHostPort(p); err != nil {
			return fmt.Errorf("clickhouse replica: peer %q: %w", p, err)
		}
		self = self || p == addr
	}
	if !self {
		// ON CLUSTER DDL runs on a server only if it finds its own tcp_port in the cluster.
		return fmt.Errorf("clickhouse replica: peers %v do not include this server's addr %s", o.Peers, addr)
	}
	return nil
}

// config is the part of config.xml that makes the server a replica. The interserver HTTP port
// is where the other replicas fetch parts from: the server registers host:interserver in
// ZooKeeper (interserver_http_host, else its hostname).
func (o *ReplicaOptions) config(host string, interserver int) string {
	zh, zp, _ := net.SplitHostPort(o.ZooKeeper) // checked by check
	var b strings.Builder
	fmt.Fprintf(&b, "    <interserver_http_host>%s</interserver_http_host>\n", xmlText(host))
	fmt.Fprintf(&b, "    <interserver_http_port>%d</interserver_http_port>\n", interserver)
	fmt.Fprintf(&b, "    <zookeeper>\n        <node><host>%s</host><port>%s</port></node>\n        <session_timeout_ms>30000</session_timeout_ms>\n    </zookeeper>\n", xmlText(zh), xmlText(zp))
	fmt.Fprintf(&b, "    <macros>\n        <shard>%s</shard>\n        <replica>%s</replica>\n    </macros>\n", xmlText(o.Shard), xmlText(o.Replica))
	fmt.Fprintf(&b, "    <remote_servers>\n        <%s>\n            <shard>\n                <internal_replication>true</internal_replication>\n", o.Cluster)
	for _, p := range o.Peers {
		h, port, _ := net.SplitHostPort(p)
		fmt.Fprintf(&b, "                <replica><host>%s</host><port>%s</port></replica>\n", xmlText(h), xmlText(port))
	}
	fmt.Fprintf(&b, "            </shard>\n        </%s>\n    </remote_servers>\n", o.Cluster)
	b.WriteString("    <distributed_ddl>\n        <path>/clickhouse/task_queue/ddl</path>\n    </distributed_ddl>\n")
	return b.String()
}

// StartReplica is Start for one replica of a one-shard cluster: the server uses the ZooKeeper
// at o.ZooKeeper (for ReplicatedMergeTree and ON CLUSTER DDL, queue /clickhouse/task_queue/ddl),
// defines the macros {shard} and {replica}, and the cluster o.Cluster of the replicas o.Peers
// (internal_replication true). addr is required (not ""): it must be one of o.Peers, since the
// other replicas' configurations name it. Data in dir, its replicated tables included,
// survives a restart with the same options.
func StartReplica(ctx context.Context, dir, addr string, o ReplicaOptions, log *slog.Logger) (*Server, error) {
	if addr == "" {
		return nil, fmt.Errorf("clickhouse replica: addr is required (the peers name it)")
	}
	if err := o.check(addr); err != nil {
		return nil, err
	}
	o.Peers = append([]string(nil), o.Peers...)
	return startServer(ctx, dir, addr, nil, &o, log)
}

// StartReplicaTLS is StartReplica with its clients served over TLS only on addr, as StartTLS
// does (certFile, keyFile, client). The replicas reach each other (ON CLUSTER DDL, Distributed
// tables) on peer, a plain native port on the same host, which o.Peers lists: 18.16's DDL
// worker finds its own entry of a cluster by tcp_port and has no secure form of that check.
// So a TLS replica listens on addr (TLS, for every client), peer (plain, for the replicas of
// the cluster) and its interserver HTTP port (plain, where replicas fetch parts).
func StartReplicaTLS(ctx context.Context, dir, addr, peer string, o ReplicaOptions, certFile, keyFile string, client *tls.Config, log *slog.Logger) (*Server, error) {
	if addr == "" {
		return nil, fmt.Errorf("clickhouse replica: addr is required")
	}
	ah, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("clickhouse replica addr %q: %w", addr, err)
	}
	ph, pp, err := net.SplitHostPort(peer)
	if err != nil {
		return nil, fmt.Errorf("clickhouse replica peer %q: %w", peer, err)
	}
	if ph != ah {
		return nil, fmt.Errorf("clickhouse replica: peer %s and addr %s must be on one host (the server listens on one)", peer, addr)
	}
	if o.peer, err = strconv.Atoi(pp); err != nil {
		return nil, fmt.Errorf("clickhouse replica peer %q: port: %w", peer, err)
	}
	if err := o.check(addr); err != nil {
		return nil, err
	}
	t, err := newTLSFiles(certFile, keyFile, client)
	if err != nil {
		return nil, err
	}
	o.Peers = append([]string(nil), o.Peers...)
	return startServer(ctx, dir, addr, t, &o, log)
}
