package procnet

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
)

// ErrNoProc means /proc cannot tell (not Linux): callers trust the answer they got.
var ErrNoProc = errors.New("procnet: /proc/net/tcp is not available")

// Holds reports whether process pid holds a socket listening on TCP port (IPv4 or IPv6).
func Holds(pid, port int) (bool, error) {
	inodes, err := listening(port)
	if err != nil {
		return false, err
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return false, fmt.Errorf("procnet: process %d: %w", pid, err)
	}
	for _, fd := range fds {
		if link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())); err == nil && inodes[link] {
			return true, nil
		}
	}
	return false, nil
}

// listening returns the sockets listening on TCP port, as the "socket:[inode]" links that
// /proc/<pid>/fd holds.
func listening(port int) (map[string]bool, error) {
	inodes := map[string]bool{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if errors.Is(err, fs.ErrNotExist) {
			if f == "/proc/net/tcp" {
				return nil, ErrNoProc
			}
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("procnet: %w", err)
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fields := strings.Fields(line)
			if len(fields) < 10 || fields[3] != "0A" { // 0A: LISTEN
				continue
			}
			i := strings.LastIndexByte(fields[1], ':')
			p, err := strconv.ParseUint(fields[1][i+1:], 16, 16)
			if err != nil || int(p) != port {
				continue
			}
			inodes["socket:["+fields[9]+"]"] = true
		}
	}
	return inodes, nil
}
