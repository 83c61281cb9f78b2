package chserver

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/anchorline/anchorline/internal/await"
	"github.com/anchorline/anchorline/internal/pki"
	"github.com/anchorline/anchorline/internal/zkserver"
)

func count(ctx context.Context, s *Server, query string) (uint64, error) {
	conn, err := s.open("default")
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	var n uint64
	err = conn.QueryRow(ctx, query).Scan(&n)
	return n, err
}

func run(ctx context.Context, t *testing.T, s *Server, query string) {
	t.Helper()
	conn, err := s.open("default")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	if err := conn.Exec(ctx, query); err != nil {
		t.Fatalf("on %s: %s: %v", s.Addr, query, err)
	}
	t.Logf("on %s (%v): %s", s.Addr, time.Since(start).Round(time.Millisecond), query)
}

func awaitCount(t *testing.T, ctx context.Context, s *Server, want uint64) {
	t.Helper()
	q := "SELECT count() FROM db.t"
	await.Until(t, ctx, fmt.Sprintf("%s: count() = %d", s.Addr, want), func() (bool, string) {
		n, err := count(ctx, s, q)
		if err != nil {
			return false, err.Error()
		}
		return n == want, "count() = " + strconv.FormatUint(n, 10)
	})
}

// TestReplicas: two replicas of one shard, sharing a private ZooKeeper, replicate a
// ReplicatedMergeTree table created ON CLUSTER; with replica 1 stopped, replica 2 takes
// inserts, which replica 1 fetches when it is back.
func TestReplicas(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	begin := time.Now()
	zk, err := zkserver.Start(ctx, t.TempDir(), quiet())
	if err != nil { // zkserver.ErrNotInstalled says to run scripts/install-zookeeper.sh
		t.Fatal(err)
	}
	defer zk.Stop()
	t.Logf("zookeeper %s ready after %v", zk.Addr, time.Since(begin).Round(time.Millisecond))

	var addrs []string
	for range 2 {
		p, err := freePort("127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		addrs = append(addrs, net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
	}
	dirs := []string{filepath.Join(t.TempDir(), "r1"), filepath.Join(t.TempDir(), "r2")}
	opts := func(i int) ReplicaOptions {
		return ReplicaOptions{ZooKeeper: zk.Addr, Cluster: "c", Shard: "01", Replica: "r" + strconv.Itoa(i+1), Peers: addrs}
	}
	startReplica := func(i int) *Server {
		t.Helper()
		s0 := time.Now()
		s, err := StartReplica(ctx, dirs[i], addrs[i], opts(i), quiet())
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("replica %d on %s ready after %v", i+1, s.Addr, time.Since(s0).Round(time.Millisecond))
		return s
	}
	r1 := startReplica(0)
	defer func() { _ = r1.Stop() }()
	r2 := startReplica(1)
	defer func() { _ = r2.Stop() }()

	run(ctx, t, r1, "CREATE DATABASE db ON CLUSTER c")
	run(ctx, t, r1, "CREATE TABLE db.t ON CLUSTER c (x UInt64) ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/db/t', '{replica}') ORDER BY x")
	run(ctx, t, r1, "INSERT INTO db.t SELECT number FROM system.numbers LIMIT 100")
	s0 := time.Now()
	awaitCount(t, ctx, r2, 100)
	t.Logf("replica 2 has the 100 rows after %v", time.Since(s0).Round(time.Millisecond))

	if err := r1.Stop(); err != nil {
		t.Fatal(err)
	}
	run(ctx, t, r2, "INSERT INTO db.t SELECT number + 100 FROM system.numbers LIMIT 50")
	awaitCount(t, ctx, r2, 150)

	r1 = startReplica(0)
	s0 = time.Now()
	awaitCount(t, ctx, r1, 150)
	t.Logf("restarted replica 1 has the 150 rows after %v", time.Since(s0).Round(time.Millisecond))
	if n, err := count(ctx, r1, "SELECT sum(x) FROM db.t"); err != nil || n != 149*150/2 {
		t.Fatalf("sum(x) on replica 1 = %d, %v; want %d", n, err, 149*150/2)
	}
	t.Logf("total %v", time.Since(begin).Round(time.Millisecond))
}

// TestShardTLS: the replicas of StartShardTLS serve their clients over TLS only, and still
// replicate, run ON CLUSTER DDL and answer a Distributed table over their plain peer ports.
func TestShardTLS(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	certs := pki.Dir(t.TempDir())
	if err := certs.Ensure("clickhouse", []string{"127.0.0.1", "localhost"}); err != nil {
		t.Fatal(err)
	}
	trustCA, err := pki.ClientConfig(certs.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	sh, err := StartShardTLS(ctx, t.TempDir(), "c", 2, ShardTLS{CertFile: certs.CertFile("clickhouse"), KeyFile: certs.KeyFile("clickhouse"), Client: trustCA}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer sh.Stop()
	r1, r2 := sh.Replicas[0], sh.Replicas[1]
	for i, addr := range sh.Addrs() {
		if !sh.Replicas[i].Secure || sh.Replicas[i].Addr != addr {
			t.Fatalf("replica %d: Secure %v, Addr %s; want TLS on %s", i+1, sh.Replicas[i].Secure, sh.Replicas[i].Addr, addr)
		}
		if err := selectOne(ctx, addr, nil); err == nil {
			t.Fatalf("replica %d answered a plain client on its client port %s", i+1, addr)
		}
		if err := selectOne(ctx, addr, trustCA); err != nil {
			t.Fatalf("replica %d over TLS: %v", i+1, err)
		}
	}
	run(ctx, t, r1, "CREATE DATABASE db ON CLUSTER c")
	run(ctx, t, r1, "CREATE TABLE db.t ON CLUSTER c (x UInt64) ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/db/t', '{replica}') ORDER BY x")
	run(ctx, t, r1, "CREATE TABLE db.t_all ON CLUSTER c AS db.t ENGINE = Distributed(c, db, t)")
	run(ctx, t, r1, "INSERT INTO db.t SELECT number FROM system.numbers LIMIT 100")
	awaitCount(t, ctx, r2, 100)
	if n, err := count(ctx, r2, "SELECT sum(x) FROM db.t_all"); err != nil || n != 99*100/2 {
		t.Fatalf("sum(x) through the Distributed table on replica 2 = %d, %v; want %d", n, err, 99*100/2)
	}
	if err := r2.Stop(); err != nil {
		t.Fatal(err)
	}
	run(ctx, t, r1, "INSERT INTO db.t SELECT number + 100 FROM system.numbers LIMIT 50")
	if err := sh.Restart(ctx, 1); err != nil {
		t.Fatal(err)
	}
	awaitCount(t, ctx, sh.Replicas[1], 150)
}
