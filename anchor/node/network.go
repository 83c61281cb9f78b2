package node

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	cfg "github.com/cometbft/cometbft/config"
	"github.com/cometbft/cometbft/crypto"
	"github.com/cometbft/cometbft/p2p"
	"github.com/cometbft/cometbft/privval"
	"github.com/cometbft/cometbft/types"

	"github.com/anchorline/anchorline/anchor/ledger"
)

// Default ports of a network's first validator on each host; the k-th validator on the same
// host adds PortStride*k, as CometBFT's own testnet homes do on one machine.
const (
	DefaultP2PPort = 26656
	DefaultRPCPort = 26657
	PortStride     = 10
)

// validatorPower is every genesis validator's voting power: equal, so that any three of four
// (more than 2/3) commit.
const validatorPower = 10

// Network describes a validator network for InitNetwork.
type Network struct {
	Dir        string // created if missing; holds one home per validator, Dir/node0 ... (none may exist)
	ChainID    string
	Validators int
	// Hosts are the addresses the validators are reached at, one per validator or one for all
	// (default 127.0.0.1). Validators sharing a host get ports PortStride apart and
	// p2p.allow_duplicate_ip; on a loopback host they listen on it alone.
	Hosts []string
	// P2PPort and RPCPort are the first validator's ports on each host (0: the defaults).
	// An RPC port below 0 writes rpc.laddr with port 0: StartHome then listens on any free
	// port (for tests; RPCAddr tells which).
	P2PPort, RPCPort int
	Admins           []ed25519.PublicKey // app_state.admins
	// AnchorKeys are app_state.anchor_keys, the anchoring keys authorised from the first
	// block (nil: none listed, see ledger.NewGenesis); AdminThreshold is app_state
	// admin_threshold (0: the ledger's default).
	AnchorKeys     []ed25519.PublicKey
	AdminThreshold int
	TimeoutCommit  time.Duration // 0: DefaultTimeoutCommit
	// RPCTLSCert and RPCTLSKey, when set (both), are every validator's rpc.tls_cert_file and
	// rpc.tls_key_file: the RPC is served over https with that certificate.
	RPCTLSCert, RPCTLSKey string
}

// Validator is one home InitNetwork wrote.
type Validator struct {
	Home    string
	NodeID  string // p2p node id (hex of the node key's address)
	P2PAddr string // host:port its peers dial
	RPCAddr string // host:port of its RPC (port 0: any free port at start)
}

// ErrInvalidNetwork means a Network's fields do not describe a network (the message names
// the field).
var ErrInvalidNetwork = errors.New("invalid network")

// ErrExists means a validator home InitNetwork would write exists already: it never
// overwrites one.
var ErrExists = errors.New("already exists")

// InitNetwork writes one home per validator under n.Dir: validator key and state, node key,
// the one genesis (every validator with equal power; app_state from n.Admins, n.AnchorKeys and
// n.AdminThreshold) byte for byte in each, and config.toml with its P2P and RPC listen addresses, persistent_peers (every
// other validator as id@host:port) and the small-machine timeouts of baseConfig. n.Dir may
// exist (holding key files, say); it fails, writing nothing, if one of the homes does.
func InitNetwork(n Network) ([]Validator, error) {
	if err := n.validate(); err != nil {
		return nil, fmt.Errorf("ledger init: %w: %w", ErrInvalidNetwork, err)
	}
	if err := os.MkdirAll(n.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("ledger init: %w", err)
	}
	homes := make([]string, n.Validators)
	for i := range homes {
		homes[i] = filepath.Join(n.Dir, "node"+strconv.Itoa(i))
		if _, err := os.Lstat(homes[i]); err == nil {
			return nil, fmt.Errorf("ledger init: %s %w: choose a new directory (a validator home is never overwritten)", homes[i], ErrExists)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("ledger init: %w", err)
		}
	}
	hosts, shared := n.hostList()
	vals := make([]Validator, n.Validators)
	confs := make([]*cfg.Config, n.Validators)
	genVals := make([]types.GenesisValidator, n.Validators)
	onHost := map[string]int{}
	for i := range vals {
		home, host := homes[i], hosts[i]
		k := onHost[host]
		onHost[host]++
		p2pPort := port(n.P2PPort, DefaultP2PPort, k)
		rpcPort := port(n.RPCPort, DefaultRPCPort, k)
		conf := baseConfig(home, n.TimeoutCommit)
		conf.Moniker = "node" + strconv.Itoa(i)
		bind := "0.0.0.0"
		if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
			bind = host
		}
		conf.P2P.ListenAddress = "tcp://" + net.JoinHostPort(bind, strconv.Itoa(p2pPort))
		conf.RPC.ListenAddress = "tcp://" + net.JoinHostPort(bind, strconv.Itoa(rpcPort))
		conf.P2P.AllowDuplicateIP = shared
		conf.RPC.TLSCertFile, conf.RPC.TLSKeyFile = n.RPCTLSCert, n.RPCTLSKey
		conf.P2P.AddrBookStrict = !nonPublic(host)

		pub, id, err := writeKeys(conf)
		if err != nil {
			return nil, err
		}
		vals[i] = Validator{Home: home, NodeID: id, P2PAddr: net.JoinHostPort(host, strconv.Itoa(p2pPort)), RPCAddr: net.JoinHostPort(host, strconv.Itoa(rpcPort))}
		genVals[i] = types.GenesisValidator{Address: pub.Address(), PubKey: pub, Power: validatorPower, Name: conf.Moniker}
		confs[i] = conf
	}
	doc, err := n.genesis(genVals)
	if err != nil {
		return nil, err
	}
	for i, conf := range confs {
		var peers []string
		for j, v := range vals {
			if j != i {
				peers = append(peers, v.NodeID+"@"+v.P2PAddr)
			}
		}
		conf.P2P.PersistentPeers = strings.Join(peers, ",")
		if err := writeConfig(conf); err != nil {
			return nil, err
		}
		if err := doc.SaveAs(conf.GenesisFile()); err != nil {
			return nil, fmt.Errorf("ledger init: genesis: %w", err)
		}
	}
	return vals, nil
}

func (n Network) validate() error {
	switch {
	case n.Dir == "":
		return errors.New("the output directory must be set")
	case n.ChainID == "":
		return errors.New("the chain id must not be empty")
	case n.Validators < 1:
		return fmt.Errorf("%d validators: want 1 or more", n.Validators)
	case len(n.Admins) == 0:
		return errors.New("no admin keys: a ledger without admins could never register a device or change its validators (give at least one)")
	case n.AdminThreshold > len(n.Admins):
		return fmt.Errorf("admin threshold %d is more than the %d admins: no change of validators or admins could ever be signed", n.AdminThreshold, len(n.Admins))
	case len(n.Hosts) > 1 && len(n.Hosts) != n.Validators:
		return fmt.Errorf("%d hosts for %d validators: give one host per validator, or one for all", len(n.Hosts), n.Validators)
	case (n.RPCTLSCert == "") != (n.RPCTLSKey == ""):
		return errors.New("the RPC's TLS certificate and key go together: give both files or neither")
	}
	p2pPort, rpcPort := port(n.P2PPort, DefaultP2PPort, 0), port(n.RPCPort, DefaultRPCPort, 0)
	last := PortStride * (n.Validators - 1)
	switch {
	case n.P2PPort < 0 || p2pPort+last > 65535 || rpcPort+last > 65535:
		return fmt.Errorf("ports %d (P2P) and %d (RPC) plus %d per validator leave the range 1-65535", p2pPort, rpcPort, PortStride)
	case rpcPort != 0 && (rpcPort-p2pPort)%PortStride == 0:
		return fmt.Errorf("ports %d (P2P) and %d (RPC) differ by a multiple of %d: the validators' ports would collide", p2pPort, rpcPort, PortStride)
	}
	for _, h := range n.Hosts {
		if h == "" || strings.ContainsAny(h, ",@ ") {
			return fmt.Errorf("host %q: want a host name or IP address", h)
		}
	}
	return nil
}

// hostList is each validator's host, and whether any host has more than one validator.
func (n Network) hostList() ([]string, bool) {
	hosts := make([]string, n.Validators)
	seen := map[string]bool{}
	shared := false
	for i := range hosts {
		switch len(n.Hosts) {
		case 0:
			hosts[i] = "127.0.0.1"
		case 1:
			hosts[i] = n.Hosts[0]
		default:
			hosts[i] = n.Hosts[i]
		}
		shared = shared || seen[hosts[i]]
		seen[hosts[i]] = true
	}
	return hosts, shared
}

// port is the k-th port on a host from base (0: def; below 0: port 0 for all).
func port(base, def, k int) int {
	switch {
	case base < 0:
		return 0
	case base == 0:
		base = def
	}
	return base + PortStride*k
}

// nonPublic reports whether host is a loopback or private address, which CometBFT's strict
// address book would refuse to dial.
func nonPublic(host string) bool {
	ip := net.ParseIP(host)
	return host == "localhost" || ip != nil && (ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast())
}

// writeKeys creates the home's directories, validator key and state, and node key.
func writeKeys(conf *cfg.Config) (crypto.PubKey, string, error) {
	for _, d := range []string{filepath.Join(conf.RootDir, "config"), filepath.Join(conf.RootDir, "data"), filepath.Join(conf.RootDir, "app")} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return nil, "", fmt.Errorf("ledger init: %w", err)
		}
	}
	pv := privval.GenFilePV(conf.PrivValidatorKeyFile(), conf.PrivValidatorStateFile())
	pv.Save()
	nodeKey, err := p2p.LoadOrGenNodeKey(conf.NodeKeyFile())
	if err != nil {
		return nil, "", fmt.Errorf("ledger init: node key: %w", err)
	}
	return pv.Key.PubKey, string(nodeKey.ID()), nil
}

// genesis is the network's one genesis document.
func (n Network) genesis(vals []types.GenesisValidator) (*types.GenesisDoc, error) {
	appState, err := json.Marshal(ledger.NewGenesis(n.Admins, n.AnchorKeys, n.AdminThreshold))
	if err != nil {
		return nil, err
	}
	doc := &types.GenesisDoc{
		ChainID:         n.ChainID,
		GenesisTime:     time.Now().UTC(),
		ConsensusParams: types.DefaultConsensusParams(),
		Validators:      vals,
		AppState:        appState,
	}
	if err := doc.ValidateAndComplete(); err != nil {
		return nil, fmt.Errorf("ledger init: genesis: %w", err)
	}
	return doc, nil
}
