package stack

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/anchorline/anchorline/internal/retry"
	"github.com/anchorline/anchorline/services/auth"
	"github.com/anchorline/anchorline/services/config"
)

// NATSServer is how the embedded NATS server is secured.
type NATSServer struct {
	// Auth, if set, is the broker identity setup whose accounts, service users and auth
	// callout (auth.conf) the server loads, as an external nats-server would: devices are then
	// let in only by the callout service (StartAuth).
	Auth *auth.Setup
	// TLS, if set, is required of every client.
	TLS *tls.Config
	// Violation, if set, is called with each permissions violation the server logs (a client
	// publishing or subscribing where its user may not), for counting.
	Violation func(detail string)
}

// StartNATS starts an embedded NATS server with JetStream (file storage under dir), listening
// where natsURL points (port 0: any free port; the server's ClientURL says which), secured as
// o says. Its log goes to log (errors and warnings).
func StartNATS(natsURL, dir string, o NATSServer, log *slog.Logger) (*server.Server, error) {
	u, err := url.Parse(natsURL)
	if err != nil {
		return nil, fmt.Errorf("nats.url %q: %w", natsURL, err)
	}
	host, portStr, err := net.SplitHostPort(u.Host)
	if err != nil {
		return nil, fmt.Errorf("nats.url %q: want nats://host:port: %w", natsURL, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("nats.url %q: port: %w", natsURL, err)
	}
	if port == 0 {
		port = server.RANDOM_PORT // 0 would be NATS's default, 4222
	}
	opts := &server.Options{}
	if o.Auth != nil {
		if opts, err = o.Auth.ServerOptions(); err != nil {
			return nil, err
		}
	}
	opts.ServerName, opts.Host, opts.Port, opts.JetStream, opts.StoreDir, opts.NoSigs = "anchorline-dev", host, port, true, dir, true
	if o.TLS != nil {
		opts.TLSConfig, opts.TLS, opts.TLSTimeout = o.TLS, true, 2
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	srv.SetLoggerV2(natsLog{log: log, violation: o.Violation}, false, false, false)
	go srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		srv.Shutdown()
		return nil, fmt.Errorf("nats.url %s: the embedded NATS server did not start listening (is the port in use? stop what listens there or choose another nats.url)", u.Host)
	}
	log.Info("embedded NATS server ready", "url", srv.ClientURL(), "store", dir)
	return srv, nil
}

// NATSOptions are the connect options of a role: TLS trusting tls.ca (NATSTLS), and its nkey
// from nats.credentials, or from the role's seed file under nats.auth_dir if that exists; no
// credentials if neither is set (a server without authentication).
func NATSOptions(cfg config.Config, role auth.Role) ([]nats.Option, error) {
	opts, err := NATSTLS(cfg)
	if err != nil {
		return nil, err
	}
	file := cfg.NATS.Credentials
	if file == "" {
		file = auth.Setup{Dir: cfg.AuthDir()}.File(role)
		if _, err := os.Stat(file); errors.Is(err, fs.ErrNotExist) {
			return opts, nil
		}
	}
	creds, err := auth.ConnectOptions(role, file)
	if err != nil {
		return nil, fmt.Errorf("%w: nats.credentials: %w", config.ErrInvalid, err)
	}
	return append(opts, creds...), nil
}

// NATSTLS is the TLS option of every NATS client (services, devices, tools): trust the CA of
// tls.ca (dev's under data_dir/tls by default); none if there is no CA file.
func NATSTLS(cfg config.Config) ([]nats.Option, error) {
	tc, err := ClientTLS(cfg)
	if tc == nil || err != nil {
		return nil, err
	}
	return []nats.Option{nats.Secure(tc)}, nil
}

// ConnectNATS connects to NATS with the given options (credentials), retrying with backoff
// until the server answers or ctx ends (each failure is logged), then reconnecting forever on
// disconnects; it returns the connection's JetStream. An authorization violation is not
// retried: the credentials are wrong, and waiting will not make them right.
func ConnectNATS(ctx context.Context, natsURL, name string, log *slog.Logger, opts ...nats.Option) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := retry.Do(ctx, retry.Default(), func(context.Context) (*nats.Conn, error) {
		nc, err := nats.Connect(natsURL, append([]nats.Option{nats.Name(name), nats.MaxReconnects(-1),
			nats.ReconnectWait(250 * time.Millisecond),
			nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
				if err != nil {
					log.Warn("nats disconnected", "err", err)
				}
			}),
			nats.ReconnectHandler(func(c *nats.Conn) { log.Info("nats reconnected", "url", c.ConnectedUrl()) }),
			// Asynchronous errors (a slow consumer dropping messages, a permissions error) would
			// otherwise go unseen; dropped readings come back after the ack wait.
			nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
				subject := ""
				if sub != nil {
					subject = sub.Subject
				}
				log.Warn("nats: asynchronous error", "subject", subject, "err", err)
			})}, opts...)...)
		if errors.Is(err, nats.ErrAuthorization) {
			return nil, retry.Permanent(fmt.Errorf("%w (check nats.credentials: the server does not accept %s's)", err, name))
		}
		return nc, err
	}, func(err error, next time.Duration) {
		log.Warn("nats not reachable, retrying", "url", natsURL, "err", err, "retry_in", next.Round(time.Millisecond))
	})
	if err != nil {
		return nil, nil, fmt.Errorf("nats.url %s: %w", natsURL, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("jetstream: %w", err)
	}
	return nc, js, nil
}

// natsLog is the embedded server's logger: its errors and warnings into slog, and its
// permissions violations counted.
type natsLog struct {
	log       *slog.Logger
	violation func(string)
}

func (l natsLog) Noticef(string, ...any) {}
func (l natsLog) Debugf(string, ...any)  {}
func (l natsLog) Tracef(string, ...any)  {}
func (l natsLog) Warnf(format string, v ...any) {
	l.log.Warn("nats server: " + fmt.Sprintf(format, v...))
}
func (l natsLog) Fatalf(format string, v ...any) {
	l.log.Error("nats server: " + fmt.Sprintf(format, v...))
}
func (l natsLog) Errorf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	if l.violation != nil && strings.Contains(msg, " Violation - ") {
		l.violation(msg)
		return
	}
	l.log.Warn("nats server: " + msg)
}
