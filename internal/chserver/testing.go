package chserver

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	schema "github.com/anchorline/anchorline/schemas/clickhouse"
)

// EnvAddr names the environment variable that tells tests where ClickHouse listens. RunTests
// sets it after starting a private server; set it yourself to test against a server you run.
const EnvAddr = "ANCHORLINE_TEST_CLICKHOUSE"

// EnvDir names the environment variable that tells tests the directory of the server of
// RunTests (its users.d takes users, AddUsers).
const EnvDir = "ANCHORLINE_TEST_CLICKHOUSE_DIR"

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
	os.Setenv(EnvDir, dir)
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
	if _, err := schema.Migrate(ctx, conn, database); err != nil {
		t.Fatalf("migrate %s: %v", database, err)
	}
	t.Cleanup(func() {
		_ = conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+database)
		conn.Close()
	})
	return addr, database, conn
}

// AddUsers writes a users configuration file (users.d/<name>.xml) into the test server of
// RunTests, removed when the test ends. The server reloads its users by itself within a few
// seconds: wait for the user with a connection that retries.
func AddUsers(t testing.TB, name, xml string) {
	t.Helper()
	dir := os.Getenv(EnvDir)
	if dir == "" {
		t.Fatalf("no test ClickHouse directory: call chserver.RunTests from TestMain, which starts a private server (%s names a server whose users this test cannot change)", EnvAddr)
	}
	if err := os.MkdirAll(filepath.Join(dir, "users.d"), 0o750); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "users.d", name+".xml")
	if err := os.WriteFile(p, []byte(xml), 0o640); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Remove(p) })
}

// OpenAs connects to the server at addr as user with password.
func OpenAs(addr, database, user, password string) (driver.Conn, error) {
	return clickhouse.Open(&clickhouse.Options{
		Addr:        []string{addr},
		Auth:        clickhouse.Auth{Database: database, Username: user, Password: password},
		DialTimeout: 2 * time.Second,
	})
}
