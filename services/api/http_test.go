package api_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/anchorline/anchorline/internal/await"
	"github.com/anchorline/anchorline/internal/chserver"
	"github.com/anchorline/anchorline/schemas/entry"
	"github.com/anchorline/anchorline/schemas/lookup"
	"github.com/anchorline/anchorline/schemas/reading"
	"github.com/anchorline/anchorline/schemas/reading/connect"
	"github.com/anchorline/anchorline/services/api"
	"github.com/anchorline/anchorline/services/config"
	"github.com/anchorline/anchorline/services/stack"
)

// logBuffer collects a logger's JSON lines; the server writes to it from many goroutines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// records returns the logged records that carry request_id id.
func (b *logBuffer) records(t *testing.T, id string) []map[string]any {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(b.buf.Bytes()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("log line is not JSON: %v: %s", err, sc.Bytes())
		}
		if rec["request_id"] == id {
			out = append(out, rec)
		}
	}
	return out
}

// devStack is a running dev stack whose ClickHouse the test can stop.
type devStack struct {
	base       string       // https://..., dev's API
	http       *http.Client // trusts dev's CA
	dev        *stack.Dev
	clickhouse *chserver.Server
	logs       *logBuffer
	natsURL    string
	token      string // sent by do, if set
}

func startStack(t *testing.T, ctx context.Context, tweak ...func(*config.Config)) *devStack {
	t.Helper()
	dir := t.TempDir()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	ch, err := chserver.Start(ctx, filepath.Join(dir, "clickhouse"), "", quiet)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ch.Stop() })
	logs := &logBuffer{}
	cfg := config.Default()
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.ClickHouse.Addr = ch.Addr
	cfg.ClickHouse.Database = "api_errors"
	cfg.NATS.URL = "nats://127.0.0.1:0" // port 0: dev.Config() says which
	cfg.HTTP.Addr = "127.0.0.1:0"
	cfg.Ledger.RPC = "" // the API uses the in-process client
	cfg.Ledger.AdminKey = filepath.Join(dir, "admin.key")
	cfg.Anchor.Interval = time.Hour // nothing is anchored, so a stored reading's proof is 409
	cfg.Ingest.FlushAge = 100 * time.Millisecond
	for _, f := range tweak {
		f(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	d, err := stack.StartDev(ctx, cfg, slog.New(slog.NewJSONHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Stop(); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	return &devStack{base: d.APIClient().Base, http: d.APIClient().HTTP, dev: d, clickhouse: ch, logs: logs, natsURL: d.Config().NATS.URL}
}

// storeReading registers a device, publishes one reading of it and waits until the API has it.
func (s *devStack) storeReading(t *testing.T, ctx context.Context, id string) map[string]any {
	t.Helper()
	key, err := reading.GenerateKey(reading.Ed25519)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := entry.NewRegister(s.dev.AdminKey, id, key.Public(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	client := s.dev.APIClient()
	if _, err := client.SubmitDeviceEvent(ctx, ev); err != nil {
		t.Fatalf("register %s: %v", id, err)
	}
	dev := reading.Device{ID: id, Key: key, Now: time.Now}
	raw, err := dev.Next([]reading.Metric{{Name: "temp", Value: 21.5}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	opts, err := connect.Options(id, key) // the device connects as itself
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(s.natsURL, append(s.dev.NATSTLS(), opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	msg := nats.NewMsg(reading.Subject(id))
	msg.Data = raw
	msg.Header.Set(jetstream.MsgIDHeader, reading.MsgID(id, dev.Seq))
	if _, err := js.PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}
	var view map[string]any
	await.Until(t, ctx, "reading stored", func() (bool, string) {
		resp := s.do(t, ctx, http.MethodGet, s.base+"/v1/readings/"+id+"/1", "", nil)
		if resp.code != http.StatusOK {
			return false, resp.String()
		}
		return json.Unmarshal(resp.body, &view) == nil, resp.String()
	})
	return view
}

type response struct {
	method, url string
	code        int
	header      http.Header
	body        []byte
}

func (r response) String() string {
	return r.method + " " + r.url + " -> " + r.header.Get("Content-Type") + " " + http.StatusText(r.code) + " " + string(r.body)
}

func (s *devStack) do(t *testing.T, ctx context.Context, method, url, contentType string, body io.Reader) response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if s.token != "" {
		req.Header.Set("Authorization", "Bearer "+s.token)
	}
	resp, err := s.http.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read: %v", method, url, err)
	}
	return response{method: method, url: url, code: resp.StatusCode, header: resp.Header, body: b}
}

// errorAnswer decodes an error answer strictly: a JSON object with "error" and, only on a 5xx,
// "request_id".
type errorAnswer struct {
	Error     string `json:"error"`
	RequestID string `json:"request_id"`
}

func decodeError(t *testing.T, r response) errorAnswer {
	t.Helper()
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s: Content-Type %q, want application/json", r, ct)
	}
	dec := json.NewDecoder(bytes.NewReader(r.body))
	dec.DisallowUnknownFields()
	var e errorAnswer
	if err := dec.Decode(&e); err != nil {
		t.Errorf("%s: not the error shape: %v", r, err)
	}
	if e.Error == "" {
		t.Errorf("%s: empty error message", r)
	}
	return e
}

// chunked hides a body's length, so the client sends it chunked, without Content-Length.
type chunked struct{ io.Reader }

// TestHTTPErrors drives the API of a running dev stack (private ClickHouse, embedded NATS, the
// in-process ledger) with bad requests of every kind and checks each answer's status, JSON shape
// and message; then it stops ClickHouse and checks that a 5xx names no internal error and
// carries a request id under which the server logged the cause.
func TestHTTPErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	s := startStack(t, ctx)
	view := s.storeReading(t, ctx, "dev-1")
	batchID, _ := view["batch_id"].(string)
	if len(batchID) != 32 {
		t.Fatalf("reading view without a batch id: %v", view)
	}
	// Ingest writes a batch's readings before its batch record: wait for the record too.
	await.Until(t, ctx, "batch record stored", func() (bool, string) {
		resp := s.do(t, ctx, http.MethodGet, s.base+"/v1/batches/"+batchID, "", nil)
		return resp.code == http.StatusOK, resp.String()
	})

	big := bytes.Repeat([]byte{0xa0}, api.MaxBodyBytes+1)
	for _, tc := range []struct {
		method, path string
		contentType  string
		body         []byte
		hideLength   bool
		code         int
		msg          []string // substrings of the message, in order
		allow        string
	}{
		// Well-formed requests, for contrast.
		{method: "GET", path: "/healthz", code: 200},
		{method: "GET", path: "/readyz", code: 200},
		{method: "GET", path: "/metrics", code: 200},
		{method: "GET", path: "/v1/status", code: 200},
		{method: "GET", path: "/v1/trust", code: 200},
		{method: "GET", path: "/v1/devices/dev-1", code: 200},
		{method: "GET", path: "/v1/readings/dev-1/1", code: 200},
		{method: "GET", path: "/v1/batches/" + batchID, code: 200},
		{method: "HEAD", path: "/v1/devices/dev-1", code: 200},

		// Malformed path values.
		{method: "GET", path: "/v1/readings/dev!1/1", code: 400, msg: []string{`device id "dev!1"`, "A-Z, a-z, 0-9"}},
		{method: "GET", path: "/v1/readings/" + strings.Repeat("d", 65) + "/1", code: 400, msg: []string{"device id", "1 to 64"}},
		{method: "GET", path: "/v1/readings/dev%2F1/1", code: 400, msg: []string{`device id "dev/1"`}},
		{method: "GET", path: "/v1/readings/dev-1/abc", code: 400, msg: []string{`seq "abc"`, "unsigned decimal integer"}},
		{method: "GET", path: "/v1/readings/dev-1/-1", code: 400, msg: []string{`seq "-1"`, "unsigned decimal integer"}},
		{method: "GET", path: "/v1/readings/dev-1/18446744073709551616", code: 400, msg: []string{`seq "18446744073709551616"`, "out of range", "18446744073709551615"}},
		{method: "GET", path: "/v1/readings/dev-1/x/proof", code: 400, msg: []string{`seq "x"`}},
		{method: "GET", path: "/v1/readings/d%20v/1/proof", code: 400, msg: []string{`device id "d v"`}},
		{method: "GET", path: "/v1/readings//1", code: 400, msg: []string{"empty", "segment"}},
		{method: "GET", path: "/v1/batches/xyz", code: 400, msg: []string{`batch id "xyz"`, "32 hex"}},
		{method: "GET", path: "/v1/batches/" + batchID[:31], code: 400, msg: []string{"batch id", "32 hex"}},
		{method: "GET", path: "/v1/batches/" + strings.Repeat("g", 32), code: 400, msg: []string{"batch id", "32 hex"}},
		{method: "GET", path: "/v1/anchors/12", code: 400, msg: []string{`anchor id "12"`, "32 hex"}},
		{method: "GET", path: "/v1/devices/no%20such", code: 400, msg: []string{`device id "no such"`}},

		// Unknown ids.
		{method: "GET", path: "/v1/readings/dev-1/99", code: 404, msg: []string{`no reading of device "dev-1" with seq 99`}},
		{method: "GET", path: "/v1/readings/nobody/1", code: 404, msg: []string{`no reading of device "nobody" with seq 1`}},
		{method: "GET", path: "/v1/readings/dev-1/99/proof", code: 404, msg: []string{`no reading of device "dev-1" with seq 99`}},
		{method: "GET", path: "/v1/readings/dev-1/1/proof", code: 409, msg: []string{`reading of device "dev-1" with seq 1`, "not anchored yet", "retry"}},
		{method: "GET", path: "/v1/batches/" + strings.Repeat("0", 32), code: 404, msg: []string{"no batch " + strings.Repeat("0", 32)}},
		{method: "GET", path: "/v1/anchors/" + strings.Repeat("0", 32), code: 404, msg: []string{"no anchor " + strings.Repeat("0", 32)}},
		{method: "GET", path: "/v1/devices/nobody", code: 404, msg: []string{`device "nobody" is not registered`, "anchorline device register"}},

		// Wrong methods.
		{method: "POST", path: "/v1/readings/dev-1/1", code: 405, msg: []string{"POST", "/v1/readings/dev-1/1", "GET"}, allow: "GET, HEAD"},
		{method: "DELETE", path: "/v1/devices/dev-1", code: 405, msg: []string{"DELETE"}, allow: "GET, HEAD"},
		{method: "GET", path: "/v1/devices", code: 405, msg: []string{"GET", "/v1/devices", "POST"}, allow: "POST"},
		{method: "PUT", path: "/v1/status", code: 405, allow: "GET, HEAD"},
		{method: "POST", path: "/healthz", code: 405, allow: "GET, HEAD"},

		// Unknown paths.
		{method: "GET", path: "/nowhere", code: 404, msg: []string{"no route", "/nowhere", "/v1/readings/{device}/{seq}"}},
		{method: "GET", path: "/v1/readings/dev-1", code: 404, msg: []string{"no route"}},
		{method: "GET", path: "/v1/readings/dev-1/1/proof/x", code: 404, msg: []string{"no route"}},

		// Bodies.
		{method: "POST", path: "/v1/devices", contentType: "application/cbor", code: 400, msg: []string{"empty", "register or revoke entry"}},
		{method: "POST", path: "/v1/devices", contentType: "application/cbor", body: []byte("not cbor"), code: 400, msg: []string{"rejected"}},
		{method: "POST", path: "/v1/devices", contentType: "application/json", body: []byte(`{"type":"register"}`), code: 415, msg: []string{"application/json", "application/cbor"}},
		{method: "POST", path: "/v1/devices", contentType: "application/cbor", body: big, code: 413, msg: []string{"64 KiB"}},
		{method: "POST", path: "/v1/devices", contentType: "application/cbor", body: big, hideLength: true, code: 413, msg: []string{"64 KiB"}},
	} {
		var body io.Reader
		if tc.body != nil {
			body = bytes.NewReader(tc.body)
			if tc.hideLength {
				body = chunked{body}
			}
		}
		r := s.do(t, ctx, tc.method, s.base+tc.path, tc.contentType, body)
		t.Log(r)
		if r.code != tc.code {
			t.Errorf("%s: want %d", r, tc.code)
			continue
		}
		if r.header.Get("X-Request-Id") == "" {
			t.Errorf("%s: no X-Request-Id header", r)
		}
		if tc.allow != "" && r.header.Get("Allow") != tc.allow {
			t.Errorf("%s: Allow %q, want %q", r, r.header.Get("Allow"), tc.allow)
		}
		if tc.code < 400 || tc.method == "HEAD" {
			continue
		}
		e := decodeError(t, r)
		if e.RequestID != "" {
			t.Errorf("%s: a 4xx names no request id", r)
		}
		rest := e.Error
		for _, m := range tc.msg {
			i := strings.Index(rest, m)
			if i < 0 {
				t.Errorf("%s: message lacks %q (in order)", r, m)
				break
			}
			rest = rest[i+len(m):]
		}
	}

	// ClickHouse fails: the server answers with a stable message and a request id, and logs the
	// cause under that id.
	if err := s.clickhouse.Stop(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path string
		code int
		msg  string
	}{
		{"/v1/readings/dev-1/1", http.StatusServiceUnavailable, "unavailable"},
		{"/v1/batches/" + batchID, http.StatusServiceUnavailable, "unavailable"},
		{"/v1/status", http.StatusServiceUnavailable, "unavailable"},
		{"/readyz", http.StatusServiceUnavailable, "not ready: clickhouse"},
	} {
		r := s.do(t, ctx, http.MethodGet, s.base+tc.path, "", nil)
		t.Log(r)
		if r.code != tc.code {
			t.Errorf("%s: want %d", r, tc.code)
			continue
		}
		e := decodeError(t, r)
		if !strings.Contains(e.Error, tc.msg) {
			t.Errorf("%s: message lacks %q", r, tc.msg)
		}
		for _, leak := range []string{s.clickhouse.Addr, "dial", "refused", "EOF", "clickhouse-go", "code:"} {
			if strings.Contains(string(r.body), leak) {
				t.Errorf("%s: internal error text %q leaked", r, leak)
			}
		}
		id := r.header.Get("X-Request-Id")
		if id == "" || e.RequestID != id {
			t.Errorf("%s: request id in header %q and body %q", r, id, e.RequestID)
			continue
		}
		recs := s.logs.records(t, id)
		if len(recs) == 0 {
			t.Errorf("%s: nothing logged under request id %s", r, id)
			continue
		}
		if rec := recs[len(recs)-1]; (rec["level"] != "ERROR" && rec["level"] != "WARN") || rec["err"] == "" || rec["err"] == nil {
			t.Errorf("%s: logged %v, want an ERROR or WARN record with the cause", r, rec)
		}
	}

	// The client shows the server's message and, for a 5xx, the request id.
	client := s.dev.APIClient()
	_, err := client.Status(ctx)
	var se *api.StatusError
	if !errors.As(err, &se) || se.Code != http.StatusServiceUnavailable || se.RequestID == "" ||
		!strings.Contains(err.Error(), se.Message) || !strings.Contains(err.Error(), se.RequestID) {
		t.Errorf("client status error: %v (%+v)", err, se)
	}
}

// TestTokens: with http.tokens set, raw readings and proofs need a listed token (401 with
// WWW-Authenticate otherwise, for a missing, malformed or unknown one), the other endpoints stay
// public, an operator's token reads every device while another audience reads only the devices
// whose owners consent (403 otherwise, until a grant; again after a withdrawal), and a token
// removed from the file stops working without a restart.
func TestTokens(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	token, line, err := api.NewToken(entry.AudienceOperator)
	if err != nil {
		t.Fatal(err)
	}
	other, otherLine, _ := api.NewToken("analysts")
	tokens := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(tokens, []byte("# audience sha256\n"+line+"\n"+otherLine+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := startStack(t, ctx, func(c *config.Config) { c.HTTP.Tokens = tokens })
	s.token = token
	s.storeReading(t, ctx, "tok-1")

	paths := []string{"/v1/readings/tok-1/1", "/v1/readings/tok-1/1/proof"}
	for _, tc := range []struct {
		name, token string
	}{{"no token", ""}, {"unknown token", "alt_nope"}, {"hash instead of token", strings.Fields(line)[1]}} {
		s.token = tc.token
		for _, p := range paths {
			r := s.do(t, ctx, http.MethodGet, s.base+p, "", nil)
			if r.code != http.StatusUnauthorized || !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") || !strings.Contains(string(r.body), "token") {
				t.Errorf("%s: GET %s: %s, want 401 with WWW-Authenticate and a message about the token", tc.name, p, r)
			}
		}
	}
	s.token = ""
	for _, p := range []string{"/healthz", "/readyz", "/v1/trust", "/v1/devices/tok-1", "/v1/status"} {
		if r := s.do(t, ctx, http.MethodGet, s.base+p, "", nil); r.code != http.StatusOK {
			t.Errorf("GET %s without a token: %s, want 200", p, r)
		}
	}
	// Through the client: the reading with either token; the proof is not anchored yet (409),
	// which means the token was let through.
	c := s.dev.APIClient()
	if _, err := c.Proof(ctx, "tok-1", 1); !errors.Is(err, api.ErrUnauthorized) {
		t.Fatalf("proof without a token: %v, want ErrUnauthorized", err)
	}
	c.Token = token
	if _, err := c.Proof(ctx, "tok-1", 1); !errors.Is(err, lookup.ErrNotAnchored) {
		t.Fatalf("proof with the operator's token: %v, want ErrNotAnchored (the interval is an hour)", err)
	}
	// The analysts read tok-1 only while its owner's consent is in force.
	c.Token = other
	analysts := func(want error) {
		t.Helper()
		await.Until(t, ctx, fmt.Sprintf("the analysts' proof of tok-1 answers %v", want), func() (bool, string) {
			_, err := c.Proof(ctx, "tok-1", 1)
			return errors.Is(err, want), fmt.Sprint(err)
		})
		if _, err := c.RangeProof(ctx, "tok-1", 1, 1); !errors.Is(err, want) {
			t.Fatalf("the analysts' range proof of tok-1: %v, want %v", err, want)
		}
	}
	analysts(api.ErrNoConsent)
	owner, err := reading.GenerateKey(reading.Ed25519)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for _, e := range []func() ([]byte, error){
		func() ([]byte, error) { return entry.NewOwner(s.dev.AdminKey, owner, entry.OpBind, "tok-1", now) },
		func() ([]byte, error) { return entry.NewConsent(owner, entry.OpGrant, "tok-1", "analysts", now) },
	} {
		b, err := e()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.dev.Ledger.Submit(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	analysts(lookup.ErrNotAnchored)
	withdraw, err := entry.NewConsent(owner, entry.OpWithdraw, "tok-1", "analysts", now.Add(time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.dev.Ledger.Submit(ctx, withdraw); err != nil {
		t.Fatal(err)
	}
	analysts(api.ErrNoConsent)
	// The analysts' token goes from the file: refused within about a second.
	if err := os.WriteFile(tokens, []byte(line+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	await.Until(t, ctx, "the removed token refused", func() (bool, string) {
		_, err := c.Proof(ctx, "tok-1", 1)
		return errors.Is(err, api.ErrUnauthorized), fmt.Sprint(err)
	})
	c.Token = token
	if _, err := c.Proof(ctx, "tok-1", 1); !errors.Is(err, lookup.ErrNotAnchored) {
		t.Fatalf("the remaining token: %v", err)
	}
}
