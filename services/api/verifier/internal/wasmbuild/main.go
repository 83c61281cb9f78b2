package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
)

// The one dependency in the verifier's import graph that does not compile for js/wasm:
// CometBFT's light package (whose verifier proof.Verify runs) imports its HTTP provider, which
// reaches cometbft-db and goleveldb, whose file storage has no js port (syndtr/goleveldb#277
// was never merged). The browser never opens a database; the build gives goleveldb the stubs
// of its own NaCl port (every file operation answers ENOTSUP) for js, in a private copy of the
// module, so the verifier is the same Go code as `anchorline verify`, unchanged.
const (
	levelDB      = "github.com/syndtr/goleveldb"
	levelDBStubs = "leveldb/storage/file_storage_nacl.go"
	levelDBJS    = "leveldb/storage/file_storage_js.go"
	wasmPkg      = "./services/api/verifier/wasm"
)

func main() {
	out := flag.String("out", "dist", "directory to write verify.wasm.gz and wasm_exec.js into")
	wasm := flag.String("wasm", "", "also write the uncompressed wasm to this file")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := build(ctx, log, *out, *wasm); err != nil {
		log.Error("wasmbuild: the browser verifier was not built", "err", err)
		os.Exit(1)
	}
}

func build(ctx context.Context, log *slog.Logger, out, wasmCopy string) error {
	root, err := goEnv(ctx, "GOMOD")
	if err != nil {
		return err
	}
	if root == "" || root == os.DevNull {
		return errors.New("not inside the anchorline module: run `go generate ./services/api/verifier` from the repository")
	}
	root = filepath.Dir(root)
	goroot, err := goEnv(ctx, "GOROOT")
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "anchorline-wasmbuild-")
	if err != nil {
		return fmt.Errorf("temporary directory: %w", err)
	}
	defer os.RemoveAll(tmp)

	work, err := workspace(ctx, root, tmp)
	if err != nil {
		return err
	}
	wasmFile := filepath.Join(tmp, "verify.wasm")
	// go vet ./... on the host skips the js-only package: vet it here, where it builds.
	for _, args := range [][]string{
		{"vet", wasmPkg},
		{"build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w", "-o", wasmFile, wasmPkg},
	} {
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "GOWORK="+work, "GOOS=js", "GOARCH=wasm", "CGO_ENABLED=0")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("go %s %s for js/wasm: %w", args[0], wasmPkg, err)
		}
	}
	wasm, err := os.ReadFile(wasmFile)
	if err != nil {
		return err
	}
	wasmExec, err := os.ReadFile(filepath.Join(goroot, "lib", "wasm", "wasm_exec.js"))
	if err != nil {
		return fmt.Errorf("wasm_exec.js of the Go that built the verifier: %w", err)
	}
	var gz bytes.Buffer
	zw, err := gzip.NewWriterLevel(&gz, gzip.BestCompression) // no name, no time: reproducible
	if err != nil {
		return err
	}
	if _, err := zw.Write(wasm); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	for name, b := range map[string][]byte{"verify.wasm.gz": gz.Bytes(), "wasm_exec.js": wasmExec} {
		if err := writeAtomic(filepath.Join(out, name), b); err != nil {
			return err
		}
	}
	if wasmCopy != "" {
		if err := writeAtomic(wasmCopy, wasm); err != nil {
			return err
		}
	}
	log.Info("wasmbuild: browser verifier built", "dir", out, "wasm_bytes", len(wasm), "gzip_bytes", gz.Len(),
		"wasm_sha256", fmt.Sprintf("%x", sha256.Sum256(wasm)))
	return nil
}

// workspace writes, into tmp, a Go workspace of the module in which goleveldb is replaced by a
// copy of the required version with its NaCl stubs built for js as well. The replacement is
// relative to the workspace, so the build records it as ./goleveldb wherever tmp is, and two
// builds of the same source are byte-identical.
func workspace(ctx context.Context, root, tmp string) (string, error) {
	var mod struct {
		Go      string
		Replace []struct{ Old struct{ Path string } }
	}
	if err := goJSON(ctx, root, &mod, "mod", "edit", "-json"); err != nil {
		return "", err
	}
	for _, r := range mod.Replace {
		if r.Old.Path == levelDB {
			return "", fmt.Errorf("go.mod replaces %s already, and the wasm build replaces it too: update services/api/verifier/internal/wasmbuild to patch that replacement", levelDB)
		}
	}
	// go mod download names the module's directory, downloading it if it is not there yet.
	var m struct{ Dir, Error string }
	if err := goJSON(ctx, root, &m, "mod", "download", "-json", levelDB); err != nil {
		return "", err
	}
	if m.Dir == "" {
		return "", fmt.Errorf("go mod download %s: no module directory: %s", levelDB, m.Error)
	}
	dst := filepath.Join(tmp, "goleveldb")
	if err := os.CopyFS(dst, os.DirFS(m.Dir)); err != nil {
		return "", fmt.Errorf("copy %s: %w", levelDB, err)
	}
	stubs, err := os.ReadFile(filepath.Join(m.Dir, levelDBStubs))
	if err != nil {
		return "", fmt.Errorf("%s no longer has the stubs the wasm build uses (%s): %w", levelDB, levelDBStubs, err)
	}
	const tag = "// +build nacl\n"
	if !bytes.Contains(stubs, []byte(tag)) {
		return "", fmt.Errorf("%s/%s has no line %q: update services/api/verifier/internal/wasmbuild", levelDB, levelDBStubs, strings.TrimSpace(tag))
	}
	stubs = bytes.Replace(stubs, []byte(tag), []byte("//go:build js\n"), 1)
	if err := os.WriteFile(filepath.Join(dst, levelDBJS), stubs, 0o644); err != nil {
		return "", err
	}
	work := filepath.Join(tmp, "go.work")
	text := fmt.Sprintf("go %s\n\nuse %s\n\nreplace %s => ./goleveldb\n", mod.Go, root, levelDB)
	return work, os.WriteFile(work, []byte(text), 0o644)
}

// goJSON runs a go command in dir and decodes its JSON output into v.
func goJSON(ctx context.Context, dir string, v any, args ...string) error {
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("go %s: %w", strings.Join(args, " "), err)
	}
	if err := json.Unmarshal(out, v); err != nil {
		return fmt.Errorf("go %s: %w", strings.Join(args, " "), err)
	}
	return nil
}

func goEnv(ctx context.Context, name string) (string, error) {
	b, err := exec.CommandContext(ctx, "go", "env", name).Output()
	if err != nil {
		return "", fmt.Errorf("go env %s: %w", name, err)
	}
	return strings.TrimSpace(string(b)), nil
}

// writeAtomic replaces path by b, so that a build reading the directory meanwhile embeds the
// old file or the new one, never half of one.
func writeAtomic(path string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Chmod(f.Name(), fs.FileMode(0o644)); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
