package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/anchorline/anchorline/internal/chserver"
	"github.com/anchorline/anchorline/services/auth"
	"github.com/anchorline/anchorline/services/stack"
)

// proc is an anchorline process whose JSON log lines the test reads.
type proc struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	logs []map[string]any
	more chan struct{} // closed and replaced whenever a line arrives or the process ends
	done chan error
}

func startProc(t *testing.T, ctx context.Context, env []string, bin string, args ...string) *proc {
	t.Helper()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = t.TempDir() // whatever a default data_dir holds goes there
	cmd.Env = append(append(os.Environ(), "ANCHORLINE_LOG_FORMAT=json", "ANCHORLINE_LOG_LEVEL=info"), env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, more: make(chan struct{}), done: make(chan error, 1)}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var line map[string]any
			if json.Unmarshal(sc.Bytes(), &line) != nil {
				line = map[string]any{"msg": sc.Text()}
			}
			p.mu.Lock()
			p.logs = append(p.logs, line)
			close(p.more)
			p.more = make(chan struct{})
			p.mu.Unlock()
		}
		p.done <- cmd.Wait()
		p.mu.Lock()
		close(p.more)
		p.more = make(chan struct{})
		p.mu.Unlock()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill() // an error if it has exited already: nothing to do
		if t.Failed() {
			// What the process logged last says why a request to it failed.
			p.mu.Lock()
			logs := p.logs[max(0, len(p.logs)-20):]
			p.mu.Unlock()
			for _, l := range logs {
				t.Logf("%s: %v", strings.Join(args, " "), l)
			}
		}
	})
	return p
}

// await returns the first log line whose msg is msg, once it is logged.
func (p *proc) await(t *testing.T, ctx context.Context, msg string) map[string]any {
	t.Helper()
	for seen := 0; ; {
		p.mu.Lock()
		lines, more := p.logs[seen:], p.more
		p.mu.Unlock()
		for _, l := range lines {
			if l["msg"] == msg {
				return l
			}
		}
		seen += len(lines)
		select {
		case <-more:
		case err := <-p.done:
			p.done <- err
			t.Fatalf("%s exited (%v) before logging %q; log: %v", p.cmd.Args[1], err, msg, p.logs)
		case <-ctx.Done():
			t.Fatalf("%s never logged %q; log: %v", p.cmd.Args[1], msg, p.logs)
		}
	}
}

// leaseMsg is what an anchoring service logs when it becomes the active one.
const leaseMsg = "anchoring: holds the lease: this service is the active one"

// logged reports whether the process has logged msg so far.
func (p *proc) logged(msg string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.ContainsFunc(p.logs, func(l map[string]any) bool { return l["msg"] == msg })
}

// stop interrupts the process (as Ctrl-C or systemd's KillSignal=SIGINT do) and expects a
// clean exit.
func (p *proc) stop(t *testing.T) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGINT)
	if err := <-p.done; err != nil {
		t.Errorf("%s: %v", p.cmd.Args[1], err)
	}
}

// TestSeparateServices runs the multi-process layout that deployments/README.md describes,
// each service its own `anchorline` process: a ledger validator, migrate, the auth callout
// service, two ingest workers, two anchoring services (one active, one standing by; the active
// one is killed halfway and the standby takes over) and the API, over one NATS server (with
// the accounts and callout of `anchorline auth init`) and one ClickHouse. Each service connects
// with its own seed file. A device registered through the CLI publishes as itself, gets a proof
// that verifies against the exported trust file, and an audit of everything stored finds
// nothing; every service stops cleanly.
func TestSeparateServices(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	bin := filepath.Join(t.TempDir(), "anchorline")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	dir := t.TempDir()
	authDir := filepath.Join(dir, "nats-auth")
	if out, err := exec.CommandContext(ctx, bin, "auth", "init", "--nats.auth_dir", authDir).CombinedOutput(); err != nil || !strings.Contains(string(out), "auth.conf") {
		t.Fatalf("auth init: %v\n%s", err, out)
	}
	setup := auth.Setup{Dir: authDir}
	ns, err := stack.StartNATS("nats://127.0.0.1:0", filepath.Join(dir, "nats"), stack.NATSServer{Auth: &setup}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	natsURL := ns.ClientURL()
	creds := func(r auth.Role) []string { return []string{"--nats.credentials", setup.File(r)} }
	chAddr, existing, ch := chserver.NewDatabase(t)
	database := existing + "_sep"
	t.Cleanup(func() { _ = ch.Exec(context.Background(), "DROP DATABASE IF EXISTS "+database) })
	common := []string{"--clickhouse.addr", chAddr, "--clickhouse.database", database, "--nats.url", natsURL}
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("anchorline %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}

	ledgerDir := filepath.Join(dir, "ledger")
	ledger := startProc(t, ctx, nil, bin, "ledger", "--data_dir", ledgerDir, "--ledger.rpc", "127.0.0.1:0")
	rpc := fmt.Sprint(ledger.await(t, ctx, "ledger node running")["rpc"])
	common = append(common, "--ledger.rpc", rpc)
	if out := run(append([]string{"migrate"}, common...)...); !strings.Contains(out, "applied") {
		t.Fatalf("migrate: %s", out)
	}
	authProc := startProc(t, ctx, nil, bin, append([]string{"auth", "--nats.auth_dir", authDir}, common...)...)
	authProc.await(t, ctx, "anchorline auth is running")
	var workers []*proc
	for _, w := range []string{"w1", "w2"} {
		workers = append(workers, startProc(t, ctx, []string{"ANCHORLINE_INGEST_WORKER=" + w}, bin,
			slices.Concat([]string{"ingest", "--http.addr", "127.0.0.1:0", "--data_dir", filepath.Join(dir, w)}, creds(auth.RoleIngest), common)...))
	}
	// The ledger's genesis authorised the anchoring key it made: the anchor service signs with it.
	// Two anchoring services: one active, one standing by.
	var anchors []*proc
	for _, a := range []string{"anchor-a", "anchor-b"} {
		anchors = append(anchors, startProc(t, ctx, nil, bin, slices.Concat([]string{"anchor", "--http.addr", "127.0.0.1:0", "--anchor.interval", "300ms",
			"--data_dir", filepath.Join(dir, a), "--anchor.key", filepath.Join(ledgerDir, "anchor.key")}, creds(auth.RoleAnchoring), common)...))
	}
	apiProc := startProc(t, ctx, nil, bin, append([]string{"api", "--http.addr", "127.0.0.1:0", "--data_dir", filepath.Join(dir, "api")}, common...)...)
	apiAddr := strings.TrimPrefix(fmt.Sprint(apiProc.await(t, ctx, "anchorline api is running")["api"]), "http://")
	for _, p := range append(workers, anchors...) {
		p.await(t, ctx, "anchorline "+p.cmd.Args[1]+" is running")
	}

	client := append([]string{"--http.addr", apiAddr, "--ledger.admin_key", filepath.Join(ledgerDir, "admin.key")}, common...)
	key := filepath.Join(dir, "sep.key")
	run(append([]string{"device", "keygen", "--id", "sep-1", "--out", key}, client...)...)
	run(append([]string{"device", "register", key}, client...)...)
	for i := 1; i <= 5; i++ {
		run(append([]string{"device", "publish", key, "--metric", fmt.Sprintf("temp=%d", 20+i)}, client...)...)
	}
	proof, trust := filepath.Join(dir, "proof.json"), filepath.Join(dir, "trust.json")
	run(append([]string{"proof", "--device", "sep-1", "--seq", "5", "--wait", "60s", "--out", proof}, client...)...)
	run(append([]string{"trust", "export", "--out", trust}, client...)...)
	if out := run(append([]string{"verify", proof, "--trust", trust}, client...)...); !strings.Contains(out, "bundle verified") {
		t.Fatalf("verify: %s", out)
	}
	// The active anchoring service dies (kill -9); the standby takes over and anchors the rest.
	active, standby := anchors[0], anchors[1]
	if !active.logged(leaseMsg) {
		active, standby = standby, active
	}
	if !active.logged(leaseMsg) || standby.logged(leaseMsg) {
		t.Fatalf("want exactly one active anchoring service; a: %v, b: %v", anchors[0].logged(leaseMsg), anchors[1].logged(leaseMsg))
	}
	_ = active.cmd.Process.Kill()
	<-active.done
	for i := 6; i <= 7; i++ {
		run(append([]string{"device", "publish", key, "--metric", fmt.Sprintf("temp=%d", 20+i)}, client...)...)
	}
	run(append([]string{"proof", "--device", "sep-1", "--seq", "7", "--wait", "60s", "--out", proof}, client...)...)
	if out := run(append([]string{"verify", proof, "--trust", trust}, client...)...); !strings.Contains(out, "bundle verified") {
		t.Fatalf("verify after the failover: %s", out)
	}
	standby.await(t, ctx, leaseMsg)
	if out := run(append([]string{"audit", "--trust", trust}, client...)...); !strings.Contains(out, "every stored reading in range matches its anchor on the ledger") {
		t.Fatalf("audit: %s", out)
	}
	for _, p := range []*proc{apiProc, standby, workers[0], workers[1], authProc, ledger} {
		p.stop(t)
	}
}

// TestServiceCannotStart: a service that cannot start exits 1 with one line on stderr naming
// the cause and the key to change.
func TestServiceCannotStart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	bin := filepath.Join(t.TempDir(), "anchorline")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	chAddr, existing, _ := chserver.NewDatabase(t)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	unreachable := closed.Addr().String()
	closed.Close()
	ch := []string{"--clickhouse.addr", chAddr, "--clickhouse.database", existing, "--log.level", "error"}
	for _, tc := range []struct {
		name string
		args []string
		says []string
	}{
		{"api on a taken http.addr", append([]string{"api", "--http.addr", taken.Addr().String()}, ch...),
			[]string{"http.addr " + taken.Addr().String(), "address already in use", "choose another http.addr"}},
		{"ledger on a taken ledger.rpc", []string{"ledger", "--data_dir", t.TempDir(), "--ledger.rpc", taken.Addr().String(), "--log.level", "error"},
			[]string{"ledger.rpc " + taken.Addr().String(), "choose another ledger.rpc"}},
		{"migrate with ClickHouse unreachable", []string{"migrate", "--clickhouse.addr", unreachable, "--clickhouse.startup_timeout", "300ms", "--log.level", "error"},
			[]string{"clickhouse.addr " + unreachable, "not reachable within clickhouse.startup_timeout", "raise clickhouse.startup_timeout"}},
		{"api on a database never migrated", []string{"api", "--http.addr", "127.0.0.1:0", "--clickhouse.addr", chAddr, "--clickhouse.database", "never_migrated", "--log.level", "error"},
			[]string{"never_migrated", "run anchorline migrate"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.CommandContext(ctx, bin, tc.args...)
			cmd.Dir = t.TempDir()
			var stderr strings.Builder
			cmd.Stderr = &stderr
			err := cmd.Run()
			exit, ok := errors.AsType[*exec.ExitError](err)
			if !ok || exit.ExitCode() != 1 {
				t.Fatalf("exit %v, want status 1; stderr: %s", err, stderr.String())
			}
			msg := strings.TrimSuffix(stderr.String(), "\n")
			if strings.Contains(msg, "\n") || !strings.HasPrefix(msg, "anchorline: ") {
				t.Errorf("stderr is not one line: %q", msg)
			}
			for _, want := range tc.says {
				if !strings.Contains(msg, want) {
					t.Errorf("%q does not say %q", msg, want)
				}
			}
		})
	}
}
