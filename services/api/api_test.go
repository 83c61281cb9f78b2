package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/anchorline/anchorline/schemas/lookup"
)

// lockedBuffer is a log destination written from the server's goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func testServer(t *testing.T, d Deps) (*Client, *lockedBuffer) {
	t.Helper()
	logs := &lockedBuffer{}
	srv := httptest.NewServer(Handler(d, slog.New(slog.NewTextHandler(logs, nil))))
	t.Cleanup(srv.Close)
	return NewClient(srv.URL), logs
}

// The server maps dependency errors onto statuses and the client maps them back onto errors
// that callers test with errors.Is; a 5xx shows no internal text, and its request id leads to
// the logged cause.
func TestErrorsRoundTrip(t *testing.T) {
	var proofErr error
	c, logs := testServer(t, Deps{
		Proof: func(_ context.Context, dev string, seq uint64) ([]byte, error) {
			if proofErr != nil {
				return nil, proofErr
			}
			return fmt.Appendf(nil, `{"device":%q,"seq":%d}`, dev, seq), nil
		},
		Device: func(_ context.Context, id string) (DeviceInfo, error) {
			return DeviceInfo{}, fmt.Errorf("%w: device %s", lookup.ErrNotFound, id)
		},
		SubmitEvent: func(_ context.Context, e []byte) (Inclusion, error) {
			if e[0] == 0 {
				return Inclusion{}, fmt.Errorf("%w: unknown entry type", ErrRejected)
			}
			return Inclusion{Height: 7, LogIndex: 3}, nil
		},
		Ready: func(context.Context) error {
			return errors.Join(&UnavailableError{Service: "clickhouse", Err: errors.New("dial tcp 10.0.0.1:9000: connection refused")},
				&UnavailableError{Service: "ledger", Err: errors.New("EOF")})
		},
	})
	ctx := t.Context()

	b, err := c.Proof(ctx, "dev-1", 42)
	if err != nil || string(b) != `{"device":"dev-1","seq":42}` {
		t.Fatalf("proof: %s %v", b, err)
	}
	for _, tc := range []struct {
		err  error
		want error
		code int
		msg  string
	}{
		{fmt.Errorf("%w: batch not anchored", lookup.ErrNotAnchored), lookup.ErrNotAnchored, 409, `reading of device "dev-1" with seq 1 is stored but not anchored yet`},
		{fmt.Errorf("%w: no reading", lookup.ErrNotFound), lookup.ErrNotFound, 404, `no reading of device "dev-1" with seq 1`},
		{fmt.Errorf("%w: seq 1 is reserved", ErrBadRequest), ErrRejected, 400, "seq 1 is reserved"},
		{fmt.Errorf("%w: dial tcp: refused", ErrUnavailable), nil, 503, "unavailable; retry later"},
		{fmt.Errorf("query: %w", context.DeadlineExceeded), nil, 503, "did not answer in time"},
	} {
		proofErr = tc.err
		_, err := c.Proof(ctx, "dev-1", 1)
		var se *StatusError
		if !errors.As(err, &se) || se.Code != tc.code || !strings.Contains(se.Message, tc.msg) {
			t.Errorf("proof with %v: client got %v, want %d with %q", tc.err, err, tc.code, tc.msg)
			continue
		}
		if tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("proof with %v: %v is not %v", tc.err, err, tc.want)
		}
		if (tc.code >= 500) != (se.RequestID != "") {
			t.Errorf("proof with %v: request id %q on a %d", tc.err, se.RequestID, tc.code)
		}
	}

	proofErr = errors.New("disk on fire")
	_, err = c.Proof(ctx, "dev-1", 1)
	var se *StatusError
	switch {
	case !errors.As(err, &se) || se.Code != 500:
		t.Errorf("internal error: %v", err)
	case strings.Contains(err.Error(), "disk on fire"):
		t.Errorf("internal error text reached the client: %v", err)
	case !strings.Contains(err.Error(), se.RequestID):
		t.Errorf("client error does not show the request id: %v", err)
	case !strings.Contains(logs.String(), "request_id="+se.RequestID) || !strings.Contains(logs.String(), `err="disk on fire"`):
		t.Errorf("cause not logged under request id %s:\n%s", se.RequestID, logs)
	}

	if _, err := c.Device(ctx, "nope"); !errors.Is(err, lookup.ErrNotFound) || !strings.Contains(err.Error(), `device "nope" is not registered`) {
		t.Errorf("device: %v", err)
	}
	if inc, err := c.SubmitDeviceEvent(ctx, []byte{1}); err != nil || inc.Height != 7 || inc.LogIndex != 3 {
		t.Errorf("submit: %+v %v", inc, err)
	}
	if _, err := c.SubmitDeviceEvent(ctx, []byte{0}); !errors.Is(err, ErrRejected) || !strings.Contains(err.Error(), "unknown entry type") {
		t.Errorf("rejected submit: %v", err)
	}
	if _, err := c.SubmitDeviceEvent(ctx, nil); !errors.Is(err, ErrRejected) || !strings.Contains(err.Error(), "empty") {
		t.Errorf("empty submit: %v", err)
	}
	if _, err := c.SubmitDeviceEvent(ctx, make([]byte, MaxBodyBytes+1)); !errors.Is(err, ErrRejected) || !errors.As(err, &se) || se.Code != 413 {
		t.Errorf("oversize submit: %v", err)
	}
	err = c.Ready(ctx)
	if !errors.As(err, &se) || se.Code != 503 || se.Message == "" ||
		!strings.HasPrefix(se.Message, "not ready: clickhouse, ledger unavailable") || strings.Contains(err.Error(), "refused") {
		t.Errorf("ready: %v", err)
	}
}

func TestRoutes(t *testing.T) {
	c, _ := testServer(t, Deps{Ready: func(context.Context) error { return nil }})
	for _, tc := range []struct {
		method, path string
		code         int
		allow        string
	}{
		{"GET", "/healthz", 200, ""},
		{"HEAD", "/healthz", 200, ""},
		{"GET", "/readyz", 200, ""},
		{"GET", "/v1/readings/d/x", 400, ""},
		{"GET", "/v1/readings/d!/1", 400, ""},
		{"GET", "/v1/readings/d/1/./proof", 400, ""},
		{"GET", "/v1/batches/00", 400, ""},
		{"GET", "/v1/anchors/" + strings.Repeat("z", 32), 400, ""},
		{"GET", "/v1/readings/d/1/nope", 404, ""},
		{"GET", "/nowhere", 404, ""},
		{"GET", "/metrics", 404, ""}, // no Metrics handler
		{"POST", "/v1/readings/d/1/proof", 405, "GET, HEAD"},
		{"PATCH", "/v1/devices", 405, "POST"},
		{"DELETE", "/readyz", 405, "GET, HEAD"},
	} {
		req, err := http.NewRequestWithContext(t.Context(), tc.method, c.Base+tc.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.code || resp.Header.Get("Allow") != tc.allow {
			t.Errorf("%s %s: %d Allow %q, want %d Allow %q (%s)", tc.method, tc.path, resp.StatusCode, resp.Header.Get("Allow"), tc.code, tc.allow, body)
		}
		if resp.Header.Get(RequestIDHeader) == "" {
			t.Errorf("%s %s: no %s", tc.method, tc.path, RequestIDHeader)
		}
		var eb errorBody
		if resp.StatusCode >= 400 && tc.method != "HEAD" && (json.Unmarshal(body, &eb) != nil || eb.Error == "") {
			t.Errorf("%s %s: error body is not JSON with a message: %s", tc.method, tc.path, body)
		}
	}
}

// A request id the caller sets is used if it is safe to log; otherwise the server makes one.
func TestRequestID(t *testing.T) {
	c, _ := testServer(t, Deps{})
	for _, tc := range []struct {
		sent string
		kept bool
	}{
		{"trace-42.a_b", true},
		{"", false},
		{"two words", false},
		{strings.Repeat("x", 65), false},
	} {
		req, err := http.NewRequestWithContext(t.Context(), "GET", c.Base+"/healthz", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set(RequestIDHeader, tc.sent)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		got := resp.Header.Get(RequestIDHeader)
		if got == "" || (got == tc.sent) != tc.kept {
			t.Errorf("sent %q, answered %q; kept want %v", tc.sent, got, tc.kept)
		}
	}
}
