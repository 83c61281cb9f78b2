package stack

import (
	"crypto/tls"
	"fmt"

	"github.com/anchorline/anchorline/internal/pki"
	"github.com/anchorline/anchorline/services/config"
)

// ClientTLS is the TLS configuration every client of Anchorline's servers uses (NATS, the API,
// the ledger's RPC, ClickHouse): trust the CA of tls.ca (dev's under data_dir/tls by default).
// It is nil when there is no CA file: plain connections, or the system's roots where TLS is
// asked for anyway.
func ClientTLS(cfg config.Config) (*tls.Config, error) {
	ca := cfg.CAFile()
	if ca == "" {
		return nil, nil
	}
	tc, err := pki.ClientConfig(ca)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", config.ErrInvalid, err)
	}
	return tc, nil
}
