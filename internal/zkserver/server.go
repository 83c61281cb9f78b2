package zkserver

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/anchorline/anchorline/internal/procnet"
	"github.com/anchorline/anchorline/internal/retry"
)

// ErrNotInstalled means Debian's ZooKeeper jar or java was not found.
var ErrNotInstalled = errors.New("ZooKeeper is not installed: run scripts/install-zookeeper.sh (apt-get install zookeeper)")

// Jar is where Debian's zookeeper package puts the server; its manifest's Class-Path names
// the jars it depends on, so it alone is the classpath (as in /etc/zookeeper/conf_example/environment).
const Jar = "/usr/share/java/zookeeper.jar"

// slf4jSimple, when present (Debian's libslf4j-java, a dependency of zookeeper), gives the
// server a log file; without it ZooKeeper logs nothing (slf4j's no-op logger).
const slf4jSimple = "/usr/share/java/slf4j-simple.jar"

// Server is a running private standalone ZooKeeper.
type Server struct {
	Addr string // client port, 127.0.0.1:port
	dir  string
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited (exit holds how)
	exit error
	log  *slog.Logger
	stop sync.Once
}

// java finds the java binary: /usr/bin/java, $JAVA_HOME/bin/java, or on PATH.
func java() (string, error) {
	cands := []string{"/usr/bin/java"}
	if h := os.Getenv("JAVA_HOME"); h != "" {
		cands = append([]string{filepath.Join(h, "bin", "java")}, cands...)
	}
	for _, p := range cands {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	if p, err := exec.LookPath("java"); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("%w (no java)", ErrNotInstalled)
}

const zooCfg = `# written by anchorline internal/zkserver
tickTime=500
initLimit=10
syncLimit=5
dataDir={{dir}}/data
clientPort={{port}}
clientPortAddress=127.0.0.1
maxClientCnxns=0
admin.enableServer=false
4lw.commands.whitelist=srvr,ruok
autopurge.purgeInterval=0
`

// errPortTaken is a start that failed because the client port was taken when the server bound it.
var errPortTaken = errors.New("the client port was taken")

// Start writes zoo.cfg under dir (data in dir/data, which survives a restart; log in
// dir/zookeeper.log) and starts a standalone ZooKeeper on a free 127.0.0.1 port, without its
// admin server. It returns once the server answers the srvr four-letter word as standalone.
func Start(ctx context.Context, dir string, log *slog.Logger) (*Server, error) {
	if _, err := os.Stat(Jar); err != nil {
		return nil, ErrNotInstalled
	}
	bin, err := java()
	if err != nil {
		return nil, err
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o750); err != nil {
		return nil, fmt.Errorf("zookeeper dir: %w", err)
	}
	for attempt := 1; ; attempt++ {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		s, err := start(ctx, bin, dir, port, log)
		if errors.Is(err, errPortTaken) && attempt < 5 {
			log.Warn("private ZooKeeper: the port was taken before the server bound it, picking another", "port", port)
			continue
		}
		if err != nil {
			return nil, err
		}
		log.Info("private ZooKeeper ready", "addr", s.Addr, "dir", dir, "pid", s.cmd.Process.Pid)
		return s, nil
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func start(ctx context.Context, bin, dir string, port int, log *slog.Logger) (*Server, error) {
	cfg := strings.NewReplacer("{{dir}}", dir, "{{port}}", strconv.Itoa(port)).Replace(zooCfg)
	cfgFile := filepath.Join(dir, "zoo.cfg")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o640); err != nil {
		return nil, err
	}
	logFile := filepath.Join(dir, "zookeeper.log")
	out, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return nil, err
	}
	from, _ := out.Seek(0, io.SeekEnd)
	cp := Jar
	if _, err := os.Stat(slf4jSimple); err == nil {
		cp += ":" + slf4jSimple
	}
	cmd := exec.Command(bin,
		"-Xmx256m", "-XX:+UseSerialGC", "-Xshare:auto",
		"-Dzookeeper.jmx.log4j.disable=true",
		"-Dorg.slf4j.simpleLogger.defaultLogLevel=info",
		"-Dorg.slf4j.simpleLogger.showDateTime=true",
		"-cp", cp, "org.apache.zookeeper.server.ZooKeeperServerMain", cfgFile)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = out, out // slf4j-simple writes to stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		out.Close()
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	s := &Server{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), dir: dir, cmd: cmd, done: make(chan struct{}), log: log}
	go func() { s.exit = cmd.Wait(); out.Close(); close(s.done) }()
	if err := s.waitReady(ctx); err != nil {
		_ = s.Stop()
		tail := logTail(logFile, from)
		if strings.Contains(tail, "Address already in use") {
			return nil, fmt.Errorf("%w: %w", errPortTaken, err)
		}
		log.Error("private ZooKeeper did not start", "addr", s.Addr, "err", err, "log", tail)
		return nil, fmt.Errorf("zookeeper on %s: %w (log in %s)", s.Addr, err, logFile)
	}
	return s, nil
}

// errExited means the server process ended before it answered.
var errExited = errors.New("exited before it was ready")

// waitReady asks srvr until the server says it is standalone, its process exits, or a minute
// has passed.
func (s *Server) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	_, err := retry.Do(ctx, retry.Policy{Initial: 50 * time.Millisecond, Max: 500 * time.Millisecond}, func(ctx context.Context) (struct{}, error) {
		select {
		case <-s.done:
			return struct{}{}, retry.Permanent(fmt.Errorf("%w (%v)", errExited, s.exit))
		default:
		}
		stat, err := FourLetter(ctx, s.Addr, "srvr")
		if err != nil {
			return struct{}{}, err
		}
		if !strings.Contains(stat, "Mode: standalone") {
			return struct{}{}, fmt.Errorf("srvr answered %q", stat)
		}
		return struct{}{}, s.verifyOwn()
	}, func(err error, next time.Duration) {
		s.log.DebugContext(ctx, "private ZooKeeper not ready yet", "addr", s.Addr, "err", err, "retry_in", next)
	})
	return err
}

// verifyOwn checks that the socket listening on the client port belongs to the child (java
// itself), so that a stranger that took the port cannot pass for it. Without /proc (not
// Linux) it trusts the answer.
func (s *Server) verifyOwn() error {
	_, p, _ := net.SplitHostPort(s.Addr)
	port, _ := strconv.Atoi(p)
	pid := s.cmd.Process.Pid
	ok, err := procnet.Holds(pid, port)
	if errors.Is(err, procnet.ErrNoProc) {
		return nil
	}
	if err != nil {
		return retry.Permanent(fmt.Errorf("check who listens on %s: %w", s.Addr, err))
	}
	if ok {
		return nil
	}
	return retry.Permanent(fmt.Errorf("%w: process %d does not hold %s", ErrNotOurs, pid, s.Addr))
}

// ErrNotOurs means a server answers on the address, but it is not the child started here.
var ErrNotOurs = errors.New("the server answering is not the private ZooKeeper started here")

// FourLetter sends a ZooKeeper four-letter command (srvr, ruok, …; the private server whitelists
// srvr and ruok) to addr and returns the whole answer.
func FourLetter(ctx context.Context, addr, cmd string) (string, error) {
	d := net.Dialer{Timeout: 2 * time.Second}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, cmd); err != nil {
		return "", err
	}
	b, err := io.ReadAll(bufio.NewReader(c))
	if err != nil {
		return string(b), err
	}
	if len(b) == 0 {
		return "", fmt.Errorf("zookeeper %s: empty answer to %s", addr, cmd)
	}
	return string(b), nil
}

func logTail(file string, from int64) string {
	b, _ := os.ReadFile(file)
	if from <= int64(len(b)) {
		b = b[from:]
	}
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}

// Done is closed when the server's process has exited (stopped, killed or crashed).
func (s *Server) Done() <-chan struct{} { return s.done }

// Pid is the server's process id.
func (s *Server) Pid() int { return s.cmd.Process.Pid }

// Stop terminates the server (SIGTERM, then SIGKILL after 10 s) and waits for it.
func (s *Server) Stop() error {
	s.stop.Do(func() {
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(10 * time.Second):
			_ = s.cmd.Process.Kill()
			<-s.done
		}
	})
	return nil
}
