package verifier

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

//go:generate go run ./internal/wasmbuild -out dist

// files are the page (committed) and the built verifier (dist/, written by go generate; only
// its README is committed, so the directory always exists).
//
//go:embed page dist
var files embed.FS

// Paths the handler serves. Route both to it: PagePath and AssetPrefix+"{file}".
const (
	PagePath    = "/verify"
	AssetPrefix = "/verify/"
)

// TrustPath is where the page fetches the server's trust file when the person chooses it.
const TrustPath = "/v1/trust"

// The built verifier's files in dist/: the wasm gzip-compressed, and the support script of the
// Go that built it.
const (
	wasmGz   = "dist/verify.wasm.gz"
	wasmExec = "dist/wasm_exec.js"
)

// contentSecurityPolicy lets the page load only its own scripts, style and WebAssembly, and
// connect only to its own origin: the browser itself refuses any other request.
const contentSecurityPolicy = "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; " +
	"connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// immutable is the Cache-Control of an asset asked for by the version its page names: that
// URL's content never changes.
const immutable = "public, max-age=31536000, immutable"

// Handler serves the page at PagePath and its assets under AssetPrefix (verify.js, verify.css,
// wasm_exec.js, verify.wasm) to GET and HEAD. The page names each asset with ?v= and the first
// 16 hex digits of the SHA-256 of its bytes; asked for by that version an asset is cached as
// immutable, otherwise revalidated; every answer has an ETag. verify.wasm is sent gzip-encoded
// to clients that accept it (all browsers). Without the built verifier, PagePath answers 503
// with a page saying how to build it.
func Handler() http.Handler { return newSite(files) }

type asset struct {
	body    []byte
	ctype   string
	gzipped bool   // body is gzip-encoded
	version string // first 16 hex digits of the body's SHA-256
}

func newAsset(body []byte, ctype string, gzipped bool) *asset {
	sum := sha256.Sum256(body)
	return &asset{body: body, ctype: ctype, gzipped: gzipped, version: hex.EncodeToString(sum[:8])}
}

func (a *asset) etag() string { return `"` + a.version + `"` }

// site is the handler. Its files are read and hashed once, on the first request: building an
// API handler costs nothing until someone opens the page.
type site struct {
	fsys    fs.FS
	once    sync.Once
	page    *asset
	assets  map[string]*asset
	missing []string // the built files this binary lacks
	err     error    // the page's files are broken: a bug in this package, answered 500
}

func newSite(fsys fs.FS) *site { return &site{fsys: fsys} }

func (s *site) load() {
	s.assets = map[string]*asset{}
	for _, f := range []struct{ name, path, ctype string }{
		{"verify.js", "page/verify.js", "text/javascript; charset=utf-8"},
		{"verify.css", "page/verify.css", "text/css; charset=utf-8"},
		{"wasm_exec.js", wasmExec, "text/javascript; charset=utf-8"},
		{"verify.wasm", wasmGz, "application/wasm"},
	} {
		b, err := fs.ReadFile(s.fsys, f.path)
		switch {
		case errors.Is(err, fs.ErrNotExist) && strings.HasPrefix(f.path, "dist/"):
			s.missing = append(s.missing, "services/api/verifier/"+f.path)
			continue
		case err != nil:
			s.err = fmt.Errorf("verifier: %s: %w", f.path, err)
			return
		}
		s.assets[f.name] = newAsset(b, f.ctype, f.path == wasmGz)
	}
	name, data := "page/index.html", map[string]string{}
	if len(s.missing) > 0 {
		name, data = "page/unbuilt.html", map[string]string{"Missing": strings.Join(s.missing, ", ")}
	} else {
		for field, asset := range map[string]string{"JS": "verify.js", "CSS": "verify.css", "Exec": "wasm_exec.js", "Wasm": "verify.wasm"} {
			data[field] = "verify/" + asset + "?v=" + s.assets[asset].version
		}
		data["Trust"] = strings.TrimPrefix(TrustPath, "/") // relative, as the page is at /verify
	}
	t, err := template.ParseFS(s.fsys, name)
	if err != nil {
		s.err = fmt.Errorf("verifier: %s: %w", name, err)
		return
	}
	var page bytes.Buffer
	if err := t.Execute(&page, data); err != nil {
		s.err = fmt.Errorf("verifier: %s: %w", name, err)
		return
	}
	s.page = newAsset(page.Bytes(), "text/html; charset=utf-8", false)
}

func (s *site) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.once.Do(s.load)
	if s.err != nil {
		http.Error(w, s.err.Error(), http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	if r.URL.Path == PagePath {
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		if len(s.missing) > 0 {
			h.Set("Content-Type", s.page.ctype)
			h.Set("Cache-Control", "no-store")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write(s.page.body)
			return
		}
		h.Set("Cache-Control", "no-cache")
		serve(w, r, s.page)
		return
	}
	name, _ := strings.CutPrefix(r.URL.Path, AssetPrefix)
	a, ok := s.assets[name]
	if !ok || name == "" {
		msg := fmt.Sprintf("no file %s: the verifier page is %s", r.URL.Path, PagePath)
		if len(s.missing) > 0 {
			msg = fmt.Sprintf("no file %s: the browser verifier is not built into this binary (run go generate ./services/api/verifier, then build anchorline)", r.URL.Path)
		}
		http.Error(w, msg, http.StatusNotFound)
		return
	}
	if r.URL.Query().Get("v") == a.version {
		h.Set("Cache-Control", immutable)
	} else {
		h.Set("Cache-Control", "no-cache")
	}
	if a.gzipped {
		h.Add("Vary", "Accept-Encoding")
		if !acceptsGzip(r.Header.Values("Accept-Encoding")) {
			serveGunzipped(w, r, a)
			return
		}
		h.Set("Content-Encoding", "gzip")
	}
	serve(w, r, a)
}

// serve answers with a's body, its ETag, conditional requests and ranges.
func serve(w http.ResponseWriter, r *http.Request, a *asset) {
	w.Header().Set("Content-Type", a.ctype)
	w.Header().Set("ETag", a.etag())
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.body))
}

// serveGunzipped streams a gzip-encoded asset decoded, for a client that does not accept gzip;
// without ranges, as its length is not known before it is decoded.
func serveGunzipped(w http.ResponseWriter, r *http.Request, a *asset) {
	etag := `"` + a.version + `-identity"`
	w.Header().Set("Content-Type", a.ctype)
	w.Header().Set("ETag", etag)
	if inm := r.Header.Get("If-None-Match"); inm != "" && (inm == "*" || strings.Contains(inm, etag)) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	zr, err := gzip.NewReader(bytes.NewReader(a.body))
	if err != nil {
		http.Error(w, "verifier: the embedded wasm is not gzip: rebuild it (go generate ./services/api/verifier)", http.StatusInternalServerError)
		return
	}
	if r.Method == http.MethodHead {
		return
	}
	_, _ = io.Copy(w, zr) // the client went away, or the embedded file is corrupt: nothing to do
}

// acceptsGzip reports whether Accept-Encoding values allow gzip (RFC 9110 12.5.3): gzip, or *,
// listed with a non-zero weight.
func acceptsGzip(values []string) bool {
	star, gz := false, -1
	for _, v := range values {
		for _, part := range strings.Split(v, ",") {
			coding, params, _ := strings.Cut(strings.TrimSpace(part), ";")
			q := 1.0
			if k, val, ok := strings.Cut(strings.TrimSpace(params), "="); ok && strings.TrimSpace(k) == "q" {
				if f, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil {
					q = f
				}
			}
			switch strings.ToLower(strings.TrimSpace(coding)) {
			case "gzip", "x-gzip":
				gz = 0
				if q > 0 {
					gz = 1
				}
			case "*":
				star = q > 0
			}
		}
	}
	return gz == 1 || gz == -1 && star
}
