package node

import (
	"net"
	"sync"
)

// exitListener is a node's RPC listener that, when the node's Stop closes it, also closes the
// connections it accepted, as the exit of a validator's process would. Without it the RPC's
// HTTP server (CometBFT's rpcserver.Serve, which has no shutdown) keeps serving its
// keep-alive connections after Stop, from the stopped node: clients see a node that answers
// (status, queries, broadcasts into a mempool that no longer runs) and do not fail over.
type exitListener struct {
	net.Listener
	mu     sync.Mutex
	conns  map[*trackedConn]struct{}
	closed bool
}

func (l *exitListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		c.Close()
		return nil, net.ErrClosed
	}
	if l.conns == nil {
		l.conns = map[*trackedConn]struct{}{}
	}
	tc := &trackedConn{Conn: c, l: l}
	l.conns[tc] = struct{}{}
	return tc, nil
}

func (l *exitListener) Close() error {
	err := l.Listener.Close()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	for c := range l.conns {
		c.Conn.Close()
	}
	l.conns = nil
	return err
}

// trackedConn leaves its listener's set when it is closed.
type trackedConn struct {
	net.Conn
	l *exitListener
}

func (c *trackedConn) Close() error {
	c.l.mu.Lock()
	delete(c.l.conns, c)
	c.l.mu.Unlock()
	return c.Conn.Close()
}
