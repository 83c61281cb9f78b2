package stack

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/anchorline/anchorline/internal/retry"
	"github.com/anchorline/anchorline/services/config"
)

// ErrClickHouseUnreachable means ClickHouse did not answer within clickhouse.startup_timeout.
var ErrClickHouseUnreachable = errors.New("clickhouse not reachable")

// OpenClickHouse connects to ClickHouse over the native protocol (the only one that works with
// 18.16), with TLS if clickhouse.secure (trusting tls.ca, or the system's roots without one),
// retrying with backoff until the server answers, clickhouse.startup_timeout passes (an error
// wrapping ErrClickHouseUnreachable that says what to do) or ctx ends. Tables are always named
// with their database, so the connection itself uses `default`.
func OpenClickHouse(ctx context.Context, cfg config.Config, log *slog.Logger) (driver.Conn, error) {
	c := cfg.ClickHouse
	tc, err := ClickHouseTLS(cfg)
	if err != nil {
		return nil, err
	}
	conn, err := clickhouse.Open(&clickhouse.Options{
		Addr:            c.Addrs(),
		Auth:            clickhouse.Auth{Database: "default", Username: c.Username, Password: c.Password},
		DialTimeout:     5 * time.Second,
		MaxOpenConns:    8,
		MaxIdleConns:    8,
		ConnMaxLifetime: time.Hour,
		TLS:             tc,
	})
	if err != nil {
		return nil, fmt.Errorf("clickhouse.addr %s: %w", c.Addr, err)
	}
	var last error
	_, err = retry.Do(ctx, retry.Within(c.StartupTimeout), func(ctx context.Context) (struct{}, error) {
		last = conn.Ping(ctx)
		return struct{}{}, last
	}, func(err error, next time.Duration) {
		log.Warn("clickhouse not reachable, retrying", "addr", c.Addr, "err", err, "retry_in", next.Round(time.Millisecond))
	})
	if err != nil {
		conn.Close()
		if errors.Is(err, retry.ErrGaveUp) {
			return nil, fmt.Errorf("clickhouse.addr %s: %w within clickhouse.startup_timeout %s (last error: %w): start ClickHouse there, run dev with --clickhouse.embedded, or raise clickhouse.startup_timeout",
				c.Addr, ErrClickHouseUnreachable, c.StartupTimeout, last)
		}
		return nil, fmt.Errorf("clickhouse.addr %s: %w", c.Addr, err)
	}
	return conn, nil
}

// ClickHouseTLS is the client TLS configuration of clickhouse.secure: trust tls.ca's CA, or the
// system's roots if there is none; nil without clickhouse.secure.
func ClickHouseTLS(cfg config.Config) (*tls.Config, error) {
	if !cfg.ClickHouse.Secure {
		return nil, nil
	}
	tc, err := ClientTLS(cfg)
	if err != nil {
		return nil, fmt.Errorf("clickhouse.secure: %w", err)
	}
	if tc == nil {
		return &tls.Config{MinVersion: tls.VersionTLS12}, nil
	}
	return tc, nil
}
