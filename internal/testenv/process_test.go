package testenv

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestAliveAndChildren(t *testing.T) {
	require.True(t, Alive(os.Getpid()), "Alive(self)")
	cmd := exec.Command("sleep", "30")
	require.NoError(t, cmd.Start())
	pid := cmd.Process.Pid
	require.Contains(t, Children(os.Getpid()), pid, "Children(self)")
	require.NoError(t, cmd.Process.Kill())
	require.Eventually(t, func() bool { return !Alive(pid) }, 5*time.Second, 10*time.Millisecond,
		"Alive(%d) after SIGKILL, unreaped: a zombie", pid)
	_ = cmd.Wait()
	require.False(t, Alive(pid), "Alive(%d) once reaped", pid)
}

func TestSubreaperReapsOrphans(t *testing.T) {
	Subreaper(t)
	// The shell leaves its sleep behind, an orphan that now comes to us.
	out, err := exec.Command("sh", "-c", "sleep 30 >/dev/null 2>&1 & echo $!").Output()
	require.NoError(t, err)
	pid, err := strconv.Atoi(strings.TrimSpace(string(out)))
	require.NoError(t, err)
	require.True(t, Alive(pid), "the orphan %d", pid)
	_, err = Reap(pid, 100*time.Millisecond)
	require.ErrorContains(t, err, "still runs", "Reap of a running orphan")

	require.NoError(t, syscall.Kill(pid, syscall.SIGTERM))
	ws, err := Reap(pid, 5*time.Second)
	require.NoError(t, err)
	require.True(t, ws.Signaled() && ws.Signal() == syscall.SIGTERM, "Reap(%d) = %v, want killed by SIGTERM", pid, ws)
	require.False(t, Alive(pid), "Alive(%d) once reaped", pid)
}
