package cluster

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// startTime is field 22 of /proc/PID/stat, the process's start time in clock ticks since boot:
// with the pid it names one process, not a later one that reuses the pid.
func startTime(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces: count from its end.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	return strconv.ParseUint(f[19], 10, 64) // field 22 is the 20th after the name
}

// alive reports whether p still runs: its pid exists with the start time recorded.
func alive(p Process) bool {
	st, err := startTime(p.PID)
	return err == nil && st == p.StartTime
}

func selfProcess() (Process, error) {
	pid := os.Getpid()
	st, err := startTime(pid)
	if err != nil {
		return Process{}, fmt.Errorf("cluster: %w", err)
	}
	return Process{Name: "supervisor", Role: "supervisor", PID: pid, StartTime: st}, nil
}
