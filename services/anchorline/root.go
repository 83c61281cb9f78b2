package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/pprof"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/anchorline/anchorline/services/api"
	"github.com/anchorline/anchorline/services/config"
	"github.com/anchorline/anchorline/services/stack"
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
			return badInput(fmt.Errorf("--cpuprofile: %w", err))
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
		devCmd(), migrateCmd(), ingestCmd(), anchorCmd(), rulesCmd(), authCmd(), ledgerCmd(), apiCmd(),
		deviceCmd(), ruleCmd(), ownerCmd(), consentCmd(), eraseCmd(), proofCmd(), verifyCmd(), auditCmd(), trustCmd(), statusCmd(), benchCmd(), clusterCmd(), tlsCmd(),
	)
	root.AddCommand(logCmd())
	root.SetFlagErrorFunc(flagError) // subcommands ask their parents
	badArgsAreBadInput(root)
	return root
}

// flagError is the bad-input error for a flag that did not parse: unknown, without its value,
// or with a value of the wrong type.
func flagError(cmd *cobra.Command, err error) error {
	var invalid *pflag.InvalidValueError
	if errors.As(err, &invalid) {
		f := invalid.GetFlag()
		return badInput(fmt.Errorf("--%s %q: want %s (see %s --help)", f.Name, invalid.GetValue(), flagType(f.Value.Type()), cmd.CommandPath()))
	}
	return badInput(fmt.Errorf("%w (see %s --help)", err, cmd.CommandPath()))
}

// flagType says in words what a flag of pflag's type accepts.
func flagType(t string) string {
	switch t {
	case "uint64", "uint", "uint32":
		return "a whole number, 0 or more"
	case "int", "int64", "int32":
		return "a whole number"
	case "float64", "float32":
		return "a number"
	case "duration":
		return "a duration like 30s, 200ms or 1h"
	case "bool":
		return "true or false"
	}
	return "a " + t
}

// badArgsAreBadInput makes the argument check of cmd and every command under it fail as bad
// input, with the command's usage.
func badArgsAreBadInput(cmd *cobra.Command) {
	if check := cmd.Args; check != nil {
		cmd.Args = func(c *cobra.Command, args []string) error {
			if err := check(c, args); err != nil {
				return badInput(fmt.Errorf("%s: %w; usage: %s", c.CommandPath(), err, c.UseLine()))
			}
			return nil
		}
	}
	for _, sub := range cmd.Commands() {
		badArgsAreBadInput(sub)
	}
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

// apiClient is the client of the HTTP API that client commands talk to: http.addr (a URL, or
// host:port, then https if a CA is configured), trusting tls.ca, sending http.token's token.
func apiClient(c config.Config) (*api.Client, error) {
	cl, err := stack.APIClient(c)
	if err != nil {
		return nil, badInput(err)
	}
	return cl, nil
}
