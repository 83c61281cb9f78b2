package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func testServer(t *testing.T, d Deps) *Client {
	t.Helper()
	srv := httptest.NewServer(Handler(d, slog.New(slog.NewTextHandler(io.Discard, nil))))
	t.Cleanup(srv.Close)
	return NewClient(srv.URL)
}

// The server maps dependency errors onto statuses and the client maps them back onto errors
// that callers test with errors.Is.
func TestErrorsRoundTrip(t *testing.T) {
	var proofErr error
	c := testServer(t, Deps{
		Proof: func(_ context.Context, dev string, seq uint64) ([]byte, error) {
			if proofErr != nil {
				return nil, proofErr
			}
			return []byte(fmt.Sprintf(`{"device":%q,"seq":%d}`, dev, seq)), nil
		},
		Device: func(_ context.Context, id string) (DeviceInfo, error) {
			return DeviceInfo{}, fmt.Errorf("%w: device %s", ErrNotFound, id)
		},
		SubmitEvent: func(_ context.Context, e []byte) (Inclusion, error) {
			if len(e) == 0 {
				return Inclusion{}, fmt.Errorf("%w: empty entry", ErrRejected)
			}
			return Inclusion{Height: 7, LogIndex: 3}, nil
		},
		Ready: func(context.Context) error { return errors.New("clickhouse: connection refused") },
	})
	ctx := context.Background()

	b, err := c.Proof(ctx, "dev-1", 42)
	if err != nil || string(b) != `{"device":"dev-1","seq":42}` {
		t.Fatalf("proof: %s %v", b, err)
	}
	for _, tc := range []struct {
		err  error
		want error
	}{
		{fmt.Errorf("%w: batch not anchored", ErrNotAnchored), ErrNotAnchored},
		{fmt.Errorf("%w: no reading", ErrNotFound), ErrNotFound},
		{fmt.Errorf("%w: bad", ErrBadRequest), ErrRejected},
	} {
		proofErr = tc.err
		if _, err := c.Proof(ctx, "dev-1", 1); !errors.Is(err, tc.want) {
			t.Errorf("proof with %v: client got %v, want %v", tc.err, err, tc.want)
		}
	}
	proofErr = errors.New("disk on fire")
	if _, err := c.Proof(ctx, "dev-1", 1); err == nil || !strings.Contains(err.Error(), "500") || !strings.Contains(err.Error(), "disk on fire") {
		t.Errorf("internal error: %v", err)
	}
	if _, err := c.Device(ctx, "nope"); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "device nope") {
		t.Errorf("device: %v", err)
	}
	if inc, err := c.SubmitDeviceEvent(ctx, []byte{1}); err != nil || inc.Height != 7 || inc.LogIndex != 3 {
		t.Errorf("submit: %+v %v", inc, err)
	}
	if _, err := c.SubmitDeviceEvent(ctx, nil); !errors.Is(err, ErrRejected) {
		t.Errorf("empty submit: %v", err)
	}
	if err := c.Ready(ctx); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("ready: %v", err)
	}
}

func TestRoutes(t *testing.T) {
	c := testServer(t, Deps{Ready: func(context.Context) error { return nil }})
	for path, want := range map[string]int{
		"/healthz":              http.StatusOK,
		"/readyz":               http.StatusOK,
		"/v1/readings/d/x":      http.StatusBadRequest, // seq must be a number
		"/v1/readings/d/1/nope": http.StatusNotFound,
		"/nowhere":              http.StatusNotFound,
	} {
		resp, err := http.Get(c.Base + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s: %d, want %d (%s)", path, resp.StatusCode, want, body)
		}
		if resp.StatusCode >= 400 && !strings.Contains(string(body), `"error"`) {
			t.Errorf("GET %s: error body is not JSON with a message: %s", path, body)
		}
	}
}
