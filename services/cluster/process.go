package cluster

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// child is one process the supervisor started from a command line (an Anchorline service, a
// validator, a nats-server): its output goes to a log file, and it ends with the supervisor.
type child struct {
	name string
	args []string
	bin  string
	log  string
	// stopSignal asks it to stop (default SIGINT, Anchorline's clean stop).
	stopSignal syscall.Signal

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

func newChild(name, bin, dir string, args ...string) *child {
	return &child{name: name, bin: bin, args: args, log: filepath.Join(dir, name+".log")}
}

// start starts the process (again, after it exited).
func (c *child) start() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	logf, err := os.OpenFile(c.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("%s: %w", c.name, err)
	}
	cmd := exec.Command(c.bin, c.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// It ends with the supervisor, even one killed with SIGKILL.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("%s: start %s: %w", c.name, c.bin, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(done) }()
	c.cmd, c.done = cmd, done
	return nil
}

// process returns the process id and a channel closed when it has exited.
func (c *child) process() (int, <-chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cmd.Process.Pid, c.done
}

// stop asks the process to stop (stopSignal), kills it after grace, and waits for it.
func (c *child) stop(grace time.Duration) {
	c.mu.Lock()
	cmd, done := c.cmd, c.done
	c.mu.Unlock()
	if cmd == nil {
		return
	}
	sig := c.stopSignal
	if sig == 0 {
		sig = syscall.SIGINT
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(grace):
		_ = cmd.Process.Kill()
		<-done
	}
}

// kill kills the process (SIGKILL) and waits for it.
func (c *child) kill() {
	c.mu.Lock()
	cmd, done := c.cmd, c.done
	c.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-done
}
