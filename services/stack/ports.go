package stack

import (
	"errors"
	"fmt"
	"net"
	"syscall"
)

// ErrAddrInUse means a listen address is taken by another process.
var ErrAddrInUse = errors.New("address already in use")

// listenError explains a failed listen on addr, configured by key, with the fix.
func listenError(key, addr string, err error) error {
	if errors.Is(err, syscall.EADDRINUSE) {
		return fmt.Errorf("%s %s: %w by another process: stop it or choose another %s", key, addr, ErrAddrInUse, key)
	}
	return fmt.Errorf("%s %s: cannot listen: %w", key, addr, err)
}

// Listen listens on addr, which key configures.
func Listen(key, addr string) (net.Listener, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, listenError(key, addr, err)
	}
	return l, nil
}

// checkFree fails, naming key, if nothing could listen on addr now: for servers that bind their
// address themselves (embedded NATS, the ledger's RPC, a private ClickHouse), so that a taken
// port is reported before anything starts.
func checkFree(key, addr string) error {
	l, err := Listen(key, addr)
	if err != nil {
		return err
	}
	return l.Close()
}
