package main

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/anchorline/anchorline/anchor/node"
	"github.com/anchorline/anchorline/schemas/reading"
	"github.com/anchorline/anchorline/services/stack"
)

// runValidator runs one validator from a home written by `ledger init` until ctx ends.
func runValidator(ctx context.Context, home string, log *slog.Logger) error {
	n, err := node.StartHome(ctx, home, node.HomeOptions{Logger: log})
	if errors.Is(err, node.ErrNoHome) {
		return badInput(fmt.Errorf("--home: %w", err))
	}
	if err != nil {
		return err
	}
	chainID, err := n.Client().ChainID(ctx)
	if err != nil {
		return errors.Join(err, n.Stop())
	}
	log.Info("ledger validator running", "home", home, "rpc", n.RPCAddr(), "chain_id", chainID)
	<-ctx.Done()
	return n.Stop()
}

func ledgerInitCmd() *cobra.Command {
	var (
		n                    node.Network
		hosts                string
		admins               int
		adminKeys, anchorKey string
	)
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Write the homes of a validator network: keys, one genesis, config.toml with persistent_peers",
		Long: `init writes one home per validator under --out (node0, node1, ...): validator and node keys,
the shared genesis (every validator with equal power; app_state.admins, admin_threshold and
anchor_keys) and config.toml with its P2P and RPC addresses and the other validators as
persistent_peers. Validators sharing a host get ports 10 apart from --p2p-port and --rpc-port.
With --rpc-tls-cert and --rpc-tls-key every config.toml names those files (rpc.tls_cert_file,
tls_key_file, written as given) and the validators serve their RPC over https; the files must
be there, at those paths, where each validator runs.
Unless existing public keys are given, admin keys (admin0.key, ...) and an anchoring key
(anchor.key) are generated under --out. Run each validator with
` + "`anchorline ledger --home OUT/nodeI`" + `. An existing --out is never overwritten.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if n.Dir == "" || n.ChainID == "" {
				return badInput(errors.New("--out and --chain-id are required"))
			}
			if (n.RPCTLSCert == "") != (n.RPCTLSKey == "") {
				return badInput(errors.New("--rpc-tls-cert and --rpc-tls-key go together: give both files or neither"))
			}
			if hosts != "" {
				n.Hosts = strings.Split(hosts, ",")
			}
			pubs, err := hexKeys("--admin-keys", adminKeys)
			if err != nil {
				return err
			}
			anchorPubs, err := hexKeys("--anchor-keys", anchorKey)
			if err != nil {
				return err
			}
			count := len(pubs)
			if pubs == nil {
				count = admins
			}
			switch {
			case count < 1:
				return badInput(fmt.Errorf("--admins %d: want 1 or more (or give --admin-keys)", admins))
			case n.AdminThreshold < 0 || n.AdminThreshold > count:
				return badInput(fmt.Errorf("--admin-threshold %d: want 0 (the ledger's default) up to the %d admins", n.AdminThreshold, count))
			}
			if err := os.Mkdir(n.Dir, 0o750); errors.Is(err, fs.ErrExist) {
				return badInput(fmt.Errorf("--out %s: %w: choose a new directory (an existing network is never overwritten)", n.Dir, node.ErrExists))
			} else if err != nil {
				return fmt.Errorf("--out: %w", err)
			}
			var files []string
			if pubs == nil {
				for i := range admins {
					f := filepath.Join(n.Dir, "admin"+strconv.Itoa(i)+".key")
					k, err := stack.LoadOrCreateAdminKey(f)
					if err != nil {
						return err
					}
					pubs, files = append(pubs, reading.Ed25519Public(k)), append(files, f)
				}
			}
			if anchorPubs == nil {
				f := filepath.Join(n.Dir, "anchor.key")
				k, err := stack.LoadOrCreateAnchorKey(f)
				if err != nil {
					return err
				}
				anchorPubs, files = []ed25519.PublicKey{reading.Ed25519Public(k)}, append(files, f)
			}
			n.Admins, n.AnchorKeys = pubs, anchorPubs
			vals, err := node.InitNetwork(n)
			if errors.Is(err, node.ErrInvalidNetwork) {
				return badInput(err)
			}
			if err != nil {
				return err
			}
			printNetwork(cmd, vals, files)
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&n.Validators, "validators", 4, "number of validators")
	f.StringVar(&n.ChainID, "chain-id", "", "chain id of the new network (required)")
	f.StringVar(&n.Dir, "out", "", "directory to create, holding one home per validator (required)")
	f.StringVar(&hosts, "hosts", "", "comma-separated hosts the validators are reached at: one per validator, or one for all (default 127.0.0.1)")
	f.IntVar(&n.P2PPort, "p2p-port", node.DefaultP2PPort, "P2P port of the first validator on each host (the next on the same host adds 10)")
	f.IntVar(&n.RPCPort, "rpc-port", node.DefaultRPCPort, "RPC port of the first validator on each host (the next on the same host adds 10)")
	f.IntVar(&admins, "admins", 1, "admin keys to generate (OUT/admin0.key, ...) into app_state.admins")
	f.StringVar(&adminKeys, "admin-keys", "", "comma-separated hex Ed25519 public keys of existing admins, instead of generating --admins")
	f.IntVar(&n.AdminThreshold, "admin-threshold", 0, "admin signatures a validator-set or admin-set change needs (0: the ledger's default)")
	f.StringVar(&anchorKey, "anchor-keys", "", "comma-separated hex Ed25519 public keys of existing anchoring keys, instead of generating OUT/anchor.key")
	f.DurationVar(&n.TimeoutCommit, "timeout-commit", node.DefaultTimeoutCommit, "consensus.timeout_commit of every validator")
	f.StringVar(&n.RPCTLSCert, "rpc-tls-cert", "", "PEM certificate every validator serves its RPC with over https (rpc.tls_cert_file, as given: a relative path is the home's config/; with --rpc-tls-key)")
	f.StringVar(&n.RPCTLSKey, "rpc-tls-key", "", "PEM private key of --rpc-tls-cert (rpc.tls_key_file, as given)")
	return cmd
}

// hexKeys parses a comma-separated list of hex Ed25519 public keys; nil for an empty list.
func hexKeys(flag, list string) ([]ed25519.PublicKey, error) {
	if list == "" {
		return nil, nil
	}
	var keys []ed25519.PublicKey
	for _, s := range strings.Split(list, ",") {
		b, err := hex.DecodeString(strings.TrimSpace(s))
		if err != nil || len(b) != ed25519.PublicKeySize {
			return nil, badInput(fmt.Errorf("%s %q: want %d bytes of hex (an Ed25519 public key)", flag, s, ed25519.PublicKeySize))
		}
		keys = append(keys, b)
	}
	return keys, nil
}

// printNetwork tells what init wrote and how to start it.
func printNetwork(cmd *cobra.Command, vals []node.Validator, keyFiles []string) {
	out := cmd.OutOrStdout()
	var rpcs []string
	for i, v := range vals {
		fmt.Fprintf(out, "node%d\thome %s\tid %s\tp2p %s\trpc %s\n", i, v.Home, v.NodeID, v.P2PAddr, v.RPCAddr)
		rpcs = append(rpcs, v.RPCAddr)
	}
	for _, f := range keyFiles {
		fmt.Fprintf(out, "key\t%s\n", f)
	}
	fmt.Fprintf(out, "start each validator with: anchorline ledger --home HOME\n")
	fmt.Fprintf(out, "services reach them with: --ledger.rpc %s\n", strings.Join(rpcs, ","))
}
