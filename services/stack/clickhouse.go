package stack

import (
	"context"
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
// 18.16), retrying with backoff until the server answers, clickhouse.startup_timeout passes
// (an error wrapping ErrClickHouseUnreachable that says what to do) or ctx ends. Tables are
// always named with their database, so the connection itself uses `default`.
func OpenClickHouse(ctx context.Context, c config.ClickHouse, log *slog.Logger) (driver.Conn, error) {
	conn, err := clickhouse.Open(&clickhouse.Options{
		Addr:            []string{c.Addr},
		Auth:            clickhouse.Auth{Database: "default", Username: c.Username, Password: c.Password},
		DialTimeout:     5 * time.Second,
		MaxOpenConns:    8,
		MaxIdleConns:    8,
		ConnMaxLifetime: time.Hour,
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
