package main

import (
	"fmt"
	"log/slog"
	"os"
	"runtime/pprof"
	"strings"

	"github.com/spf13/cobra"

	"github.com/anchorline/anchorline/services/config"
)

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "anchorline",
		Short:         "Tamper-evident IoT telemetry: signed readings, ClickHouse, Merkle anchors on a ledger",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	config.Flags(root.PersistentFlags())
	var cpuProfile string
	var stopProfile func()
	root.PersistentFlags().StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile (pprof) of this command to this file")
	root.PersistentPreRunE = func(*cobra.Command, []string) error {
		if cpuProfile == "" {
			return nil
		}
		f, err := os.Create(cpuProfile)
		if err != nil {
			return fmt.Errorf("--cpuprofile: %w", err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return fmt.Errorf("--cpuprofile: %w", err)
		}
		stopProfile = func() { pprof.StopCPUProfile(); f.Close() }
		return nil
	}
	root.PersistentPostRun = func(*cobra.Command, []string) {
		if stopProfile != nil {
			stopProfile()
		}
	}
	root.AddCommand(
		devCmd(), migrateCmd(), ingestCmd(), anchorCmd(), ledgerCmd(), apiCmd(),
		deviceCmd(), proofCmd(), verifyCmd(), auditCmd(), trustCmd(), statusCmd(), benchCmd(),
	)
	return root
}

// load reads the configuration for cmd and builds its logger.
func load(cmd *cobra.Command) (config.Config, *slog.Logger, error) {
	c, err := config.Load(cmd.Flags())
	if err != nil {
		return c, nil, err
	}
	return c, newLogger(c.Log), nil
}

func newLogger(l config.Log) *slog.Logger {
	var level slog.Level
	if err := level.UnmarshalText([]byte(l.Level)); err != nil {
		level = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: level}
	if strings.EqualFold(l.Format, "json") {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

// apiURL is the base URL of the HTTP API that client commands talk to.
func apiURL(c config.Config) string {
	if strings.HasPrefix(c.HTTP.Addr, "http://") || strings.HasPrefix(c.HTTP.Addr, "https://") {
		return strings.TrimSuffix(c.HTTP.Addr, "/")
	}
	return fmt.Sprintf("http://%s", c.HTTP.Addr)
}
