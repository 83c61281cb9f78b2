package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/anchorline/anchorline/schemas/lookup"
	"github.com/anchorline/anchorline/schemas/reading"
	"github.com/anchorline/anchorline/services/api/verifier"
)

// Inclusion says where the ledger put an entry.
type Inclusion struct {
	Height   uint64 `json:"height"`
	LogIndex uint64 `json:"log_index"`
}

// Status is the operator's view of a running system.
type Status struct {
	Ledger struct {
		ChainID string `json:"chain_id"`
		Height  uint64 `json:"height"`
		LogSize uint64 `json:"log_size"`
	} `json:"ledger"`
	Tables     *Tables     `json:"tables,omitempty"`
	Lag        *Lag        `json:"consumer_lag,omitempty"`
	LastAnchor *AnchorInfo `json:"last_anchor,omitempty"`
	Ingest     any         `json:"ingest,omitempty"`
	Anchoring  any         `json:"anchoring,omitempty"`
	Rules      any         `json:"rules,omitempty"` // the rules stage's counts, if it runs in this process
	Auth       any         `json:"auth,omitempty"`  // the auth callout service's counts, if it runs in this process
	// Erasures: the ledger's erase entries carried out in ClickHouse, and those pending.
	Erasures *Erasures `json:"erasures,omitempty"`
	Ready    string    `json:"ready"` // "ok" or the reason it is not
}

// Erasures is how far ClickHouse is with the ledger's erase entries (services/erasure).
type Erasures struct {
	Done     uint64 `json:"done"`
	Pending  uint64 `json:"pending"`
	Readings uint64 `json:"readings"` // readings erased
}

// Tables counts rows in ClickHouse.
type Tables struct {
	Readings          uint64 `json:"readings"`
	Rejected          uint64 `json:"rejected"`
	Batches           uint64 `json:"batches"`
	Anchors           uint64 `json:"anchors"`
	UnanchoredBatches uint64 `json:"unanchored_batches"`
	Duplicates        uint64 `json:"duplicate_readings"` // rows beyond one per (device_id, seq): at-least-once after a crash
	Anomalies         uint64 `json:"chain_breaks"`
}

// Lag is the backlog of the shared ingest consumer.
type Lag struct {
	Pending    uint64 `json:"pending"`     // not yet delivered to any worker
	AckPending uint64 `json:"ack_pending"` // delivered, not yet acknowledged
}

// AnchorInfo summarises one anchor.
type AnchorInfo struct {
	ID       string `json:"id"`
	Root     string `json:"root"`
	Height   uint64 `json:"height"`
	LogIndex uint64 `json:"log_index"`
	Batches  uint64 `json:"batches"`
	Readings uint64 `json:"readings"`
	TimeMs   uint64 `json:"time_ms"`
}

// DeviceInfo is a device's registry record.
type DeviceInfo struct {
	ID        string `json:"id"`
	Alg       string `json:"alg"`
	PublicKey string `json:"public_key"`
	Status    string `json:"status"`
	Height    uint64 `json:"height"` // ledger height of the last change
}

// MaxBodyBytes is the largest request body the server reads (POST /v1/devices takes one device
// event, a few hundred bytes); a larger body is refused with 413.
const MaxBodyBytes = 64 << 10

// RequestIDHeader carries the id the server gave a request, on every answer. A caller may set
// it on a request (1 to 64 characters of A-Z, a-z, 0-9, '.', '_', '-') to have the server use
// that id instead of a random one.
const RequestIDHeader = "X-Request-Id"

// submitTimeout bounds how long POST /v1/devices waits for the ledger to commit an entry.
const submitTimeout = 30 * time.Second

// Errors a dependency returns to choose the HTTP status; wrap them with %w. lookup.ErrNotFound
// (404), lookup.ErrNotAnchored (409) and ErrRejected (400) are also what the Client returns.
var (
	// ErrBadRequest: the request cannot be answered as asked (400). The error's text is shown to
	// the caller, so it must name what was wrong.
	ErrBadRequest = errors.New("bad request")
	// ErrUnavailable: a backing service (ClickHouse, the ledger) could not be reached (503). The
	// error's text is logged, never shown.
	ErrUnavailable = errors.New("backing service unavailable")
)

// UnavailableError is the failure of a named backing service (Deps.Ready returns them, joined):
// the server names the service in its answer and logs Err. It matches ErrUnavailable.
type UnavailableError struct {
	Service string // "clickhouse", "ledger", ...
	Err     error
}

func (e *UnavailableError) Error() string { return e.Service + ": " + e.Err.Error() }

// Unwrap returns ErrUnavailable and the cause.
func (e *UnavailableError) Unwrap() []error { return []error{ErrUnavailable, e.Err} }

// Deps are what the server calls. Every field is required except Metrics. The server validates
// path values before it calls a dependency: device ids match ^[A-Za-z0-9_-]{1,64}$. Errors
// choose the status as the sentinels above say; any other error is a 500 whose text is logged,
// never shown.
type Deps struct {
	Reading func(ctx context.Context, device string, seq uint64) (any, error)
	Batch   func(ctx context.Context, id [16]byte) (any, error)
	Anchor  func(ctx context.Context, id [16]byte) (any, error)
	Device  func(ctx context.Context, id string) (DeviceInfo, error)
	Proof   func(ctx context.Context, device string, seq uint64) ([]byte, error)
	// RangeProof is the range bundle (anchorline.range/v1) of a device's readings with seqs
	// in [from, to]; a range too large to answer at once is an error wrapping ErrBadRequest.
	RangeProof func(ctx context.Context, device string, from, to uint64) ([]byte, error)
	// EventProof is the event bundle (anchorline.event/v1) of a rule event.
	EventProof  func(ctx context.Context, id [16]byte) ([]byte, error)
	Trust       func(ctx context.Context) ([]byte, error)
	SubmitEvent func(ctx context.Context, entry []byte) (Inclusion, error)
	Status      func(ctx context.Context) (Status, error)
	Ready       func(ctx context.Context) error
	Metrics     http.Handler
	// Tokens, if set, are the clients that may read raw readings and proofs (Authorization:
	// Bearer <token>); without it those endpoints are open, as the others always are.
	Tokens *Tokens
	// Consent, if set with Tokens, says whether a token's audience may read a device's raw
	// readings and proofs (the ledger's consent in force; audience entry.AudienceOperator reads
	// every device) and the ledger height the answer is of. A refusal is a 403.
	Consent func(ctx context.Context, audience, device string) (bool, uint64, error)
}

// errorBody is the JSON shape of every error answer. RequestID is set on a 5xx: the server
// logged the cause under it.
type errorBody struct {
	Error     string `json:"error"`
	RequestID string `json:"request_id,omitempty"`
}

type route struct {
	method, pattern string
	handler         http.HandlerFunc
}

// Handler returns the API's routes. Every answer carries a RequestIDHeader. Every error answer
// is JSON {"error": "..."} whose message names what was wrong and how to fix it: 400 for a
// malformed path value or body, 404 for an unknown path or id, 405 (with Allow) for a wrong
// method, 409 for a reading not anchored yet, 413 for a body over MaxBodyBytes, 415 for a body
// that is not CBOR. A 5xx carries a fixed message and "request_id"; the cause is logged with it.
func Handler(d Deps, log *slog.Logger) http.Handler {
	s := &server{d: d, log: log}
	page := verifier.Handler().ServeHTTP // the browser verifier: /verify, from the same verifier code
	routes := []route{
		{"GET", "/healthz", s.healthz},
		{"GET", "/readyz", s.ready},
		{"GET", "/v1/readings/{device}/{seq}", s.authorized(s.reading)},
		{"GET", "/v1/readings/{device}/{seq}/proof", s.authorized(s.proof)},
		{"GET", "/v1/devices/{id}/proofs", s.authorized(s.rangeProof)},
		{"GET", "/v1/events/{id}/proof", s.authorized(s.eventProof)},
		{"GET", "/v1/batches/{id}", s.batch},
		{"GET", "/v1/anchors/{id}", s.anchor},
		{"GET", "/v1/devices/{id}", s.device},
		{"POST", "/v1/devices", s.submit},
		{"GET", "/v1/trust", s.trust},
		{"GET", "/v1/status", s.status},
		{"GET", verifier.PagePath, page},
		{"GET", verifier.AssetPrefix + "{file}", page},
	}
	if d.Metrics != nil {
		routes = append(routes, route{"GET", "/metrics", d.Metrics.ServeHTTP})
	}
	mux := http.NewServeMux()
	allowed := map[string][]string{}
	var patterns, listing []string
	for _, rt := range routes {
		mux.HandleFunc(rt.method+" "+rt.pattern, rt.handler)
		if _, ok := allowed[rt.pattern]; !ok {
			patterns = append(patterns, rt.pattern)
		}
		allowed[rt.pattern] = append(allowed[rt.pattern], rt.method)
		listing = append(listing, rt.method+" "+rt.pattern)
	}
	// A pattern without a method matches the other methods: 405. A GET route answers HEAD too.
	for _, p := range patterns {
		methods := slices.Clone(allowed[p])
		if slices.Contains(methods, http.MethodGet) {
			methods = append(methods, http.MethodHead)
		}
		slices.Sort(methods)
		allow := strings.Join(methods, ", ")
		mux.HandleFunc(p, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", allow)
			s.refuse(w, r, http.StatusMethodNotAllowed, fmt.Sprintf("method %s is not allowed on %s; allowed: %s", r.Method, r.URL.Path, allow))
		})
	}
	routesMsg := strings.Join(listing, ", ")
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.refuse(w, r, http.StatusNotFound, fmt.Sprintf("no route %s %s; the API serves %s", r.Method, r.URL.Path, routesMsg))
	})
	return s.withRequestID(s.cleanPaths(mux))
}

type server struct {
	d   Deps
	log *slog.Logger
}

type requestIDKey struct{}

// audienceKey holds the audience of the request's token (authorized).
type audienceKey struct{}

// consented lets a request on dev's raw readings or proofs through when its token's audience
// may read dev (Deps.Consent), or when the server has no tokens; otherwise it answers 403 (or
// 503 when the ledger cannot say) and returns false.
func (s *server) consented(w http.ResponseWriter, r *http.Request, dev string) bool {
	aud, ok := r.Context().Value(audienceKey{}).(string)
	if !ok || s.d.Consent == nil {
		return true
	}
	in, height, err := s.d.Consent(r.Context(), aud, dev)
	if err != nil {
		s.failServer(w, r, slog.LevelWarn, http.StatusServiceUnavailable, "the ledger's consent state cannot be read now", err)
		return false
	}
	if !in {
		s.refuse(w, r, http.StatusForbidden, fmt.Sprintf("audience %q has no consent in force for device %q at ledger height %d: the device's owner grants it (anchorline consent grant %s %s)", aud, dev, height, dev, aud))
		return false
	}
	return true
}

var validRequestID = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// withRequestID gives every request an id, in its context and in the answer's header.
func (s *server) withRequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get(RequestIDHeader)
		if !validRequestID.MatchString(id) {
			id = rand.Text()
		}
		w.Header().Set(RequestIDHeader, id)
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), requestIDKey{}, id)))
	})
}

func requestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

// cleanPaths refuses a path with an empty, "." or ".." segment, which ServeMux would otherwise
// answer with a redirect to the cleaned path (so /v1/readings//1 would become /v1/readings/1).
func (s *server) cleanPaths(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		clean := path.Clean("/" + p)
		if strings.HasSuffix(p, "/") && clean != "/" {
			clean += "/"
		}
		if p != clean {
			s.refuse(w, r, http.StatusBadRequest, fmt.Sprintf("path %q has an empty, \".\" or \"..\" segment; fill in every path value (for example /v1/readings/{device}/{seq})", p))
			return
		}
		next.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v) // the client went away; nothing to do
}

// refuse answers a 4xx with a message for the caller.
// authorized lets a request through to h only with a token the tokens file lists, if the
// server has one: the endpoints that return raw readings and proofs. A refusal is a 401 with
// WWW-Authenticate, logged with the client's address.
func (s *server) authorized(h http.HandlerFunc) http.HandlerFunc {
	if s.d.Tokens == nil {
		return h
	}
	return func(w http.ResponseWriter, r *http.Request) {
		token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		msg := "this endpoint needs a token: send Authorization: Bearer <token> (client commands: set http.token to the file holding it)"
		if ok && token != "" {
			aud, known, err := s.d.Tokens.Audience(token)
			if err != nil {
				s.log.Warn("api: the tokens file could not be read again; the tokens read before stay in force", "err", err)
			}
			if known {
				s.log.DebugContext(r.Context(), "api request authorized", "request_id", requestID(r.Context()), "audience", aud, "path", r.URL.Path)
				h(w, r.WithContext(context.WithValue(r.Context(), audienceKey{}, aud)))
				return
			}
			msg = "the token is not one the API's tokens file (http.tokens) lists: ask the operator for one (`anchorline api token`)"
		}
		s.log.Warn("api: request without a valid token refused", "request_id", requestID(r.Context()), "path", r.URL.Path, "remote", r.RemoteAddr)
		w.Header().Set("WWW-Authenticate", `Bearer realm="anchorline"`)
		s.refuse(w, r, http.StatusUnauthorized, msg)
	}
}

func (s *server) refuse(w http.ResponseWriter, r *http.Request, code int, msg string) {
	s.log.DebugContext(r.Context(), "api request refused", "request_id", requestID(r.Context()),
		"method", r.Method, "path", r.URL.Path, "status", code, "error", msg)
	writeJSON(w, code, errorBody{Error: msg})
}

// failServer answers a 5xx with a fixed message and the request id, and logs the cause with it
// at level.
func (s *server) failServer(w http.ResponseWriter, r *http.Request, level slog.Level, code int, msg string, err error) {
	id := requestID(r.Context())
	s.log.Log(r.Context(), level, "api request failed", "request_id", id,
		"method", r.Method, "path", r.URL.Path, "status", code, "err", err)
	writeJSON(w, code, errorBody{Error: msg + "; if this persists, give the operator the request_id (the server logged the cause under it)", RequestID: id})
}

// messages are what a route tells the caller when a dependency fails; empty fields get a
// generic message.
type messages struct {
	notFound    string // 404
	notAnchored string // 409
	rejected    string // appended to a 400's reason: what the route takes
	timeout     string // 503 when the request's time ran out
	internal    string // appended to a 500's message
}

// fail answers a dependency's error: its sentinel chooses the status; a 4xx shows the route's
// message, a 5xx a fixed one (see failServer).
func (s *server) fail(w http.ResponseWriter, r *http.Request, err error, m messages) {
	or := func(msg, generic string) string {
		if msg != "" {
			return msg
		}
		return generic
	}
	switch {
	case errors.Is(err, ErrBadRequest), errors.Is(err, ErrRejected):
		msg := err.Error()
		if m.rejected != "" {
			msg += "; " + m.rejected
		}
		s.refuse(w, r, http.StatusBadRequest, msg)
	case errors.Is(err, lookup.ErrNotFound):
		s.refuse(w, r, http.StatusNotFound, or(m.notFound, "not found"))
	case errors.Is(err, lookup.ErrNotAnchored):
		s.refuse(w, r, http.StatusConflict, or(m.notAnchored, "not anchored yet; retry in a few seconds"))
	case errors.Is(err, ErrUnavailable):
		s.failServer(w, r, slog.LevelError, http.StatusServiceUnavailable, "a backing service (ClickHouse or the ledger) is unavailable; retry later", err)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		s.failServer(w, r, slog.LevelError, http.StatusServiceUnavailable, or(m.timeout, "a backing service (ClickHouse or the ledger) did not answer in time; retry later"), err)
	default:
		msg := "internal error: the server could not answer this request"
		if m.internal != "" {
			msg += "; " + m.internal
		}
		s.failServer(w, r, slog.LevelError, http.StatusInternalServerError, msg, err)
	}
}

// The path values' checks; each message names the value and what it must be.

func pathDevice(r *http.Request, name string) (string, string) {
	id := r.PathValue(name)
	if !reading.ValidDeviceID(id) {
		return "", fmt.Sprintf("device id %q is not valid: use 1 to 64 characters of A-Z, a-z, 0-9, '_' and '-'", id)
	}
	return id, ""
}

func pathSeq(r *http.Request) (uint64, string) {
	s := r.PathValue("seq")
	seq, err := strconv.ParseUint(s, 10, 64)
	if errors.Is(err, strconv.ErrRange) {
		return 0, fmt.Sprintf("seq %q is out of range: the largest seq is %d", s, uint64(1<<64-1))
	}
	if err != nil {
		return 0, fmt.Sprintf("seq %q is not an unsigned decimal integer (for example /v1/readings/dev-1/42)", s)
	}
	return seq, ""
}

func pathID(r *http.Request, kind string) ([16]byte, string) {
	var id [16]byte
	s := r.PathValue("id")
	if len(s) != hex.EncodedLen(len(id)) {
		return id, fmt.Sprintf("%s id %q is not 32 hex characters (16 bytes), like 0123456789abcdef0123456789abcdef", kind, s)
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, fmt.Sprintf("%s id %q is not 32 hex characters (16 bytes): %v", kind, s, err)
	}
	return id, ""
}

func (s *server) deviceSeq(w http.ResponseWriter, r *http.Request) (string, uint64, bool) {
	dev, msg := pathDevice(r, "device")
	if msg != "" {
		s.refuse(w, r, http.StatusBadRequest, msg)
		return "", 0, false
	}
	seq, msg := pathSeq(r)
	if msg != "" {
		s.refuse(w, r, http.StatusBadRequest, msg)
		return "", 0, false
	}
	return dev, seq, true
}

func readingNotFound(dev string, seq uint64) string {
	return fmt.Sprintf("no reading of device %q with seq %d is stored: check the device id and seq; a published reading is stored within seconds unless it was rejected (see the rejected table)", dev, seq)
}

func (s *server) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *server) reading(w http.ResponseWriter, r *http.Request) {
	dev, seq, ok := s.deviceSeq(w, r)
	if !ok || !s.consented(w, r, dev) {
		return
	}
	v, err := s.d.Reading(r.Context(), dev, seq)
	if err != nil {
		s.fail(w, r, err, messages{notFound: readingNotFound(dev, seq)})
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func (s *server) proof(w http.ResponseWriter, r *http.Request) {
	dev, seq, ok := s.deviceSeq(w, r)
	if !ok || !s.consented(w, r, dev) {
		return
	}
	b, err := s.d.Proof(r.Context(), dev, seq)
	if err != nil {
		s.fail(w, r, err, messages{
			notFound:    readingNotFound(dev, seq),
			notAnchored: fmt.Sprintf("the reading of device %q with seq %d is stored but not anchored yet: anchors are committed every anchor.interval; retry in a few seconds (anchorline proof --wait 30s)", dev, seq),
		})
		return
	}
	// The bundle's exact bytes are its canonical encoding: send them untouched.
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}

// rangeProof answers GET /v1/devices/{id}/proofs?from=SEQ&to=SEQ: the range bundle of the
// device's readings with seqs from..to.
func (s *server) rangeProof(w http.ResponseWriter, r *http.Request) {
	dev, msg := pathDevice(r, "id")
	if msg != "" {
		s.refuse(w, r, http.StatusBadRequest, msg)
		return
	}
	if !s.consented(w, r, dev) {
		return
	}
	var bounds [2]uint64
	for i, name := range []string{"from", "to"} {
		v := r.URL.Query().Get(name)
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			s.refuse(w, r, http.StatusBadRequest, fmt.Sprintf("query parameter %s=%q: give a seq, an unsigned integer (GET /v1/devices/{id}/proofs?from=SEQ&to=SEQ)", name, v))
			return
		}
		bounds[i] = n
	}
	from, to := bounds[0], bounds[1]
	if from > to {
		s.refuse(w, r, http.StatusBadRequest, fmt.Sprintf("from=%d is after to=%d: the range is from..to, both included", from, to))
		return
	}
	if s.d.RangeProof == nil {
		s.refuse(w, r, http.StatusNotFound, "this server does not serve range proofs")
		return
	}
	b, err := s.d.RangeProof(r.Context(), dev, from, to)
	if err != nil {
		s.fail(w, r, err, messages{
			notFound:    fmt.Sprintf("no reading of device %q with a seq from %d to %d is stored: check the device id and the range", dev, from, to),
			notAnchored: fmt.Sprintf("a reading of device %q in %d..%d is stored but not anchored yet: %v; retry in a few seconds, or end the range before it", dev, from, to, err),
		})
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}

// eventProof answers GET /v1/events/{id}/proof: the event bundle of a rule event.
func (s *server) eventProof(w http.ResponseWriter, r *http.Request) {
	id, msg := pathID(r, "event")
	if msg != "" {
		s.refuse(w, r, http.StatusBadRequest, msg)
		return
	}
	b, err := s.d.EventProof(r.Context(), id)
	if err != nil {
		s.fail(w, r, err, messages{
			notFound:    fmt.Sprintf("no event %x is stored: an event id is the id of a message on iot.events.<rule>.<device> (or event_id in the events table)", id),
			notAnchored: fmt.Sprintf("a reading event %x used is stored but not anchored yet: anchors are committed every anchor.interval; retry in a few seconds (anchorline proof --event ID --wait 30s)", id),
		})
		return
	}
	var ev struct {
		Event struct {
			Device string `json:"device"`
		} `json:"event"`
	}
	if err := json.Unmarshal(b, &ev); err != nil {
		s.failServer(w, r, slog.LevelError, http.StatusInternalServerError, "the event bundle could not be read back", err)
		return
	}
	if !s.consented(w, r, ev.Event.Device) {
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}

func (s *server) batch(w http.ResponseWriter, r *http.Request) {
	id, msg := pathID(r, "batch")
	if msg != "" {
		s.refuse(w, r, http.StatusBadRequest, msg)
		return
	}
	v, err := s.d.Batch(r.Context(), id)
	if err != nil {
		s.fail(w, r, err, messages{notFound: fmt.Sprintf("no batch %x is stored: a batch id is the batch_id of a stored reading (GET /v1/readings/{device}/{seq})", id)})
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func (s *server) anchor(w http.ResponseWriter, r *http.Request) {
	id, msg := pathID(r, "anchor")
	if msg != "" {
		s.refuse(w, r, http.StatusBadRequest, msg)
		return
	}
	v, err := s.d.Anchor(r.Context(), id)
	if err != nil {
		s.fail(w, r, err, messages{notFound: fmt.Sprintf("no anchor %x is recorded: an anchor id is the anchor_id of an anchored reading or batch (GET /v1/batches/{id})", id)})
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func (s *server) device(w http.ResponseWriter, r *http.Request) {
	id, msg := pathDevice(r, "id")
	if msg != "" {
		s.refuse(w, r, http.StatusBadRequest, msg)
		return
	}
	v, err := s.d.Device(r.Context(), id)
	if err != nil {
		s.fail(w, r, err, messages{notFound: fmt.Sprintf("device %q is not registered on the ledger: register it with `anchorline device register`", id)})
		return
	}
	writeJSON(w, http.StatusOK, v)
}

const entryHelp = "POST /v1/devices takes one register or revoke entry: deterministic CBOR signed with the admin key, as `anchorline device register` sends it"

// readEntry reads a device event from the request body; it returns the status and message of a
// refusal, or the body.
func readEntry(w http.ResponseWriter, r *http.Request) ([]byte, int, string) {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != "application/cbor" && mt != "application/octet-stream") {
			return nil, http.StatusUnsupportedMediaType, fmt.Sprintf("Content-Type %q is not accepted: send the entry as application/cbor; %s", ct, entryHelp)
		}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return nil, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body is larger than %d KiB; %s (a few hundred bytes)", MaxBodyBytes>>10, entryHelp)
	case err != nil:
		return nil, http.StatusBadRequest, fmt.Sprintf("could not read the request body: %v", err)
	case len(body) == 0:
		return nil, http.StatusBadRequest, "request body is empty; " + entryHelp
	}
	return body, 0, ""
}

func (s *server) submit(w http.ResponseWriter, r *http.Request) {
	body, code, msg := readEntry(w, r)
	if msg != "" {
		s.refuse(w, r, code, msg)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), submitTimeout)
	defer cancel()
	inc, err := s.d.SubmitEvent(ctx, body)
	if err != nil {
		s.fail(w, r, err, messages{
			rejected: entryHelp,
			timeout:  fmt.Sprintf("the ledger did not commit the entry within %s; it may still be committed: send it again (sending an entry twice is harmless)", submitTimeout),
			internal: "sending the same entry again is harmless",
		})
		return
	}
	writeJSON(w, http.StatusOK, inc)
}

func (s *server) trust(w http.ResponseWriter, r *http.Request) {
	b, err := s.d.Trust(r.Context())
	if err != nil {
		s.fail(w, r, err, messages{})
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}

func (s *server) status(w http.ResponseWriter, r *http.Request) {
	st, err := s.d.Status(r.Context())
	if err != nil {
		s.fail(w, r, err, messages{})
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func (s *server) ready(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	if err := s.d.Ready(ctx); err != nil {
		msg := "not ready"
		if names := unavailable(err); len(names) > 0 {
			msg += ": " + strings.Join(names, ", ") + " unavailable"
		}
		// A probe asks every few seconds: a warning, not an error, each time.
		s.failServer(w, r, slog.LevelWarn, http.StatusServiceUnavailable, msg, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// unavailable returns the services named by the UnavailableErrors in err's tree.
func unavailable(err error) []string {
	var names []string
	var walk func(error)
	walk = func(err error) {
		switch e := err.(type) {
		case *UnavailableError:
			if !slices.Contains(names, e.Service) {
				names = append(names, e.Service)
			}
		case interface{ Unwrap() []error }:
			for _, x := range e.Unwrap() {
				walk(x)
			}
		case interface{ Unwrap() error }:
			walk(e.Unwrap())
		}
	}
	walk(err)
	return names
}
