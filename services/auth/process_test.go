package auth

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/anchorline/anchorline/internal/await"
)

// natsServerBinary builds the nats-server command of the module version go.mod pins.
func natsServerBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "nats-server")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/nats-io/nats-server/v2").CombinedOutput()
	if err != nil {
		t.Fatalf("go build nats-server: %v\n%s", err, out)
	}
	return bin
}

// startProcess runs a nats-server process whose configuration includes auth.conf, as an
// operator's would, and returns the broker with the callout service connected to it.
func startProcess(t *testing.T) *broker {
	t.Helper()
	bin := natsServerBinary(t)
	setup, err := Init(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// include paths are relative to the including file.
	conf := fmt.Sprintf("listen: \"127.0.0.1:-1\"\nserver_name: external\nports_file_dir: %q\njetstream { store_dir: %q }\ninclude %q\n",
		dir, filepath.Join(dir, "js"), filepath.Base(setup.ConfFile()))
	confFile := filepath.Join(setup.Dir, "server.conf")
	if err := os.WriteFile(confFile, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.Command(bin, "-c", confFile)
	var log strings.Builder
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("nats-server log:\n%s", log.String())
		}
	})
	var url string
	await.Until(t, ctx, "nats-server writes its ports file", func() (bool, string) {
		b, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("nats-server_%d.ports", cmd.Process.Pid)))
		if err != nil {
			return false, err.Error()
		}
		var ports struct {
			Nats []string `json:"nats"`
		}
		if err := json.Unmarshal(b, &ports); err != nil || len(ports.Nats) == 0 {
			return false, fmt.Sprintf("ports file %q: %v", b, err)
		}
		url = ports.Nats[0]
		return true, ""
	})
	return newBroker(t, setup, url)
}

// TestExternalServer runs the device and service cases against a nats-server process.
func TestExternalServer(t *testing.T) {
	b := startProcess(t)
	t.Run("devices", func(t *testing.T) { testDevices(t, b) })
	t.Run("services", func(t *testing.T) { testServices(t, b) })
}
