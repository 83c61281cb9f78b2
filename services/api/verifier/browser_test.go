package verifier_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/chromedp"

	"github.com/anchorline/anchorline/anchor/proof"
	"github.com/anchorline/anchorline/internal/testlog"
	"github.com/anchorline/anchorline/schemas/bundle"
	"github.com/anchorline/anchorline/services/api"
	"github.com/anchorline/anchorline/services/api/verifier"
)

const testdataDir = "../../../anchor/proof/testdata"

// TestBrowser opens /verify, served by the API's own handler, in headless Chromium and
// verifies bundles there with the WebAssembly verifier: every golden bundle shows every step
// passing, exactly as proof.Verify reports them (and `anchorline verify` prints them); a bundle
// with one byte changed fails at the step that checks that byte; the server's trust file is
// shown with its SHA-256. The server sees nothing but the GETs of the page, its assets and,
// when chosen, the trust file.
func TestBrowser(t *testing.T) {
	chromium := findChromium(t)
	wasm := builtWasm(t)
	testdata, err := filepath.Abs(testdataDir) // the browser is given absolute paths
	if err != nil {
		t.Fatal(err)
	}
	trust := read(t, filepath.Join(testdata, "trust.json"))

	rec := &recorder{}
	deps := api.Deps{Trust: func(context.Context) ([]byte, error) { return trust, nil }}
	srv := httptest.NewServer(rec.wrap(api.Handler(deps, testlog.New(t))))
	t.Cleanup(srv.Close)
	ctx, console := browser(t, chromium)

	open := func(t *testing.T) {
		t.Helper()
		if err := chromedp.Do(ctx, chromedp.Navigate(srv.URL+verifier.PagePath)); err != nil {
			t.Fatalf("open %s: %v", verifier.PagePath, err)
		}
	}
	upload := func(t *testing.T, input, file string) {
		t.Helper()
		if err := chromedp.Do(ctx, chromedp.SetUploadFiles(chromedp.ID(input), []string{file})); err != nil {
			t.Fatalf("choose %s as #%s: %v", file, input, err)
		}
	}

	tampered := t.TempDir()
	cases := []struct {
		name, bundle, trust string
		failAt              string // "" : every step holds
	}{
		{"v1", filepath.Join(testdata, "bundle.json"), filepath.Join(testdata, "trust.json"), ""},
		{"v2", filepath.Join(testdata, "bundle-v2.json"), filepath.Join(testdata, "trust-v2.json"), ""},
		{"light chain", filepath.Join(testdata, "lightchain.json"), filepath.Join(testdata, "lightchain-trust.json"), ""},
		{"range", filepath.Join(testdata, "range.json"), filepath.Join(testdata, "range-trust.json"), ""},
		{"event", filepath.Join(testdata, "event.json"), filepath.Join(testdata, "event-trust.json"), ""},
		{"range with erased readings", filepath.Join(testdata, "range-erased.json"), filepath.Join(testdata, "range-erased-trust.json"), ""},
		{"erased leaf byte", write(t, tampered, "range-leaf.json", flipLast(t, read(t, filepath.Join(testdata, "range-erased.json")), `"leaf": "`)), filepath.Join(testdata, "range-erased-trust.json"), "batch"},
		{"event reading byte", write(t, tampered, "event-sig.json", flipLast(t, read(t, filepath.Join(testdata, "event.json")), `"raw": "`)), filepath.Join(testdata, "event-trust.json"), "readings"},
		{"range signature byte", write(t, tampered, "range-sig.json", flipLast(t, read(t, filepath.Join(testdata, "range.json")), `"raw": "`)), filepath.Join(testdata, "range-trust.json"), "reading signature"},
		{"signature byte", write(t, tampered, "sig.json", flipLast(t, read(t, filepath.Join(testdata, "bundle.json")), `"raw": "`)), filepath.Join(testdata, "trust.json"), "reading signature"},
		{"batch path byte", write(t, tampered, "path.json", flipFirst(t, read(t, filepath.Join(testdata, "bundle.json")), `"path": [`+"\n      \"")), filepath.Join(testdata, "trust.json"), "batch"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			want := goReport(t, read(t, c.bundle), read(t, c.trust), c.failAt)
			open(t)
			upload(t, "bundle", c.bundle)
			upload(t, "trust", c.trust)
			checkResult(t, ctx, console, want, c.failAt)
			if got := text(t, ctx, "trust-sha256"); !strings.HasPrefix(got, sha256Hex(read(t, c.trust))+" ") {
				t.Errorf("trust file SHA-256 shown as %q, want %s", got, sha256Hex(read(t, c.trust)))
			}
		})
	}

	t.Run("dropped together", func(t *testing.T) {
		bundle, trustFile := filepath.Join(testdata, "bundle.json"), filepath.Join(testdata, "trust.json")
		want := goReport(t, read(t, bundle), read(t, trustFile), "")
		open(t)
		dropFiles(t, ctx, "drop", trustFile, bundle) // the page tells them apart by their format
		checkResult(t, ctx, console, want, "")
	})

	t.Run("server trust file", func(t *testing.T) {
		bundle := filepath.Join(testdata, "bundle.json")
		want := goReport(t, read(t, bundle), trust, "")
		before := rec.count(verifier.TrustPath)
		open(t)
		upload(t, "bundle", bundle)
		if err := chromedp.Do(ctx, chromedp.Click(chromedp.ID("trust-server"))); err != nil {
			t.Fatal(err)
		}
		checkResult(t, ctx, console, want, "")
		if got, h := text(t, ctx, "trust-sha256"), sha256Hex(trust); !strings.HasPrefix(got, h+" ") {
			t.Errorf("the server's trust file is shown with SHA-256 %q, want %s", got, h)
		}
		if n := rec.count(verifier.TrustPath) - before; n != 1 {
			t.Errorf("GET %s was asked %d times while the server's trust file was used, want once", verifier.TrustPath, n)
		}
	})

	if got, want := text(t, ctx, "wasm-sha256"), sha256Hex(wasm); got != want {
		t.Errorf("the page shows the verifier's SHA-256 as %q; the embedded verify.wasm's is %s", got, want)
	}
	rec.check(t)
	for _, m := range console.messages() {
		if failure(m) {
			t.Errorf("browser console: %s", m)
		}
	}
}

// goReport is what proof.Verify (proof.VerifyRange for a range bundle, proof.VerifyEvent for an
// event bundle) says of the files, the
// lines its report's Print writes (those `anchorline verify` prints); it checks that the case is
// what it claims.
func goReport(t *testing.T, bundle, trust []byte, failAt string) []string {
	t.Helper()
	var b strings.Builder
	var steps []proof.Step
	var err error
	switch {
	case proof.IsEvent(bundle):
		var r proof.EventReport
		r, err = proof.VerifyEvent(bundle, trust)
		steps = r.Steps
		r.Print(&b)
	case proof.IsRange(bundle):
		var r proof.RangeReport
		r, err = proof.VerifyRange(bundle, trust)
		steps = r.Steps
		r.Print(&b)
	default:
		var r proof.Report
		r, err = proof.Verify(bundle, trust)
		steps = r.Steps
		r.Print(&b)
	}
	if (err == nil) != (failAt == "") {
		t.Fatalf("proof.Verify: %v; the case expects failure at %q", err, failAt)
	}
	if failAt != "" {
		last := steps[len(steps)-1]
		if last.OK || last.Name != failAt {
			t.Fatalf("proof.Verify fails at step %q (ok %v), the case expects %q", last.Name, last.OK, failAt)
		}
	}
	return strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
}

// checkResult waits for the page's verdict and compares the steps it shows with want. An error
// on the page's console ends the wait: the page failed before it could show one.
func checkResult(t *testing.T, ctx context.Context, console *consoleLog, want []string, failAt string) {
	t.Helper()
	wait, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- chromedp.Do(wait, chromedp.WaitVisible(chromedp.ID("verdict"))) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("waiting for the verdict: %v", err)
		}
	case m := <-console.errs:
		cancel()
		<-done
		t.Fatalf("the page failed before showing a verdict (status %q): %s", text(t, ctx, "status"), m)
	}
	lines, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll("#steps li samp"), e => e.textContent)`))
	if err != nil {
		t.Fatal(err)
	}
	verdict := text(t, ctx, "verdict")
	if !slices.Equal(lines, want) {
		t.Fatalf("the page shows the steps\n%s\nverdict %q\nproof.Verify (anchorline verify) reports\n%s", strings.Join(lines, "\n"), verdict, strings.Join(want, "\n"))
	}
	class, err := chromedp.Run(ctx, chromedp.AttributeValue(chromedp.ID("verdict"), "class"))
	if err != nil {
		t.Fatal(err)
	}
	// An event bundle's report holds its range's, indented under its "readings" step.
	var top []string
	for _, l := range lines {
		if !strings.HasPrefix(l, " ") {
			top = append(top, l)
		}
	}
	if failAt == "" {
		for _, l := range lines {
			if !strings.HasPrefix(strings.TrimLeft(l, " "), "✓ ") {
				t.Errorf("step %q is not shown passing", l)
			}
		}
		wantVerdict := "✓ bundle verified: every step holds"
		switch {
		case strings.Contains(want[0], bundle.RangeFormat):
			wantVerdict = "✓ range verified: every step holds"
		case strings.Contains(want[0], bundle.EventFormat):
			wantVerdict = "✓ event verified: the rule version was in force and fires on these readings as recorded"
		}
		if class.Value != "ok" || verdict != wantVerdict {
			t.Errorf("verdict %q (class %q), want %q", verdict, class.Value, wantVerdict)
		}
		return
	}
	if last := top[len(top)-1]; !strings.HasPrefix(last, "✗ "+failAt+" ") {
		t.Errorf("the last step shown is %q, want step %q failing", last, failAt)
	}
	if class.Value != "fail" || !strings.Contains(verdict, "verification failed at step “"+failAt+"”") {
		t.Errorf("verdict %q (class %q), want failure at step %q", verdict, class.Value, failAt)
	}
}

// dropFiles drops the files on the element, as a person dragging them from a file manager.
func dropFiles(t *testing.T, ctx context.Context, id string, files ...string) {
	t.Helper()
	at, err := chromedp.Run(ctx, chromedp.Evaluate[[]float64](`(() => { const r = document.getElementById("`+id+`").getBoundingClientRect(); return [r.left + 10, r.top + 10]; })()`))
	if err != nil {
		t.Fatal(err)
	}
	data := &input.DragData{Items: []*input.DragDataItem{}, Files: files, DragOperationsMask: 1}
	for _, typ := range []input.DispatchDragEventType{input.DispatchDragEventTypeDragEnter, input.DispatchDragEventTypeDragOver, input.DispatchDragEventTypeDrop} {
		err := chromedp.Do(ctx, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := cdp.Call(ctx, tg, input.DispatchDragEvent, input.DispatchDragEventParams{Type: typ, X: at[0], Y: at[1], Data: data})
			return err
		}))
		if err != nil {
			t.Fatalf("%s on #%s: %v", typ, id, err)
		}
	}
}

func text(t *testing.T, ctx context.Context, id string) string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.TextContent(chromedp.ID(id)))
	if err != nil {
		t.Fatalf("text of #%s: %v", id, err)
	}
	return strings.TrimSpace(s)
}

// findChromium finds Debian's chromium. The test does not skip without it: CI must run it.
func findChromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if _, err := os.Stat("/usr/bin/chromium"); err == nil {
		return "/usr/bin/chromium"
	}
	t.Fatal("chromium is not installed: run scripts/install-chromium.sh (apt-get install chromium); this test opens /verify in it")
	return ""
}

// builtWasm is the verifier the handler serves, uncompressed; the test fails if this build
// has none.
func builtWasm(t *testing.T) []byte {
	t.Helper()
	req := httptest.NewRequest("GET", verifier.AssetPrefix+"verify.wasm", nil)
	req.Header.Set("Accept-Encoding", "gzip")
	w := httptest.NewRecorder()
	verifier.Handler().ServeHTTP(w, req)
	if w.Code != http.StatusOK {
		t.Fatalf("GET %s: %d %s; build the verifier first: go generate ./services/api/verifier", req.URL.Path, w.Code, w.Body)
	}
	zr, err := gzip.NewReader(w.Body)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// browser starts headless Chromium for the test; it also collects the page's console.
func browser(t *testing.T, path string) (context.Context, *consoleLog) {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path))
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox) // Chromium's sandbox refuses to run as root (CI)
	}
	alloc, cancelAlloc := chromedp.NewExecAllocator(t.Context(), opts...)
	ctx, cancel := chromedp.NewContext(alloc)
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start %s: %v", path, err)
	}
	c := &consoleLog{errs: make(chan chromedp.ConsoleMessage, 1)}
	msgs := chromedp.Console(ctx)
	go func() {
		for m, err := range msgs {
			if err != nil {
				return // the browser is going away
			}
			c.add(m)
		}
	}()
	return ctx, c
}

// consoleLog keeps the page's console messages; errs has the first error not yet taken.
type consoleLog struct {
	mu   sync.Mutex
	msgs []chromedp.ConsoleMessage
	errs chan chromedp.ConsoleMessage
}

func failure(m chromedp.ConsoleMessage) bool {
	return m.Type == chromedp.ConsoleError || m.IsException()
}

func (c *consoleLog) add(m chromedp.ConsoleMessage) {
	c.mu.Lock()
	c.msgs = append(c.msgs, m)
	c.mu.Unlock()
	if failure(m) {
		select {
		case c.errs <- m:
		default: // one waiting is enough to end a wait; all are reported at the end
		}
	}
}

func (c *consoleLog) messages() []chromedp.ConsoleMessage {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.msgs)
}

// recorder keeps every request the test server received.
type recorder struct {
	mu   sync.Mutex
	reqs []seen
}

type seen struct {
	method, path, query string
	body                int
}

func (rec *recorder) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		rec.mu.Lock()
		rec.reqs = append(rec.reqs, seen{r.Method, r.URL.Path, r.URL.RawQuery, len(body)})
		rec.mu.Unlock()
		h.ServeHTTP(w, r)
	})
}

func (rec *recorder) count(path string) int {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	n := 0
	for _, r := range rec.reqs {
		if r.path == path {
			n++
		}
	}
	return n
}

// check fails the test for any request but a GET of the page, its assets and the trust file.
func (rec *recorder) check(t *testing.T) {
	t.Helper()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	allowed := []string{verifier.PagePath, verifier.TrustPath}
	for _, a := range []string{"verify.js", "verify.css", "wasm_exec.js", "verify.wasm"} {
		allowed = append(allowed, verifier.AssetPrefix+a)
	}
	for _, r := range rec.reqs {
		query := r.query == "" || strings.HasPrefix(r.path, verifier.AssetPrefix) && strings.HasPrefix(r.query, "v=") && !strings.ContainsAny(r.query[2:], "&=")
		if r.method != http.MethodGet || !slices.Contains(allowed, r.path) || !query || r.body != 0 {
			t.Errorf("the server received %s %s?%s with %d body bytes; the page may only GET %v", r.method, r.path, r.query, r.body, allowed)
		}
	}
	if len(rec.reqs) == 0 {
		t.Error("the server received no request at all")
	}
}

func read(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func write(t *testing.T, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// flipFirst changes the hex digit right after the first marker; flipLast the last hex digit
// of the string value that follows it.
func flipFirst(t *testing.T, b []byte, marker string) []byte {
	t.Helper()
	i := bytes.Index(b, []byte(marker))
	if i < 0 {
		t.Fatalf("no %q in the bundle", marker)
	}
	return flipAt(b, i+len(marker))
}

func flipLast(t *testing.T, b []byte, marker string) []byte {
	t.Helper()
	i := bytes.Index(b, []byte(marker))
	if i < 0 {
		t.Fatalf("no %q in the bundle", marker)
	}
	i += len(marker)
	end := bytes.IndexByte(b[i:], '"')
	if end < 1 {
		t.Fatalf("no string after %q", marker)
	}
	return flipAt(b, i+end-1)
}

func flipAt(b []byte, i int) []byte {
	out := bytes.Clone(b)
	if out[i] == '0' {
		out[i] = '1'
	} else {
		out[i] = '0'
	}
	return out
}

func sha256Hex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}
