package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/anchorline/anchorline/services/cluster"
)

func clusterCmd() *cobra.Command {
	c := &cobra.Command{Use: "cluster", Short: "A whole multi-node cluster on this host, out of real processes"}
	c.AddCommand(clusterUpCmd(), clusterDownCmd(), clusterRunCmd())
	return c
}

// natsServerBinary is --nats-server, or nats-server on PATH, or the Go tool of this module.
func natsServerBinary(cmd *cobra.Command, flag string) (string, error) {
	if flag != "" {
		return flag, nil
	}
	if p, err := exec.LookPath("nats-server"); err == nil {
		return p, nil
	}
	p, err := cluster.NATSServerBinary(cmd.Context())
	if err != nil {
		return "", badInput(fmt.Errorf("no nats-server on PATH and `go tool nats-server` failed (%w): install nats-server or give --nats-server PATH", err))
	}
	return p, nil
}

func clusterUpCmd() *cobra.Command {
	var dir, natsServer string
	var within time.Duration
	cmd := &cobra.Command{
		Use:   "up --dir D",
		Short: "Start a cluster on loopback ports: 3 NATS nodes, 4 validators, ZooKeeper and 2 ClickHouse replicas, 2 ingest, 2 anchoring (one standby), 1 API",
		Long: `up starts, as processes of a supervisor that runs on after this command returns:
a 3-node NATS JetStream cluster (nats-server, with Anchorline's accounts and auth callout),
4 CometBFT validators (anchorline ledger --home), a ZooKeeper and 2 replicated ClickHouse
servers (Debian's packages, scripts/install-*.sh), the auth callout service, 2 ingest workers,
2 anchoring services (one holds the lease, one stands by) and 1 API. It returns once every part
is ready, prints where each listens, and writes D/cluster.json (every process: role, pid,
listen addresses; and nats_urls, http_addr, clickhouse_addr, clickhouse_database, ledger_rpc,
trust_file) and D/client.yaml, for client commands: --config D/client.yaml. A process that
exits is started again after a second. ` + "`anchorline cluster down --dir D`" + ` stops it all.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				return badInput(errors.New("--dir is required: a new or empty directory for the cluster's data and logs"))
			}
			abs, err := filepath.Abs(dir)
			if err != nil {
				return badInput(fmt.Errorf("--dir: %w", err))
			}
			if entries, err := os.ReadDir(abs); err == nil && len(entries) > 0 {
				return badInput(fmt.Errorf("--dir %s: %w: it is not empty (`anchorline cluster down --dir %s` stops the cluster in it; then remove it, or choose another)", abs, cluster.ErrExists, abs))
			}
			nsrv, err := natsServerBinary(cmd, natsServer)
			if err != nil {
				return err
			}
			self, err := os.Executable()
			if err != nil {
				return err
			}
			info, err := cluster.Start(cmd.Context(), self, abs, []string{"cluster", "run", "--dir", abs, "--nats-server", nsrv}, within)
			if err != nil {
				return err
			}
			printCluster(cmd.OutOrStdout(), info)
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "directory for the cluster (new or empty)")
	cmd.Flags().StringVar(&natsServer, "nats-server", "", "nats-server executable (default: on PATH, else `go tool nats-server`)")
	cmd.Flags().DurationVar(&within, "wait", 5*time.Minute, "how long to wait for every part to be ready")
	return cmd
}

func printCluster(w io.Writer, info cluster.Info) {
	fmt.Fprintf(w, "cluster ready in %s (supervisor pid %d)\n", info.Dir, info.Supervisor.PID)
	for _, p := range info.Processes {
		var addrs []string
		for k, v := range p.Listen {
			addrs = append(addrs, k+" "+v)
		}
		fmt.Fprintf(w, "  %-13s %-10s pid %-7d %s\n", p.Name, p.Role, p.PID, strings.Join(addrs, ", "))
	}
	fmt.Fprintf(w, "nats.url:        %s\n", strings.Join(info.NATSURLs, ","))
	fmt.Fprintf(w, "clickhouse.addr: %s (TLS; database %s, cluster %s; analysts: the *_all tables)\n", info.ClickHouseAddr, info.ClickHouseDatabase, info.ClickHouseCluster)
	if h, p, err := net.SplitHostPort(strings.Split(info.ClickHouseAddr, ",")[0]); err == nil {
		fmt.Fprintf(w, "analysts:        clickhouse-client --config-file %s --secure --host %s --port %s\n", info.ClickHouseClient, h, p)
	}
	fmt.Fprintf(w, "ledger.rpc:      %s\n", strings.Join(info.LedgerRPC, ","))
	fmt.Fprintf(w, "API:             https://%s\n", info.HTTPAddr)
	fmt.Fprintf(w, "tls.ca:          %s (every server: NATS, ClickHouse, the ledger's RPC, HTTP)\n", info.CAFile)
	fmt.Fprintf(w, "trust file:      %s\n", info.TrustFile)
	fmt.Fprintf(w, "clients:         anchorline status --config %s\n", info.ClientConfig)
	fmt.Fprintf(w, "stop:            anchorline cluster down --dir %s\n", info.Dir)
}

func clusterDownCmd() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "down --dir D",
		Short: "Stop every process `cluster up --dir D` started, and nothing else",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				return badInput(errors.New("--dir is required"))
			}
			running, err := cluster.Down(cmd.Context(), dir)
			if err != nil && len(running) == 0 {
				return badInput(err)
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "stopped %d processes of the cluster in %s (its data stays there)\n", len(running), dir)
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "the directory `cluster up` was given")
	return cmd
}

// clusterRunCmd is the supervisor `cluster up` starts: it starts the cluster, keeps it running
// and stops it on SIGTERM or Ctrl-C.
func clusterRunCmd() *cobra.Command {
	var dir, natsServer string
	cmd := &cobra.Command{
		Use:    "run --dir D",
		Short:  "Run a cluster's supervisor in the foreground (what `cluster up` starts in the background)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			nsrv, err := natsServerBinary(cmd, natsServer)
			if err != nil {
				return err
			}
			self, err := os.Executable()
			if err != nil {
				return err
			}
			log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelInfo}))
			c, err := cluster.Up(cmd.Context(), cluster.Options{Dir: dir, Binary: self, NATSServer: nsrv, Log: log})
			if err != nil {
				return err
			}
			log.Info("cluster ready", "dir", dir)
			<-cmd.Context().Done()
			log.Info("stopping the cluster")
			c.Stop()
			log.Info("cluster stopped")
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "directory for the cluster")
	cmd.Flags().StringVar(&natsServer, "nats-server", "", "nats-server executable")
	return cmd
}
