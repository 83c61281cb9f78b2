package api

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"time"
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
	Ready      string      `json:"ready"` // "ok" or the reason it is not
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

// Errors a dependency returns to choose the HTTP status; wrap them with %w.
var (
	// ErrBadRequest maps to 400; ErrNotFound to 404; ErrNotAnchored to 409.
	ErrBadRequest = errors.New("bad request")
)

// Deps are what the server calls. Every field is required except Metrics and StatusExtra.
type Deps struct {
	Reading     func(ctx context.Context, device string, seq uint64) (any, error)
	Batch       func(ctx context.Context, id string) (any, error)
	Anchor      func(ctx context.Context, id string) (any, error)
	Device      func(ctx context.Context, id string) (DeviceInfo, error)
	Proof       func(ctx context.Context, device string, seq uint64) ([]byte, error)
	Trust       func(ctx context.Context) ([]byte, error)
	SubmitEvent func(ctx context.Context, entry []byte) (Inclusion, error)
	Status      func(ctx context.Context) (Status, error)
	Ready       func(ctx context.Context) error
	Metrics     http.Handler
}

// Handler returns the API's routes.
func Handler(d Deps, log *slog.Logger) http.Handler {
	s := &server{d: d, log: log}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", s.ready)
	if d.Metrics != nil {
		mux.Handle("GET /metrics", d.Metrics)
	}
	mux.HandleFunc("GET /v1/readings/{device}/{seq}", s.reading)
	mux.HandleFunc("GET /v1/readings/{device}/{seq}/proof", s.proof)
	mux.HandleFunc("GET /v1/batches/{id}", s.byID(d.Batch))
	mux.HandleFunc("GET /v1/anchors/{id}", s.byID(d.Anchor))
	mux.HandleFunc("GET /v1/devices/{id}", s.device)
	mux.HandleFunc("POST /v1/devices", s.submit)
	mux.HandleFunc("GET /v1/trust", s.trust)
	mux.HandleFunc("GET /v1/status", s.status)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no route "+r.Method+" "+r.URL.Path)
	})
	return mux
}

type server struct {
	d   Deps
	log *slog.Logger
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v) // the client went away; nothing to do
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, errorBody{Error: msg})
}

// fail maps an error to its status and logs server-side failures.
func (s *server) fail(w http.ResponseWriter, r *http.Request, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, ErrBadRequest), errors.Is(err, ErrRejected):
		code = http.StatusBadRequest
	case errors.Is(err, ErrNotFound):
		code = http.StatusNotFound
	case errors.Is(err, ErrNotAnchored):
		code = http.StatusConflict
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		code = http.StatusServiceUnavailable
	}
	if code >= 500 {
		s.log.ErrorContext(r.Context(), "api request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	writeError(w, code, err.Error())
}

func deviceSeq(r *http.Request) (string, uint64, error) {
	seq, err := strconv.ParseUint(r.PathValue("seq"), 10, 64)
	if err != nil {
		return "", 0, errors.Join(ErrBadRequest, errors.New("seq must be an unsigned integer"))
	}
	return r.PathValue("device"), seq, nil
}

func (s *server) reading(w http.ResponseWriter, r *http.Request) {
	dev, seq, err := deviceSeq(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	v, err := s.d.Reading(r.Context(), dev, seq)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func (s *server) proof(w http.ResponseWriter, r *http.Request) {
	dev, seq, err := deviceSeq(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	b, err := s.d.Proof(r.Context(), dev, seq)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	// The bundle's exact bytes are its canonical encoding: send them untouched.
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}

func (s *server) byID(get func(context.Context, string) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		v, err := get(r.Context(), r.PathValue("id"))
		if err != nil {
			s.fail(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, v)
	}
}

func (s *server) device(w http.ResponseWriter, r *http.Request) {
	v, err := s.d.Device(r.Context(), r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func (s *server) submit(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err != nil {
		s.fail(w, r, errors.Join(ErrBadRequest, err))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	inc, err := s.d.SubmitEvent(ctx, body)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, inc)
}

func (s *server) trust(w http.ResponseWriter, r *http.Request) {
	b, err := s.d.Trust(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}

func (s *server) status(w http.ResponseWriter, r *http.Request) {
	st, err := s.d.Status(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func (s *server) ready(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	if err := s.d.Ready(ctx); err != nil {
		writeError(w, http.StatusServiceUnavailable, "not ready: "+err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}
