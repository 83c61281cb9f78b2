package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/anchorline/anchorline/schemas/lookup"
)

// Errors a Client returns for API answers that callers act on.
var (
	ErrRejected = errors.New("api: request rejected")
)

// Client talks to the HTTP API; client commands (device, proof, status, trust) use it.
type Client struct {
	Base  string // http://host:port or https://host:port
	HTTP  *http.Client
	Token string // sent as Authorization: Bearer, if set (readings and proofs may need one)
}

// NewClient returns a client for the API at base.
func NewClient(base string) *Client {
	return &Client{Base: base, HTTP: &http.Client{Timeout: 60 * time.Second}}
}

// StatusError is an error answer of the API: the request, its HTTP status, the server's message
// and, on a 5xx, the request id under which the server logged the cause. It unwraps to
// lookup.ErrNotFound (404), lookup.ErrNotAnchored (409) or ErrRejected (400, 413, 415, 422),
// so callers test it with errors.Is, and read the rest with errors.As.
type StatusError struct {
	Method, Path string
	Code         int
	Message      string
	RequestID    string
}

func (e *StatusError) Error() string {
	msg := fmt.Sprintf("api: %s %s: %d %s: %s", e.Method, e.Path, e.Code, http.StatusText(e.Code), e.Message)
	if e.RequestID != "" {
		msg += " (request id " + e.RequestID + ")"
	}
	return msg
}

// Unwrap returns the sentinel of the status, or nil.
func (e *StatusError) Unwrap() error {
	switch e.Code {
	case http.StatusNotFound:
		return lookup.ErrNotFound
	case http.StatusConflict:
		return lookup.ErrNotAnchored
	case http.StatusUnauthorized:
		return ErrUnauthorized
	case http.StatusForbidden:
		return ErrNoConsent
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnsupportedMediaType, http.StatusUnprocessableEntity:
		return ErrRejected
	}
	return nil
}

// statusError decodes an error answer; a body that is not the API's JSON (a proxy's page) is
// shown as text, shortened.
func statusError(method, path string, code int, body []byte) *StatusError {
	e := &StatusError{Method: method, Path: path, Code: code}
	var eb errorBody
	if json.Unmarshal(body, &eb) == nil && eb.Error != "" {
		e.Message, e.RequestID = eb.Error, eb.RequestID
		return e
	}
	const maxText = 512
	text := strings.TrimSpace(string(body))
	if len(text) > maxText {
		text = text[:maxText] + "..."
	}
	if text == "" {
		text = "(empty answer)"
	}
	e.Message = text
	return e
}

func (c *Client) do(ctx context.Context, method, path, contentType string, body []byte) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.Base+path, rd)
	if err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, fmt.Errorf("api: %s %s: %w (is `anchorline dev` or `anchorline api` running at %s?)", method, path, err, c.Base)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("api: %s %s: read: %w", method, path, err)
	}
	if resp.StatusCode/100 == 2 {
		return b, nil
	}
	return nil, statusError(method, path, resp.StatusCode, b)
}

func (c *Client) getJSON(ctx context.Context, path string, out any) error {
	b, err := c.do(ctx, http.MethodGet, path, "", nil)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("api: GET %s: %w", path, err)
	}
	return nil
}

// SubmitDeviceEvent posts a signed register or revoke entry (deterministic CBOR) and waits
// until the ledger has committed it.
func (c *Client) SubmitDeviceEvent(ctx context.Context, entry []byte) (Inclusion, error) {
	b, err := c.do(ctx, http.MethodPost, "/v1/devices", "application/cbor", entry)
	if err != nil {
		return Inclusion{}, err
	}
	var inc Inclusion
	if err := json.Unmarshal(b, &inc); err != nil {
		return Inclusion{}, fmt.Errorf("api: POST /v1/devices: %w", err)
	}
	return inc, nil
}

// Proof fetches the proof bundle of a reading, exactly as the server encoded it.
func (c *Client) Proof(ctx context.Context, device string, seq uint64) ([]byte, error) {
	return c.do(ctx, http.MethodGet, "/v1/readings/"+url.PathEscape(device)+"/"+strconv.FormatUint(seq, 10)+"/proof", "", nil)
}

// RangeProof fetches the range bundle of a device's readings with seqs from..to.
func (c *Client) RangeProof(ctx context.Context, device string, from, to uint64) ([]byte, error) {
	return c.do(ctx, http.MethodGet, fmt.Sprintf("/v1/devices/%s/proofs?from=%d&to=%d", url.PathEscape(device), from, to), "", nil)
}

// EventProof fetches the event bundle of a rule event (id: 32 hex characters).
func (c *Client) EventProof(ctx context.Context, id string) ([]byte, error) {
	return c.do(ctx, http.MethodGet, "/v1/events/"+url.PathEscape(id)+"/proof", "", nil)
}

// Trust fetches the trust file (chain id and validator set).
func (c *Client) Trust(ctx context.Context) ([]byte, error) {
	return c.do(ctx, http.MethodGet, "/v1/trust", "", nil)
}

// Status fetches the system status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	return s, c.getJSON(ctx, "/v1/status", &s)
}

// Device fetches a device's registry record.
func (c *Client) Device(ctx context.Context, id string) (DeviceInfo, error) {
	var d DeviceInfo
	return d, c.getJSON(ctx, "/v1/devices/"+url.PathEscape(id), &d)
}

// Ready returns nil when /readyz answers 200.
func (c *Client) Ready(ctx context.Context) error {
	_, err := c.do(ctx, http.MethodGet, "/readyz", "", nil)
	return err
}
