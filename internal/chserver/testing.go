package chserver

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/anchorline/anchorline/schemas/clickhouse"
)

// EnvAddr names the environment variable that tells tests where ClickHouse listens. RunTests
// sets it after starting a private server; set it yourself to test against a server you run.
const EnvAddr = "ANCHORLINE_TEST_CLICKHOUSE"

// RunTests runs a test binary's tests with one private ClickHouse server for all of them
// (unless EnvAddr already names one): func TestMain(m *testing.M) { os.Exit(chserver.RunTests(m)) }
func RunTests(m *testing.M) int {
	if os.Getenv(EnvAddr) != "" {
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "anchorline-clickhouse-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "chserver:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	srv, err := Start(context.Background(), dir, "", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		fmt.Fprintln(os.Stderr, "chserver: cannot start the test ClickHouse:", err)
		return 1
	}
	defer srv.Stop()
	os.Setenv(EnvAddr, srv.Addr)
	return m.Run()
}

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9_]`)

// NewDatabase creates a fresh database with the Anchorline schema migrated, on the server of
// RunTests, and drops it when the test ends. It returns the server address, the database name
// and a connection.
func NewDatabase(t testing.TB) (addr, database string, conn driver.Conn) {
	t.Helper()
	addr = os.Getenv(EnvAddr)
	if addr == "" {
		t.Fatalf("no test ClickHouse: call chserver.RunTests from TestMain (needs clickhouse-server: scripts/install-clickhouse.sh)")
	}
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	name := unsafeName.ReplaceAllString(strings.ToLower(t.Name()), "_")
	if len(name) > 40 {
		name = name[:40]
	}
	database = "t_" + name + "_" + hex.EncodeToString(suffix)
	srv := &Server{Addr: addr}
	conn, err := srv.open("default")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := clickhouse.Migrate(ctx, conn, database); err != nil {
		t.Fatalf("migrate %s: %v", database, err)
	}
	t.Cleanup(func() {
		_ = conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+database)
		conn.Close()
	})
	return addr, database, conn
}
