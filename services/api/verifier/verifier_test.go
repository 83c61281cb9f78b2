package verifier

import (
	"bytes"
	"compress/gzip"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"testing/fstest"
)

// pageFiles are the committed page files, without the built verifier.
func pageFiles(t *testing.T) fstest.MapFS {
	t.Helper()
	m := fstest.MapFS{}
	err := fs.WalkDir(files, "page", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(files, p)
		m[p] = &fstest.MapFile{Data: b}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func gz(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func get(h http.Handler, path string, header ...string) *httptest.ResponseRecorder {
	req := httptest.NewRequest("GET", path, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w
}

// TestUnbuilt: a binary built without the verifier answers /verify with a page that says how
// to build it, and its wasm with a 404 that says the same.
func TestUnbuilt(t *testing.T) {
	h := newSite(pageFiles(t))
	w := get(h, PagePath)
	if w.Code != http.StatusServiceUnavailable || !strings.HasPrefix(w.Header().Get("Content-Type"), "text/html") {
		t.Fatalf("GET %s without the built verifier: %d %s, want 503 with an HTML page", PagePath, w.Code, w.Header().Get("Content-Type"))
	}
	for _, want := range []string{"go generate ./services/api/verifier", "go tool task build", "services/api/verifier/dist/verify.wasm.gz", "anchorline verify FILE --trust TRUSTFILE"} {
		if !strings.Contains(w.Body.String(), want) {
			t.Errorf("the page does not say %q:\n%s", want, w.Body)
		}
	}
	if w := get(h, AssetPrefix+"verify.wasm"); w.Code != http.StatusNotFound || !strings.Contains(w.Body.String(), "go generate ./services/api/verifier") {
		t.Errorf("GET verify.wasm without the built verifier: %d %q", w.Code, w.Body)
	}
	if w := get(h, AssetPrefix+"verify.js"); w.Code != http.StatusOK {
		t.Errorf("GET verify.js: %d", w.Code)
	}
}

// TestAssets: the page names each asset by the hash of its bytes; by that version an asset is
// cached as immutable, otherwise revalidated by its ETag; the wasm goes gzip-encoded to those
// that accept gzip and decoded to the others.
func TestAssets(t *testing.T) {
	wasm := bytes.Repeat([]byte("\x00asm not really"), 1000)
	fsys := pageFiles(t)
	fsys[wasmGz] = &fstest.MapFile{Data: gz(t, wasm)}
	fsys[wasmExec] = &fstest.MapFile{Data: []byte("// wasm_exec.js")}
	h := newSite(fsys)

	page := get(h, PagePath)
	if page.Code != http.StatusOK || page.Header().Get("Cache-Control") != "no-cache" || page.Header().Get("ETag") == "" {
		t.Fatalf("GET %s: %d, Cache-Control %q, ETag %q", PagePath, page.Code, page.Header().Get("Cache-Control"), page.Header().Get("ETag"))
	}
	if csp := page.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "connect-src 'self'") || !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("Content-Security-Policy %q", csp)
	}
	if w := get(h, PagePath, "If-None-Match", page.Header().Get("ETag")); w.Code != http.StatusNotModified {
		t.Errorf("GET %s If-None-Match its ETag: %d, want 304", PagePath, w.Code)
	}
	for _, name := range []string{"verify.js", "verify.css", "wasm_exec.js", "verify.wasm"} {
		a := h.assets[name]
		url := "verify/" + name + "?v=" + a.version
		if !strings.Contains(page.Body.String(), url) {
			t.Errorf("the page does not name %s", url)
		}
		w := get(h, "/"+url, "Accept-Encoding", "gzip, deflate, br")
		if w.Code != http.StatusOK || w.Header().Get("Cache-Control") != immutable || w.Header().Get("ETag") != a.etag() {
			t.Errorf("GET /%s: %d, Cache-Control %q, ETag %q", url, w.Code, w.Header().Get("Cache-Control"), w.Header().Get("ETag"))
		}
		if w := get(h, AssetPrefix+name+"?v=old"); w.Header().Get("Cache-Control") != "no-cache" {
			t.Errorf("GET %s by another version: Cache-Control %q, want no-cache", name, w.Header().Get("Cache-Control"))
		}
		if w := get(h, AssetPrefix+name, "If-None-Match", a.etag(), "Accept-Encoding", "gzip"); w.Code != http.StatusNotModified {
			t.Errorf("GET %s If-None-Match its ETag: %d, want 304", name, w.Code)
		}
	}

	w := get(h, AssetPrefix+"verify.wasm", "Accept-Encoding", "gzip")
	if w.Header().Get("Content-Encoding") != "gzip" || w.Header().Get("Content-Type") != "application/wasm" || w.Header().Get("Vary") != "Accept-Encoding" {
		t.Fatalf("verify.wasm for gzip: Content-Encoding %q, Content-Type %q, Vary %q", w.Header().Get("Content-Encoding"), w.Header().Get("Content-Type"), w.Header().Get("Vary"))
	}
	if got := gunzip(t, w.Body.Bytes()); !bytes.Equal(got, wasm) {
		t.Error("verify.wasm for gzip does not decode to the wasm")
	}
	w = get(h, AssetPrefix+"verify.wasm", "Accept-Encoding", "identity, gzip;q=0")
	if w.Header().Get("Content-Encoding") != "" || !bytes.Equal(w.Body.Bytes(), wasm) {
		t.Errorf("verify.wasm without gzip: Content-Encoding %q, %d bytes, want the wasm's %d", w.Header().Get("Content-Encoding"), w.Body.Len(), len(wasm))
	}
	if etag := w.Header().Get("ETag"); etag == h.assets["verify.wasm"].etag() || etag == "" {
		t.Errorf("the decoded wasm has ETag %q, which must differ from the encoded one's", etag)
	}
	if w := get(h, AssetPrefix+"verify.wasm", "If-None-Match", w.Header().Get("ETag")); w.Code != http.StatusNotModified {
		t.Errorf("decoded wasm If-None-Match its ETag: %d, want 304", w.Code)
	}
	for _, p := range []string{AssetPrefix + "nothing.js", AssetPrefix + "dist/verify.wasm.gz", AssetPrefix + "index.html"} {
		if w := get(h, p); w.Code != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", p, w.Code)
		}
	}
}

func TestAcceptsGzip(t *testing.T) {
	for _, c := range []struct {
		header string
		want   bool
	}{
		{"", false},
		{"gzip", true},
		{"deflate, gzip;q=0.5", true},
		{"GZIP", true},
		{"gzip;q=0", false},
		{"gzip; q=0.0, identity", false},
		{"*", true},
		{"*;q=0", false},
		{"gzip;q=0, *", false},
		{"br, *;q=0.1", true},
		{"identity", false},
	} {
		if got := acceptsGzip([]string{c.header}); got != c.want {
			t.Errorf("Accept-Encoding %q: gzip %v, want %v", c.header, got, c.want)
		}
	}
}

// TestWasmFresh: the verifier this package embeds is byte for byte a fresh build of this
// source (the build is reproducible), and its wasm_exec.js is the one of the Go building it.
// A stale build fails here: run go generate ./services/api/verifier.
func TestWasmFresh(t *testing.T) {
	embedded, err := fs.ReadFile(files, wasmGz)
	if err != nil {
		t.Fatalf("no built verifier (%v): run go generate ./services/api/verifier", err)
	}
	dir := t.TempDir()
	cmd := exec.CommandContext(t.Context(), "go", "run", "./internal/wasmbuild", "-out", dir, "-wasm", filepath.Join(dir, "verify.wasm"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go run ./internal/wasmbuild: %v\n%s", err, out)
	}
	fresh, err := os.ReadFile(filepath.Join(dir, "verify.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	freshGz, err := os.ReadFile(filepath.Join(dir, "verify.wasm.gz"))
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case !bytes.Equal(gunzip(t, embedded), fresh):
		t.Errorf("the embedded verify.wasm is not a build of this source: run go generate ./services/api/verifier, then go build")
	case !bytes.Equal(embedded, freshGz):
		t.Errorf("verify.wasm.gz is not reproducible: the same wasm compressed twice differs")
	}
	js, err := fs.ReadFile(files, wasmExec)
	if err != nil {
		t.Fatalf("no wasm_exec.js (%v): run go generate ./services/api/verifier", err)
	}
	goroot, err := exec.CommandContext(t.Context(), "go", "env", "GOROOT").Output()
	if err != nil {
		t.Fatal(err)
	}
	goJS, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(goroot)), "lib", "wasm", "wasm_exec.js"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(js, goJS) {
		t.Errorf("the embedded wasm_exec.js is not the one of the go command (%s): run go generate ./services/api/verifier", runtime.Version())
	}
}

func gunzip(t *testing.T, b []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
