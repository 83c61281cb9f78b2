package deployments_test

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
	natsconf "github.com/nats-io/nats-server/v2/conf"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/spf13/pflag"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	"mvdan.cc/sh/v3/syntax"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/anchorline/anchorline/anchor/node"
	"github.com/anchorline/anchorline/deployments"
	"github.com/anchorline/anchorline/internal/pki"
	"github.com/anchorline/anchorline/services/auth"
	"github.com/anchorline/anchorline/services/config"
)

// repo is the repository root, relative to this package's folder (where go test runs).
const repo = ".."

// The names the layouts share: the image every Anchorline service runs, the ClickHouse cluster
// of clickhouse.cluster, the NATS cluster, and the namespace of the manifests.
const (
	image          = "anchorline:dev"
	clusterName    = "anchorline"
	natsCluster    = "anchorline"
	namespace      = "anchorline"
	binaryInImage  = "/anchorline"
	buildCommand   = "CGO_ENABLED=0 go build -trimpath -o /anchorline ./services/anchorline"
	lagMetric      = "anchorline_ingest_consumer_pending"
	dockerfilePath = "deployments/docker/Dockerfile"
)

// serviceRoles are the subcommands that run a long-lived service (or migrate) from the
// configuration; a container running one of them has its configuration checked.
func serviceRoles() []string { return []string{"ingest", "anchor", "rules", "api", "auth", "migrate"} }

// invocation is one run of the binary a layout makes: where, and its arguments.
type invocation struct {
	where string
	args  []string
}

func read(t *testing.T, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repo, rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// mutate replaces old by new in b, failing the test if old is not there: a broken variant of a
// file must really differ from it.
func mutate(t *testing.T, b []byte, old, new string) []byte {
	t.Helper()
	if !bytes.Contains(b, []byte(old)) {
		t.Fatalf("mutation: %q is not in the file", old)
	}
	return bytes.Replace(b, []byte(old), []byte(new), 1)
}

// wantErr fails unless some error of errs contains want.
func wantErr(t *testing.T, errs []error, want string) {
	t.Helper()
	for _, err := range errs {
		if strings.Contains(err.Error(), want) {
			return
		}
	}
	t.Errorf("no error contains %q; got %d: %v", want, len(errs), errs)
}

func noErrs(t *testing.T, errs []error) {
	t.Helper()
	for _, err := range errs {
		t.Error(err)
	}
}

// --- configuration ----------------------------------------------------------------------------

// cleanEnv removes the ANCHORLINE_* variables of the test's environment for the test, so that
// only what a layout sets reaches the configuration loader.
func cleanEnv(t *testing.T) {
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "ANCHORLINE_") {
			t.Setenv(k, "")
			os.Unsetenv(k)
		}
	}
}

// configKeys are the keys deployments/config/anchorline.yaml documents: every key
// (services/config TestDeploymentConfigs checks that it lists all).
func configKeys(t *testing.T) map[string]bool {
	t.Helper()
	b, err := deployments.ConfigFile("anchorline")
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := yaml.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	keys := map[string]bool{}
	for section, v := range m {
		sub, ok := v.(map[string]any)
		if !ok {
			keys[section] = true
			continue
		}
		for k := range sub {
			keys[section+"."+k] = true
		}
	}
	return keys
}

// envKey is the configuration key an ANCHORLINE_ variable sets, if it is one.
func envKey(keys map[string]bool, name string) (string, bool) {
	rest, ok := strings.CutPrefix(name, "ANCHORLINE_")
	if !ok {
		return "", false
	}
	for k := range keys {
		if strings.ToUpper(strings.ReplaceAll(k, ".", "_")) == rest {
			return k, true
		}
	}
	return "", false
}

// checkEnvNames reports the ANCHORLINE_ variables of env that set no key: viper would ignore them.
func checkEnvNames(keys map[string]bool, where string, env map[string]string) []error {
	var errs []error
	for name := range env {
		if !strings.HasPrefix(name, "ANCHORLINE_") {
			continue
		}
		if _, ok := envKey(keys, name); !ok {
			errs = append(errs, fmt.Errorf("%s: %s names no configuration key (deployments/config/anchorline.yaml lists them)", where, name))
		}
	}
	return errs
}

// loadConfig loads a configuration as the binary does: services/config's flags from args (with
// --config a file on this machine), the environment env and nothing else.
func loadConfig(args []string, env map[string]string) (config.Config, error) {
	fs := pflag.NewFlagSet("anchorline", pflag.ContinueOnError)
	fs.ParseErrorsAllowlist.UnknownFlags = true // the subcommands' own, like --home
	fs.SetOutput(io.Discard)
	config.Flags(fs)
	if err := fs.Parse(args); err != nil {
		return config.Config{}, err
	}
	var restore []func()
	for k, v := range env {
		old, had := os.LookupEnv(k)
		os.Setenv(k, v)
		restore = append(restore, func() {
			if had {
				os.Setenv(k, old)
			} else {
				os.Unsetenv(k)
			}
		})
	}
	defer func() {
		for _, r := range restore {
			r()
		}
	}()
	return config.Load(fs)
}

// flagValue is the value of --name in args (--name v or --name=v).
func flagValue(args []string, name string) (string, bool) {
	for i, a := range args {
		if a == "--"+name && i+1 < len(args) {
			return args[i+1], true
		}
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v, true
		}
	}
	return "", false
}

// withFlag returns args with --name's value replaced.
func withFlag(args []string, name, value string) []string {
	out := slices.Clone(args)
	for i, a := range out {
		if a == "--"+name && i+1 < len(out) {
			out[i+1] = value
		}
		if strings.HasPrefix(a, "--"+name+"=") {
			out[i] = "--" + name + "=" + value
		}
	}
	return out
}

// subcommand is the leading words of args (before the first flag).
func subcommand(args []string) []string {
	var words []string
	for _, a := range args {
		if strings.HasPrefix(a, "-") {
			break
		}
		words = append(words, a)
	}
	return words
}

func hostPorts(list string, trim ...string) []string {
	var out []string
	for a := range strings.SplitSeq(list, ",") {
		a = strings.TrimSpace(a)
		for _, p := range trim {
			a = strings.TrimPrefix(a, p)
		}
		if u, err := url.Parse(a); err == nil && u.Host != "" {
			a = u.Host
		}
		if a != "" {
			out = append(out, a)
		}
	}
	return out
}

func splitHostPort(hp string) (string, int, error) {
	h, p, err := net.SplitHostPort(hp)
	if err != nil {
		return "", 0, err
	}
	n, err := strconv.Atoi(p)
	return h, n, err
}

func portOf(addr string) int {
	_, p, err := splitHostPort(addr)
	if err != nil {
		return -1
	}
	return p
}

func TestConfigFiles(t *testing.T) {
	cleanEnv(t)
	if got, want := deployments.Roles(), []string{"anchor", "api", "auth", "ingest", "rules"}; !slices.Equal(got, want) {
		t.Errorf("Roles() = %v, want %v", got, want)
	}
	for _, role := range append(deployments.Roles(), "anchorline") {
		b, err := deployments.ConfigFile(role)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, read(t, "deployments/config/"+role+".yaml")) {
			t.Errorf("ConfigFile(%s) is not deployments/config/%s.yaml", role, role)
		}
		f := filepath.Join(t.TempDir(), role+".yaml")
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := loadConfig([]string{"--config", f}, nil); err != nil {
			t.Errorf("config/%s.yaml: %v", role, err)
		}
	}
	for _, bad := range []string{"", "nope", "../go", "config/ingest", "anchorline.yaml"} {
		if _, err := deployments.ConfigFile(bad); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("ConfigFile(%q) = %v, want fs.ErrNotExist", bad, err)
		}
	}
	for _, name := range []string{"prometheus/prometheus.yml", "prometheus/alerts.yml", "grafana/anchorline.json", "config/ingest.yaml"} {
		b, err := fs.ReadFile(deployments.Files(), name)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, read(t, "deployments/"+name)) {
			t.Errorf("Files() %s differs from deployments/%s", name, name)
		}
	}
	// The loader refuses what the files must not hold: the check above can fail.
	f := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(f, []byte("clickhouse:\n  adress: x:9000\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadConfig([]string{"--config", f}, nil); err == nil {
		t.Error("a misspelt key loaded")
	}
}

// --- image ------------------------------------------------------------------------------------

// imageFacts are what the layouts rely on from the Dockerfile.
type imageFacts struct {
	cmd  []string          // CMD, after ENTRYPOINT ["/anchorline"]
	env  map[string]string // ENV of the runtime stage
	dirs map[string]bool   // directories the runtime stage makes for the anchorline user
	user string
}

func checkDockerfile(keys map[string]bool, src []byte) (imageFacts, []error) {
	facts := imageFacts{env: map[string]string{}, dirs: map[string]bool{}}
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf("Dockerfile: "+format, args...)) }
	res, err := parser.Parse(bytes.NewReader(src))
	if err != nil {
		fail("%v", err)
		return facts, errs
	}
	for _, w := range res.Warnings {
		fail("parser warning: %s", w.Short)
	}
	lint := linter.New(&linter.Config{Warn: func(rule, _, _, msg string, loc []parser.Range) {
		line := 0
		if len(loc) > 0 {
			line = loc[0].Start.Line
		}
		fail("line %d: %s: %s", line, rule, msg)
	}})
	stages, _, err := instructions.Parse(res.AST, lint)
	if err != nil {
		fail("%v", err)
		return facts, errs
	}
	if len(stages) < 2 {
		fail("%d stages; want a build stage and a runtime stage", len(stages))
		return facts, errs
	}
	build, runtime := stages[0], stages[len(stages)-1]
	if !strings.HasPrefix(build.BaseName, "golang:1.26") {
		fail("build stage FROM %s, want golang:1.26", build.BaseName)
	}
	built := false
	for _, c := range build.Commands {
		switch c := c.(type) {
		case *instructions.RunCommand:
			if strings.Contains(strings.Join(c.CmdLine, " "), buildCommand) {
				built = true
			}
		case *instructions.CopyCommand:
			if c.From != "" {
				continue
			}
			for _, s := range c.SourcePaths {
				if _, err := os.Stat(filepath.Join(repo, s)); err != nil {
					fail("COPY %s: not in the build context (the repository root): %v", s, err)
				}
			}
		}
	}
	if !built {
		fail("no RUN in the build stage runs %q", buildCommand)
	}
	main, err := os.ReadFile(filepath.Join(repo, "services/anchorline/main.go"))
	if err != nil || !bytes.Contains(main, []byte("package main")) {
		fail("./services/anchorline is not the main package: %v", err)
	}
	switch {
	case runtime.BaseName == "debian:bookworm-slim", strings.HasPrefix(runtime.BaseName, "gcr.io/distroless/static-debian12"):
	default:
		fail("runtime stage FROM %s: want a small image (debian:bookworm-slim or distroless static)", runtime.BaseName)
	}
	var copied, entry bool
	for _, c := range runtime.Commands {
		switch c := c.(type) {
		case *instructions.CopyCommand:
			if (c.From == build.Name || c.From == "0") && slices.Equal(c.SourcePaths, []string{binaryInImage}) {
				copied = c.DestPath == binaryInImage
			}
		case *instructions.UserCommand:
			facts.user = c.User
		case *instructions.EnvCommand:
			for _, kv := range c.Env {
				facts.env[kv.Key] = kv.Value
			}
		case *instructions.EntrypointCommand:
			entry = !c.PrependShell && slices.Equal(c.CmdLine, []string{binaryInImage})
		case *instructions.CmdCommand:
			if c.PrependShell {
				fail("CMD in shell form: want the exec form")
			}
			facts.cmd = c.CmdLine
		case *instructions.RunCommand:
			for _, d := range installedDirs(strings.Join(c.CmdLine, " ")) {
				facts.dirs[d] = true
			}
		}
	}
	if !copied {
		fail("the runtime stage does not COPY --from=%s %s %s", build.Name, binaryInImage, binaryInImage)
	}
	if !entry {
		fail("ENTRYPOINT is not [%q] in exec form", binaryInImage)
	}
	if u, _, _ := strings.Cut(facts.user, ":"); u == "" || u == "root" || u == "0" {
		fail("USER %q: the image must run as a non-root user", facts.user)
	}
	errs = append(errs, checkEnvNames(keys, "Dockerfile ENV", facts.env)...)
	return facts, errs
}

// installedDirs are the directories `install -d` makes in a shell command line.
func installedDirs(script string) []string {
	f, err := syntax.NewParser().Parse(strings.NewReader(script), "")
	if err != nil {
		return nil
	}
	var dirs []string
	syntax.Walk(f, func(n syntax.Node) bool {
		call, ok := n.(*syntax.CallExpr)
		if !ok || len(call.Args) == 0 || call.Args[0].Lit() != "install" {
			return true
		}
		var words []string
		for _, w := range call.Args[1:] {
			words = append(words, w.Lit())
		}
		if !slices.Contains(words, "-d") {
			return true
		}
		for i := 0; i < len(words); i++ {
			switch w := words[i]; {
			case w == "-o" || w == "-g" || w == "-m":
				i++
			case strings.HasPrefix(w, "-"):
			default:
				dirs = append(dirs, w)
			}
		}
		return true
	})
	return dirs
}

// checkDockerignore checks that the build context left by the .dockerignore holds every file
// `go build ./services/anchorline` reads: the Go files and embedded files of every package of
// this module it builds, and go.mod and go.sum.
func checkDockerignore(t *testing.T, ignore []byte) []error {
	t.Helper()
	patterns, err := ignorefile.ReadAll(bytes.NewReader(ignore))
	if err != nil {
		return []error{err}
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		return []error{err}
	}
	root, err := filepath.Abs(repo)
	if err != nil {
		t.Fatal(err)
	}
	files := []string{"go.mod", "go.sum"}
	for _, p := range buildPackages(t) {
		for _, f := range slices.Concat(p.GoFiles, p.EmbedFiles) {
			rel, err := filepath.Rel(root, filepath.Join(p.Dir, f))
			if err != nil {
				t.Fatal(err)
			}
			files = append(files, filepath.ToSlash(rel))
		}
	}
	var errs []error
	for _, f := range files {
		excluded, err := pm.MatchesOrParentMatches(f)
		if err != nil {
			errs = append(errs, err)
		} else if excluded {
			errs = append(errs, fmt.Errorf("Dockerfile.dockerignore leaves %s out of the build context, and the build needs it", f))
		}
	}
	if len(files) < 50 {
		errs = append(errs, fmt.Errorf("only %d files found for the build: go list went wrong", len(files)))
	}
	return errs
}

type goPackage struct {
	Dir        string
	GoFiles    []string
	EmbedFiles []string
	Module     *struct{ Main bool }
}

func buildPackages(t *testing.T) []goPackage {
	t.Helper()
	cmd := exec.Command("go", "list", "-deps", "-json=Dir,GoFiles,EmbedFiles,Module", "./services/anchorline")
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []goPackage
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p goPackage
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if p.Module != nil && p.Module.Main {
			pkgs = append(pkgs, p)
		}
	}
	return pkgs
}

func TestDockerfile(t *testing.T) {
	keys := configKeys(t)
	src := read(t, dockerfilePath)
	facts, errs := checkDockerfile(keys, src)
	noErrs(t, errs)
	if !slices.Equal(facts.cmd, []string{"--help"}) {
		t.Errorf("CMD %v", facts.cmd)
	}
	noErrs(t, checkDockerignore(t, read(t, "deployments/docker/Dockerfile.dockerignore")))

	broken := []struct{ name, old, new, want string }{
		{"another package", "-o /anchorline ./services/anchorline", "-o /anchorline ./services/stack", "no RUN in the build stage"},
		{"root", "USER 10001:10001", "USER root", "non-root"},
		{"shell-form entrypoint", `ENTRYPOINT ["/anchorline"]`, "ENTRYPOINT /anchorline", "ENTRYPOINT"},
		{"lint", "FROM golang:1.26 AS build", "FROM golang:1.26 as build", "FromAsCasing"},
		{"missing source", "COPY go.mod go.sum ./", "COPY go.mod go.work ./", "COPY go.work"},
		{"old Go", "FROM golang:1.26 AS build", "FROM golang:1.22 AS build", "want golang:1.26"},
		{"unknown key", "ENV ANCHORLINE_DATA_DIR=", "ENV ANCHORLINE_DATADIR=", "ANCHORLINE_DATADIR names no configuration key"},
		{"big runtime", "FROM debian:bookworm-slim", "FROM golang:1.26", "small image"},
	}
	for _, c := range broken {
		t.Run(c.name, func(t *testing.T) {
			_, errs := checkDockerfile(keys, mutate(t, src, c.old, c.new))
			wantErr(t, errs, c.want)
		})
	}
	t.Run("ignored migrations", func(t *testing.T) {
		ignore := append(read(t, "deployments/docker/Dockerfile.dockerignore"), "**/*.sql\n"...)
		wantErr(t, checkDockerignore(t, ignore), "schemas/clickhouse/migrations/")
	})
}

// --- TLS --------------------------------------------------------------------------------------

// tlsServer is what a server of a layout presents where its clients connect: TLS or not, and
// with TLS the certificate it serves (nil if it cannot be read; the reason is reported).
type tlsServer struct {
	tls  bool
	cert *x509.Certificate
}

// fileReader reads a file as one container sees it; false if no mount of the container
// provides it.
type fileReader func(path string) ([]byte, bool)

// servedCert is the server that serves the PEM certificate and key certPEM and keyPEM, or an
// error saying why it would not start.
func servedCert(certPEM, keyPEM []byte) (tlsServer, error) {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tlsServer{tls: true}, err
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	return tlsServer{tls: true, cert: cert}, err
}

// servedFiles is the server that serves the certificate and key files certFile and keyFile
// (the names of what is checked are certKey and keyKey), which must be mounted.
func servedFiles(files fileReader, certKey, certFile, keyKey, keyFile string) (tlsServer, error) {
	if certFile == "" || keyFile == "" {
		return tlsServer{tls: true}, fmt.Errorf("%s %q and %s %q go together", certKey, certFile, keyKey, keyFile)
	}
	cert, okCert := files(certFile)
	key, okKey := files(keyFile)
	if !okCert || !okKey {
		return tlsServer{tls: true}, fmt.Errorf("%s %s or %s %s is not a file mounted into the container", certKey, certFile, keyKey, keyFile)
	}
	s, err := servedCert(cert, key)
	if err != nil {
		return s, fmt.Errorf("%s %s, %s %s: %w", certKey, certFile, keyKey, keyFile, err)
	}
	return s, nil
}

// verifyCert checks that cert was issued by the CA in caPEM for host (a DNS name or an IP
// address), for a server.
func verifyCert(cert *x509.Certificate, caPEM []byte, host string) error {
	if cert == nil {
		return errors.New("no certificate to verify")
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return errors.New("the CA file holds no PEM certificate")
	}
	_, err := cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: host, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	return err
}

// dependencies are the servers a role's process connects to: the API not to NATS, auth not to
// ClickHouse, migrate to ClickHouse only.
func dependencies(role string) (nats, ledger, clickhouse bool) {
	return role != "api" && role != "migrate", role != "migrate", role != "auth"
}

// servesHTTP reports whether a role's process serves http.addr (/healthz, /readyz, /metrics,
// and the API's): auth serves it only inside dev, migrate not at all.
func servesHTTP(role string) bool {
	return role == "ingest" || role == "anchor" || role == "rules" || role == "api"
}

// checkClientTLS checks how a service's configuration reaches the servers it names (server
// finds them by host:port): tls.ca is a file mounted into its container; with it the client
// speaks TLS to NATS and https to the validators, so each must serve TLS with a certificate the
// CA issued for the name the client uses, and without it neither may (the client would speak
// plain); clickhouse.secure likewise names ClickHouse's secure port, and without it the plain
// one.
func checkClientTLS(where, role string, cfg config.Config, files fileReader, server func(string) (tlsServer, bool)) []error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(where+": "+format, args...)) }
	var ca []byte
	if f := cfg.TLS.CA; f != "" {
		var ok bool
		if ca, ok = files(f); !ok {
			fail("tls.ca %s is not a file mounted into the container", f)
		}
	}
	reached := func(key string, list []string, useTLS bool, why string) {
		for _, hp := range list {
			s, ok := server(hp)
			if !ok {
				continue // no server of the layout: the address checks say so
			}
			host, _, _ := net.SplitHostPort(hp)
			switch {
			case s.tls && !useTLS:
				fail("%s: %s serves only TLS, but %s: the client would speak plain to it", key, hp, why)
			case !s.tls && useTLS:
				fail("%s: %s serves no TLS, but %s: the client would speak TLS to it", key, hp, why)
			case useTLS && cfg.TLS.CA == "":
				fail("%s: %s: no tls.ca to trust its certificate with (the system's roots do not hold the deployment's CA)", key, hp)
			case useTLS && ca != nil:
				if err := verifyCert(s.cert, ca, host); err != nil {
					fail("%s: %s: its certificate does not verify against tls.ca %s: %v", key, hp, cfg.TLS.CA, err)
				}
			}
		}
	}
	withCA := "tls.ca is not set"
	if cfg.TLS.CA != "" {
		withCA = "tls.ca is set"
	}
	nats, ledger, clickhouse := dependencies(role)
	if nats {
		tlsURL := strings.Contains(cfg.NATS.URL, "tls://")
		reached("nats.url", hostPorts(cfg.NATS.URL), cfg.TLS.CA != "" || tlsURL, cmp.Or(map[bool]string{true: "a URL is tls://"}[tlsURL], withCA))
	}
	if ledger {
		reached("ledger.rpc", hostPorts(cfg.Ledger.RPC, "tcp://", "http://"), cfg.TLS.CA != "", withCA)
	}
	if clickhouse {
		reached("clickhouse.addr", hostPorts(cfg.ClickHouse.Addr), cfg.ClickHouse.Secure, fmt.Sprintf("clickhouse.secure is %t", cfg.ClickHouse.Secure))
	}
	return errs
}

// checkHTTPServer is the server a service's http.addr is: https with http.tls_cert and
// http.tls_key, files mounted into its container; plain HTTP without.
func checkHTTPServer(where string, cfg config.Config, files fileReader) (tlsServer, []error) {
	if cfg.HTTP.TLSCert == "" && cfg.HTTP.TLSKey == "" {
		return tlsServer{}, nil
	}
	s, err := servedFiles(files, "http.tls_cert", cfg.HTTP.TLSCert, "http.tls_key", cfg.HTTP.TLSKey)
	if err != nil {
		return s, []error{fmt.Errorf("%s: %w", where, err)}
	}
	return s, nil
}

// validatorTLS is how a validator serves its RPC, from config.toml's rpc.tls_cert_file and
// tls_key_file (as `ledger init --rpc-tls-cert --rpc-tls-key` writes them): plain without,
// else https with files mounted into its container at those paths, which must be absolute
// (CometBFT takes a relative one as under the home's config/, which holds no certificate).
func validatorTLS(certFile, keyFile string, files fileReader) (tlsServer, error) {
	if certFile == "" && keyFile == "" {
		return tlsServer{}, nil
	}
	if !path.IsAbs(certFile) || !path.IsAbs(keyFile) {
		return tlsServer{tls: true}, fmt.Errorf("rpc.tls_cert_file %q and tls_key_file %q: give absolute paths, where the validator's container mounts them", certFile, keyFile)
	}
	return servedFiles(files, "rpc.tls_cert_file", certFile, "rpc.tls_key_file", keyFile)
}

// checkScrapeTLS checks how Prometheus scrapes a server (srv, at host): https exactly when it
// serves TLS, trusting the CA of tls_config's ca_file (a file files holds), which must have
// issued its certificate for the name verified: server_name, else host.
func checkScrapeTLS(scheme, caFile, serverName, host string, srv tlsServer, files fileReader) error {
	https := scheme == "https"
	switch {
	case srv.tls && !https:
		return fmt.Errorf("it serves only https, and the scheme is %q", scheme)
	case !srv.tls && https:
		return errors.New("it serves plain HTTP, and the scheme is https")
	case !https:
		return nil
	}
	ca, ok := files(caFile)
	if caFile == "" || !ok {
		return fmt.Errorf("tls_config ca_file %q is not a file Prometheus has", caFile)
	}
	if serverName == "" {
		serverName = host
	}
	if err := verifyCert(srv.cert, ca, serverName); err != nil {
		return fmt.Errorf("its certificate does not verify for server_name %s against ca_file %s: %w", serverName, caFile, err)
	}
	return nil
}

// natsOptions parses a NATS server's configuration file conf (here) as the server would in its
// container, where at maps a path in the container to the file here. nats-server loads the
// files of a tls block while it parses, from the paths the configuration names (the
// container's): so the file is parsed with nats-server's own parser first (includes and
// variables resolved), the files of each tls block are checked to be mounted and mapped with
// at, and the result processed as the server processes its configuration.
func natsOptions(conf string, at func(string) string) (*server.Options, error) {
	m, err := natsconf.ParseFile(conf)
	if err != nil {
		return nil, err
	}
	var errs []error
	blocks := map[string]map[string]any{"": m}
	for _, name := range []string{"cluster", "gateway", "leafnodes", "websocket", "mqtt"} {
		if b, ok := natsKey(m, name).(map[string]any); ok {
			blocks[name+" "] = b
		}
	}
	for _, name := range slices.Sorted(mapKeys(blocks)) {
		t, ok := natsKey(blocks[name], "tls").(map[string]any)
		if !ok {
			continue
		}
		for _, k := range slices.Sorted(mapKeys(t)) {
			f, ok := t[k].(string)
			if lk := strings.ToLower(k); !ok || lk != "cert_file" && lk != "key_file" && lk != "ca_file" {
				continue
			}
			if _, err := os.Stat(at(f)); err != nil {
				errs = append(errs, fmt.Errorf("%stls %s %s is not a file mounted into the container", name, k, f))
			}
			t[k] = at(f)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	var b bytes.Buffer // JSON is a NATS configuration too, without \u escapes
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(m); err != nil {
		return nil, err
	}
	o := &server.Options{}
	return o, o.ProcessConfigString(b.String())
}

// natsKey is m's value of key, whose case NATS ignores.
func natsKey(m map[string]any, key string) any {
	for k, v := range m {
		if strings.EqualFold(k, key) {
			return v
		}
	}
	return nil
}

// natsServer is what a NATS server serves its clients.
func natsServer(o *server.Options) tlsServer {
	if o.TLSConfig == nil {
		return tlsServer{}
	}
	s := tlsServer{tls: true}
	if len(o.TLSConfig.Certificates) > 0 {
		s.cert = o.TLSConfig.Certificates[0].Leaf
	}
	return s
}

// --- compose ----------------------------------------------------------------------------------

// composeServices are the services of the topology.
func composeServices() []string {
	return []string{"auth-init", "ledger-init", "migrate", "nats-1", "nats-2", "nats-3",
		"ledger-1", "ledger-2", "ledger-3", "ledger-4", "zookeeper", "clickhouse-1", "clickhouse-2",
		"ingest-1", "ingest-2", "anchor-1", "anchor-2", "api-1", "auth", "prometheus"}
}

func loadCompose(content []byte) (*types.Project, error) {
	dir, err := filepath.Abs(filepath.Join(repo, "deployments/compose"))
	if err != nil {
		return nil, err
	}
	details := types.ConfigDetails{
		WorkingDir:  dir,
		ConfigFiles: []types.ConfigFile{{Filename: filepath.Join(dir, "compose.yaml"), Content: content}},
		Environment: types.Mapping{},
	}
	return loader.LoadWithContext(context.Background(), details, func(o *loader.Options) {
		o.SetProjectName("anchorline", true)
		o.ResolvePaths = true
	})
}

// shellInvocations are the runs of the binary in a shell script: the calls of /anchorline.
func shellInvocations(where, script string) ([]invocation, error) {
	f, err := syntax.NewParser().Parse(strings.NewReader(script), where)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	var out []invocation
	var errs []error
	syntax.Walk(f, func(n syntax.Node) bool {
		call, ok := n.(*syntax.CallExpr)
		if !ok || len(call.Args) == 0 || call.Args[0].Lit() != binaryInImage {
			return true
		}
		var args []string
		for _, w := range call.Args[1:] {
			lit := w.Lit()
			if lit == "" {
				errs = append(errs, fmt.Errorf("%s: an argument of %s is not a literal word", where, binaryInImage))
			}
			args = append(args, lit)
		}
		out = append(out, invocation{where: where, args: args})
		return true
	})
	return out, errors.Join(errs...)
}

// composeRun is an Anchorline service of the compose file as the checks see it.
type composeRun struct {
	svc  types.ServiceConfig
	args []string
	env  map[string]string
	cfg  config.Config
}

func volumeMounts(svc types.ServiceConfig, source string) []types.ServiceVolumeConfig {
	var out []types.ServiceVolumeConfig
	for _, v := range svc.Volumes {
		if v.Type == types.VolumeTypeVolume && v.Source == source {
			out = append(out, v)
		}
	}
	return out
}

func subpath(v types.ServiceVolumeConfig) string {
	if v.Volume == nil {
		return ""
	}
	return v.Volume.Subpath
}

// underVolume reports whether file is inside a volume (not a bind) mounted by svc.
func underVolume(svc types.ServiceConfig, file string) bool {
	for _, v := range svc.Volumes {
		if v.Type == types.VolumeTypeVolume && path.Dir(file) == v.Target {
			return true
		}
	}
	return false
}

// composeVolumes are the named volumes whose content the checks reproduce (composeSetup):
// each one's folder here, and the one-shot services that write it.
type composeVolumes struct {
	dirs    map[string]string
	writers map[string][]string
}

// setupCommand reports whether a run of the binary is one composeSetup reproduces: a command
// that only writes files.
func setupCommand(inv invocation) bool {
	w := strings.Join(subcommand(inv.args), " ")
	return w == "tls init" || w == "auth init"
}

// composeSetup reproduces here what the one-shot services whose scripts only write files
// (auth-init, tls-init: every run of the binary in them is `auth init` or `tls init`) leave in
// the volumes they mount, running each script in a folder standing for the container's file
// system (runSetupScript).
func composeSetup(t *testing.T, p *types.Project) (composeVolumes, []error) {
	t.Helper()
	vols := composeVolumes{dirs: map[string]string{}, writers: map[string][]string{}}
	var errs []error
	for _, name := range slices.Sorted(mapKeys(p.Services)) {
		svc := p.Services[name]
		if !slices.Equal(svc.Entrypoint, []string{"/bin/sh", "-ec"}) || len(svc.Command) != 1 {
			continue
		}
		invs, err := shellInvocations(name, svc.Command[0])
		if err != nil || len(invs) == 0 || !slices.ContainsFunc(invs, setupCommand) {
			continue
		}
		root := t.TempDir()
		if err := runSetupScript(root, svc.Command[0]); err != nil {
			errs = append(errs, fmt.Errorf("compose: %s: %w", name, err))
			continue
		}
		for _, v := range svc.Volumes {
			if v.Type != types.VolumeTypeVolume || subpath(v) != "" {
				continue
			}
			dir := filepath.Join(root, v.Target)
			if have, ok := vols.dirs[v.Source]; ok { // another setup service writes it too
				if err := copyTree(have, dir); err != nil {
					t.Fatal(err)
				}
				dir = have
			}
			vols.dirs[v.Source] = dir
			vols.writers[v.Source] = append(vols.writers[v.Source], name)
		}
	}
	return vols, errs
}

// runSetupScript runs a setup script in root, which stands for the container's /: `auth init`
// and `tls init` through the packages the commands call (auth.Init, pki.Dir.Ensure), and cd,
// mkdir -p, cp and chmod as the shell does. Anything else is an error: the checks could not
// say what the script leaves.
func runSetupScript(root, script string) error {
	f, err := syntax.NewParser().Parse(strings.NewReader(script), "")
	if err != nil {
		return err
	}
	cwd := "/"
	at := func(p string) string {
		if !path.IsAbs(p) {
			p = path.Join(cwd, p)
		}
		return filepath.Join(root, filepath.FromSlash(p))
	}
	for _, st := range f.Stmts {
		call, ok := st.Cmd.(*syntax.CallExpr)
		if !ok || len(call.Assigns) > 0 || len(st.Redirs) > 0 || st.Negated || st.Background || len(call.Args) == 0 {
			return fmt.Errorf("line %d: not a simple command; the checks reproduce simple commands only", st.Pos().Line())
		}
		var args []string
		for _, w := range call.Args {
			if w.Lit() == "" {
				return fmt.Errorf("line %d: an argument is not a literal word", st.Pos().Line())
			}
			args = append(args, w.Lit())
		}
		if err := runSetupCommand(args, at, &cwd); err != nil {
			return fmt.Errorf("line %d: %s: %w", st.Pos().Line(), strings.Join(args, " "), err)
		}
	}
	return nil
}

func runSetupCommand(args []string, at func(string) string, cwd *string) error {
	flag := func(name string) string { v, _ := flagValue(args, name); return v }
	switch {
	case args[0] == binaryInImage && slices.Equal(subcommand(args[1:]), []string{"tls", "init"}):
		return pki.Dir(at(flag("dir"))).Ensure(flag("name"), strings.Split(flag("hosts"), ","))
	case args[0] == binaryInImage && slices.Equal(subcommand(args[1:]), []string{"auth", "init"}):
		_, err := auth.Init(at(flag("nats.auth_dir")))
		return err
	case args[0] == "cd" && len(args) == 2:
		if path.IsAbs(args[1]) {
			*cwd = args[1]
		} else {
			*cwd = path.Join(*cwd, args[1])
		}
		return nil
	case args[0] == "mkdir" && len(args) > 2 && args[1] == "-p":
		for _, d := range args[2:] {
			if err := os.MkdirAll(at(d), 0o755); err != nil {
				return err
			}
		}
		return nil
	case args[0] == "cp" && len(args) > 2:
		dst := at(args[len(args)-1])
		st, err := os.Stat(dst)
		into := err == nil && st.IsDir()
		if !into && len(args) > 3 {
			return fmt.Errorf("%s is not a folder", args[len(args)-1])
		}
		for _, src := range args[1 : len(args)-1] {
			to := dst
			if into {
				to = filepath.Join(dst, path.Base(src))
			}
			if err := copyFile(to, at(src), 0o022); err != nil {
				return err
			}
		}
		return nil
	case args[0] == "chmod" && len(args) > 2:
		mode, err := strconv.ParseUint(args[1], 8, 32)
		if err != nil {
			return fmt.Errorf("mode %s: want octal", args[1])
		}
		for _, f := range args[2:] {
			if err := os.Chmod(at(f), os.FileMode(mode)); err != nil {
				return err
			}
		}
		return nil
	}
	return errors.New("a command the checks do not reproduce")
}

// copyFile copies src to dst as cp does: a new dst gets src's mode less umask; an existing one
// keeps its own.
func copyFile(dst, src string, umask os.FileMode) error {
	st, err := os.Stat(src)
	if err != nil {
		return err
	}
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	_, err = os.Stat(dst)
	existed := err == nil
	if err := os.WriteFile(dst, b, 0o600); err != nil {
		return err
	}
	if existed {
		return nil
	}
	return os.Chmod(dst, st.Mode().Perm()&^umask)
}

// copyTree copies the file or folder src to dst with the modes it has; nothing if src does not
// exist, an empty folder if src is "".
func copyTree(dst, src string) error {
	if src == "" {
		return os.MkdirAll(dst, 0o755)
	}
	if _, err := os.Stat(src); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		to := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(to, 0o755)
		}
		if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
			return err
		}
		return copyFile(to, p, 0)
	})
}

// composeView lays out in a new folder what a service's container sees at its mounts: the
// files and folders bound, the volumes composeSetup reproduced (from their subpath), empty
// folders for the other volumes. It returns the path here of a path in the container.
func composeView(t *testing.T, svc types.ServiceConfig, vols composeVolumes) func(string) string {
	t.Helper()
	root := t.TempDir()
	at := func(p string) string { return filepath.Join(root, filepath.FromSlash(p)) }
	for _, v := range svc.Volumes {
		var src string
		switch {
		case v.Type == types.VolumeTypeBind:
			src = v.Source
		case v.Type == types.VolumeTypeVolume && vols.dirs[v.Source] != "":
			src = filepath.Join(vols.dirs[v.Source], filepath.FromSlash(subpath(v)))
		}
		if err := copyTree(at(v.Target), src); err != nil {
			t.Fatal(err)
		}
	}
	return at
}

// viewFiles reads the files of a view.
func viewFiles(at func(string) string) fileReader {
	return func(p string) ([]byte, bool) {
		b, err := os.ReadFile(at(p))
		return b, err == nil
	}
}

// checkCompose loads the compose file strictly and checks it against the image, the
// configuration loader and the other files it mounts. It returns the runs of the binary.
func checkCompose(t *testing.T, keys map[string]bool, img imageFacts, content []byte) ([]invocation, []error) {
	t.Helper()
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf("compose: "+format, args...)) }
	p, err := loadCompose(content)
	if err != nil {
		return nil, []error{fmt.Errorf("compose: %w", err)}
	}
	for _, name := range composeServices() {
		if _, ok := p.Services[name]; !ok {
			fail("no service %s", name)
		}
	}
	root, err := filepath.Abs(repo)
	if err != nil {
		t.Fatal(err)
	}
	dockerfile := filepath.Join(root, dockerfilePath)
	var invs []invocation
	runs := map[string]*composeRun{}
	byImage := map[string][]string{}
	for _, name := range slices.Sorted(mapKeys(p.Services)) {
		svc := p.Services[name]
		for _, v := range svc.Volumes {
			if v.Type != types.VolumeTypeBind {
				continue
			}
			rel, err := filepath.Rel(root, v.Source)
			if err != nil || strings.HasPrefix(rel, "..") {
				fail("%s mounts %s, outside the repository", name, v.Source)
				continue
			}
			if _, err := os.Stat(v.Source); err != nil {
				fail("%s mounts %s: %v", name, rel, err)
			}
			if !v.ReadOnly {
				fail("%s mounts %s read-write; the repository's files are mounted read-only", name, rel)
			}
		}
		repoImage, _, _ := strings.Cut(svc.Image, ":")
		byImage[repoImage] = append(byImage[repoImage], name)
		if svc.Build == nil && repoImage != "anchorline" {
			continue
		}
		if svc.Image != image {
			fail("%s: image %q, want %q", name, svc.Image, image)
		}
		if svc.Build == nil || svc.Build.Context != root || filepath.Join(svc.Build.Context, svc.Build.Dockerfile) != dockerfile && svc.Build.Dockerfile != dockerfile {
			fail("%s: not built from %s with the repository as context: %+v", name, dockerfilePath, svc.Build)
		}
		for _, v := range svc.Volumes {
			if v.Type == types.VolumeTypeVolume && subpath(v) == "" && !img.dirs[v.Target] {
				fail("%s mounts the volume %s at %s, which the image does not make for its user: a new volume there would belong to root", name, v.Source, v.Target)
			}
		}
		env := map[string]string{}
		maps := []map[string]string{img.env}
		for k, v := range svc.Environment {
			if v == nil {
				fail("%s: %s has no value", name, k)
				continue
			}
			maps = append(maps, map[string]string{k: *v})
		}
		for _, m := range maps {
			for k, v := range m {
				env[k] = v
			}
		}
		errs = append(errs, checkEnvNames(keys, "compose service "+name, env)...)
		switch {
		case len(svc.Entrypoint) == 0:
			invs = append(invs, invocation{where: "compose service " + name, args: svc.Command})
		case slices.Equal(svc.Entrypoint, []string{"/bin/sh", "-ec"}) && len(svc.Command) == 1:
			got, err := shellInvocations("compose service "+name, svc.Command[0])
			if err != nil {
				errs = append(errs, err)
			}
			if len(got) == 0 {
				fail("%s: its script runs no %s", name, binaryInImage)
			}
			invs = append(invs, got...)
			for _, inv := range got {
				runs[name+" "+strings.Join(subcommand(inv.args), " ")] = &composeRun{svc: svc, args: inv.args, env: env}
			}
			continue
		default:
			fail("%s: entrypoint %v: want the image's, or /bin/sh -ec with one script", name, svc.Entrypoint)
			continue
		}
		words := subcommand(svc.Command)
		if len(words) == 0 {
			fail("%s runs no subcommand", name)
			continue
		}
		r := &composeRun{svc: svc, args: svc.Command, env: env}
		runs[name] = r
		if !slices.Contains(serviceRoles(), words[0]) {
			continue
		}
		args := svc.Command
		if file, ok := flagValue(args, "config"); ok {
			var host string
			for _, v := range svc.Volumes {
				if v.Type == types.VolumeTypeBind && v.Target == file {
					host = v.Source
				}
			}
			if host == "" {
				fail("%s: --config %s is not a file mounted into the service", name, file)
				continue
			}
			args = withFlag(args, "config", host)
		}
		cfg, err := loadConfig(args[len(words):], env)
		if err != nil {
			fail("%s: %v", name, err)
			continue
		}
		r.cfg = cfg
	}
	// The servers first (what each serves where, with TLS or not), then their clients.
	vols, e := composeSetup(t, p)
	errs = append(errs, e...)
	errs = append(errs, checkComposeWaits(p, vols)...)
	servers := map[string]tlsServer{}
	errs = append(errs, checkComposeNATS(t, p, byImage["nats"], vols, servers)...)
	errs = append(errs, checkComposeClickHouse(t, p, byImage["clickhouse/clickhouse-server"], byImage["zookeeper"], vols, servers)...)
	errs = append(errs, checkComposeLedger(t, p, runs, vols, servers)...)
	errs = append(errs, checkComposeRuns(t, p, runs, vols, servers)...)
	errs = append(errs, checkComposePrometheus(t, p, runs, vols, servers)...)
	errs = append(errs, checkComposePublished(p, servers)...)
	return invs, errs
}

// checkComposeWaits checks that a service reading a volume that a setup service writes (it
// mounts it read-only or at a subpath) waits for that service to complete, itself or through a
// service it waits for: a volume's subpath must exist when a container mounting it starts, and
// the files it reads must be there.
func checkComposeWaits(p *types.Project, vols composeVolumes) []error {
	var errs []error
	for _, name := range slices.Sorted(mapKeys(p.Services)) {
		for _, v := range p.Services[name].Volumes {
			if !v.ReadOnly && subpath(v) == "" {
				continue // it writes there itself
			}
			for _, w := range vols.writers[v.Source] {
				if w != name && !waitsFor(p, name, w, map[string]bool{}) {
					errs = append(errs, fmt.Errorf("compose: %s mounts the volume %s, which %s writes, and does not wait for %s to complete", name, v.Source, w, w))
				}
			}
		}
	}
	return errs
}

// waitsFor reports whether service from starts only once setup completed: it depends on setup
// with service_completed_successfully, or on a service that waits for it.
func waitsFor(p *types.Project, from, setup string, seen map[string]bool) bool {
	if seen[from] {
		return false
	}
	seen[from] = true
	for dep, d := range p.Services[from].DependsOn {
		if dep == setup && d.Condition == types.ServiceConditionCompletedSuccessfully || dep != setup && waitsFor(p, dep, setup, seen) {
			return true
		}
	}
	return false
}

// checkComposeRuns checks that what each service's configuration names exists in the topology,
// reached as it serves (servers: TLS or not), and records the services' own HTTP in servers.
func checkComposeRuns(t *testing.T, p *types.Project, runs map[string]*composeRun, vols composeVolumes, servers map[string]tlsServer) []error {
	t.Helper()
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf("compose: "+format, args...)) }
	validators := map[string]bool{}
	for name, r := range runs {
		if slices.Equal(subcommand(r.args), []string{"ledger"}) {
			validators[name] = true
		}
	}
	// serves reports whether hp is a server of the topology of the kind want says.
	serves := func(hp string, want func(svc string) bool) bool {
		h, _, err := splitHostPort(hp)
		_, known := servers[hp]
		return err == nil && known && want(h)
	}
	image := func(prefix string) func(string) bool {
		return func(svc string) bool { return strings.HasPrefix(p.Services[svc].Image, prefix) }
	}
	workers := map[string]string{}
	var anchors []string
	for _, name := range slices.Sorted(mapKeys(runs)) {
		r := runs[name]
		words := subcommand(r.args)
		if len(words) != 1 || !slices.Contains(serviceRoles(), words[0]) {
			continue
		}
		role, cfg := words[0], r.cfg
		if cfg.DataDir == "" {
			continue // it did not load: reported
		}
		nats, ledger, clickhouse := dependencies(role)
		if nats {
			for _, hp := range hostPorts(cfg.NATS.URL) {
				if !serves(hp, image("nats:")) {
					fail("%s: nats.url names %s, not a NATS service's client port", name, hp)
				}
			}
		}
		if ledger {
			for _, hp := range hostPorts(cfg.Ledger.RPC, "tcp://", "http://") {
				if !serves(hp, func(h string) bool { return validators[h] }) {
					fail("%s: ledger.rpc names %s, not a validator's RPC", name, hp)
				}
			}
		}
		if clickhouse {
			for _, hp := range hostPorts(cfg.ClickHouse.Addr) {
				if !serves(hp, image("clickhouse/")) {
					fail("%s: clickhouse.addr names %s, not a ClickHouse service's native port (plain or secure)", name, hp)
				}
			}
			if cfg.ClickHouse.Cluster != clusterName {
				fail("%s: clickhouse.cluster %q, want %q (the servers' remote_servers)", name, cfg.ClickHouse.Cluster, clusterName)
			}
		}
		files := viewFiles(composeView(t, r.svc, vols))
		errs = append(errs, checkClientTLS("compose: "+name, role, cfg, files, func(hp string) (tlsServer, bool) { s, ok := servers[hp]; return s, ok })...)
		if servesHTTP(role) {
			srv, e := checkHTTPServer("compose: "+name, cfg, files)
			errs = append(errs, e...)
			servers[net.JoinHostPort(name, strconv.Itoa(portOf(cfg.HTTP.Addr)))] = srv
		}
		if role == "ingest" || role == "anchor" || role == "rules" || role == "api" {
			if d, ok := r.svc.DependsOn["migrate"]; !ok || d.Condition != types.ServiceConditionCompletedSuccessfully {
				fail("%s does not wait for migrate to complete", name)
			}
		}
		switch role {
		case "ingest":
			if other, dup := workers[cfg.Ingest.Worker]; dup {
				fail("%s and %s are both ingest.worker %s", other, name, cfg.Ingest.Worker)
			}
			workers[cfg.Ingest.Worker] = name
			if !underVolume(r.svc, cfg.NATS.Credentials) {
				fail("%s: nats.credentials %s is in no volume it mounts", name, cfg.NATS.Credentials)
			}
		case "anchor":
			anchors = append(anchors, name)
			if !underVolume(r.svc, cfg.NATS.Credentials) || !underVolume(r.svc, cfg.Anchor.Key) {
				fail("%s: nats.credentials %s or anchor.key %s is in no volume it mounts", name, cfg.NATS.Credentials, cfg.Anchor.Key)
			}
		case "rules":
			if !underVolume(r.svc, cfg.NATS.Credentials) || !underVolume(r.svc, cfg.RulesKey()) {
				fail("%s: nats.credentials %s or rules.key %s is in no volume it mounts", name, cfg.NATS.Credentials, cfg.RulesKey())
			}
			if d, ok := r.svc.DependsOn["rules-init"]; !ok || d.Condition != types.ServiceConditionCompletedSuccessfully {
				fail("%s does not wait for rules-init (rules commander) to complete", name)
			}
		case "auth":
			mounted := false
			for _, v := range volumeMounts(r.svc, "nats-auth") {
				mounted = mounted || v.Target == cfg.AuthDir()
			}
			if !mounted {
				fail("%s: nats.auth_dir %s is not where it mounts the volume nats-auth", name, cfg.AuthDir())
			}
		}
	}
	if len(workers) < 2 || len(anchors) < 2 {
		fail("%d ingest workers and %d anchoring services; want 2 of each", len(workers), len(anchors))
	}
	for _, a := range anchors[min(1, len(anchors)):] {
		if runs[a].cfg != runs[anchors[0]].cfg {
			fail("%s and %s are configured differently; the standby runs the active one's configuration", anchors[0], a)
		}
	}
	if r := runs["auth-init auth init"]; r == nil {
		fail("no auth-init service runs auth init")
	} else if dir, _ := flagValue(r.args, "nats.auth_dir"); len(volumeMounts(r.svc, "nats-auth")) == 0 || volumeMounts(r.svc, "nats-auth")[0].Target != dir {
		fail("auth-init writes auth init's files to %q, not into the volume nats-auth", dir)
	}
	return errs
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// checkComposeLedger checks the validators against the network ledger-init makes: one
// validator per --hosts entry, each running from its own home in the ledger volume, serving its
// RPC with the certificate --rpc-tls-cert names (if any) mounted there. It records what each
// serves in servers.
func checkComposeLedger(t *testing.T, p *types.Project, runs map[string]*composeRun, vols composeVolumes, servers map[string]tlsServer) []error {
	t.Helper()
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf("compose: "+format, args...)) }
	r := runs["ledger-init ledger init"]
	if r == nil {
		return []error{errors.New("compose: no ledger-init service runs ledger init")}
	}
	out, _ := flagValue(r.args, "out")
	hosts, _ := flagValue(r.args, "hosts")
	n, _ := flagValue(r.args, "validators")
	rpcCert, _ := flagValue(r.args, "rpc-tls-cert")
	rpcKey, _ := flagValue(r.args, "rpc-tls-key")
	rpcPort := node.DefaultRPCPort
	if v, ok := flagValue(r.args, "rpc-port"); ok {
		rpcPort, _ = strconv.Atoi(v)
	}
	vols0 := volumeMounts(r.svc, "ledger")
	if len(vols0) != 1 {
		return append(errs, errors.New("compose: ledger-init does not mount the volume ledger"))
	}
	rel, err := filepath.Rel(vols0[0].Target, out)
	if err != nil || strings.HasPrefix(rel, "..") {
		fail("ledger init --out %s is not in the volume ledger (%s)", out, vols0[0].Target)
	}
	list := strings.Split(hosts, ",")
	if strconv.Itoa(len(list)) != n {
		fail("ledger init --validators %s with %d hosts", n, len(list))
	}
	for i, h := range list {
		v, ok := runs[h]
		if !ok || !slices.Equal(subcommand(v.args), []string{"ledger"}) {
			fail("ledger init names host %s, which runs no validator", h)
			continue
		}
		home, _ := flagValue(v.args, "home")
		want := path.Join(rel, "node"+strconv.Itoa(i))
		found := false
		for _, m := range volumeMounts(v.svc, "ledger") {
			found = found || m.Target == home && subpath(m) == want
		}
		if !found {
			fail("%s: --home %s is not the volume ledger's %s (node%d, the home of host %s)", h, home, want, i, h)
		}
		if d, ok := v.svc.DependsOn["ledger-init"]; !ok || d.Condition != types.ServiceConditionCompletedSuccessfully {
			fail("%s does not wait for ledger-init", h)
		}
		srv, err := validatorTLS(rpcCert, rpcKey, viewFiles(composeView(t, v.svc, vols)))
		if err != nil {
			fail("%s: ledger init --rpc-tls-cert, --rpc-tls-key: %v", h, err)
		}
		servers[net.JoinHostPort(h, strconv.Itoa(rpcPort))] = srv
	}
	validators := 0
	for _, r := range runs {
		if slices.Equal(subcommand(r.args), []string{"ledger"}) {
			validators++
		}
	}
	if validators != 4 || len(list) != 4 {
		fail("%d validators, %d in ledger init: want 4", validators, len(list))
	}
	return errs
}

// checkComposeNATS parses each NATS server's configuration with nats-server's own parser, in the
// view of its container (auth.conf and the certificate as the setup services leave them), checks
// that they form one cluster, and records what each serves its clients in servers.
func checkComposeNATS(t *testing.T, p *types.Project, names []string, vols composeVolumes, servers map[string]tlsServer) []error {
	t.Helper()
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf("compose: "+format, args...)) }
	if len(names) != 3 {
		fail("%d NATS services %v, want 3", len(names), names)
	}
	for _, name := range names {
		svc := p.Services[name]
		file, ok := flagValue(svc.Command, "config")
		if !ok {
			fail("%s: no --config", name)
			continue
		}
		at := composeView(t, svc, vols)
		if _, err := os.Stat(at(file)); err != nil {
			fail("%s: --config %s is not mounted", name, file)
			continue
		}
		opts, err := natsOptions(at(file), at)
		if err != nil {
			fail("%s: %s: %v", name, file, err)
			continue
		}
		errs = append(errs, checkNATSOptions("compose: "+name, opts, name, routeTargets(names, opts.Cluster.Port))...)
		if !slices.ContainsFunc(svc.Volumes, func(v types.ServiceVolumeConfig) bool {
			return v.Type == types.VolumeTypeVolume && vols.writers[v.Source] == nil && strings.HasPrefix(opts.StoreDir+"/", v.Target+"/")
		}) {
			fail("%s: JetStream's store_dir %s is in no volume of its own", name, opts.StoreDir)
		}
		servers[net.JoinHostPort(name, strconv.Itoa(opts.Port))] = natsServer(opts)
	}
	return errs
}

func routeTargets(hosts []string, port int) []string {
	var out []string
	for _, h := range hosts {
		out = append(out, net.JoinHostPort(h, strconv.Itoa(port)))
	}
	sort.Strings(out)
	return out
}

// checkNATSOptions checks one server of the cluster: its name, the client port the services
// use, TLS for every client, JetStream, the cluster's name and routes to every node over
// mutual TLS with a certificate for each route's host, and the auth callout from auth.conf.
func checkNATSOptions(where string, o *server.Options, name string, routes []string) []error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(where+": "+format, args...)) }
	if o.ServerName != name {
		fail("server_name %q, want %q", o.ServerName, name)
	}
	if o.Port != 4222 {
		fail("client port %d, want 4222", o.Port)
	}
	if o.TLSConfig == nil || len(o.TLSConfig.Certificates) == 0 {
		fail("no tls block with cert_file and key_file: clients, devices too, would connect without TLS")
	}
	if !o.JetStream || o.StoreDir == "" {
		fail("JetStream is not enabled with a store_dir")
	}
	if o.Cluster.Name != natsCluster {
		fail("cluster name %q, want %q", o.Cluster.Name, natsCluster)
	}
	var got []string
	for _, r := range o.Routes {
		got = append(got, r.Host)
	}
	sort.Strings(got)
	if !slices.Equal(got, routes) {
		fail("routes %v, want every node %v", got, routes)
	}
	if c := o.Cluster.TLSConfig; c == nil || len(c.Certificates) == 0 || c.ClientAuth != tls.RequireAndVerifyClientCert || c.ClientCAs == nil {
		fail("cluster: no tls block with cert_file, key_file, ca_file and verify: true: the routes would not be mutual TLS")
	} else {
		for _, r := range routes {
			host, _, _ := net.SplitHostPort(r)
			for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
				if _, err := c.Certificates[0].Leaf.Verify(x509.VerifyOptions{Roots: c.ClientCAs, DNSName: host, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
					fail("cluster tls: the certificate does not verify for the route to %s against ca_file: %v", r, err)
				}
			}
		}
	}
	if o.AuthCallout == nil || o.SystemAccount != auth.SystemAccount {
		fail("no auth callout and system account: auth.conf is not included")
	}
	return errs
}

// xmlNode is a generic XML element.
type xmlNode struct {
	XMLName  xml.Name
	Attrs    []xml.Attr `xml:",any,attr"`
	Text     string     `xml:",chardata"`
	Children []xmlNode  `xml:",any"`
}

func (n xmlNode) child(name string) *xmlNode {
	for i := range n.Children {
		if n.Children[i].XMLName.Local == name {
			return &n.Children[i]
		}
	}
	return nil
}

func (n xmlNode) all(name string) []xmlNode {
	var out []xmlNode
	for _, c := range n.Children {
		if c.XMLName.Local == name {
			out = append(out, c)
		}
	}
	return out
}

// value is an element's text, or with from_env the value of that variable in env.
func (n *xmlNode) value(env map[string]string) (string, error) {
	if n == nil {
		return "", errors.New("missing")
	}
	for _, a := range n.Attrs {
		if a.Name.Local == "from_env" {
			v, ok := env[a.Value]
			if !ok {
				return "", fmt.Errorf("from_env %s: not in the server's environment", a.Value)
			}
			return v, nil
		}
	}
	return strings.TrimSpace(n.Text), nil
}

// clickhouseConfig merges config.d files as the server does for what the checks read: the
// top-level elements of each file.
func clickhouseConfig(files [][]byte) (xmlNode, error) {
	var merged xmlNode
	for _, b := range files {
		var n xmlNode
		if err := xml.Unmarshal(b, &n); err != nil {
			return merged, err
		}
		if n.XMLName.Local != "clickhouse" {
			return merged, fmt.Errorf("root element <%s>, want <clickhouse>", n.XMLName.Local)
		}
		merged.Children = append(merged.Children, n.Children...)
	}
	return merged, nil
}

// replicaFacts are what one ClickHouse server's configuration says about the cluster and its
// listeners.
type replicaFacts struct {
	replicas    []string // host:port of the cluster's replicas
	zookeeper   []string
	replica     string // its {replica} macro
	shard       string
	interserver string
	ddl         string
	tcpPort     int    // the plain native port: tcp_port, 9000 by the image's config.xml
	securePort  int    // tcp_port_secure; 0 if none
	certFile    string // openSSL server certificateFile and privateKeyFile
	keyFile     string
}

func clickhouseFacts(c xmlNode, env map[string]string) (replicaFacts, []error) {
	f := replicaFacts{tcpPort: 9000}
	var errs []error
	get := func(what string, n *xmlNode) string {
		v, err := n.value(env)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", what, err))
		}
		return v
	}
	port := func(what string, n *xmlNode) int {
		p, err := strconv.Atoi(get(what, n))
		if err != nil || p < 1 || p > 65535 {
			errs = append(errs, fmt.Errorf("%s: not a port", what))
		}
		return p
	}
	if n := c.child("tcp_port"); n != nil {
		f.tcpPort = port("tcp_port", n)
	}
	if n := c.child("tcp_port_secure"); n != nil {
		f.securePort = port("tcp_port_secure", n)
	}
	if s := c.child("openSSL"); s != nil && s.child("server") != nil {
		if n := s.child("server").child("certificateFile"); n != nil {
			f.certFile = get("openSSL certificateFile", n)
		}
		if n := s.child("server").child("privateKeyFile"); n != nil {
			f.keyFile = get("openSSL privateKeyFile", n)
		}
	}
	rs := c.child("remote_servers")
	if rs == nil || rs.child(clusterName) == nil {
		return f, append(errs, fmt.Errorf("no remote_servers cluster %s", clusterName))
	}
	for _, shard := range rs.child(clusterName).all("shard") {
		if v := get("internal_replication", shard.child("internal_replication")); v != "true" {
			errs = append(errs, fmt.Errorf("internal_replication %q: replicated tables need true", v))
		}
		for _, r := range shard.all("replica") {
			f.replicas = append(f.replicas, net.JoinHostPort(get("replica host", r.child("host")), get("replica port", r.child("port"))))
			if r.child("password") != nil {
				get("replica password", r.child("password"))
			}
		}
	}
	if zk := c.child("zookeeper"); zk != nil {
		for _, n := range zk.all("node") {
			f.zookeeper = append(f.zookeeper, net.JoinHostPort(get("zookeeper host", n.child("host")), get("zookeeper port", n.child("port"))))
		}
	}
	if len(f.zookeeper) == 0 {
		errs = append(errs, errors.New("no zookeeper nodes"))
	}
	if m := c.child("macros"); m == nil {
		errs = append(errs, errors.New("no macros"))
	} else {
		f.shard, f.replica = get("macro shard", m.child("shard")), get("macro replica", m.child("replica"))
	}
	f.interserver = get("interserver_http_host", c.child("interserver_http_host"))
	if d := c.child("distributed_ddl"); d != nil {
		f.ddl = get("distributed_ddl path", d.child("path"))
	}
	if f.ddl == "" {
		errs = append(errs, errors.New("no distributed_ddl path: ON CLUSTER DDL would not run"))
	}
	return f, errs
}

// clickhouseTLS is what a ClickHouse server serves on tcp_port_secure: its openSSL server
// certificate and key, files mounted into its container.
func clickhouseTLS(f replicaFacts, files fileReader) (tlsServer, error) {
	return servedFiles(files, "openSSL certificateFile", f.certFile, "privateKeyFile", f.keyFile)
}

// checkComposeClickHouse checks each ClickHouse server's configuration (the config.d files its
// container sees): the cluster's replicas are the ClickHouse services, each names itself; and
// records its plain and secure native ports in servers.
func checkComposeClickHouse(t *testing.T, p *types.Project, names, zookeepers []string, vols composeVolumes, servers map[string]tlsServer) []error {
	t.Helper()
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf("compose: "+format, args...)) }
	if len(names) != 2 || len(zookeepers) != 1 {
		fail("ClickHouse services %v and ZooKeeper services %v: want 2 and 1", names, zookeepers)
		return errs
	}
	const configD = "/etc/clickhouse-server/config.d"
	facts := map[string]replicaFacts{}
	for _, name := range names {
		svc := p.Services[name]
		at := composeView(t, svc, vols)
		entries, _ := os.ReadDir(at(configD))
		var files [][]byte
		for _, e := range entries { // in the order the server merges them
			if b, err := os.ReadFile(filepath.Join(at(configD), e.Name())); err == nil && strings.HasSuffix(e.Name(), ".xml") {
				files = append(files, b)
			}
		}
		c, err := clickhouseConfig(files)
		if err != nil {
			fail("%s: %v", name, err)
			continue
		}
		env := map[string]string{}
		for k, v := range svc.Environment {
			if v != nil {
				env[k] = *v
			}
		}
		f, ferrs := clickhouseFacts(c, env)
		for _, err := range ferrs {
			fail("%s: %v", name, err)
		}
		facts[name] = f
		servers[net.JoinHostPort(name, strconv.Itoa(f.tcpPort))] = tlsServer{}
		if f.securePort == 0 {
			continue
		}
		srv, err := clickhouseTLS(f, viewFiles(at))
		if err != nil {
			fail("%s: %v", name, err)
		}
		servers[net.JoinHostPort(name, strconv.Itoa(f.securePort))] = srv
		if st, err := os.Stat(at(f.keyFile)); err == nil && st.Mode().Perm()&0o004 == 0 {
			fail("%s: privateKeyFile %s (mode %04o) is not readable by ClickHouse's user: the image runs the server as its own user (101), not the one that wrote the file", name, f.keyFile, st.Mode().Perm())
		}
	}
	var want []string
	for _, n := range names {
		want = append(want, net.JoinHostPort(n, strconv.Itoa(facts[n].tcpPort)))
	}
	seen := map[string]string{}
	for _, name := range names {
		f, ok := facts[name]
		if !ok {
			continue
		}
		if !slices.Equal(f.replicas, want) {
			fail("%s: cluster %s has replicas %v, want the ClickHouse services %v", name, clusterName, f.replicas, want)
		}
		if f.interserver != name || p.Services[name].Hostname != name {
			fail("%s: interserver_http_host %q and hostname %q, want its service name (the other replica fetches parts there)", name, f.interserver, p.Services[name].Hostname)
		}
		if other, dup := seen[f.replica]; dup || f.replica == "" {
			fail("%s: macro replica %q is also %s's", name, f.replica, other)
		}
		seen[f.replica] = name
		for _, zk := range f.zookeeper {
			if h, _, err := net.SplitHostPort(zk); err != nil || !slices.Contains(zookeepers, h) {
				fail("%s: zookeeper %s is not the ZooKeeper service", name, zk)
			}
		}
	}
	return errs
}

// checkComposePrometheus checks that Prometheus runs deployments/prometheus and that every
// target it scrapes is a service listening there, scraped over https exactly when it serves it,
// promConfig is a Prometheus configuration: the members of its scrape configurations that the
// deployment checks read (compose's static targets, Kubernetes' pod discovery and relabelling).
type promConfig struct {
	ScrapeConfigs []scrapeConfig `json:"scrape_configs"`
}

// scrapeConfig is one scrape configuration of a promConfig.
type scrapeConfig struct {
	JobName   string `json:"job_name"`
	Scheme    string `json:"scheme"`
	TLSConfig struct {
		CAFile     string `json:"ca_file"`
		ServerName string `json:"server_name"`
	} `json:"tls_config"`
	StaticConfigs []struct {
		Targets []string `json:"targets"`
	} `json:"static_configs"`
	KubernetesSD []struct {
		Role       string `json:"role"`
		Namespaces struct {
			Names []string `json:"names"`
		} `json:"namespaces"`
	} `json:"kubernetes_sd_configs"`
	Relabel []struct {
		SourceLabels []string `json:"source_labels"`
		Regex        string   `json:"regex"`
		Action       string   `json:"action"`
		TargetLabel  string   `json:"target_label"`
		Replacement  string   `json:"replacement"`
	} `json:"relabel_configs"`
}

// trusting the CA that issued its certificate.
func checkComposePrometheus(t *testing.T, p *types.Project, runs map[string]*composeRun, vols composeVolumes, servers map[string]tlsServer) []error {
	t.Helper()
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf("compose: "+format, args...)) }
	svc, ok := p.Services["prometheus"]
	if !ok {
		return nil // reported
	}
	mounted := map[string]string{}
	for _, v := range svc.Volumes {
		if v.Type == types.VolumeTypeBind {
			mounted[v.Target] = v.Source
		}
	}
	promFile, alertsFile := mounted["/etc/prometheus/prometheus.yml"], mounted["/etc/prometheus/alerts.yml"]
	if filepath.Base(filepath.Dir(promFile)) != "prometheus" || filepath.Base(promFile) != "prometheus.yml" || filepath.Base(alertsFile) != "alerts.yml" {
		fail("prometheus does not mount deployments/prometheus/prometheus.yml and alerts.yml beside it: %v", mounted)
		return errs
	}
	b, err := os.ReadFile(promFile)
	if err != nil {
		return append(errs, err)
	}
	var prom promConfig
	if err := yaml.Unmarshal(b, &prom); err != nil {
		return append(errs, err)
	}
	files := viewFiles(composeView(t, svc, vols))
	for _, sc := range prom.ScrapeConfigs {
		for _, st := range sc.StaticConfigs {
			for _, target := range st.Targets {
				h, port, err := splitHostPort(target)
				r, ok := runs[h]
				if err != nil || !ok || r.cfg.DataDir == "" || portOf(r.cfg.HTTP.Addr) != port {
					fail("prometheus.yml job %s scrapes %s: no service of the compose file listens there", sc.JobName, target)
					continue
				}
				if err := checkScrapeTLS(sc.Scheme, sc.TLSConfig.CAFile, sc.TLSConfig.ServerName, h, servers[target], files); err != nil {
					fail("prometheus.yml job %s scrapes %s: %v", sc.JobName, target, err)
				}
			}
		}
	}
	return errs
}

// checkComposePublished checks that a port published on the host that serves TLS has a
// certificate for localhost and 127.0.0.1, where clients on the Docker host reach it.
func checkComposePublished(p *types.Project, servers map[string]tlsServer) []error {
	var errs []error
	for _, name := range slices.Sorted(mapKeys(p.Services)) {
		for _, port := range p.Services[name].Ports {
			hp := net.JoinHostPort(name, strconv.Itoa(int(port.Target)))
			srv := servers[hp]
			if !srv.tls || srv.cert == nil {
				continue
			}
			for _, h := range []string{"localhost", "127.0.0.1"} {
				if err := srv.cert.VerifyHostname(h); err != nil {
					errs = append(errs, fmt.Errorf("compose: %s publishes %s, whose certificate is not for %s: %v", name, hp, h, err))
				}
			}
		}
	}
	return errs
}

func TestCompose(t *testing.T) {
	cleanEnv(t)
	keys := configKeys(t)
	img, errs := checkDockerfile(keys, read(t, dockerfilePath))
	noErrs(t, errs)
	src := read(t, "deployments/compose/compose.yaml")
	invs, errs := checkCompose(t, keys, img, src)
	noErrs(t, errs)
	if len(invs) < 13 {
		t.Errorf("%d runs of the binary: %v", len(invs), invs)
	}

	broken := []struct{ name, old, new, want string }{
		{"missing service", "  ingest-2:\n", "  ingest-9:\n", "no service ingest-2"},
		{"unknown attribute", "    restart: \"no\"\n", "    restrat: \"no\"\n", "restrat"},
		{"missing file", "../config/api.yaml:", "../config/apii.yaml:", "apii.yaml"},
		{"writable config", "../config/api.yaml:/etc/anchorline/api.yaml:ro", "../config/api.yaml:/etc/anchorline/api.yaml", "read-write"},
		{"unknown key", "ANCHORLINE_CLICKHOUSE_STARTUP_TIMEOUT: 3m", "ANCHORLINE_CLICKHOUSE_STARTUP_TIMOUT: 3m", "ANCHORLINE_CLICKHOUSE_STARTUP_TIMOUT names no configuration key"},
		{"bad value", "ANCHORLINE_CLICKHOUSE_STARTUP_TIMEOUT: 3m", "ANCHORLINE_CLICKHOUSE_STARTUP_TIMEOUT: 3 minutes", "clickhouse.startup_timeout"},
		{"same worker", "      ANCHORLINE_INGEST_WORKER: ingest-2", "      ANCHORLINE_INGEST_WORKER: ingest-1", "are both ingest.worker ingest-1"},
		{"config not mounted", `"api", "--config", "/etc/anchorline/api.yaml"`, `"api", "--config", "/etc/anchorline/api.yml"`, "is not a file mounted"},
		{"wrong host", "--hosts ledger-1,ledger-2,ledger-3,ledger-4 --out", "--hosts ledger-1,ledger-2,ledger-3,ledger-5 --out", "host ledger-5"},
		{"wrong home", "volume: {subpath: net/node3}", "volume: {subpath: net/node2}", "ledger-4: --home"},
		{"same macros", "./clickhouse/macros-2.xml:", "./clickhouse/macros-1.xml:", "macro replica"},
		{"other image", "  image: anchorline:dev\n", "  image: anchorline:old\n", `image "anchorline:old"`},
		{"no migrate", "      migrate: {condition: service_completed_successfully}\n", "      migrate: {condition: service_started}\n", "does not wait for migrate"},
		{"standby differs", "    environment: *anchor-env\n", "    environment:\n      ANCHORLINE_ANCHOR_INTERVAL: 1s\n", "configured differently"},
		{"undeclared volume", "      - nats-1:/data\n", "      - nats-9:/data\n", "nats-9"},
		{"root-owned volume", "      - keys:/var/lib/anchorline/keys\n\n  tls-init:", "      - keys:/var/lib/anchor-keys\n\n  tls-init:", "does not make for its user"},
		// TLS: what the servers serve, with which certificate, and their clients.
		{"NATS certificate not mounted", "      - {type: volume, source: tls, target: /etc/nats/tls, read_only: true, volume: {subpath: nats}}\n", "",
			"nats-1: /etc/nats/nats.conf: tls ca_file /etc/nats/tls/ca.pem is not a file mounted into the container"},
		{"CA not mounted", "source: tls, target: /etc/anchorline/tls, read_only: true, volume: {subpath: ca}}", "source: tls, target: /etc/anchorline/ca, read_only: true, volume: {subpath: ca}}",
			"migrate: tls.ca /etc/anchorline/tls/ca.pem is not a file mounted into the container"},
		{"HTTP certificate not mounted", "      - *http-tls\n", "", "anchor-1: http.tls_cert /etc/anchorline/tls/http.pem or http.tls_key /etc/anchorline/tls/http-key.pem is not a file mounted"},
		{"plain ClickHouse port", "ANCHORLINE_CLICKHOUSE_ADDR: clickhouse-1:9440,clickhouse-2:9440", "ANCHORLINE_CLICKHOUSE_ADDR: clickhouse-1:9000,clickhouse-2:9000",
			"migrate: clickhouse.addr: clickhouse-1:9000 serves no TLS, but clickhouse.secure is true"},
		{"not secure", `ANCHORLINE_CLICKHOUSE_SECURE: "true"`, `ANCHORLINE_CLICKHOUSE_SECURE: "false"`, "migrate: clickhouse.addr: clickhouse-1:9440 serves only TLS, but clickhouse.secure is false"},
		{"ClickHouse without TLS", "      - ./clickhouse/tls.xml:/etc/clickhouse-server/config.d/tls.xml:ro\n", "", "clickhouse.addr names clickhouse-1:9440, not a ClickHouse service's native port"},
		{"ClickHouse key unreadable", "        chmod 0644 clickhouse/clickhouse-key.pem\n", "", "is not readable by ClickHouse's user"},
		{"validators without TLS", " --rpc-tls-cert /etc/anchorline/tls/ledger.pem --rpc-tls-key /etc/anchorline/tls/ledger-key.pem", "",
			"ledger.rpc: ledger-1:26657 serves no TLS, but tls.ca is set"},
		{"validator certificate not mounted", "      - {type: volume, source: tls, target: /etc/anchorline/tls, read_only: true, volume: {subpath: ledger}}\n", "",
			"ledger-1: ledger init --rpc-tls-cert, --rpc-tls-key: rpc.tls_cert_file /etc/anchorline/tls/ledger.pem or rpc.tls_key_file /etc/anchorline/tls/ledger-key.pem is not a file mounted"},
		{"certificate for other hosts", "--name clickhouse --hosts clickhouse-1,clickhouse-2", "--name clickhouse --hosts clickhouse-1",
			"clickhouse-2:9440: its certificate does not verify against tls.ca /etc/anchorline/tls/ca.pem: x509: certificate is valid for clickhouse-1, not clickhouse-2"},
		{"published without localhost", "--name http --hosts ingest-1,ingest-2,anchor-1,anchor-2,rules-1,rules-2,api-1,localhost,127.0.0.1", "--name http --hosts ingest-1,ingest-2,anchor-1,anchor-2,rules-1,rules-2,api-1",
			"api-1 publishes api-1:8080, whose certificate is not for localhost"},
		{"Prometheus without the CA", "      - {type: volume, source: tls, target: /etc/prometheus/tls, read_only: true, volume: {subpath: ca}}\n", "",
			`prometheus.yml job anchorline-ingest scrapes ingest-1:8081: tls_config ca_file "/etc/prometheus/tls/ca.pem" is not a file Prometheus has`},
		{"no wait for tls-init", "      - prometheus:/prometheus\n    depends_on:\n      tls-init: {condition: service_completed_successfully}\n", "      - prometheus:/prometheus\n",
			"prometheus mounts the volume tls, which tls-init writes, and does not wait for tls-init to complete"},
		{"unknown setup command", "        cd /var/lib/anchorline/tls\n", "        cd /var/lib/anchorline/tls\n        ln -s ca.pem root.pem\n", "tls-init: line 6: ln -s ca.pem root.pem: a command the checks do not reproduce"},
	}
	for _, c := range broken {
		t.Run(c.name, func(t *testing.T) {
			_, errs := checkCompose(t, keys, img, mutate(t, src, c.old, c.new))
			wantErr(t, errs, c.want)
		})
	}
}

// --- Kubernetes -------------------------------------------------------------------------------

// manifest is one decoded document.
type manifest struct {
	where string // file and kind/name
	obj   any
}

// newObject is the typed object for an apiVersion and kind the manifests may use.
func newObject(apiVersion, kind string) (any, bool) {
	switch apiVersion + " " + kind {
	case "v1 Namespace":
		return &corev1.Namespace{}, true
	case "v1 ConfigMap":
		return &corev1.ConfigMap{}, true
	case "v1 Secret":
		return &corev1.Secret{}, true
	case "v1 Service":
		return &corev1.Service{}, true
	case "v1 ServiceAccount":
		return &corev1.ServiceAccount{}, true
	case "apps/v1 Deployment":
		return &appsv1.Deployment{}, true
	case "apps/v1 StatefulSet":
		return &appsv1.StatefulSet{}, true
	case "batch/v1 Job":
		return &batchv1.Job{}, true
	case "autoscaling/v2 HorizontalPodAutoscaler":
		return &autoscalingv2.HorizontalPodAutoscaler{}, true
	case "policy/v1 PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}, true
	}
	return nil, false
}

// decodeManifests decodes every document of a file strictly into its Kubernetes API type: an
// unknown kind, an unknown or duplicated field, or a value of the wrong type is an error.
func decodeManifests(file string, data []byte) ([]manifest, []error) {
	var out []manifest
	var errs []error
	r := k8syaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for i := 0; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return out, append(errs, fmt.Errorf("%s: %w", file, err))
		}
		j, err := yaml.YAMLToJSON(doc)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s document %d: %w", file, i, err))
			continue
		}
		if string(bytes.TrimSpace(j)) == "null" {
			continue // comments only
		}
		var tm metav1.TypeMeta
		if err := json.Unmarshal(j, &tm); err != nil {
			errs = append(errs, fmt.Errorf("%s document %d: %w", file, i, err))
			continue
		}
		obj, ok := newObject(tm.APIVersion, tm.Kind)
		if !ok {
			errs = append(errs, fmt.Errorf("%s document %d: unknown kind %s %s", file, i, tm.APIVersion, tm.Kind))
			continue
		}
		if err := yaml.UnmarshalStrict(doc, obj); err != nil {
			errs = append(errs, fmt.Errorf("%s document %d (%s): %w", file, i, tm.Kind, err))
			continue
		}
		out = append(out, manifest{where: fmt.Sprintf("%s: %s %s", file, tm.Kind, objectMeta(obj).Name), obj: obj})
	}
	return out, errs
}

func objectMeta(obj any) *metav1.ObjectMeta {
	switch o := obj.(type) {
	case *corev1.Namespace:
		return &o.ObjectMeta
	case *corev1.ConfigMap:
		return &o.ObjectMeta
	case *corev1.Secret:
		return &o.ObjectMeta
	case *corev1.Service:
		return &o.ObjectMeta
	case *corev1.ServiceAccount:
		return &o.ObjectMeta
	case *appsv1.Deployment:
		return &o.ObjectMeta
	case *appsv1.StatefulSet:
		return &o.ObjectMeta
	case *batchv1.Job:
		return &o.ObjectMeta
	case *autoscalingv2.HorizontalPodAutoscaler:
		return &o.ObjectMeta
	case *policyv1.PodDisruptionBudget:
		return &o.ObjectMeta
	}
	return &metav1.ObjectMeta{}
}

// cluster is the set of objects the manifests (and the generated Secrets) create.
type cluster struct {
	objs       []manifest
	configMaps map[string]*corev1.ConfigMap
	secrets    map[string]*corev1.Secret
	services   map[string]*corev1.Service
	accounts   map[string]*corev1.ServiceAccount
	deploys    map[string]*appsv1.Deployment
	sets       map[string]*appsv1.StatefulSet
	hpas       []*autoscalingv2.HorizontalPodAutoscaler
	pdbs       []*policyv1.PodDisruptionBudget
	namespaces []string
	// servers are what the pods serve (checkValidators, checkNATS, checkClickHouse) by the
	// host:port of a pod under its headless Service; https are the Anchorline services' HTTP,
	// by workload (checkServices).
	servers map[string]tlsServer
	https   map[string]tlsServer
}

func newCluster(objs []manifest) (*cluster, []error) {
	c := &cluster{objs: objs, configMaps: map[string]*corev1.ConfigMap{}, secrets: map[string]*corev1.Secret{},
		services: map[string]*corev1.Service{}, accounts: map[string]*corev1.ServiceAccount{},
		deploys: map[string]*appsv1.Deployment{}, sets: map[string]*appsv1.StatefulSet{},
		servers: map[string]tlsServer{}, https: map[string]tlsServer{}}
	var errs []error
	seen := map[string]bool{}
	for _, m := range objs {
		meta := objectMeta(m.obj)
		kind := fmt.Sprintf("%T", m.obj)
		if seen[kind+"/"+meta.Name] {
			errs = append(errs, fmt.Errorf("%s: defined twice", m.where))
		}
		seen[kind+"/"+meta.Name] = true
		switch o := m.obj.(type) {
		case *corev1.Namespace:
			c.namespaces = append(c.namespaces, o.Name)
		case *corev1.ConfigMap:
			c.configMaps[o.Name] = o
		case *corev1.Secret:
			c.secrets[o.Name] = o
		case *corev1.Service:
			c.services[o.Name] = o
		case *corev1.ServiceAccount:
			c.accounts[o.Name] = o
		case *appsv1.Deployment:
			c.deploys[o.Name] = o
		case *appsv1.StatefulSet:
			c.sets[o.Name] = o
		case *autoscalingv2.HorizontalPodAutoscaler:
			c.hpas = append(c.hpas, o)
		case *policyv1.PodDisruptionBudget:
			c.pdbs = append(c.pdbs, o)
		}
	}
	return c, errs
}

// workload is a Deployment, StatefulSet or Job: its pods.
type workload struct {
	where       string
	name        string
	selector    *metav1.LabelSelector
	template    corev1.PodTemplateSpec
	claims      []string
	replicas    int
	serviceName string
	set         bool
}

func (c *cluster) workloads() []workload {
	var out []workload
	for _, m := range c.objs {
		switch o := m.obj.(type) {
		case *appsv1.Deployment:
			out = append(out, workload{where: m.where, name: o.Name, selector: o.Spec.Selector, template: o.Spec.Template, replicas: int(ptrOr(o.Spec.Replicas, 1))})
		case *appsv1.StatefulSet:
			w := workload{where: m.where, name: o.Name, selector: o.Spec.Selector, template: o.Spec.Template, replicas: int(ptrOr(o.Spec.Replicas, 1)), serviceName: o.Spec.ServiceName, set: true}
			for _, pvc := range o.Spec.VolumeClaimTemplates {
				w.claims = append(w.claims, pvc.Name)
			}
			out = append(out, w)
		case *batchv1.Job:
			out = append(out, workload{where: m.where, name: o.Name, template: o.Spec.Template, replicas: 1})
		}
	}
	return out
}

func ptrOr[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

func (c *cluster) workload(name string) *workload {
	for _, w := range c.workloads() {
		if w.name == name {
			return &w
		}
	}
	return nil
}

func selects(sel *metav1.LabelSelector, l map[string]string) bool {
	if sel == nil {
		return false
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	return err == nil && !s.Empty() && s.Matches(labels.Set(l))
}

func (c *cluster) selected(sel map[string]string) []workload {
	var out []workload
	for _, w := range c.workloads() {
		if len(sel) > 0 && labels.SelectorFromSet(sel).Matches(labels.Set(w.template.Labels)) {
			out = append(out, w)
		}
	}
	return out
}

func allContainers(spec corev1.PodSpec) []corev1.Container {
	return slices.Concat(spec.InitContainers, spec.Containers)
}

func containerPort(ctrs []corev1.Container, port intstr.IntOrString) (int, bool) {
	for _, ctr := range ctrs {
		for _, p := range ctr.Ports {
			if port.Type == intstr.String && p.Name == port.StrVal || port.Type == intstr.Int && int(p.ContainerPort) == port.IntValue() {
				return int(p.ContainerPort), true
			}
		}
	}
	return 0, false
}

// resolve finds the pod a host:port of a configuration names: "pod.service" for a StatefulSet's
// pod under its headless Service, or "service" for a Service. It returns the workload and the
// container port.
func (c *cluster) resolve(hostport string) (*workload, int, error) {
	host, port, err := splitHostPort(hostport)
	if err != nil {
		return nil, 0, err
	}
	pod, svcName, isPod := strings.Cut(host, ".")
	if !isPod {
		svcName = host
	}
	svc, ok := c.services[svcName]
	if !ok {
		return nil, 0, fmt.Errorf("%s: no Service %s", hostport, svcName)
	}
	var target intstr.IntOrString
	for _, p := range svc.Spec.Ports {
		if int(p.Port) == port {
			target = p.TargetPort
			if target.Type == intstr.Int && target.IntValue() == 0 {
				target = intstr.FromInt32(p.Port)
			}
		}
	}
	if target.String() == "0" || target.String() == "" {
		return nil, 0, fmt.Errorf("%s: Service %s has no port %d", hostport, svcName, port)
	}
	for _, w := range c.selected(svc.Spec.Selector) {
		if isPod {
			i, err := strconv.Atoi(strings.TrimPrefix(pod, w.name+"-"))
			if !w.set || w.serviceName != svcName || err != nil || !strings.HasPrefix(pod, w.name+"-") || i < 0 || i >= w.replicas {
				continue
			}
		}
		if p, ok := containerPort(w.template.Spec.Containers, target); ok {
			return &w, p, nil
		}
	}
	return nil, 0, fmt.Errorf("%s: no pod behind Service %s listens on %s", hostport, svcName, target.String())
}

// server is the server a configuration's host:port names: the pod under its headless Service,
// at the container port the Service's port targets.
func (c *cluster) server(hostport string) (tlsServer, bool) {
	_, port, err := c.resolve(hostport)
	host, _, err2 := net.SplitHostPort(hostport)
	if err != nil || err2 != nil {
		return tlsServer{}, false
	}
	s, ok := c.servers[net.JoinHostPort(host, strconv.Itoa(port))]
	return s, ok
}

// podServer is the key of c.servers for pod i of a StatefulSet's workload, at port.
func podServer(w workload, i, port int) string {
	return net.JoinHostPort(fmt.Sprintf("%s-%d.%s", w.name, i, w.serviceName), strconv.Itoa(port))
}

// containerFiles reads files as a container sees them in the ConfigMaps and Secrets it mounts;
// with secret, in Secrets only (where keys belong).
func (c *cluster) containerFiles(spec corev1.PodSpec, ctr corev1.Container, secret bool) fileReader {
	return func(p string) ([]byte, bool) {
		v, b, ok := c.mountedFile(spec, ctr, p)
		return b, ok && (!secret || v.Secret != nil || v.Projected != nil)
	}
}

// podEnv is a container's environment as the kubelet would set it for the pod podName: envFrom,
// then env with $(VAR) expanded; fieldRefs and Secrets that are not there get sample values.
func (c *cluster) podEnv(ctr corev1.Container, podName string) map[string]string {
	env := map[string]string{}
	for _, from := range ctr.EnvFrom {
		if from.ConfigMapRef != nil {
			if cm, ok := c.configMaps[from.ConfigMapRef.Name]; ok {
				for k, v := range cm.Data {
					env[from.Prefix+k] = v
				}
			}
		}
		if from.SecretRef != nil {
			if s, ok := c.secrets[from.SecretRef.Name]; ok {
				for k, v := range s.Data {
					env[from.Prefix+k] = string(v)
				}
			}
		}
	}
	expand := regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)
	for _, e := range ctr.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = expand.ReplaceAllStringFunc(e.Value, func(m string) string {
				if v, ok := env[m[2:len(m)-1]]; ok {
					return v
				}
				return m
			})
		case e.ValueFrom.FieldRef != nil:
			switch e.ValueFrom.FieldRef.FieldPath {
			case "metadata.name":
				env[e.Name] = podName
			case "metadata.namespace":
				env[e.Name] = namespace
			default:
				env[e.Name] = "10.0.0.1"
			}
		case e.ValueFrom.ConfigMapKeyRef != nil:
			env[e.Name] = c.configMaps[e.ValueFrom.ConfigMapKeyRef.Name].Data[e.ValueFrom.ConfigMapKeyRef.Key]
		case e.ValueFrom.SecretKeyRef != nil:
			env[e.Name] = "secret"
			if s, ok := c.secrets[e.ValueFrom.SecretKeyRef.Name]; ok {
				env[e.Name] = string(s.Data[e.ValueFrom.SecretKeyRef.Key])
			}
		}
	}
	return env
}

// volumeFiles are the files a volume of configMap, Secret or projected sources shows: its path
// inside the volume to its content.
func (c *cluster) volumeFiles(v corev1.Volume) (map[string][]byte, bool) {
	files := map[string][]byte{}
	add := func(data map[string][]byte, items []corev1.KeyToPath) {
		if len(items) == 0 {
			for k, b := range data {
				files[k] = b
			}
		}
		for _, it := range items {
			if b, ok := data[it.Key]; ok {
				files[it.Path] = b
			}
		}
	}
	cmData := func(name string) map[string][]byte {
		out := map[string][]byte{}
		if cm, ok := c.configMaps[name]; ok {
			for k, s := range cm.Data {
				out[k] = []byte(s)
			}
		}
		return out
	}
	secretData := func(name string) map[string][]byte {
		if s, ok := c.secrets[name]; ok {
			return s.Data
		}
		return nil
	}
	switch {
	case v.ConfigMap != nil:
		add(cmData(v.ConfigMap.Name), v.ConfigMap.Items)
	case v.Secret != nil:
		add(secretData(v.Secret.SecretName), v.Secret.Items)
	case v.Projected != nil:
		for _, s := range v.Projected.Sources {
			if s.ConfigMap != nil {
				add(cmData(s.ConfigMap.Name), s.ConfigMap.Items)
			}
			if s.Secret != nil {
				add(secretData(s.Secret.Name), s.Secret.Items)
			}
		}
	default:
		return nil, false
	}
	return files, true
}

// checkRefs checks one object's names and every reference its pods make.
func (c *cluster) checkRefs() []error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if len(c.namespaces) != 1 || c.namespaces[0] != namespace {
		fail("namespaces %v: want the one Namespace %s", c.namespaces, namespace)
	}
	for _, m := range c.objs {
		meta := objectMeta(m.obj)
		for _, msg := range validation.IsDNS1123Subdomain(meta.Name) {
			fail("%s: name: %s", m.where, msg)
		}
		if _, ok := m.obj.(*corev1.Namespace); !ok && meta.Namespace != namespace {
			fail("%s: namespace %q, want %s", m.where, meta.Namespace, namespace)
		}
		for k, v := range meta.Labels {
			for _, msg := range slices.Concat(validation.IsQualifiedName(k), validation.IsValidLabelValue(v)) {
				fail("%s: label %s=%s: %s", m.where, k, v, msg)
			}
		}
		switch o := m.obj.(type) {
		case *corev1.Service:
			for _, msg := range validation.IsDNS1035Label(o.Name) {
				fail("%s: name: %s", m.where, msg)
			}
			pods := c.selected(o.Spec.Selector)
			if len(pods) == 0 {
				fail("%s: its selector %v matches no pods", m.where, o.Spec.Selector)
			}
			for _, p := range o.Spec.Ports {
				target := p.TargetPort
				if target.Type == intstr.Int && target.IntValue() == 0 {
					target = intstr.FromInt32(p.Port)
				}
				for _, w := range pods {
					if _, ok := containerPort(w.template.Spec.Containers, target); !ok {
						fail("%s: port %s targets %s, which %s's containers do not have", m.where, p.Name, target.String(), w.name)
					}
				}
			}
		case *corev1.ConfigMap:
			for k := range o.Data {
				for _, msg := range validation.IsConfigMapKey(k) {
					fail("%s: key %s: %s", m.where, k, msg)
				}
			}
		case *autoscalingv2.HorizontalPodAutoscaler:
			if ref := o.Spec.ScaleTargetRef; ref.Kind != "Deployment" || c.deploys[ref.Name] == nil {
				fail("%s: scales %s %s, which the manifests do not make", m.where, ref.Kind, ref.Name)
			}
			if ptrOr(o.Spec.MinReplicas, 1) > o.Spec.MaxReplicas {
				fail("%s: minReplicas above maxReplicas", m.where)
			}
		case *policyv1.PodDisruptionBudget:
			matched := false
			for _, w := range c.workloads() {
				matched = matched || selects(o.Spec.Selector, w.template.Labels)
			}
			if !matched {
				fail("%s: its selector matches no pods", m.where)
			}
		}
	}
	for _, w := range c.workloads() {
		errs = append(errs, c.checkPods(w)...)
	}
	return errs
}

func (c *cluster) checkPods(w workload) []error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(w.where+": "+format, args...)) }
	spec := w.template.Spec
	if w.selector != nil || w.set || !strings.Contains(w.where, "Job") {
		if !selects(w.selector, w.template.Labels) {
			fail("selector %v does not match the pod template's labels %v", w.selector, w.template.Labels)
		}
	}
	for k, v := range w.template.Labels {
		for _, msg := range slices.Concat(validation.IsQualifiedName(k), validation.IsValidLabelValue(v)) {
			fail("pod label %s=%s: %s", k, v, msg)
		}
	}
	if w.set {
		svc, ok := c.services[w.serviceName]
		if !ok || svc.Spec.ClusterIP != corev1.ClusterIPNone || !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(w.template.Labels)) {
			fail("serviceName %q is not a headless Service selecting its pods", w.serviceName)
		}
	}
	if sa := spec.ServiceAccountName; sa != "" && sa != "default" && c.accounts[sa] == nil {
		fail("ServiceAccount %s does not exist", sa)
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		volumes[v.Name] = v
		for _, msg := range validation.IsDNS1123Label(v.Name) {
			fail("volume %s: %s", v.Name, msg)
		}
		keys := func(kind, name string, items []corev1.KeyToPath) {
			var have map[string]bool
			switch kind {
			case "ConfigMap":
				if cm, ok := c.configMaps[name]; ok {
					have = map[string]bool{}
					for k := range cm.Data {
						have[k] = true
					}
				}
			case "Secret":
				if s, ok := c.secrets[name]; ok {
					have = map[string]bool{}
					for k := range s.Data {
						have[k] = true
					}
				}
			}
			if have == nil {
				fail("volume %s: %s %s does not exist", v.Name, kind, name)
				return
			}
			for _, it := range items {
				if !have[it.Key] {
					fail("volume %s: %s %s has no key %s", v.Name, kind, name, it.Key)
				}
			}
		}
		switch {
		case v.ConfigMap != nil:
			keys("ConfigMap", v.ConfigMap.Name, v.ConfigMap.Items)
		case v.Secret != nil:
			keys("Secret", v.Secret.SecretName, v.Secret.Items)
		case v.Projected != nil:
			paths := map[string]bool{}
			for _, s := range v.Projected.Sources {
				var items []corev1.KeyToPath
				switch {
				case s.ConfigMap != nil:
					keys("ConfigMap", s.ConfigMap.Name, s.ConfigMap.Items)
					items = s.ConfigMap.Items
				case s.Secret != nil:
					keys("Secret", s.Secret.Name, s.Secret.Items)
					items = s.Secret.Items
				}
				for _, it := range items {
					if paths[it.Path] {
						fail("volume %s: two sources write %s", v.Name, it.Path)
					}
					paths[it.Path] = true
				}
			}
		}
	}
	ports := map[string]bool{}
	for _, ctr := range allContainers(spec) {
		where := "container " + ctr.Name
		for _, msg := range validation.IsDNS1123Label(ctr.Name) {
			fail("%s: %s", where, msg)
		}
		if strings.HasPrefix(ctr.Image, "anchorline") && ctr.Image != image {
			fail("%s: image %q, want %q", where, ctr.Image, image)
		}
		if !strings.HasPrefix(ctr.Image, "anchorline") && !slices.ContainsFunc([]string{"nats:", "clickhouse/clickhouse-server:", "zookeeper:"}, func(p string) bool { return strings.HasPrefix(ctr.Image, p) }) {
			fail("%s: image %q is neither Anchorline's nor one of the servers it uses", where, ctr.Image)
		}
		for _, p := range ctr.Ports {
			if ports[p.Name] {
				fail("%s: port name %s twice in the pod", where, p.Name)
			}
			ports[p.Name] = true
			for _, msg := range validation.IsValidPortName(p.Name) {
				fail("%s: port %s: %s", where, p.Name, msg)
			}
		}
		for _, e := range ctr.Env {
			for _, msg := range validation.IsEnvVarName(e.Name) {
				fail("%s: env %s: %s", where, e.Name, msg)
			}
			if e.ValueFrom == nil {
				continue
			}
			if r := e.ValueFrom.ConfigMapKeyRef; r != nil {
				if _, ok := c.configMaps[r.Name].Data[r.Key]; c.configMaps[r.Name] == nil || !ok {
					fail("%s: env %s: ConfigMap %s key %s does not exist", where, e.Name, r.Name, r.Key)
				}
			}
			if r := e.ValueFrom.SecretKeyRef; r != nil {
				if _, ok := c.secrets[r.Name].Data[r.Key]; c.secrets[r.Name] == nil || !ok {
					fail("%s: env %s: Secret %s key %s does not exist", where, e.Name, r.Name, r.Key)
				}
			}
			if r := e.ValueFrom.FieldRef; r != nil && !slices.Contains([]string{"metadata.name", "metadata.namespace", "status.podIP"}, r.FieldPath) {
				fail("%s: env %s: fieldRef %s", where, e.Name, r.FieldPath)
			}
		}
		for _, from := range ctr.EnvFrom {
			if from.ConfigMapRef != nil && c.configMaps[from.ConfigMapRef.Name] == nil {
				fail("%s: envFrom ConfigMap %s does not exist", where, from.ConfigMapRef.Name)
			}
			if from.SecretRef != nil && c.secrets[from.SecretRef.Name] == nil {
				fail("%s: envFrom Secret %s does not exist", where, from.SecretRef.Name)
			}
		}
		for _, vm := range ctr.VolumeMounts {
			v, ok := volumes[vm.Name]
			if !ok && !slices.Contains(w.claims, vm.Name) {
				fail("%s: mounts %s, which is no volume of the pod", where, vm.Name)
				continue
			}
			if files := unreadable(spec, v); len(files) > 0 && runsAsOwnUser(ctr) {
				fail("%s: mounts %s, whose files %v its user cannot read: the kubelet writes a Secret's files as root with the volume's mode; give the pod an fsGroup, or the files a mode that others may read", where, vm.Name, files)
			}
			if vm.SubPath != "" {
				if files, ok := c.volumeFiles(v); ok {
					if _, has := files[vm.SubPath]; !has {
						fail("%s: subPath %s is not in volume %s", where, vm.SubPath, vm.Name)
					}
				}
			}
		}
		for _, probe := range []*corev1.Probe{ctr.ReadinessProbe, ctr.LivenessProbe, ctr.StartupProbe} {
			if probe == nil {
				continue
			}
			var port *intstr.IntOrString
			if probe.HTTPGet != nil {
				port = &probe.HTTPGet.Port
			}
			if probe.TCPSocket != nil {
				port = &probe.TCPSocket.Port
			}
			if port != nil {
				if _, ok := containerPort([]corev1.Container{ctr}, *port); !ok {
					fail("%s: a probe names port %s, which the container does not have", where, port.String())
				}
			}
		}
	}
	return errs
}

// runsAsOwnUser reports whether a container's process runs as a user of its own, neither root
// nor the files' owner: Anchorline's image (10001) and ClickHouse's (its server as 101).
func runsAsOwnUser(ctr corev1.Container) bool {
	return ctr.Image == image || strings.HasPrefix(ctr.Image, "clickhouse/")
}

// unreadable are the files of a volume's Secrets that a process of a user other than root,
// outside the pod's fsGroup, cannot read: the kubelet writes them owned by root with the
// volume's modes (0644 unless set), and lets the pod's fsGroup read every one.
func unreadable(spec corev1.PodSpec, v corev1.Volume) []string {
	if spec.SecurityContext != nil && spec.SecurityContext.FSGroup != nil {
		return nil
	}
	var out []string
	check := func(defaultMode *int32, secret string, items []corev1.KeyToPath) {
		mode := ptrOr(defaultMode, 0o644)
		if len(items) == 0 && mode&0o004 == 0 {
			out = append(out, "Secret "+secret)
		}
		for _, it := range items {
			if ptrOr(it.Mode, mode)&0o004 == 0 {
				out = append(out, it.Path)
			}
		}
	}
	switch {
	case v.Secret != nil:
		check(v.Secret.DefaultMode, v.Secret.SecretName, v.Secret.Items)
	case v.Projected != nil:
		for _, src := range v.Projected.Sources {
			if src.Secret != nil {
				check(v.Projected.DefaultMode, src.Secret.Name, src.Secret.Items)
			}
		}
	}
	return out
}

// mountedFile finds what a container sees at file: the volume mounted at its folder (or at the
// file, with a subPath) and the file's content, if the volume is a ConfigMap, Secret or
// projected one.
func (c *cluster) mountedFile(spec corev1.PodSpec, ctr corev1.Container, file string) (corev1.Volume, []byte, bool) {
	for _, vm := range ctr.VolumeMounts {
		var name string
		switch {
		case vm.SubPath != "" && vm.MountPath == file:
			name = vm.SubPath
		case vm.SubPath == "" && path.Dir(file) == vm.MountPath:
			name = path.Base(file)
		default:
			continue
		}
		for _, v := range spec.Volumes {
			if v.Name != vm.Name {
				continue
			}
			files, ok := c.volumeFiles(v)
			if !ok {
				return v, nil, false
			}
			b, ok := files[name]
			return v, b, ok
		}
	}
	return corev1.Volume{}, nil, false
}

// k8sInvocations are a container's runs of the binary, and whether it is Anchorline's.
func k8sInvocations(where string, ctr corev1.Container) ([]invocation, bool, error) {
	if ctr.Image != image {
		return nil, false, nil
	}
	switch {
	case len(ctr.Command) == 0, slices.Equal(ctr.Command, []string{binaryInImage}):
		return []invocation{{where: where, args: ctr.Args}}, true, nil
	case slices.Equal(ctr.Command, []string{"/bin/sh", "-ec"}) && len(ctr.Args) == 1:
		invs, err := shellInvocations(where, ctr.Args[0])
		return invs, true, err
	}
	return nil, true, fmt.Errorf("%s: command %v: want the image's entrypoint or /bin/sh -ec with one script", where, ctr.Command)
}

// checkServices loads each Anchorline service's configuration as its container would and checks
// that the addresses, files and names in it exist in the manifests.
func (c *cluster) checkServices(keys map[string]bool, img imageFacts, tmp string) ([]invocation, []error) {
	var invs []invocation
	var errs []error
	for _, w := range c.workloads() {
		spec := w.template.Spec
		for _, ctr := range allContainers(spec) {
			where := w.where + " container " + ctr.Name
			got, ours, err := k8sInvocations(where, ctr)
			if err != nil {
				errs = append(errs, err)
			}
			invs = append(invs, got...)
			if !ours || len(got) != 1 || len(ctr.Command) != 0 {
				continue
			}
			words := subcommand(got[0].args)
			if len(words) != 1 || !slices.Contains(serviceRoles(), words[0]) {
				continue
			}
			env := c.podEnv(ctr, w.name+"-7d9f8c6b5-x2x4q")
			for k, v := range img.env {
				if _, set := env[k]; !set {
					env[k] = v
				}
			}
			errs = append(errs, checkEnvNames(keys, where, env)...)
			args := got[0].args
			if file, ok := flagValue(args, "config"); ok {
				_, b, ok := c.mountedFile(spec, ctr, file)
				if !ok {
					errs = append(errs, fmt.Errorf("%s: --config %s is not a file of a ConfigMap it mounts", where, file))
					continue
				}
				want, err := deployments.ConfigFile(strings.TrimSuffix(path.Base(file), ".yaml"))
				if err != nil || !bytes.Equal(b, want) {
					errs = append(errs, fmt.Errorf("%s: --config %s is not deployments/config/%s byte for byte", where, file, path.Base(file)))
				}
				host := filepath.Join(tmp, w.name+"-"+ctr.Name+".yaml")
				if err := os.WriteFile(host, b, 0o600); err != nil {
					errs = append(errs, err)
					continue
				}
				args = withFlag(args, "config", host)
			}
			cfg, err := loadConfig(args[1:], env)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", where, err))
				continue
			}
			errs = append(errs, c.checkServiceConfig(where, w, ctr, words[0], cfg)...)
		}
	}
	// A Service in front of pods serving https: its clients verify its name.
	for _, name := range slices.Sorted(mapKeys(c.services)) {
		for _, w := range c.selected(c.services[name].Spec.Selector) {
			srv := c.https[w.name]
			if !srv.tls || srv.cert == nil {
				continue
			}
			for _, h := range []string{name, name + "." + namespace + ".svc"} {
				if err := srv.cert.VerifyHostname(h); err != nil {
					errs = append(errs, fmt.Errorf("Service %s: %s's pods serve https with a certificate not for %s: %v", name, w.name, h, err))
				}
			}
		}
	}
	return invs, errs
}

func (c *cluster) checkServiceConfig(where string, w workload, ctr corev1.Container, role string, cfg config.Config) []error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(where+": "+format, args...)) }
	resolveAll := func(key, list string, want func(*workload) bool, trim ...string) {
		for _, hp := range hostPorts(list, trim...) {
			target, _, err := c.resolve(hp)
			if err != nil {
				fail("%s: %v", key, err)
			} else if !want(target) {
				fail("%s: %s is %s, not what %s names", key, hp, target.name, key)
			}
		}
	}
	runs := func(prefix string) func(*workload) bool {
		return func(t *workload) bool {
			return slices.ContainsFunc(t.template.Spec.Containers, func(c corev1.Container) bool { return strings.HasPrefix(c.Image, prefix) })
		}
	}
	validator := func(t *workload) bool {
		return slices.ContainsFunc(t.template.Spec.Containers, func(c corev1.Container) bool {
			return c.Image == image && slices.Equal(subcommand(c.Args), []string{"ledger"})
		})
	}
	nats, ledger, clickhouse := dependencies(role)
	if nats {
		resolveAll("nats.url", cfg.NATS.URL, runs("nats:"))
	}
	if ledger {
		resolveAll("ledger.rpc", cfg.Ledger.RPC, validator, "tcp://", "http://")
	}
	if clickhouse {
		resolveAll("clickhouse.addr", cfg.ClickHouse.Addr, runs("clickhouse/"))
		if cfg.ClickHouse.Cluster != clusterName {
			fail("clickhouse.cluster %q, want %q", cfg.ClickHouse.Cluster, clusterName)
		}
	}
	files := c.containerFiles(w.template.Spec, ctr, false)
	errs = append(errs, checkClientTLS(where, role, cfg, files, c.server)...)
	inSecret := func(key, file string) {
		v, _, ok := c.mountedFile(w.template.Spec, ctr, file)
		if !ok || v.Secret == nil {
			fail("%s %s is not a file of a Secret the container mounts", key, file)
		}
	}
	switch role {
	case "ingest":
		inSecret("nats.credentials", cfg.NATS.Credentials)
		fromName := slices.ContainsFunc(ctr.Env, func(e corev1.EnvVar) bool {
			return e.Name == "ANCHORLINE_INGEST_WORKER" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.name"
		})
		if !fromName {
			fail("ingest.worker is not each pod's name: the workers of the Deployment would record one name")
		}
	case "anchor":
		inSecret("nats.credentials", cfg.NATS.Credentials)
		inSecret("anchor.key", cfg.Anchor.Key)
		if w.replicas != 2 {
			fail("%d anchoring services, want 2 (one active by the lease, one standing by)", w.replicas)
		}
	case "rules":
		inSecret("nats.credentials", cfg.NATS.Credentials)
		inSecret("rules.key", cfg.RulesKey())
		if w.replicas != 2 {
			fail("%d rules processes, want 2 (one serving the shard, one standing by)", w.replicas)
		}
	case "auth":
		for _, f := range []string{"issuer.nk", "auth.nk", "system.nk"} {
			inSecret("nats.auth_dir", path.Join(cfg.AuthDir(), f))
		}
	}
	if servesHTTP(role) {
		port := portOf(cfg.HTTP.Addr)
		if p, ok := containerPort([]corev1.Container{ctr}, intstr.FromString("http")); !ok || p != port {
			fail("http.addr %s: the container's port http is %d", cfg.HTTP.Addr, p)
		}
		a := w.template.Annotations
		if a["prometheus.io/scrape"] != "true" || a["prometheus.io/port"] != strconv.Itoa(port) || a["prometheus.io/path"] != "/metrics" {
			fail("the pods are not annotated for Prometheus on http.addr's port %d: %v", port, a)
		}
		srv, e := checkHTTPServer(where, cfg, files)
		errs = append(errs, e...)
		if cfg.HTTP.TLSKey != "" {
			inSecret("http.tls_key", cfg.HTTP.TLSKey)
		}
		c.https[w.name] = srv
		serves := map[bool]string{false: "plain HTTP", true: "https"}
		for _, probe := range []*corev1.Probe{ctr.ReadinessProbe, ctr.LivenessProbe, ctr.StartupProbe} {
			if probe == nil || probe.HTTPGet == nil {
				continue
			}
			if p, ok := containerPort([]corev1.Container{ctr}, probe.HTTPGet.Port); ok && p == port && (probe.HTTPGet.Scheme == corev1.URISchemeHTTPS) != srv.tls {
				fail("the probe of %s asks with scheme %q, and http.addr %s serves %s", probe.HTTPGet.Path, cmp.Or(string(probe.HTTPGet.Scheme), "HTTP"), cfg.HTTP.Addr, serves[srv.tls])
			}
		}
	}
	return errs
}

// materialize lays out, under root, the volumes a container mounts as the kubelet would (files
// of ConfigMaps and Secrets, empty folders for claims and emptyDirs, one folder per volume
// shared by the pod's containers), and returns a function mapping a path in the container to
// the path here.
func (c *cluster) materialize(t *testing.T, root string, spec corev1.PodSpec, ctr corev1.Container) func(string) string {
	t.Helper()
	type mount struct{ at, dir string }
	var mounts []mount
	for _, vm := range ctr.VolumeMounts {
		dir := filepath.Join(root, "volumes", vm.Name)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		for _, v := range spec.Volumes {
			if v.Name != vm.Name {
				continue
			}
			files, _ := c.volumeFiles(v)
			for p, b := range files {
				f := filepath.Join(dir, p)
				if err := os.MkdirAll(filepath.Dir(f), 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(f, b, 0o600); err != nil {
					t.Fatal(err)
				}
			}
		}
		if vm.SubPath != "" {
			dir = filepath.Join(dir, vm.SubPath)
		}
		mounts = append(mounts, mount{at: vm.MountPath, dir: dir})
	}
	sort.Slice(mounts, func(i, j int) bool { return len(mounts[i].at) > len(mounts[j].at) })
	return func(p string) string {
		for _, m := range mounts {
			if p == m.at || strings.HasPrefix(p, m.at+"/") {
				return m.dir + strings.TrimPrefix(p, m.at)
			}
		}
		return p
	}
}

// checkValidators runs the validators' init container, as each pod of the StatefulSet would,
// over the generated Secrets, and checks the home it leaves: a home `ledger --home` loads,
// with the keys of the pod's own validator and peers that are the other pods.
func (c *cluster) checkValidators(t *testing.T) []error {
	t.Helper()
	var errs []error
	var w *workload
	for _, x := range c.workloads() {
		if len(x.template.Spec.Containers) == 1 && x.template.Spec.Containers[0].Image == image && slices.Equal(subcommand(x.template.Spec.Containers[0].Args), []string{"ledger"}) {
			w = &x
		}
	}
	if w == nil || !w.set {
		return []error{errors.New("no StatefulSet runs `anchorline ledger`")}
	}
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(w.where+": "+format, args...)) }
	if w.replicas != 4 {
		fail("%d validators, want 4", w.replicas)
	}
	spec := w.template.Spec
	main := spec.Containers[0]
	p2p, _ := containerPort(spec.Containers, intstr.FromString("p2p"))
	rpc, _ := containerPort(spec.Containers, intstr.FromString("rpc"))
	for i := range w.replicas {
		pod := fmt.Sprintf("%s-%d", w.name, i)
		root := t.TempDir()
		var mainPath func(string) string
		for run := range 2 { // a restart must keep the signing state
			for _, ctr := range spec.InitContainers {
				at := c.materialize(t, root, spec, ctr)
				env := []string{"PATH=" + os.Getenv("PATH")}
				for k, v := range c.podEnv(ctr, pod) {
					env = append(env, k+"="+at(v))
				}
				argv := slices.Concat(ctr.Command, ctr.Args)
				cmd := exec.Command(argv[0], argv[1:]...)
				cmd.Env = env
				if out, err := cmd.CombinedOutput(); err != nil {
					fail("pod %s: init container %s: %v: %s", pod, ctr.Name, err, out)
				}
			}
			mainPath = c.materialize(t, root, spec, main)
			home, _ := flagValue(main.Args, "home")
			state := filepath.Join(mainPath(home), "data", "priv_validator_state.json")
			if run == 0 {
				if err := os.WriteFile(state, []byte(`{"height":"7","round":0,"step":3}`), 0o600); err != nil {
					fail("pod %s: %v", pod, err)
				}
			} else if b, err := os.ReadFile(state); err != nil || !strings.Contains(string(b), `"height":"7"`) {
				fail("pod %s: a restart replaced the signing state (priv_validator_state.json): %s %v", pod, b, err)
			}
		}
		home, _ := flagValue(main.Args, "home")
		conf, err := node.LoadConfig(mainPath(home))
		if err != nil {
			fail("pod %s: %v", pod, err)
			continue
		}
		key, err := os.ReadFile(conf.PrivValidatorKeyFile())
		if s := c.secrets[fmt.Sprintf("anchorline-validator-%d", i)]; err != nil || s == nil || !bytes.Equal(key, s.Data["priv_validator_key.json"]) {
			fail("pod %s does not run with the key of Secret anchorline-validator-%d", pod, i)
		}
		if portOf(strings.TrimPrefix(conf.P2P.ListenAddress, "tcp://")) != p2p || portOf(strings.TrimPrefix(conf.RPC.ListenAddress, "tcp://")) != rpc {
			fail("pod %s: config.toml listens on %s and %s, the container's ports are p2p %d and rpc %d", pod, conf.P2P.ListenAddress, conf.RPC.ListenAddress, p2p, rpc)
		}
		srv, err := validatorTLS(conf.RPC.TLSCertFile, conf.RPC.TLSKeyFile, c.containerFiles(spec, main, true))
		if err != nil {
			fail("pod %s: config.toml: %v (of a Secret)", pod, err)
		}
		c.servers[podServer(*w, i, rpc)] = srv
		var peers []string
		for p := range strings.SplitSeq(conf.P2P.PersistentPeers, ",") {
			_, hp, _ := strings.Cut(p, "@")
			target, port, err := c.resolve(hp)
			if err != nil || target.name != w.name || port != p2p {
				fail("pod %s: persistent peer %s is not a validator pod's p2p port: %v", pod, hp, err)
			}
			peers = append(peers, hp)
		}
		self := net.JoinHostPort(pod+"."+w.serviceName, strconv.Itoa(p2p))
		if len(peers) != w.replicas-1 || slices.Contains(peers, self) {
			fail("pod %s: persistent peers %v: want the other %d validators (this home is another validator's)", pod, peers, w.replicas-1)
		}
	}
	return errs
}

// checkNATS parses each NATS pod's configuration with nats-server's parser, auth.conf from the
// generated Secret beside it, and checks that the pods form one cluster.
func (c *cluster) checkNATS(t *testing.T) []error {
	t.Helper()
	var errs []error
	for _, w := range c.workloads() {
		if len(w.template.Spec.Containers) != 1 || !strings.HasPrefix(w.template.Spec.Containers[0].Image, "nats:") {
			continue
		}
		ctr := w.template.Spec.Containers[0]
		clusterPort, _ := containerPort([]corev1.Container{ctr}, intstr.FromString("cluster"))
		var routes []string
		for i := range w.replicas {
			routes = append(routes, net.JoinHostPort(fmt.Sprintf("%s-%d.%s", w.name, i, w.serviceName), strconv.Itoa(clusterPort)))
		}
		sort.Strings(routes)
		if w.replicas != 3 {
			errs = append(errs, fmt.Errorf("%s: %d NATS servers, want 3", w.where, w.replicas))
		}
		for i := range w.replicas {
			pod := fmt.Sprintf("%s-%d", w.name, i)
			at := c.materialize(t, t.TempDir(), w.template.Spec, ctr)
			file, _ := flagValue(ctr.Args, "config")
			var opts *server.Options
			err := withEnv(c.podEnv(ctr, pod), func() error {
				var err error
				opts, err = natsOptions(at(file), at)
				return err
			})
			if err != nil {
				errs = append(errs, fmt.Errorf("%s pod %s: %s: %w", w.where, pod, file, err))
				continue
			}
			errs = append(errs, checkNATSOptions(w.where+" pod "+pod, opts, pod, routes)...)
			c.servers[podServer(w, i, opts.Port)] = natsServer(opts)
			if client, _ := containerPort([]corev1.Container{ctr}, intstr.FromString("client")); client != opts.Port {
				errs = append(errs, fmt.Errorf("%s: the container's client port %d is not the server's %d", w.where, client, opts.Port))
			}
			if !slices.ContainsFunc(ctr.VolumeMounts, func(vm corev1.VolumeMount) bool {
				return slices.Contains(w.claims, vm.Name) && strings.HasPrefix(opts.StoreDir+"/", vm.MountPath+"/")
			}) {
				errs = append(errs, fmt.Errorf("%s: JetStream's store_dir %s is on no volume claim", w.where, opts.StoreDir))
			}
		}
	}
	return errs
}

func withEnv(env map[string]string, fn func() error) error {
	var restore []func()
	for k, v := range env {
		old, had := os.LookupEnv(k)
		os.Setenv(k, v)
		restore = append(restore, func() {
			if had {
				os.Setenv(k, old)
			} else {
				os.Unsetenv(k)
			}
		})
	}
	defer func() {
		for _, r := range restore {
			r()
		}
	}()
	return fn()
}

// checkClickHouse checks each ClickHouse pod's configuration, its from_env values taken from the
// pod's environment: the cluster's replicas are the StatefulSet's pods, each pod names itself.
func (c *cluster) checkClickHouse() []error {
	var errs []error
	found := false
	for _, w := range c.workloads() {
		if len(w.template.Spec.Containers) != 1 || !strings.HasPrefix(w.template.Spec.Containers[0].Image, "clickhouse/") {
			continue
		}
		found = true
		ctr := w.template.Spec.Containers[0]
		native, _ := containerPort([]corev1.Container{ctr}, intstr.FromString("native"))
		var want []string
		for i := range w.replicas {
			want = append(want, net.JoinHostPort(fmt.Sprintf("%s-%d.%s", w.name, i, w.serviceName), strconv.Itoa(native)))
		}
		if w.replicas != 2 {
			errs = append(errs, fmt.Errorf("%s: %d replicas, want 2", w.where, w.replicas))
		}
		seen := map[string]bool{}
		for i := range w.replicas {
			pod := fmt.Sprintf("%s-%d", w.name, i)
			var files [][]byte
			for _, vm := range ctr.VolumeMounts {
				if strings.HasPrefix(vm.MountPath, "/etc/clickhouse-server/config.d/") {
					if _, b, ok := c.mountedFile(w.template.Spec, ctr, vm.MountPath); ok {
						files = append(files, b)
					}
				}
			}
			conf, err := clickhouseConfig(files)
			if err != nil || len(files) == 0 {
				errs = append(errs, fmt.Errorf("%s: config.d: %v (%d files)", w.where, err, len(files)))
				continue
			}
			f, ferrs := clickhouseFacts(conf, c.podEnv(ctr, pod))
			for _, err := range ferrs {
				errs = append(errs, fmt.Errorf("%s pod %s: %w", w.where, pod, err))
			}
			c.servers[podServer(w, i, f.tcpPort)] = tlsServer{}
			if f.securePort != 0 {
				srv, err := clickhouseTLS(f, c.containerFiles(w.template.Spec, ctr, true))
				if err != nil {
					errs = append(errs, fmt.Errorf("%s pod %s: %w (of a Secret)", w.where, pod, err))
				}
				if _, ok := containerPort([]corev1.Container{ctr}, intstr.FromInt(f.securePort)); !ok {
					errs = append(errs, fmt.Errorf("%s: tcp_port_secure %d is no port of the container", w.where, f.securePort))
				}
				c.servers[podServer(w, i, f.securePort)] = srv
			}
			if !slices.Equal(f.replicas, want) {
				errs = append(errs, fmt.Errorf("%s pod %s: cluster %s has replicas %v, want the pods %v", w.where, pod, clusterName, f.replicas, want))
			}
			if f.interserver != pod+"."+w.serviceName {
				errs = append(errs, fmt.Errorf("%s pod %s: interserver_http_host %q is not the pod's name", w.where, pod, f.interserver))
			}
			if seen[f.replica] {
				errs = append(errs, fmt.Errorf("%s pod %s: macro replica %q is another pod's too", w.where, pod, f.replica))
			}
			seen[f.replica] = true
			for _, zk := range f.zookeeper {
				if target, _, err := c.resolve(zk); err != nil || !strings.HasPrefix(target.template.Spec.Containers[0].Image, "zookeeper:") {
					errs = append(errs, fmt.Errorf("%s: zookeeper %s is not the ZooKeeper pod: %v", w.where, zk, err))
				}
			}
		}
	}
	if !found {
		errs = append(errs, errors.New("no ClickHouse StatefulSet"))
	}
	return errs
}

// exportedMetrics are the Prometheus names of the metrics services/stack/metrics.go declares
// (gauges as named, counters with _total).
func exportedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	src := read(t, "services/stack/metrics.go")
	out := map[string]bool{}
	for _, m := range regexp.MustCompile(`(counter|gauge)\("(anchorline\.[a-z_.]+)"`).FindAllSubmatch(src, -1) {
		name := strings.ReplaceAll(string(m[2]), ".", "_")
		if string(m[1]) == "counter" {
			name += "_total"
		}
		out[name] = true
	}
	if len(out) < 10 {
		t.Fatalf("found %d metrics in services/stack/metrics.go: the pattern no longer matches it", len(out))
	}
	return out
}

type adapterValues struct {
	Prometheus struct {
		URL  string `json:"url"`
		Port int    `json:"port"`
	} `json:"prometheus"`
	Rules struct {
		Default  bool `json:"default"`
		External []struct {
			SeriesQuery string `json:"seriesQuery"`
			Resources   struct {
				Overrides map[string]struct {
					Resource string `json:"resource"`
				} `json:"overrides"`
			} `json:"resources"`
			Name struct {
				Matches string `json:"matches"`
				As      string `json:"as"`
			} `json:"name"`
			MetricsQuery string `json:"metricsQuery"`
		} `json:"external"`
	} `json:"rules"`
}

// checkMonitoring checks the Prometheus ConfigMap with promtool, and that the HPA's external
// metric is one prometheus-adapter's rules serve, from a metric Anchorline exports.
func (c *cluster) checkMonitoring(t *testing.T, adapter []byte) []error {
	t.Helper()
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	cm := c.configMaps["prometheus-anchorline"]
	if cm == nil {
		return []error{errors.New("no ConfigMap prometheus-anchorline")}
	}
	if cm.Data["alerts.yml"] != string(read(t, "deployments/prometheus/alerts.yml")) {
		fail("ConfigMap prometheus-anchorline: alerts.yml is not deployments/prometheus/alerts.yml")
	}
	var scrape promConfig
	if err := yaml.UnmarshalStrict([]byte(cm.Data["scrape-configs.yml"]), &scrape); err != nil || len(scrape.ScrapeConfigs) == 0 {
		return append(errs, fmt.Errorf("scrape-configs.yml: %v", err))
	}
	// Debian's promtool has no Kubernetes service discovery: it checks the rest of the scrape
	// configuration (the relabelling) with static targets in its place, and the rules.
	var generic map[string]any
	if err := yaml.Unmarshal([]byte(cm.Data["scrape-configs.yml"]), &generic); err != nil {
		t.Fatal(err)
	}
	for _, sc := range generic["scrape_configs"].([]any) {
		m := sc.(map[string]any)
		delete(m, "kubernetes_sd_configs")
		m["static_configs"] = []any{map[string]any{"targets": []any{"10.0.0.1:8081"}}}
	}
	generic["rule_files"] = []any{"alerts.yml"}
	prom, err := yaml.Marshal(generic)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, b := range map[string]string{"prometheus.yml": string(prom), "alerts.yml": cm.Data["alerts.yml"]} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(b), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := exec.LookPath("promtool"); err != nil {
		t.Fatal("promtool is needed (Debian's prometheus package: scripts/install-prometheus.sh)")
	}
	if out, err := exec.Command("promtool", "check", "config", filepath.Join(dir, "prometheus.yml")).CombinedOutput(); err != nil {
		fail("ConfigMap prometheus-anchorline: promtool check config: %v\n%s", err, out)
	}
	sc := scrape.ScrapeConfigs[0]
	if len(sc.KubernetesSD) != 1 || sc.KubernetesSD[0].Role != "pod" || !slices.Equal(sc.KubernetesSD[0].Namespaces.Names, []string{namespace}) {
		fail("scrape-configs.yml: want pod discovery in the namespace %s", namespace)
	}
	targets := map[string]string{}
	for _, r := range sc.Relabel {
		targets[r.TargetLabel] = strings.Join(r.SourceLabels, ",") + " " + r.Replacement
	}
	if !strings.HasPrefix(targets["job"], "__meta_kubernetes_pod_label_app_kubernetes_io_component anchorline-") || !strings.HasPrefix(targets["namespace"], "__meta_kubernetes_namespace") {
		fail("scrape-configs.yml: the job must be anchorline-<component> and the namespace a label: %v", targets)
	}
	var jobs promConfig
	if err := yaml.Unmarshal(read(t, "deployments/prometheus/prometheus.yml"), &jobs); err != nil {
		t.Fatal(err)
	}
	// The cluster's Prometheus trusts the CA of the ConfigMap anchorline-ca (mounted where
	// ca_file names it); it scrapes pods at their IP addresses, which no certificate names.
	var caPEM string
	if cm := c.configMaps["anchorline-ca"]; cm != nil {
		caPEM = cm.Data["ca.pem"]
	}
	ca := func(string) ([]byte, bool) { return []byte(caPEM), caPEM != "" }
	if sc.Scheme == "https" && sc.TLSConfig.ServerName == "" {
		fail("scrape-configs.yml: scheme https without tls_config server_name: the pods are scraped at their IP addresses, which their certificates do not name")
	}
	for _, w := range c.workloads() {
		if w.template.Annotations["prometheus.io/scrape"] != "true" {
			continue
		}
		if err := checkScrapeTLS(sc.Scheme, sc.TLSConfig.CAFile, sc.TLSConfig.ServerName, "", c.https[w.name], ca); err != nil {
			fail("scrape-configs.yml: %s's pods: %v", w.where, err)
		}
		job := "anchorline-" + w.template.Labels["app.kubernetes.io/component"]
		if !slices.ContainsFunc(jobs.ScrapeConfigs, func(j scrapeConfig) bool { return j.JobName == job }) {
			fail("%s: scraped as job %s, which deployments/prometheus/prometheus.yml does not have", w.where, job)
		}
	}

	var values adapterValues
	if err := yaml.UnmarshalStrict(adapter, &values); err != nil {
		return append(errs, fmt.Errorf("prometheus-adapter/values.yaml: %w", err))
	}
	served := map[string]bool{}
	metrics := exportedMetrics(t)
	for _, r := range values.Rules.External {
		served[r.Name.As] = true
		series := regexp.MustCompile(`^[a-z_]+`).FindString(r.SeriesQuery)
		if !metrics[series] {
			fail("prometheus-adapter: seriesQuery %q names no metric Anchorline exports", r.SeriesQuery)
		}
		if r.Resources.Overrides["namespace"].Resource != "namespace" || !strings.Contains(r.MetricsQuery, "<<.Series>>") {
			fail("prometheus-adapter: rule %s: want the namespace label as the namespace resource, and a query over <<.Series>>", r.Name.As)
		}
	}
	hpaMetric := false
	for _, h := range c.hpas {
		for _, m := range h.Spec.Metrics {
			if m.Type != autoscalingv2.ExternalMetricSourceType || m.External == nil {
				fail("HorizontalPodAutoscaler %s: want an External metric", h.Name)
				continue
			}
			if !served[m.External.Metric.Name] {
				fail("HorizontalPodAutoscaler %s: external metric %s is not one prometheus-adapter serves (%v)", h.Name, m.External.Metric.Name, served)
			}
			hpaMetric = hpaMetric || m.External.Metric.Name == lagMetric && h.Spec.ScaleTargetRef.Name == "ingest"
		}
	}
	if !hpaMetric {
		fail("no HorizontalPodAutoscaler scales ingest on %s", lagMetric)
	}
	return errs
}

// makeSecrets runs secrets/make.sh with the binary and builds its kustomization as
// `kubectl apply -k` would: the Secrets and the genesis ConfigMap the manifests name.
func makeSecrets(t *testing.T, bin string) []manifest {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "keys")
	cmd := exec.Command("/bin/sh", "deployments/kubernetes/secrets/make.sh", dir)
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "ANCHORLINE="+bin)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make.sh: %v\n%s", err, out)
	}
	res, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build of what make.sh wrote: %v", err)
	}
	b, err := res.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	objs, errs := decodeManifests("secrets (make.sh, kustomize)", b)
	for _, err := range errs {
		t.Error(err)
	}
	return objs
}

// manifestFiles are the files of deployments/kubernetes, by name.
func manifestFiles(t *testing.T) map[string][]byte {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(repo, "deployments/kubernetes/*.yaml"))
	if err != nil || len(names) < 5 {
		t.Fatalf("manifests: %v %v", names, err)
	}
	files := map[string][]byte{}
	for _, n := range names {
		files[filepath.Base(n)] = read(t, "deployments/kubernetes/"+filepath.Base(n))
	}
	return files
}

func checkKubernetes(t *testing.T, keys map[string]bool, img imageFacts, files map[string][]byte, secrets []manifest, adapter []byte) ([]invocation, []error) {
	t.Helper()
	var objs []manifest
	var errs []error
	for _, name := range slices.Sorted(mapKeys(files)) {
		o, e := decodeManifests(name, files[name])
		objs, errs = append(objs, o...), append(errs, e...)
	}
	c, e := newCluster(append(objs, secrets...))
	errs = append(errs, e...)
	errs = append(errs, c.checkRefs()...)
	// The servers first (what each pod serves where, with TLS or not), then their clients.
	errs = append(errs, c.checkValidators(t)...)
	errs = append(errs, c.checkNATS(t)...)
	errs = append(errs, c.checkClickHouse()...)
	invs, e := c.checkServices(keys, img, t.TempDir())
	errs = append(errs, e...)
	errs = append(errs, c.checkMonitoring(t, adapter)...)
	for _, d := range []string{"ingest", "anchor", "rules", "api", "auth"} {
		if c.deploys[d] == nil {
			errs = append(errs, fmt.Errorf("no Deployment %s", d))
		}
	}
	if c.workload("migrate") == nil || c.workload("rules-commander") == nil || c.services["api"] == nil {
		errs = append(errs, errors.New("no Job migrate, no Job rules-commander or no Service api"))
	}
	return invs, errs
}

// buildBinary builds the anchorline binary into a temporary folder.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "anchorline")
	cmd := exec.Command("go", "build", "-o", bin, "./services/anchorline")
	cmd.Dir = repo
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func TestKubernetes(t *testing.T) {
	cleanEnv(t)
	keys := configKeys(t)
	img, errs := checkDockerfile(keys, read(t, dockerfilePath))
	noErrs(t, errs)
	secrets := makeSecrets(t, buildBinary(t))
	files := manifestFiles(t)
	adapter := read(t, "deployments/kubernetes/prometheus-adapter/values.yaml")
	invs, errs := checkKubernetes(t, keys, img, files, secrets, adapter)
	noErrs(t, errs)
	if len(invs) < 6 {
		t.Errorf("%d runs of the binary: %v", len(invs), invs)
	}

	broken := []struct{ name, file, old, new, want string }{
		{"unknown field", "services.yaml", "  replicas: 2                        # the HorizontalPodAutoscaler", "  replica: 2", `json: unknown field "replica"`},
		{"unknown kind", "namespace.yaml", "kind: Namespace", "kind: Namespaces", "unknown kind v1 Namespaces"},
		{"wrong type", "nats.yaml", "  replicas: 3\n", "  replicas: three\n", "StatefulSet"},
		{"selector", "services.yaml", "      app.kubernetes.io/component: anchoring\n  template:", "      app.kubernetes.io/component: anchor\n  template:", "does not match the pod template"},
		{"missing ConfigMap", "services.yaml", "configMapRef: {name: anchorline-env}", "configMapRef: {name: anchorline-envs}", "ConfigMap anchorline-envs does not exist"},
		{"missing Secret key", "services.yaml", "secretKeyRef: {name: anchorline-clickhouse, key: password}", "secretKeyRef: {name: anchorline-clickhouse, key: pasword}", "key pasword does not exist"},
		{"target port", "services.yaml", "    - {name: https, port: 443, targetPort: http}", "    - {name: https, port: 443, targetPort: web}", "targets web"},
		{"other image", "ledger.yaml", "          image: anchorline:dev\n          imagePullPolicy: IfNotPresent\n          args:", "          image: anchorline:old\n          imagePullPolicy: IfNotPresent\n          args:", `image "anchorline:old"`},
		{"config drift", "config.yaml", "      interval: 5s", "      interval: 6s", "is not deployments/config/anchor.yaml"},
		{"unknown key", "services.yaml", "ANCHORLINE_CLICKHOUSE_CLUSTER: anchorline", "ANCHORLINE_CLICKHOUSE_CLUSTR: anchorline", "ANCHORLINE_CLICKHOUSE_CLUSTR names no configuration key"},
		{"wrong address", "services.yaml", "ledger-3.ledger:26657", "ledger-4.ledger:26657", "ledger-4.ledger:26657"},
		{"validator key by ordinal", "ledger.yaml", "{key: priv_validator_key.json, path: ledger-3/priv_validator_key.json}", "{key: priv_validator_key.json, path: ledger-2/priv_validator_key.json}", "two sources write ledger-2/priv_validator_key.json"},
		{"validator Secret", "ledger.yaml", "name: anchorline-validator-3", "name: anchorline-validator-4", "Secret anchorline-validator-4 does not exist"},
		{"state overwritten", "ledger.yaml", `if [ ! -e "$LEDGER_HOME/data/priv_validator_state.json" ]; then`, `if true; then`, "replaced the signing state"},
		{"NATS route", "nats.yaml", "nats-route://nats-2.nats:6222", "nats-route://nats-3.nats:6222", "routes"},
		{"ClickHouse replica", "clickhouse.yaml", "<host>clickhouse-1.clickhouse</host>", "<host>clickhouse-2.clickhouse</host>", "want the pods"},
		{"HPA metric", "services.yaml", "name: anchorline_ingest_consumer_pending", "name: anchorline_ingest_lag", "not one prometheus-adapter serves"},
		{"alerts drift", "prometheus.yaml", "for: 10m", "for: 11m", "alerts.yml is not deployments/prometheus/alerts.yml"},
		{"not scraped", "services.yaml", `prometheus.io/port: "8082"`, `prometheus.io/port: "8083"`, "not annotated for Prometheus"},
		{"one worker name", "services.yaml", "valueFrom: {fieldRef: {fieldPath: metadata.name}}\n            - name: ANCHORLINE_CLICKHOUSE_PASSWORD", "value: ingest-1\n            - name: ANCHORLINE_CLICKHOUSE_PASSWORD", "ingest.worker is not each pod's name"},
		// TLS: what the pods serve, with which certificate, and their clients.
		{"NATS clients without TLS", "nats.yaml", "    tls {\n      cert_file: /etc/nats/tls/nats.pem\n      key_file: /etc/nats/tls/nats-key.pem\n      ca_file: /etc/nats/tls/ca.pem\n      timeout: 5\n    }\n", "",
			"no tls block with cert_file and key_file"},
		{"NATS routes not mutual", "nats.yaml", "        ca_file: /etc/nats/tls/ca.pem\n        verify: true\n", "        verify: true\n", "the routes would not be mutual TLS"},
		{"NATS key not mounted", "nats.yaml", "                    - {key: nats-key.pem, path: tls/nats-key.pem}\n", "", "tls key_file /etc/nats/tls/nats-key.pem is not a file mounted into the container"},
		{"secure without the CA", "services.yaml", "            - {name: ANCHORLINE_TLS_CA, value: /etc/anchorline/tls/ca.pem}\n", "",
			"clickhouse.addr: clickhouse-0.clickhouse:9440: no tls.ca to trust its certificate with"},
		{"validator certificate not mounted", "ledger.yaml", "            - {name: tls, mountPath: /etc/anchorline/tls, readOnly: true}\n", "",
			"rpc.tls_cert_file /etc/anchorline/tls/ledger.pem or rpc.tls_key_file /etc/anchorline/tls/ledger-key.pem is not a file mounted into the container (of a Secret)"},
		{"plain ClickHouse port", "services.yaml", "clickhouse-0.clickhouse:9440,clickhouse-1.clickhouse:9440", "clickhouse-0.clickhouse:9000,clickhouse-1.clickhouse:9000",
			"clickhouse.addr: clickhouse-0.clickhouse:9000 serves no TLS, but clickhouse.secure is true"},
		{"ClickHouse secure port not in the container", "clickhouse.yaml", "            - {name: native-secure, containerPort: 9440}\n", "", "tcp_port_secure 9440 is no port of the container"},
		{"ClickHouse key unreadable", "clickhouse.yaml", "            defaultMode: 0444", "            defaultMode: 0400", "whose files [clickhouse.pem clickhouse-key.pem] its user cannot read"},
		{"key unreadable", "services.yaml", "        fsGroup: 10001                 # the Secrets' files (mode 0400, 0440) are the group's to read\n", "", "its user cannot read"},
		{"CA not mounted", "services.yaml", "            - {name: ca, mountPath: /etc/anchorline/tls, readOnly: true}\n", "", "tls.ca /etc/anchorline/tls/ca.pem is not a file mounted into the container"},
		{"HTTP key in a ConfigMap", "services.yaml", "              - {key: http-key.pem, path: http-key.pem}\n", "", "http.tls_cert /etc/anchorline/tls/http.pem or http.tls_key /etc/anchorline/tls/http-key.pem is not a file mounted"},
		{"probe over HTTP", "services.yaml", "httpGet: {path: /readyz, port: http, scheme: HTTPS}", "httpGet: {path: /readyz, port: http}", `the probe of /readyz asks with scheme "HTTP", and http.addr 0.0.0.0:8081 serves https`},
		{"Prometheus over HTTP", "prometheus.yaml", "        scheme: https\n", "", `it serves only https, and the scheme is ""`},
		{"Prometheus server name", "prometheus.yaml", "server_name: api.anchorline.svc", "server_name: ingest", "does not verify for server_name ingest"},
	}
	for _, c := range broken {
		t.Run(c.name, func(t *testing.T) {
			mutated := maps(files)
			mutated[c.file] = mutate(t, files[c.file], c.old, c.new)
			_, errs := checkKubernetes(t, keys, img, mutated, secrets, adapter)
			wantErr(t, errs, c.want)
		})
	}
	t.Run("adapter metric", func(t *testing.T) {
		_, errs := checkKubernetes(t, keys, img, files, secrets, mutate(t, adapter, "seriesQuery: 'anchorline_ingest_consumer_pending", "seriesQuery: 'anchorline_ingest_pending"))
		wantErr(t, errs, "names no metric Anchorline exports")
	})
}

func maps(m map[string][]byte) map[string][]byte {
	out := make(map[string][]byte, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// --- the binary's commands --------------------------------------------------------------------

// checkInvocation runs the binary with the arguments and --help: cobra parses the flags (an
// unknown one or a value of the wrong type fails) and prints the usage of the command it found,
// which must be the one the arguments name.
func checkInvocation(bin string, inv invocation) error {
	out, err := exec.Command(bin, append(slices.Clone(inv.args), "--help")...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: anchorline %s: %v: %s", inv.where, strings.Join(inv.args, " "), err, bytes.TrimSpace(out))
	}
	want := strings.Join(append([]string{"anchorline"}, subcommand(inv.args)...), " ")
	_, usage, ok := strings.Cut(string(out), "Usage:\n")
	line, _, _ := strings.Cut(usage, "\n")
	line = strings.TrimSpace(line)
	if !ok || line != want && !strings.HasPrefix(line, want+" ") {
		return fmt.Errorf("%s: %q is not a command of anchorline (its usage is %q)", inv.where, want, line)
	}
	return nil
}

func TestCommands(t *testing.T) {
	cleanEnv(t)
	keys := configKeys(t)
	bin := buildBinary(t)
	img, errs := checkDockerfile(keys, read(t, dockerfilePath))
	noErrs(t, errs)
	invs := []invocation{{where: "Dockerfile CMD", args: img.cmd}}
	composeInvs, errs := checkCompose(t, keys, img, read(t, "deployments/compose/compose.yaml"))
	noErrs(t, errs)
	k8sInvs, errs := checkKubernetes(t, keys, img, manifestFiles(t), makeSecrets(t, bin), read(t, "deployments/kubernetes/prometheus-adapter/values.yaml"))
	noErrs(t, errs)
	invs = slices.Concat(invs, composeInvs, k8sInvs)
	seen := map[string]bool{}
	for _, inv := range invs {
		seen[strings.Join(subcommand(inv.args), " ")] = true
		if err := checkInvocation(bin, inv); err != nil {
			t.Error(err)
		}
	}
	for _, want := range []string{"ingest", "anchor", "rules", "rules commander", "api", "auth", "auth init", "migrate", "ledger", "ledger init", "tls init"} {
		if !seen[want] {
			t.Errorf("no layout runs anchorline %s", want)
		}
	}

	for _, args := range [][]string{{"ingestt"}, {"ledger", "bogus"}, {"ingest", "--no-such-flag"}, {"ledger", "init", "--validators", "four"}, {"auth", "init", "extra", "--nats.auth_dir", "x"}} {
		if err := checkInvocation(bin, invocation{where: "broken", args: args}); err == nil {
			t.Errorf("anchorline %v passed", args)
		}
	}
	t.Run("compose", func(t *testing.T) {
		src := mutate(t, read(t, "deployments/compose/compose.yaml"), `command: ["anchor", "--config"`, `command: ["anchors", "--config"`)
		invs, _ := checkCompose(t, keys, img, src)
		var errs []error
		for _, inv := range invs {
			if err := checkInvocation(bin, inv); err != nil {
				errs = append(errs, err)
			}
		}
		wantErr(t, errs, `unknown command "anchors"`)
	})
}
