package node

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	cfg "github.com/cometbft/cometbft/config"
	"github.com/spf13/viper"
)

// DefaultTimeoutCommit is consensus.timeout_commit when a Config or Network leaves it zero:
// about 107 ms blocks on one validator, ~150 ms with four on one host.
const DefaultTimeoutCommit = 100 * time.Millisecond

// baseConfig is the CometBFT configuration every Anchorline validator starts from, single or one
// of a network: the small-machine timeouts, one block a second when idle, no tx indexer (the
// app answers inclusion queries itself), no metrics, no PEX (validators dial their
// persistent_peers). Addresses are the caller's.
func baseConfig(home string, timeoutCommit time.Duration) *cfg.Config {
	conf := cfg.DefaultConfig()
	conf.SetRoot(home)
	conf.Moniker = "anchorline"
	conf.Consensus.TimeoutCommit = timeoutCommit
	if conf.Consensus.TimeoutCommit <= 0 {
		conf.Consensus.TimeoutCommit = DefaultTimeoutCommit
	}
	// A validator that is down costs its peers a full timeout_propose each time it would
	// propose; 1 s keeps that short and is still ample on loopback or a LAN.
	conf.Consensus.TimeoutPropose = time.Second
	conf.Consensus.CreateEmptyBlocks = true
	conf.Consensus.CreateEmptyBlocksInterval = time.Second // idle: one block a second; a tx block's app hash follows at once
	conf.RPC.GRPCListenAddress = ""
	conf.RPC.PprofListenAddress = ""
	conf.P2P.PexReactor = false
	conf.P2P.Seeds, conf.P2P.PersistentPeers = "", ""
	// The default 100 ms caps blocks at about 400 ms with four validators.
	conf.P2P.FlushThrottleTimeout = 10 * time.Millisecond
	conf.Instrumentation.Prometheus = false
	conf.TxIndex.Indexer = "null"
	conf.Mempool.Size = 10_000
	conf.Storage.DiscardABCIResponses = true
	return conf
}

// ErrNoHome means a directory is not a validator home written by InitNetwork (or by a first
// Start): its config.toml, keys or genesis are missing.
var ErrNoHome = errors.New("not a ledger validator home")

// LoadConfig reads home/config/config.toml over CometBFT's defaults, as CometBFT's own
// commands read it (viper, mapstructure keys, durations like "10ms"), and checks that the
// keys and genesis it names exist. viper is confined to this function: it reads CometBFT's
// file format, not Anchorline's configuration.
func LoadConfig(home string) (*cfg.Config, error) {
	file := filepath.Join(home, "config", "config.toml")
	if _, err := os.Stat(file); err != nil {
		return nil, fmt.Errorf("%w: %s: %w (write homes with `anchorline ledger init`)", ErrNoHome, home, err)
	}
	v := viper.New()
	v.SetConfigFile(file)
	if err := v.ReadInConfig(); err != nil {
		return nil, fmt.Errorf("ledger home %s: %w", home, err)
	}
	conf := cfg.DefaultConfig()
	if err := v.Unmarshal(conf); err != nil {
		return nil, fmt.Errorf("ledger home %s: config.toml: %w", home, err)
	}
	conf.SetRoot(home)
	if err := conf.ValidateBasic(); err != nil {
		return nil, fmt.Errorf("ledger home %s: config.toml: %w", home, err)
	}
	for _, f := range []string{conf.GenesisFile(), conf.NodeKeyFile(), conf.PrivValidatorKeyFile(), conf.PrivValidatorStateFile()} {
		if _, err := os.Stat(f); errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: %s: %s is missing", ErrNoHome, home, f)
		} else if err != nil {
			return nil, fmt.Errorf("ledger home %s: %w", home, err)
		}
	}
	return conf, nil
}

// writeConfig writes conf as home/config/config.toml. CometBFT's writer exits the process on
// an I/O error, so the file is created here first: a failure is returned instead.
func writeConfig(conf *cfg.Config) error {
	file := filepath.Join(conf.RootDir, "config", "config.toml")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		return fmt.Errorf("ledger home: %w", err)
	}
	cfg.WriteConfigFile(file, conf)
	return nil
}
