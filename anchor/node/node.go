package node

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	cfg "github.com/cometbft/cometbft/config"
	cmtlog "github.com/cometbft/cometbft/libs/log"
	cmtnode "github.com/cometbft/cometbft/node"
	"github.com/cometbft/cometbft/p2p"
	"github.com/cometbft/cometbft/privval"
	"github.com/cometbft/cometbft/proxy"
	rpcclient "github.com/cometbft/cometbft/rpc/client"
	"github.com/cometbft/cometbft/rpc/client/local"
	rpcserver "github.com/cometbft/cometbft/rpc/jsonrpc/server"
	"github.com/cometbft/cometbft/types"

	"github.com/anchorline/anchorline/anchor/ledger"
)

// Config describes a node.
type Config struct {
	Home    string // config/, data/ (CometBFT) and app/ (the ledger's state) live here
	ChainID string // of a new chain; an existing home keeps its own
	// RPC is the listener the node serves CometBFT's RPC on (HTTP and /websocket); nil for
	// none. The node closes it when it stops.
	RPC           net.Listener
	TimeoutCommit time.Duration
	Admins        []ed25519.PublicKey // written into the genesis of a new chain
	// AnchorKeys are the anchoring keys a new chain's genesis authorises (app_state
	// anchor_keys): such a chain accepts only anchors signed by one of them (or by a key an
	// admin adds later) from its first block. Nil: the genesis has no anchor_keys, and the
	// chain accepts unsigned anchors until an admin's first anchor_key entry.
	AnchorKeys []ed25519.PublicKey
	// AdminThreshold is M, the admin signatures a validator or admins entry needs (app_state
	// admin_threshold); 0 leaves it out: 1 for one admin, a majority of several.
	AdminThreshold int
	Logger         *slog.Logger
}

// Node is a running node.
type Node struct {
	node   *cmtnode.Node
	app    *ledger.App
	rpc    rpcclient.Client
	client *ledger.Client
	rpcLn  net.Listener  // nil without an RPC listener
	served chan struct{} // closed when the RPC server has returned
}

// ErrOtherChain means the home holds the ledger of another chain than the one configured.
var ErrOtherChain = errors.New("the ledger home holds another chain")

// Start creates the home on first start and starts the node; it returns once the node runs.
// It owns c.RPC: the listener is closed by Stop, or at once if Start fails.
func Start(ctx context.Context, c Config) (*Node, error) {
	n, err := startNode(ctx, c)
	if err != nil && c.RPC != nil {
		c.RPC.Close()
	}
	return n, err
}

func startNode(ctx context.Context, c Config) (*Node, error) {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	conf := baseConfig(c.Home, c.TimeoutCommit)
	conf.RPC.ListenAddress = "" // served on c.RPC below, so that its port may be 0
	conf.P2P.ListenAddress = "tcp://127.0.0.1:0"

	if err := initHome(conf, c); err != nil {
		return nil, err
	}
	return launch(ctx, conf, c.RPC, c.Logger)
}

// launch starts a node from a home whose config, keys and genesis exist, with its RPC served
// on rpcLn (nil: none); conf.RPC.ListenAddress must be empty (rpcLn replaces it).
func launch(ctx context.Context, conf *cfg.Config, rpcLn net.Listener, logger *slog.Logger) (*Node, error) {
	nodeKey, err := p2p.LoadOrGenNodeKey(conf.NodeKeyFile())
	if err != nil {
		return nil, fmt.Errorf("ledger node key: %w", err)
	}
	// privval.LoadFilePV exits the process on a bad file: initHome and LoadConfig made sure
	// both exist.
	pv := privval.LoadFilePV(conf.PrivValidatorKeyFile(), conf.PrivValidatorStateFile())

	app, err := ledger.OpenApp(filepath.Join(conf.RootDir, "app"), logger)
	if err != nil {
		return nil, err
	}
	n, err := cmtnode.NewNodeWithContext(ctx, conf, pv, nodeKey, proxy.NewLocalClientCreator(app),
		cmtnode.DefaultGenesisDocProviderFunc(conf), stopSafeDBProvider,
		cmtnode.DefaultMetricsProvider(conf.Instrumentation), newLogger(logger))
	if err != nil {
		app.Close()
		return nil, fmt.Errorf("ledger node: %w", err)
	}
	if err := n.Start(); err != nil {
		// A failed start (a taken P2P port, say) leaves the stores NewNode opened: OnStop
		// closes them, so that the home can be started again in this process.
		n.OnStop()
		app.Close()
		return nil, fmt.Errorf("ledger node: start: %w", err)
	}
	rpc := local.New(n)
	if rpcLn != nil {
		// Stop closes the connections it accepted too, as a process exit would: CometBFT's RPC
		// server has no shutdown, and keep-alive connections would go on being served by a
		// stopped node.
		if _, ok := rpcLn.(*exitListener); !ok {
			rpcLn = &exitListener{Listener: rpcLn}
		}
	}
	nd := &Node{node: n, app: app, rpc: rpc, client: ledger.NewClient(rpc, logger), rpcLn: rpcLn, served: make(chan struct{})}
	if rpcLn == nil {
		close(nd.served)
		return nd, nil
	}
	if err := nd.serveRPC(conf, newLogger(logger)); err != nil {
		return nil, errors.Join(err, nd.Stop())
	}
	return nd, nil
}

// serveRPC serves CometBFT's RPC routes (HTTP JSON-RPC, URI and /websocket) on the node's
// listener, as CometBFT's own node does on its configured address.
func (n *Node) serveRPC(conf *cfg.Config, logger cmtlog.Logger) error {
	env, err := n.node.ConfigureRPC()
	if err != nil {
		close(n.served)
		return fmt.Errorf("ledger RPC: %w", err)
	}
	routes := env.GetRoutes()
	rc := rpcserver.DefaultConfig()
	rc.MaxBodyBytes, rc.MaxHeaderBytes = conf.RPC.MaxBodyBytes, conf.RPC.MaxHeaderBytes
	if rc.WriteTimeout <= conf.RPC.TimeoutBroadcastTxCommit {
		rc.WriteTimeout = conf.RPC.TimeoutBroadcastTxCommit + time.Second
	}
	rpcLogger := logger.With("module", "rpc-server")
	bus := n.node.EventBus()
	wm := rpcserver.NewWebsocketManager(routes,
		rpcserver.OnDisconnect(func(remote string) { _ = bus.UnsubscribeAll(context.Background(), remote) }),
		rpcserver.ReadLimit(rc.MaxBodyBytes))
	wm.SetLogger(rpcLogger.With("protocol", "websocket"))
	mux := http.NewServeMux()
	mux.HandleFunc("/websocket", wm.WebsocketHandler)
	rpcserver.RegisterRPCFuncs(mux, routes, rpcLogger)
	go func() {
		defer close(n.served)
		_ = rpcserver.Serve(n.rpcLn, mux, rpcLogger, rc) // returns when Stop closes the listener
	}()
	return nil
}

// RPCAddr is the address the node's RPC listens on ("" without one).
func (n *Node) RPCAddr() string {
	if n.rpcLn == nil {
		return ""
	}
	return n.rpcLn.Addr().String()
}

// initHome writes config, keys and genesis of a new home; an existing home is left as it is.
func initHome(conf *cfg.Config, c Config) error {
	for _, d := range []string{filepath.Join(c.Home, "config"), filepath.Join(c.Home, "data"), filepath.Join(c.Home, "app")} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return fmt.Errorf("ledger home: %w", err)
		}
	}
	keyFile, stateFile := conf.PrivValidatorKeyFile(), conf.PrivValidatorStateFile()
	_, errKey := os.Stat(keyFile)
	_, errState := os.Stat(stateFile)
	switch {
	case errors.Is(errKey, fs.ErrNotExist) && errors.Is(errState, fs.ErrNotExist):
		privval.GenFilePV(keyFile, stateFile).Save()
	case errKey != nil || errState != nil:
		return fmt.Errorf("ledger home %s: validator key or state file missing or unreadable (%v, %v); restore both or start a new home", c.Home, errKey, errState)
	}
	if _, err := os.Stat(conf.GenesisFile()); err == nil {
		return checkChain(conf.GenesisFile(), c)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("ledger genesis: %w", err)
	}
	pv := privval.LoadFilePV(keyFile, stateFile)
	pub, err := pv.GetPubKey()
	if err != nil {
		return err
	}
	appState, err := json.Marshal(ledger.NewGenesis(c.Admins, c.AnchorKeys, c.AdminThreshold))
	if err != nil {
		return err
	}
	if c.ChainID == "" {
		return errors.New("ledger: chain id must not be empty (ledger.chain_id)")
	}
	doc := &types.GenesisDoc{
		ChainID:         c.ChainID,
		GenesisTime:     time.Now().UTC(),
		ConsensusParams: types.DefaultConsensusParams(),
		Validators:      []types.GenesisValidator{{Address: pub.Address(), PubKey: pub, Power: 10, Name: "anchorline"}},
		AppState:        appState,
	}
	if err := doc.ValidateAndComplete(); err != nil {
		return fmt.Errorf("ledger genesis: %w", err)
	}
	return doc.SaveAs(conf.GenesisFile())
}

// checkChain fails if the existing genesis is of another chain than c.ChainID.
func checkChain(file string, c Config) error {
	doc, err := types.GenesisDocFromFile(file)
	if err != nil {
		return fmt.Errorf("ledger home %s: genesis: %w", c.Home, err)
	}
	if c.ChainID != "" && doc.ChainID != c.ChainID {
		return fmt.Errorf("%w: %s holds chain %q, not ledger.chain_id %q: set ledger.chain_id %q to run it, or use another data_dir for a new chain",
			ErrOtherChain, c.Home, doc.ChainID, c.ChainID, doc.ChainID)
	}
	return nil
}

// Client returns a ledger client talking to this node in-process.
func (n *Node) Client() *ledger.Client { return n.client }

// RPC returns the in-process RPC client.
func (n *Node) RPC() rpcclient.Client { return n.rpc }

// Stop stops the node and closes the app's state.
func (n *Node) Stop() error {
	if n.rpcLn != nil {
		n.rpcLn.Close()
		<-n.served
	}
	var err error
	if n.node.IsRunning() {
		err = n.node.Stop()
		n.node.Wait()
	}
	return errors.Join(err, n.app.Close())
}

// Trust returns what auditors pin: the chain id and the current validator set (canonical form).
func Trust(ctx context.Context, c *ledger.Client) (string, *types.ValidatorSet, error) {
	chainID, err := c.ChainID(ctx)
	if err != nil {
		return "", nil, err
	}
	h, err := c.Height(ctx)
	if err != nil {
		return "", nil, err
	}
	vals, err := c.Validators(ctx, max(h, 1))
	if err != nil {
		return "", nil, err
	}
	return chainID, vals, nil
}

// slogger adapts CometBFT's logger to slog. CometBFT is chatty: its info is our debug, and
// errors that are part of a normal shutdown are debug too.
type slogger struct{ l *slog.Logger }

func newLogger(l *slog.Logger) cmtlog.Logger { return slogger{l.With("component", "cometbft")} }

func (s slogger) Debug(string, ...any) {}

func (s slogger) Info(msg string, kv ...any) { s.l.Debug(msg, kv...) }

func (s slogger) Error(msg string, kv ...any) {
	for _, quiet := range []string{"Stopping", "stopped", "closed", "Error stopping", "use of closed", "connection reset", "already stopped", "switch is not running"} {
		if strings.Contains(msg, quiet) || strings.Contains(fmt.Sprint(kv...), quiet) {
			s.l.Debug(msg, kv...)
			return
		}
	}
	s.l.Warn(msg, kv...)
}

func (s slogger) With(kv ...any) cmtlog.Logger { return slogger{s.l.With(kv...)} }
