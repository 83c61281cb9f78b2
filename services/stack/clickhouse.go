package stack

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/anchorline/anchorline/services/config"
)

// OpenClickHouse connects to ClickHouse over the native protocol (the only one that works with
// 18.16), retrying with backoff until the server answers or ctx ends. Tables are always named
// with their database, so the connection itself uses `default`.
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
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
		err := conn.Ping(ctx)
		if err == nil {
			return conn, nil
		}
		log.Warn("clickhouse not reachable, retrying", "addr", c.Addr, "err", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			conn.Close()
			return nil, fmt.Errorf("clickhouse.addr %s: %w (start ClickHouse, or run dev with --clickhouse.embedded)", c.Addr, err)
		case <-time.After(wait):
		}
	}
}
