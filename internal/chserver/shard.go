package chserver

import (
	"context"
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
	dirs      []string
	log       *slog.Logger
}

// StartShard starts a ZooKeeper under dir/zookeeper and n replicas of cluster's one shard
// (01) under dir/replica-N on free loopback ports, and returns once all of them answer. On
// an error it stops what it started.
func StartShard(ctx context.Context, dir, cluster string, n int, log *slog.Logger) (*Shard, error) {
	if n < 1 {
		return nil, fmt.Errorf("clickhouse shard: %d replicas: want at least 1", n)
	}
	zk, err := zkserver.Start(ctx, filepath.Join(dir, "zookeeper"), log)
	if err != nil {
		return nil, err
	}
	s := &Shard{Cluster: cluster, ZooKeeper: zk, log: log}
	addrs := make([]string, n)
	for i := range addrs {
		p, err := freePort("127.0.0.1")
		if err != nil {
			_ = s.Stop()
			return nil, fmt.Errorf("clickhouse shard: %w", err)
		}
		addrs[i] = net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
	}
	for i := range n {
		s.opts = append(s.opts, ReplicaOptions{ZooKeeper: zk.Addr, Cluster: cluster, Shard: "01", Replica: "r" + strconv.Itoa(i+1), Peers: addrs})
		s.dirs = append(s.dirs, filepath.Join(dir, "replica-"+strconv.Itoa(i+1)))
		r, err := StartReplica(ctx, s.dirs[i], addrs[i], s.opts[i], log)
		if err != nil {
			_ = s.Stop()
			return nil, err
		}
		s.Replicas = append(s.Replicas, r)
	}
	return s, nil
}

// Addrs returns the replicas' native host:port addresses.
func (s *Shard) Addrs() []string {
	out := make([]string, len(s.opts))
	for i, o := range s.opts {
		out[i] = o.Peers[i]
	}
	return out
}

// Restart starts replica i again on its address and data (after Replicas[i].Stop).
func (s *Shard) Restart(ctx context.Context, i int) error {
	r, err := StartReplica(ctx, s.dirs[i], s.opts[i].Peers[i], s.opts[i], s.log)
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
