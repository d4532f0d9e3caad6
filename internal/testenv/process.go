package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Alive reports whether pid is a process that has not ended: kill(pid, 0) finds it and it
// is not a zombie waiting to be reaped (by init, once its parent is gone), which kill alone
// cannot tell from a live one.
func Alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	state, _, ok := procStat(pid)
	return ok && state != "Z"
}

// Children returns the pids of the processes whose parent is pid.
func Children(pid int) []int {
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	var kids []int
	for _, d := range dirs {
		p, err := strconv.Atoi(filepath.Base(d))
		if err != nil {
			continue
		}
		if _, ppid, ok := procStat(p); ok && ppid == pid {
			kids = append(kids, p)
		}
	}
	return kids
}

// procStat reads a process's state and parent from /proc/PID/stat ("pid (comm) S ppid
// ..."; comm may hold spaces and parentheses, so the fields follow the last ')').
func procStat(pid int) (state string, ppid int, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", 0, false
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 2 {
		return "", 0, false
	}
	ppid, err = strconv.Atoi(f[1])
	return f[0], ppid, err == nil
}

// Subreaper makes this process the reaper of its orphaned descendants until tb ends
// (PR_SET_CHILD_SUBREAPER), so that a test that kills a child can Reap the grandchildren
// it left and learn how they ended, rather than only that they did.
func Subreaper(tb testing.TB) {
	tb.Helper()
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		tb.Fatalf("prctl(PR_SET_CHILD_SUBREAPER): %v", err)
	}
	tb.Cleanup(func() { _ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) })
}

// Reap waits up to d for pid, a child of this process or an orphan it reaps (Subreaper),
// to end, and returns how it ended.
func Reap(pid int, d time.Duration) (syscall.WaitStatus, error) {
	deadline := time.Now().Add(d)
	for {
		var ws syscall.WaitStatus
		got, err := syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
		if err != nil {
			return 0, fmt.Errorf("wait for pid %d: %w (not a child, nor an orphan we reap?)", pid, err)
		}
		if got == pid {
			return ws, nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("pid %d still runs %s later", pid, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
