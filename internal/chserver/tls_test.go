package chserver

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/anchorline/anchorline/internal/pki"
)

// selectOne connects to addr with tlsConfig (nil: plain) and runs SELECT 1.
func selectOne(ctx context.Context, addr string, tlsConfig *tls.Config) error {
	conn, err := clickhouse.Open(&clickhouse.Options{
		Addr:        []string{addr},
		Auth:        clickhouse.Auth{Database: "default", Username: "default"},
		DialTimeout: 5 * time.Second,
		ReadTimeout: 30 * time.Second, // a stalled plain connection must end, not hang the test
		TLS:         tlsConfig,
	})
	if err != nil {
		return err
	}
	defer conn.Close()
	var one uint8
	if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
		return err
	}
	if one != 1 {
		return errors.New("SELECT 1 returned " + strconv.Itoa(int(one)))
	}
	return nil
}

// listeningPorts are the TCP ports that process pid listens on (from /proc).
func listeningPorts(t *testing.T, pid int) map[int]bool {
	t.Helper()
	fds, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		t.Fatal(err)
	}
	own := map[string]bool{}
	for _, fd := range fds {
		if link, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/fd/" + fd.Name()); err == nil {
			own[link] = true
		}
	}
	ports := map[int]bool{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fields := strings.Fields(line)
			if len(fields) < 10 || fields[3] != "0A" || !own["socket:["+fields[9]+"]"] {
				continue
			}
			p, err := strconv.ParseUint(fields[1][strings.LastIndexByte(fields[1], ':')+1:], 16, 16)
			if err != nil {
				t.Fatal(err)
			}
			ports[int(p)] = true
		}
	}
	return ports
}

// TestTLS: a server started by StartTLS with pki's certificate (an "EC PRIVATE KEY") serves
// the native protocol over TLS only: Open and a clickhouse-go client trusting the CA run
// SELECT 1; a plain client, a client trusting another CA and a TLS 1.1 client fail; the
// process listens on the TLS port and nothing else.
func TestTLS(t *testing.T) {
	ctx := t.Context()
	certs := pki.Dir(t.TempDir())
	if err := certs.Ensure("server", []string{"127.0.0.1", "localhost"}); err != nil {
		t.Fatal(err)
	}
	trustCA, err := pki.ClientConfig(certs.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	s, err := StartTLS(ctx, t.TempDir(), "", certs.CertFile("server"), certs.KeyFile("server"), trustCA, quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	if !s.Secure || s.HTTP != "" || s.ClientTLS() == nil {
		t.Fatalf("Secure %v, HTTP %q, ClientTLS %v: want a TLS server without an HTTP port", s.Secure, s.HTTP, s.ClientTLS())
	}
	host, port, err := net.SplitHostPort(s.Addr)
	if err != nil || host != "127.0.0.1" {
		t.Fatalf("Addr %q: %v", s.Addr, err)
	}
	tcp, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.verifyOwn(tcp); err != nil {
		t.Fatalf("verifyOwn: %v", err)
	}
	if ports := listeningPorts(t, s.Pid()); len(ports) != 1 || !ports[tcp] {
		t.Fatalf("the server listens on %v, want only the TLS port %d", ports, tcp)
	}

	conn, err := s.Open(ctx, "default")
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	var one uint8
	if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("SELECT 1 through Open: %d, %v", one, err)
	}
	conn.Close()
	if err := selectOne(ctx, s.Addr, trustCA); err != nil {
		t.Fatalf("client trusting the CA: %v", err)
	}
	pinned, err := trustCert(certs.CertFile("server"))
	if err != nil {
		t.Fatal(err)
	}
	if err := selectOne(ctx, s.Addr, pinned); err != nil {
		t.Fatalf("client trusting the server certificate itself (StartTLS with a nil client): %v", err)
	}

	if err := selectOne(ctx, s.Addr, nil); err == nil {
		t.Fatal("a plain client ran SELECT 1 on the TLS port")
	} else {
		t.Logf("plain client: %v", err)
	}
	other := pki.Dir(t.TempDir())
	if err := other.Ensure("server", []string{"127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	trustOther, err := pki.ClientConfig(other.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	err = selectOne(ctx, s.Addr, trustOther)
	if _, ok := errors.AsType[*tls.CertificateVerificationError](err); !ok {
		t.Fatalf("client trusting another CA: got %v, want a certificate verification error", err)
	}
	old := trustCA.Clone()
	old.MinVersion, old.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
	if c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", s.Addr, old); err == nil {
		c.Close()
		t.Fatalf("a TLS 1.1 handshake succeeded (%x)", c.ConnectionState().Version)
	}
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := selectOne(ctx, s.Addr, trustCA); err == nil {
		t.Fatal("SELECT 1 after Stop")
	}
}

// TestTLSUntrusted: StartTLS whose client configuration does not trust the server's
// certificate fails at once with a message saying so (not after the readiness timeout), and
// stops the server.
func TestTLSUntrusted(t *testing.T) {
	certs, other := pki.Dir(t.TempDir()), pki.Dir(t.TempDir())
	for _, d := range []pki.Dir{certs, other} {
		if err := d.Ensure("server", []string{"127.0.0.1"}); err != nil {
			t.Fatal(err)
		}
	}
	trustOther, err := pki.ClientConfig(other.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	s, err := StartTLS(t.Context(), t.TempDir(), addr, certs.CertFile("server"), certs.KeyFile("server"), trustOther, quiet())
	if err == nil {
		s.Stop()
		t.Fatal("StartTLS succeeded with a client configuration trusting another CA")
	}
	if !errors.Is(err, errUntrusted) {
		t.Fatalf("got %v, want errUntrusted", err)
	}
	t.Logf("untrusted: %v", err)
	// The server was stopped: the port is free again.
	l, err = net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("the port of the failed start is still taken: %v", err)
	}
	l.Close()
}

// TestTLSBadKey: a key that does not match the certificate is refused before a server starts.
func TestTLSBadKey(t *testing.T) {
	certs := pki.Dir(t.TempDir())
	if err := certs.Ensure("server", []string{"127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	_, err := StartTLS(t.Context(), dir, "", certs.CertFile("server"), certs.KeyFile("ca"), nil, quiet())
	if err == nil || !strings.Contains(err.Error(), "clickhouse tls") {
		t.Fatalf("got %v, want a clickhouse tls error", err)
	}
	if _, err := os.Stat(dir + "/config.xml"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a configuration was written for a bad key (%v)", err)
	}
}
