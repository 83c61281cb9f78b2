package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/anchorline/anchorline/internal/retry"
)

// SupervisorLog is the supervisor's log file under Options.Dir.
const SupervisorLog = "logs/supervisor.log"

// ReadInfo reads dir's cluster.json.
func ReadInfo(dir string) (Info, error) {
	var info Info
	b, err := os.ReadFile(filepath.Join(dir, InfoFile))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return info, fmt.Errorf("%s: no cluster there (no %s): %w", dir, InfoFile, err)
		}
		return info, err
	}
	if err := json.Unmarshal(b, &info); err != nil {
		return info, fmt.Errorf("%s: %w", filepath.Join(dir, InfoFile), err)
	}
	return info, nil
}

// Start runs the supervisor (args: the command line of `anchorline cluster run`, after the
// binary) as a process of its own session, so that it outlives the caller, and waits until
// cluster.json says the cluster is ready. If the supervisor exits first, the error holds the
// end of its log.
func Start(ctx context.Context, binary, dir string, args []string, within time.Duration) (Info, error) {
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o750); err != nil {
		return Info{}, fmt.Errorf("cluster --dir: %w", err)
	}
	logFile := filepath.Join(dir, SupervisorLog)
	logf, err := os.OpenFile(logFile, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return Info{}, fmt.Errorf("cluster: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(binary, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return Info{}, fmt.Errorf("cluster: start the supervisor: %w", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	info, err := retry.Do(ctx, retry.Policy{Initial: 200 * time.Millisecond, Max: 200 * time.Millisecond, Timeout: within}, func(context.Context) (Info, error) {
		select {
		case <-exited:
			return Info{}, retry.Permanent(fmt.Errorf("cluster: the supervisor exited before the cluster was ready; its log (%s) ends:\n%s", logFile, logTail(logFile)))
		default:
		}
		info, err := ReadInfo(dir)
		if err == nil && !info.Ready {
			err = errors.New("not ready")
		}
		return info, err
	}, func(error, time.Duration) {})
	if err != nil {
		if errors.Is(err, retry.ErrGaveUp) {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			return Info{}, fmt.Errorf("cluster: not ready within %s (log: %s): %w", within, logFile, err)
		}
		return Info{}, err
	}
	return info, nil
}

// Down stops the cluster dir's cluster.json describes: the supervisor (which stops what it
// started), then any process it lists that still runs (the supervisor was killed, say). It
// signals only processes whose pid and start time match cluster.json, so nothing else. It
// returns the processes it found running.
func Down(ctx context.Context, dir string) ([]Process, error) {
	info, err := ReadInfo(dir)
	if err != nil {
		return nil, err
	}
	var running []Process
	for _, p := range append([]Process{info.Supervisor}, info.Processes...) {
		if alive(p) {
			running = append(running, p)
		}
	}
	if alive(info.Supervisor) {
		if err := stopProcess(ctx, info.Supervisor, 3*time.Minute); err != nil {
			return running, err
		}
	}
	var errs []error
	for _, p := range info.Processes {
		if alive(p) {
			errs = append(errs, stopProcess(ctx, p, 30*time.Second))
		}
	}
	return running, errors.Join(errs...)
}

// stopProcess sends p SIGTERM, and SIGKILL if it still runs after grace, and waits for it.
func stopProcess(ctx context.Context, p Process, grace time.Duration) error {
	_ = syscall.Kill(p.PID, syscall.SIGTERM)
	gone := func(context.Context) (struct{}, error) {
		if alive(p) {
			return struct{}{}, errors.New("still running")
		}
		return struct{}{}, nil
	}
	if _, err := retry.Do(ctx, retry.Policy{Initial: 100 * time.Millisecond, Max: 100 * time.Millisecond, Timeout: grace}, gone, func(error, time.Duration) {}); err == nil {
		return nil
	}
	_ = syscall.Kill(p.PID, syscall.SIGKILL)
	if _, err := retry.Do(ctx, retry.Policy{Initial: 100 * time.Millisecond, Max: 100 * time.Millisecond, Timeout: 10 * time.Second}, gone, func(error, time.Duration) {}); err != nil {
		return fmt.Errorf("%s (pid %d) did not stop: %w", p.Name, p.PID, err)
	}
	return nil
}
