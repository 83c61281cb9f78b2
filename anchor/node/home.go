package node

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"strings"
)

// HomeOptions are what StartHome takes beyond the home's own config.toml.
type HomeOptions struct {
	// RPC, if set, is the listener the node serves its RPC on instead of listening on the
	// config's rpc.laddr (tests pass one on port 0). The node closes it when it stops.
	RPC    net.Listener
	Logger *slog.Logger
}

// StartHome starts one validator from a home written by InitNetwork: its keys, genesis and
// config.toml (P2P listen address, persistent_peers, RPC address, timeouts) as they are in the
// home; nothing is created. It returns once the node runs. The RPC is served on o.RPC, else on
// rpc.laddr (a port 0 there listens on any free port: see RPCAddr), else not at all.
func StartHome(ctx context.Context, home string, o HomeOptions) (*Node, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	conf, err := LoadConfig(home)
	if err != nil {
		if o.RPC != nil {
			o.RPC.Close()
		}
		return nil, err
	}
	rpcLn := o.RPC
	if rpcLn == nil && conf.RPC.ListenAddress != "" {
		if rpcLn, err = listenRPC(conf.RPC.ListenAddress); err != nil {
			return nil, fmt.Errorf("ledger home %s: %w", home, err)
		}
	}
	if rpcLn != nil && conf.RPC.IsTLSEnabled() {
		// config.toml's [rpc] tls_cert_file and tls_key_file: the RPC is served over https.
		pair, err := tls.LoadX509KeyPair(conf.RPC.CertFile(), conf.RPC.KeyFile())
		if err != nil {
			rpcLn.Close()
			return nil, fmt.Errorf("ledger home %s: rpc.tls_cert_file, rpc.tls_key_file: %w", home, err)
		}
		rpcLn = tls.NewListener(rpcLn, &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12})
	}
	conf.RPC.ListenAddress = "" // served on rpcLn by serveRPC, not by CometBFT's own server
	n, err := launch(ctx, conf, rpcLn, o.Logger)
	if err != nil && rpcLn != nil {
		rpcLn.Close()
	}
	return n, err
}

// listenRPC listens on a CometBFT listen address ("tcp://host:port"; unix sockets are not
// served).
func listenRPC(laddr string) (net.Listener, error) {
	proto, addr, ok := strings.Cut(laddr, "://")
	if !ok {
		proto, addr = "tcp", laddr
	}
	if proto != "tcp" {
		return nil, fmt.Errorf("rpc.laddr %q: only tcp:// addresses are served", laddr)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("rpc.laddr %q: %w", laddr, err)
	}
	return l, nil
}
