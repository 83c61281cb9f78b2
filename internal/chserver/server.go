package chserver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/xml"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/anchorline/anchorline/internal/procnet"
	"github.com/anchorline/anchorline/internal/retry"
	schema "github.com/anchorline/anchorline/schemas/clickhouse"
)

// ErrNotInstalled means no clickhouse-server binary was found.
var ErrNotInstalled = errors.New("clickhouse-server is not installed: install it (scripts/install-clickhouse.sh, or apt-get install clickhouse-server), or point clickhouse.addr at a running ClickHouse without clickhouse.embedded")

// Server is a running private clickhouse-server.
type Server struct {
	Addr string // native protocol, host:port (over TLS if Secure)
	HTTP string // HTTP interface, host:port; "" if Secure (a TLS server has no plain listener)
	// Secure says that Addr serves the native protocol over TLS only (StartTLS): connect with
	// Open, or with clickhouse-go's Options.TLS set to ClientTLS().
	Secure bool
	tls    *tls.Config // how Open connects if Secure
	dir    string
	cmd    *exec.Cmd
	// logFrom is where each log file ended when this server started.
	logFrom map[string]int64
	done    chan struct{} // closed when the process has exited (exit holds how)
	exit    error
	log     *slog.Logger
	stop    sync.Once
}

// Binary finds clickhouse-server where Debian's package puts it, or on PATH.
func Binary() (string, error) {
	return findBinary([]string{"/usr/sbin/clickhouse-server", "/usr/bin/clickhouse-server"}, "clickhouse-server")
}

func findBinary(paths []string, name string) (string, error) {
	for _, p := range paths {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	if p, err := exec.LookPath(name); err == nil {
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
{{listeners}}
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
    <!-- Parts replaced by a merge or a mutation leave the disk after 5 s rather than 8 min,
         so that an erasure's bytes are gone soon after it (services/erasure). -->
    <merge_tree>
        <old_parts_lifetime>5</old_parts_lifetime>
    </merge_tree>
{{replication}}</yandex>
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
	_, port, err := net.SplitHostPort(l.Addr().String())
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(port)
}

// ErrAddrInUse means the native port asked for is taken by another process.
var ErrAddrInUse = errors.New("address already in use")

// ErrNotOurs means a server answers on the address, but it is not the child this package
// started (another ClickHouse was there first).
var ErrNotOurs = errors.New("the server answering is not the private ClickHouse started here")

// errPortTaken is a start that failed because a port was taken when the server bound it.
var errPortTaken = errors.New("a port was taken")

// Start writes a private configuration under dir and starts clickhouse-server on addr (host:port
// of the native protocol; "" picks a free port on 127.0.0.1; the HTTP port is a free one). It
// returns once the server answers a ping and the listener on addr is verified to be the
// child's own. Data in dir survives a restart. A port this function picked that another
// process takes before the server binds it is picked anew.
func Start(ctx context.Context, dir, addr string, log *slog.Logger) (*Server, error) {
	return startServer(ctx, dir, addr, nil, nil, log)
}

// tlsFiles is what a TLS server serves with, and how this package connects to it.
type tlsFiles struct {
	cert, key string      // PEM files, absolute paths
	client    *tls.Config // for the readiness check and Open
}

// StartTLS is Start with the native protocol served over TLS only: addr is ClickHouse's
// tcp_port_secure, with the certificate (chain) in certFile and its private key in keyFile
// (PEM; an "EC PRIVATE KEY", a PKCS#8 "PRIVATE KEY" or an "RSA PRIVATE KEY", unencrypted),
// TLS 1.2 or newer, no client certificates. The server has no plain native or HTTP listener
// (Server.HTTP is ""). client is how the readiness check and Open connect (for example
// pki.ClientConfig of the CA that issued certFile); nil trusts the certificates in certFile
// themselves (a pin). A client configuration that does not trust the server's certificate
// fails the start at once.
func StartTLS(ctx context.Context, dir, addr, certFile, keyFile string, client *tls.Config, log *slog.Logger) (*Server, error) {
	t, err := newTLSFiles(certFile, keyFile, client)
	if err != nil {
		return nil, err
	}
	return startServer(ctx, dir, addr, t, nil, log)
}

func newTLSFiles(certFile, keyFile string, client *tls.Config) (*tlsFiles, error) {
	var err error
	t := &tlsFiles{}
	if t.cert, err = filepath.Abs(certFile); err != nil {
		return nil, fmt.Errorf("clickhouse tls certificate %q: %w", certFile, err)
	}
	if t.key, err = filepath.Abs(keyFile); err != nil {
		return nil, fmt.Errorf("clickhouse tls key %q: %w", keyFile, err)
	}
	// Checked here for a clear message: the server would exit with a terse OpenSSL error,
	// or wait on its terminal for the passphrase of an encrypted key.
	if _, err := tls.LoadX509KeyPair(t.cert, t.key); err != nil {
		return nil, fmt.Errorf("clickhouse tls %s, %s: %w", t.cert, t.key, err)
	}
	if client != nil {
		t.client = client.Clone()
	} else if t.client, err = trustCert(t.cert); err != nil {
		return nil, err
	}
	return t, nil
}

// trustCert is a client configuration that trusts the certificates in certFile themselves.
func trustCert(certFile string) (*tls.Config, error) {
	b, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("clickhouse tls certificate: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("clickhouse tls certificate %s: no PEM certificate in it", certFile)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

func startServer(ctx context.Context, dir, addr string, t *tlsFiles, r *ReplicaOptions, log *slog.Logger) (*Server, error) {
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
	if tcp != 0 {
		// A server already there would answer our readiness ping: refuse at once.
		l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(tcp)))
		if err != nil {
			return nil, fmt.Errorf("clickhouse.addr %s: %w (another ClickHouse?): stop it or choose another clickhouse.addr", net.JoinHostPort(host, strconv.Itoa(tcp)), ErrAddrInUse)
		}
		l.Close()
	}
	for _, sub := range []string{"data", "tmp", "user_files", "format_schemas", "log"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o750); err != nil {
			return nil, fmt.Errorf("clickhouse dir: %w", err)
		}
	}
	for attempt := 1; ; attempt++ {
		port := tcp
		if port == 0 {
			if port, err = freePort(host); err != nil {
				return nil, err
			}
		}
		httpPort := 0
		if t == nil {
			if httpPort, err = freePort(host); err != nil {
				return nil, err
			}
		}
		replication := ""
		interserver := 0
		if r != nil {
			if interserver, err = freePort(host); err != nil {
				return nil, err
			}
			replication = r.config(host, interserver)
		} else if t == nil {
			replication = strings.NewReplacer("{{host}}", xmlText(host), "{{tcp}}", strconv.Itoa(port)).Replace(localCluster)
		}
		s, err := start(ctx, bin, dir, host, port, httpPort, t, r, replication, log)
		if errors.Is(err, errPortTaken) && attempt < 5 {
			log.Warn("private ClickHouse: a port was taken before the server bound it, picking others", "tcp", port, "http", httpPort, "interserver", interserver)
			continue
		}
		if err != nil {
			return nil, err
		}
		log.Info("private ClickHouse ready", "addr", s.Addr, "tls", s.Secure, "dir", dir, "pid", s.cmd.Process.Pid)
		return s, nil
	}
}

// localCluster defines schema.LocalCluster on a server without TLS or replicas: itself.
const localCluster = `    <remote_servers>
        <` + schema.LocalCluster + `>
            <shard><replica><host>{{host}}</host><port>{{tcp}}</port></replica></shard>
        </` + schema.LocalCluster + `>
    </remote_servers>
`

// plainListeners are the native and HTTP ports of a server without TLS.
const plainListeners = `    <tcp_port>{{tcp}}</tcp_port>
    <http_port>{{http}}</http_port>`

// tlsListeners is the one listener of a TLS server. Without tcp_port and http_port, 18.16
// opens no plain listener. Its OpenSSL (through Poco's SSLManager) reads the key with
// PEM_read_PrivateKey: SEC 1 "EC PRIVATE KEY", PKCS#8 "PRIVATE KEY" and PKCS#1 all load.
const tlsListeners = `    <tcp_port_secure>{{tcp}}</tcp_port_secure>
    <openSSL>
        <server>
            <certificateFile>{{cert}}</certificateFile>
            <privateKeyFile>{{key}}</privateKeyFile>
            <verificationMode>none</verificationMode>
            <loadDefaultCAFile>false</loadDefaultCAFile>
            <disableProtocols>sslv2,sslv3,tlsv1,tlsv1_1</disableProtocols>
            <cipherList>HIGH:!aNULL:!eNULL:!MD5:!RC4:!3DES</cipherList>
            <preferServerCiphers>true</preferServerCiphers>
        </server>
    </openSSL>`

// xmlText escapes s for an XML element's text.
func xmlText(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s)) // a strings.Builder does not fail
	return b.String()
}

func start(ctx context.Context, bin, dir, host string, tcp, httpPort int, t *tlsFiles, ro *ReplicaOptions, replication string, log *slog.Logger) (*Server, error) {
	vars := []string{"{{dir}}", xmlText(dir), "{{host}}", xmlText(host), "{{tcp}}", strconv.Itoa(tcp), "{{http}}", strconv.Itoa(httpPort)}
	listeners := plainListeners
	if t != nil {
		listeners = tlsListeners
		vars = append(vars, "{{cert}}", xmlText(t.cert), "{{key}}", xmlText(t.key))
		if ro != nil && ro.peer != 0 {
			listeners += "\n    <tcp_port>" + strconv.Itoa(ro.peer) + "</tcp_port>" // for the other replicas
		}
	}
	listeners = strings.NewReplacer(vars...).Replace(listeners)
	r := func(s string) []byte {
		return []byte(strings.NewReplacer(append(vars, "{{listeners}}", listeners, "{{replication}}", replication)...).Replace(s))
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
	s := &Server{Addr: net.JoinHostPort(host, strconv.Itoa(tcp)), dir: dir, done: make(chan struct{}), log: log, logFrom: logSizes(dir)}
	if t != nil {
		s.Secure, s.tls = true, t.client
	} else {
		s.HTTP = net.JoinHostPort(host, strconv.Itoa(httpPort))
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
	s.cmd = cmd
	go func() { s.exit = cmd.Wait(); out.Close(); close(s.done) }()
	if err := s.waitReady(ctx); err != nil {
		_ = s.Stop()
		if strings.Contains(s.logTail(), "Address already in use") {
			return nil, fmt.Errorf("%w: %w", errPortTaken, err)
		}
		return nil, err
	}
	if err := s.verifyOwn(tcp); err != nil {
		_ = s.Stop()
		return nil, err
	}
	return s, nil
}

// verifyOwn checks that the socket listening on the native port belongs to the child process,
// so that a stranger that took the port cannot pass for it. Without /proc (not Linux) it
// trusts the check made before the start.
func (s *Server) verifyOwn(port int) error {
	ok, err := procnet.Holds(s.cmd.Process.Pid, port)
	if errors.Is(err, procnet.ErrNoProc) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("private ClickHouse: check who listens on %s: %w", s.Addr, err)
	}
	if ok {
		return nil
	}
	return fmt.Errorf("clickhouse.addr %s: %w (process %d does not hold that port): stop the other server or choose another clickhouse.addr", s.Addr, ErrNotOurs, s.cmd.Process.Pid)
}

// logSizes records how long the log files are, so that a start reads only its own lines.
func logSizes(dir string) map[string]int64 {
	sizes := map[string]int64{}
	for _, f := range []string{"error.log", "stdout.log"} {
		if fi, err := os.Stat(filepath.Join(dir, "log", f)); err == nil {
			sizes[f] = fi.Size()
		}
	}
	return sizes
}

// errExited means the server process ended before it answered.
var errExited = errors.New("exited before it was ready")

// errUntrusted means a TLS server answered with a certificate that the client configuration
// given to StartTLS does not trust.
var errUntrusted = errors.New("the client TLS configuration does not trust the server's certificate")

// waitReady pings the server until it answers, its process exits, or two minutes have passed.
func (s *Server) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute) // bounds the pings too
	defer cancel()
	ready := retry.Policy{Initial: 50 * time.Millisecond, Max: time.Second}
	_, err := retry.Do(ctx, ready, func(ctx context.Context) (struct{}, error) {
		select {
		case <-s.done:
			return struct{}{}, retry.Permanent(fmt.Errorf("%w (%v)", errExited, s.exit))
		default:
		}
		conn, err := s.open("default")
		if err != nil {
			return struct{}{}, err
		}
		defer conn.Close()
		err = conn.Ping(ctx)
		if _, ok := errors.AsType[*tls.CertificateVerificationError](err); ok {
			// The server answers, with a certificate the client configuration does not trust.
			return struct{}{}, retry.Permanent(fmt.Errorf("%w: %w", errUntrusted, err))
		}
		return struct{}{}, err
	}, func(err error, next time.Duration) {
		s.log.DebugContext(ctx, "private ClickHouse not ready yet", "addr", s.Addr, "err", err, "retry_in", next)
	})
	if err == nil {
		return nil
	}
	tail := s.logTail()
	s.log.Error("private ClickHouse did not start", "addr", s.Addr, "err", err, "log", tail)
	why := lastError(tail)
	if errors.Is(err, errExited) {
		return fmt.Errorf("clickhouse-server %w: %s (log in %s)", err, why, filepath.Join(s.dir, "log"))
	}
	if errors.Is(err, errUntrusted) {
		return fmt.Errorf("clickhouse-server on %s: %w", s.Addr, err)
	}
	return fmt.Errorf("clickhouse-server on %s not ready: %w: %s (log in %s)", s.Addr, err, why, filepath.Join(s.dir, "log"))
}

// lastError is the last line of a ClickHouse log that reports an error, for a one-line message.
func lastError(log string) string {
	lines := strings.Split(strings.TrimSpace(log), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); strings.Contains(l, "<Error>") || strings.Contains(l, "Exception") {
			return l
		}
	}
	if l := strings.TrimSpace(lines[len(lines)-1]); l != "" {
		return l
	}
	return "nothing in its log"
}

func (s *Server) logTail() string {
	var out []byte
	for _, f := range []string{"error.log", "stdout.log"} {
		b, _ := os.ReadFile(filepath.Join(s.dir, "log", f))
		if from := s.logFrom[f]; from <= int64(len(b)) {
			b = b[from:] // a log rotated since is read whole
		}
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
		TLS:         s.ClientTLS(),
	})
}

// ClientTLS is a copy of the client TLS configuration that Open uses for a Secure server
// (the one given to StartTLS), for clickhouse-go's Options.TLS; nil for a server without TLS.
func (s *Server) ClientTLS() *tls.Config {
	if s.tls == nil {
		return nil
	}
	return s.tls.Clone()
}

// Open connects to the server over the native protocol (over TLS if Secure).
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

// Done is closed when the server's process has exited (stopped, killed or crashed).
func (s *Server) Done() <-chan struct{} { return s.done }

// Pid is the server's process id (its CPU time is in /proc/<pid>/stat).
func (s *Server) Pid() int { return s.cmd.Process.Pid }

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
