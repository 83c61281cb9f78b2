package chserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// ErrNotInstalled means no clickhouse-server binary was found.
var ErrNotInstalled = errors.New("clickhouse-server is not installed (run scripts/install-clickhouse.sh)")

// Server is a running private clickhouse-server.
type Server struct {
	Addr string // native protocol, host:port
	HTTP string // HTTP interface, host:port
	dir  string
	cmd  *exec.Cmd
	done chan error // receives the process's exit
	log  *slog.Logger
	stop sync.Once
}

// Binary finds clickhouse-server.
func Binary() (string, error) {
	for _, p := range []string{"/usr/sbin/clickhouse-server", "/usr/bin/clickhouse-server"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	if p, err := exec.LookPath("clickhouse-server"); err == nil {
		return p, nil
	}
	return "", ErrNotInstalled
}

const configXML = `<?xml version="1.0"?>
<yandex>
    <logger>
        <level>warning</level>
        <log>{{dir}}/log/server.log</log>
        <errorlog>{{dir}}/log/error.log</errorlog>
        <size>10M</size>
        <count>2</count>
    </logger>
    <listen_host>{{host}}</listen_host>
    <tcp_port>{{tcp}}</tcp_port>
    <http_port>{{http}}</http_port>
    <path>{{dir}}/data/</path>
    <tmp_path>{{dir}}/tmp/</tmp_path>
    <user_files_path>{{dir}}/user_files/</user_files_path>
    <format_schema_path>{{dir}}/format_schemas/</format_schema_path>
    <users_config>{{dir}}/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <max_connections>1024</max_connections>
    <keep_alive_timeout>3</keep_alive_timeout>
    <max_concurrent_queries>100</max_concurrent_queries>
    <mark_cache_size>268435456</mark_cache_size>
    <uncompressed_cache_size>268435456</uncompressed_cache_size>
    <mlock_executable>false</mlock_executable>
</yandex>
`

const usersXML = `<?xml version="1.0"?>
<yandex>
    <profiles>
        <default>
            <max_memory_usage>4000000000</max_memory_usage>
        </default>
    </profiles>
    <users>
        <default>
            <password></password>
            <networks><ip>::/0</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas>
        <default>
            <interval>
                <duration>3600</duration>
                <queries>0</queries>
                <errors>0</errors>
                <result_rows>0</result_rows>
                <read_rows>0</read_rows>
                <execution_time>0</execution_time>
            </interval>
        </default>
    </quotas>
</yandex>
`

func freePort(host string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Start writes a private configuration under dir and starts clickhouse-server on addr (host:port
// of the native protocol; "" picks a free port on 127.0.0.1; the HTTP port is a free one). It
// returns once the server answers a ping. Data in dir survives a restart.
func Start(ctx context.Context, dir, addr string, log *slog.Logger) (*Server, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	host, tcp := "127.0.0.1", 0
	if addr != "" {
		h, p, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, fmt.Errorf("clickhouse addr %q: %w", addr, err)
		}
		if tcp, err = strconv.Atoi(p); err != nil {
			return nil, fmt.Errorf("clickhouse addr %q: port: %w", addr, err)
		}
		if h != "" {
			host = h
		}
	}
	if tcp == 0 {
		if tcp, err = freePort(host); err != nil {
			return nil, err
		}
	}
	httpPort, err := freePort(host)
	if err != nil {
		return nil, err
	}
	for _, sub := range []string{"data", "tmp", "user_files", "format_schemas", "log"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o750); err != nil {
			return nil, err
		}
	}
	r := func(s string) []byte {
		for k, v := range map[string]string{"{{dir}}": dir, "{{host}}": host, "{{tcp}}": strconv.Itoa(tcp), "{{http}}": strconv.Itoa(httpPort)} {
			s = string(bytes.ReplaceAll([]byte(s), []byte(k), []byte(v)))
		}
		return []byte(s)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.xml"), r(configXML), 0o640); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "users.xml"), r(usersXML), 0o640); err != nil {
		return nil, err
	}
	out, err := os.OpenFile(filepath.Join(dir, "log", "stdout.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "--config-file="+filepath.Join(dir, "config.xml"))
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = out, out
	// Its own process group: a Ctrl-C meant for the parent is handled by the parent's shutdown.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		out.Close()
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	s := &Server{Addr: net.JoinHostPort(host, strconv.Itoa(tcp)), HTTP: net.JoinHostPort(host, strconv.Itoa(httpPort)),
		dir: dir, cmd: cmd, done: make(chan error, 1), log: log}
	go func() { s.done <- cmd.Wait(); out.Close() }()
	if err := s.waitReady(ctx); err != nil {
		_ = s.Stop()
		return nil, err
	}
	log.Info("private ClickHouse ready", "addr", s.Addr, "dir", dir)
	return s, nil
}

func (s *Server) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for wait := 50 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		conn, err := s.open("default")
		if err == nil {
			err = conn.Ping(ctx)
			conn.Close()
			if err == nil {
				return nil
			}
		}
		select {
		case exit := <-s.done:
			s.done <- exit
			return fmt.Errorf("clickhouse-server exited (%v) before it was ready; log:\n%s", exit, s.logTail())
		case <-ctx.Done():
			return fmt.Errorf("clickhouse-server on %s not ready: %w; log:\n%s", s.Addr, err, s.logTail())
		case <-time.After(wait):
		}
	}
}

func (s *Server) logTail() string {
	var out []byte
	for _, f := range []string{"error.log", "stdout.log"} {
		b, _ := os.ReadFile(filepath.Join(s.dir, "log", f))
		if len(b) > 2000 {
			b = b[len(b)-2000:]
		}
		out = append(out, b...)
	}
	return string(out)
}

func (s *Server) open(database string) (driver.Conn, error) {
	return clickhouse.Open(&clickhouse.Options{
		Addr:        []string{s.Addr},
		Auth:        clickhouse.Auth{Database: database, Username: "default"},
		DialTimeout: 2 * time.Second,
	})
}

// Open connects to the server over the native protocol.
func (s *Server) Open(ctx context.Context, database string) (driver.Conn, error) {
	conn, err := s.open(database)
	if err != nil {
		return nil, err
	}
	if err := conn.Ping(ctx); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

// Stop terminates the server (SIGTERM, then SIGKILL after 30 s) and waits for it.
func (s *Server) Stop() error {
	s.stop.Do(func() {
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(30 * time.Second):
			_ = s.cmd.Process.Kill()
			<-s.done
		}
	})
	return nil
}
