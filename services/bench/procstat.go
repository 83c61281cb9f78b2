package bench

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// clockTicks is USER_HZ, 100 on every Linux this runs on.
const clockTicks = 100

// cpuSeconds returns the user+system CPU time of a process.
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name is in parentheses and may contain spaces: fields start after ")".
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	utime, err1 := strconv.ParseFloat(fields[11], 64)
	stime, err2 := strconv.ParseFloat(fields[12], 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %v %v", pid, err1, err2)
	}
	return (utime + stime) / clockTicks, nil
}

// peakRSS returns a process's peak resident set size (VmHWM) in bytes.
func peakRSS(pid int) (uint64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no VmHWM", pid)
}

// cpuSnapshot is the CPU time used so far by the bench process (which embeds NATS and the
// ledger) and by the ClickHouse server when the bench started it.
type cpuSnapshot struct {
	self       float64
	clickhouse float64 // 0 when ClickHouse is not a child of the bench
}

// snapshotCPU reads the CPU time of this process and, if chPid is not 0, of the ClickHouse
// server.
func snapshotCPU(chPid int) (cpuSnapshot, error) {
	var s cpuSnapshot
	var err error
	if s.self, err = cpuSeconds(os.Getpid()); err != nil {
		return s, err
	}
	if chPid != 0 {
		if s.clickhouse, err = cpuSeconds(chPid); err != nil {
			return s, fmt.Errorf("bench: ClickHouse CPU: %w", err)
		}
	}
	return s, nil
}

// since is the CPU time used between earlier and s.
func (s cpuSnapshot) since(earlier cpuSnapshot) cpuSnapshot {
	return cpuSnapshot{self: s.self - earlier.self, clickhouse: s.clickhouse - earlier.clickhouse}
}
