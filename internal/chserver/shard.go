package chserver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"

	"github.com/anchorline/anchorline/internal/zkserver"
)

// Shard is a one-shard ClickHouse cluster on this host: a private ZooKeeper and replicas that
// share it (StartShard).
type Shard struct {
	Cluster   string
	ZooKeeper *zkserver.Server
	Replicas  []*Server
	opts      []ReplicaOptions
	addrs     []string  // where clients connect to each replica
	tls       *ShardTLS // nil: plain
	dirs      []string
	log       *slog.Logger
}

// StartShard starts a ZooKeeper under dir/zookeeper and n replicas of cluster's one shard
// (01) under dir/replica-N on free loopback ports, and returns once all of them answer. On
// an error it stops what it started.
func StartShard(ctx context.Context, dir, cluster string, n int, log *slog.Logger) (*Shard, error) {
	return startShard(ctx, dir, cluster, n, nil, log)
}

// ShardTLS is what the replicas of StartShardTLS serve their clients with (as StartTLS).
type ShardTLS struct {
	CertFile, KeyFile string
	Client            *tls.Config // how Open and the readiness checks connect
}

// StartShardTLS is StartShard with every replica serving its clients over TLS only
// (StartReplicaTLS): Addrs are the TLS ports; the replicas reach each other on plain loopback
// ports of their own.
func StartShardTLS(ctx context.Context, dir, cluster string, n int, t ShardTLS, log *slog.Logger) (*Shard, error) {
	return startShard(ctx, dir, cluster, n, &t, log)
}

func startShard(ctx context.Context, dir, cluster string, n int, t *ShardTLS, log *slog.Logger) (*Shard, error) {
	if n < 1 {
		return nil, fmt.Errorf("clickhouse shard: %d replicas: want at least 1", n)
	}
	zk, err := zkserver.Start(ctx, filepath.Join(dir, "zookeeper"), log)
	if err != nil {
		return nil, err
	}
	s := &Shard{Cluster: cluster, ZooKeeper: zk, tls: t, log: log}
	free := func() ([]string, error) {
		addrs := make([]string, n)
		for i := range addrs {
			p, err := freePort("127.0.0.1")
			if err != nil {
				return nil, fmt.Errorf("clickhouse shard: %w", err)
			}
			addrs[i] = net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
		}
		return addrs, nil
	}
	peers, err := free()
	if err != nil {
		_ = s.Stop()
		return nil, err
	}
	s.addrs = peers
	if t != nil {
		if s.addrs, err = free(); err != nil {
			_ = s.Stop()
			return nil, err
		}
	}
	for i := range n {
		s.opts = append(s.opts, ReplicaOptions{ZooKeeper: zk.Addr, Cluster: cluster, Shard: "01", Replica: "r" + strconv.Itoa(i+1), Peers: peers})
		s.dirs = append(s.dirs, filepath.Join(dir, "replica-"+strconv.Itoa(i+1)))
		r, err := s.startReplica(ctx, i)
		if err != nil {
			_ = s.Stop()
			return nil, err
		}
		s.Replicas = append(s.Replicas, r)
	}
	return s, nil
}

func (s *Shard) startReplica(ctx context.Context, i int) (*Server, error) {
	if s.tls == nil {
		return StartReplica(ctx, s.dirs[i], s.addrs[i], s.opts[i], s.log)
	}
	return StartReplicaTLS(ctx, s.dirs[i], s.addrs[i], s.opts[i].Peers[i], s.opts[i], s.tls.CertFile, s.tls.KeyFile, s.tls.Client, s.log)
}

// Addrs returns the replicas' native host:port addresses (TLS with StartShardTLS).
func (s *Shard) Addrs() []string { return append([]string(nil), s.addrs...) }

// Restart starts replica i again on its address and data (after Replicas[i].Stop).
func (s *Shard) Restart(ctx context.Context, i int) error {
	r, err := s.startReplica(ctx, i)
	if err != nil {
		return err
	}
	s.Replicas[i] = r
	return nil
}

// Stop stops the replicas and then ZooKeeper.
func (s *Shard) Stop() error {
	var errs []error
	for _, r := range s.Replicas {
		errs = append(errs, r.Stop())
	}
	if s.ZooKeeper != nil {
		errs = append(errs, s.ZooKeeper.Stop())
	}
	return errors.Join(errs...)
}
