package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/anchorline/anchorline/pipeline/verify"
	"github.com/anchorline/anchorline/schemas/reading"
	"github.com/anchorline/anchorline/schemas/reading/connect"
)

// Subjects of NATS's auth callout and system services.
const (
	calloutSubject = "$SYS.REQ.USER.AUTH"
	calloutQueue   = "anchorline-auth"
	connzSubject   = "$SYS.REQ.SERVER.PING.CONNZ"
	kickSubject    = "$SYS.REQ.SERVER.%s.KICK"
	// authErrSubject carries the server's events for connections refused at authentication.
	authErrSubject = "$SYS.SERVER.*.CLIENT.AUTH.ERR"
)

// maxInFlight is how many callout requests one service answers at once.
const maxInFlight = 64

// Registry answers for a device's registered key: verify.Keys over the ledger.
type Registry interface {
	Lookup(ctx context.Context, device string) (verify.Key, bool, error)
}

// Reasons a device is refused at connect; each is counted (Stats) and logged with the device id.
const (
	RefusedNoID        = "no_device_id"   // the CONNECT names no valid device id as its user
	RefusedUnknown     = "unknown_device" // no such device in the registry
	RefusedRevoked     = "revoked"        // the device's record is revoked
	RefusedWrongKey    = "wrong_key"      // the nkey field does not name the registered key
	RefusedBadProof    = "bad_proof"      // the signature over the nonce does not verify
	RefusedNoNonce     = "no_nonce"       // the server sent no nonce (its configuration has no nkey users)
	RefusedUnavailable = "registry_error" // the ledger could not answer (the device may retry)
	RefusedBadRequest  = "bad_request"    // the callout request itself did not decode
	Kicked             = "revoked_kicked" // an open connection closed after its device's revocation
	// PermissionViolation is a connected client publishing or subscribing where it may not
	// (another device's subject, iot.readings.>, the JetStream API), as the server reported it.
	PermissionViolation = "permission_violation"
)

// Service answers NATS's auth callout for devices from the ledger's device registry and closes
// the connections of devices when they are revoked.
type Service struct {
	reg    Registry
	issuer nkeys.KeyPair
	log    *slog.Logger

	mu      sync.Mutex
	refused map[string]uint64 // reason -> count
	granted atomic.Uint64
	server  atomic.Uint64 // connections the servers refused
}

// New returns a service that signs its answers with the setup's issuer key.
func New(setup Setup, reg Registry, log *slog.Logger) (*Service, error) {
	issuer, err := setup.Issuer()
	if err != nil {
		return nil, err
	}
	return &Service{reg: reg, issuer: issuer, log: log, refused: map[string]uint64{}}, nil
}

// Stats are the callout's counts: devices let in, devices refused by reason (and revoked
// devices' connections closed), and every connection the servers refused at authentication
// (the callout's refusals, service keys that do not match, clients without credentials).
type Stats struct {
	Granted       uint64            `json:"granted"`
	Refused       map[string]uint64 `json:"refused"`
	ServerRefused uint64            `json:"server_refused"`
}

// Stats returns the counts so far.
func (s *Service) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := make(map[string]uint64, len(s.refused))
	for k, v := range s.refused {
		r[k] = v
	}
	return Stats{Granted: s.granted.Load(), Refused: r, ServerRefused: s.server.Load()}
}

func (s *Service) count(reason, device string, detail error) {
	s.mu.Lock()
	s.refused[reason]++
	s.mu.Unlock()
	s.log.Warn("nats: device refused", "device", device, "reason", reason, "err", detail)
}

// Serve subscribes to the callout on nc (a connection of RoleAuth) and, if sys is not nil (a
// connection of RoleSystem), to the servers' authentication errors, which it counts; it returns
// a function that unsubscribes.
func (s *Service) Serve(nc, sys *nats.Conn) (stop func(), err error) {
	// Requests are answered concurrently (a cache miss waits for the ledger), at most
	// maxInFlight at once; beyond that the subscription waits, and the server's 2 s auth
	// timeout bounds what a device waits.
	sem := make(chan struct{}, maxInFlight)
	sub, err := nc.QueueSubscribe(calloutSubject, calloutQueue, func(m *nats.Msg) {
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			s.answer(m)
		}()
	})
	if err != nil {
		return nil, fmt.Errorf("auth: subscribe %s: %w", calloutSubject, err)
	}
	subs := []*nats.Subscription{sub}
	if sys != nil {
		errSub, err := sys.Subscribe(authErrSubject, s.onAuthError)
		if err != nil {
			_ = sub.Unsubscribe()
			return nil, fmt.Errorf("auth: subscribe %s: %w", authErrSubject, err)
		}
		subs = append(subs, errSub)
	}
	if err := nc.Flush(); err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	return func() {
		for _, s := range subs {
			_ = s.Unsubscribe()
		}
	}, nil
}

// answer handles one callout request.
func (s *Service) answer(m *nats.Msg) {
	req, err := jwt.DecodeAuthorizationRequestClaims(string(m.Data))
	if err != nil {
		s.count(RefusedBadRequest, "", err)
		return // no user nkey to answer for: the server times the client out
	}
	device, perms, reason, err := s.authorize(context.Background(), req)
	var resp string
	if reason != "" {
		s.count(reason, device, err)
		resp, err = s.respond(req, "", "not authorized: "+reason)
	} else {
		s.granted.Add(1)
		s.log.Debug("nats: device connected", "device", device, "server", req.Server.Name, "cid", req.ClientInformation.ID)
		var ujwt string
		if ujwt, err = s.userJWT(req, device, perms); err == nil {
			resp, err = s.respond(req, ujwt, "")
		}
	}
	if err != nil {
		s.log.Error("auth: cannot sign the callout answer", "device", device, "err", err)
		return
	}
	if err := m.Respond([]byte(resp)); err != nil {
		s.log.Warn("auth: callout answer not sent", "device", device, "err", err)
	}
}

// authorize decides on a request: the device and its permissions, or the reason it is refused.
func (s *Service) authorize(ctx context.Context, req *jwt.AuthorizationRequestClaims) (device string, p Permissions, reason string, err error) {
	opts := req.ConnectOptions
	device = opts.Username
	if !reading.ValidDeviceID(device) {
		return device, p, RefusedNoID, fmt.Errorf("user %q is not a device id", device)
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second) // the server waits 2s (auth.conf timeout)
	defer cancel()
	key, ok, err := s.reg.Lookup(ctx, device)
	switch {
	case err != nil:
		return device, p, RefusedUnavailable, err
	case !ok:
		return device, p, RefusedUnknown, errors.New("not in the device registry")
	case key.Revoked:
		return device, p, RefusedRevoked, fmt.Errorf("revoked at height %d", key.Height)
	}
	name, err := connect.KeyName(key.Key)
	if err != nil {
		return device, p, RefusedWrongKey, err
	}
	if opts.Nkey != name {
		return device, p, RefusedWrongKey, fmt.Errorf("nkey %q is not the registered %s key", opts.Nkey, key.Key.Alg)
	}
	if req.ClientInformation.Nonce == "" {
		return device, p, RefusedNoNonce, errors.New("the server sent no nonce; its configuration needs at least one nkey user (auth.conf has them)")
	}
	sig, err := reading.DecodeConnectSig(opts.SignedNonce)
	if err == nil {
		err = reading.VerifyConnect(key.Key, []byte(req.ClientInformation.Nonce), sig)
	}
	if err != nil {
		return device, p, RefusedBadProof, err
	}
	return device, DevicePermissions(device), "", nil
}

// userJWT is the user the server registers for a device: named after it (connz shows the device
// id as the user), placed in the App account, with the device's permissions only.
func (s *Service) userJWT(req *jwt.AuthorizationRequestClaims, device string, p Permissions) (string, error) {
	uc := jwt.NewUserClaims(req.UserNkey)
	uc.Name = device
	uc.Audience = AppAccount
	uc.Pub.Allow.Add(p.Publish...)
	uc.Sub.Allow.Add(p.Subscribe...)
	return uc.Encode(s.issuer)
}

func (s *Service) respond(req *jwt.AuthorizationRequestClaims, ujwt, refusal string) (string, error) {
	rc := jwt.NewAuthorizationResponseClaims(req.UserNkey)
	rc.Audience = req.Server.ID
	rc.Jwt = ujwt
	rc.Error = refusal
	return rc.Encode(s.issuer)
}

// authErrEvent is the part of the server's auth error event that names the client.
type authErrEvent struct {
	Client struct {
		User string `json:"user"`
		Name string `json:"name"`
		Host string `json:"host"`
	} `json:"client"`
	Reason string `json:"reason"`
}

// Violation counts a permissions violation a server reported (its log line names the client
// and, for a device, its id) and logs it.
func (s *Service) Violation(detail string) {
	s.mu.Lock()
	s.refused[PermissionViolation]++
	s.mu.Unlock()
	s.log.Warn("nats: permissions violation refused by the server", "detail", detail)
}

// onAuthError counts a connection a server refused at authentication and logs who it was.
func (s *Service) onAuthError(m *nats.Msg) {
	var ev authErrEvent
	if err := json.Unmarshal(m.Data, &ev); err != nil {
		return
	}
	s.server.Add(1)
	s.log.Info("nats: server refused a client", "user", ev.Client.User, "name", ev.Client.Name, "host", ev.Client.Host, "reason", ev.Reason)
}

// connzReply is the part of a server's CONNZ answer the kicker needs.
type connzReply struct {
	Server struct {
		ID string `json:"id"`
	} `json:"server"`
	Data struct {
		Conns []struct {
			CID  uint64 `json:"cid"`
			User string `json:"authorized_user"`
		} `json:"connections"`
	} `json:"data"`
}

// Kick closes every open connection of the given devices on every server of the cluster that
// answers on sys (a RoleSystem connection): it asks all servers for the devices' connections
// (by user for a few devices, all of the App account's for many), then asks each server to
// close them. It returns how many it closed.
func (s *Service) Kick(ctx context.Context, sys *nats.Conn, devices []string) (int, error) {
	want := map[string]bool{}
	for _, d := range devices {
		want[d] = true
	}
	var conns []conn
	var errs []error
	if len(devices) <= 16 {
		for _, d := range devices {
			c, err := findConns(ctx, sys, d)
			if err != nil {
				errs = append(errs, fmt.Errorf("device %s: %w", d, err))
			}
			conns = append(conns, c...)
		}
	} else {
		c, err := findConns(ctx, sys, "")
		if err != nil {
			errs = append(errs, err)
		}
		conns = c
	}
	closed := 0
	for _, c := range conns {
		if !want[c.user] {
			continue
		}
		body, _ := json.Marshal(map[string]uint64{"cid": c.cid})
		if _, err := sys.RequestWithContext(ctx, fmt.Sprintf(kickSubject, c.server), body); err != nil {
			errs = append(errs, fmt.Errorf("device %s: kick connection %d on %s: %w", c.user, c.cid, c.server, err))
			continue
		}
		closed++
		s.mu.Lock()
		s.refused[Kicked]++
		s.mu.Unlock()
		s.log.Warn("nats: revoked device disconnected", "device", c.user, "server", c.server, "cid", c.cid)
	}
	return closed, errors.Join(errs...)
}

type conn struct {
	server, user string
	cid          uint64
}

// findConns asks every server for the App account's connections whose user is device (all of
// them for ""): the servers answer one after another on one inbox; it gathers answers until
// none came for a short while.
func findConns(ctx context.Context, sys *nats.Conn, device string) ([]conn, error) {
	inbox := sys.NewRespInbox()
	ch := make(chan *nats.Msg, 64)
	sub, err := sys.ChanSubscribe(inbox, ch)
	if err != nil {
		return nil, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	req := map[string]any{"auth": true, "acc": AppAccount, "limit": 1 << 20}
	if device != "" {
		req["user"] = device
	}
	body, _ := json.Marshal(req)
	if err := sys.PublishRequest(connzSubject, inbox, body); err != nil {
		return nil, err
	}
	var out []conn
	wait := time.Second // for the first answer; then a little for the other servers'
	for {
		select {
		case <-ctx.Done():
			return out, ctx.Err()
		case <-time.After(wait):
			sort.Slice(out, func(i, j int) bool { return out[i].cid < out[j].cid })
			return out, nil
		case m := <-ch:
			var r connzReply
			if err := json.Unmarshal(m.Data, &r); err != nil {
				return out, fmt.Errorf("connz answer: %w", err)
			}
			for _, c := range r.Data.Conns {
				if device == "" || c.User == device {
					out = append(out, conn{server: r.Server.ID, user: c.User, cid: c.CID})
				}
			}
			wait = 100 * time.Millisecond
		}
	}
}
