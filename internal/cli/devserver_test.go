package cli

import (
	"errors"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cdswap/cdswap/internal/devserver"
	"github.com/cdswap/cdswap/internal/testenv"
)

// TestDevServerBinary runs the real cdswap binary's dev-server, as an operator would: it
// must fail at once when a port is taken, and its server must not outlive it.
func TestDevServerBinary(t *testing.T) {
	_, err := devserver.CLIPath()
	testenv.Require(t, "the Temporal CLI", err)
	ctx := testenv.Context(t, 4*time.Minute)
	bin := filepath.Join(t.TempDir(), "cdswap")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./starter")
	build.Dir = "../.." // the module's root, from this package's folder
	out, err := build.CombinedOutput()
	require.NoError(t, err, "go build ./starter: %s", out)

	t.Run("port taken", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			args func(port int) []string
			want string
		}{
			{
				name: "frontend",
				args: func(port int) []string { return []string{"--port", strconv.Itoa(port)} },
				want: "(frontend gRPC) is already in use by another process: stop that process " +
					"(`ss -ltnp 'sport = :%[1]d'` names it) or pick another port with --port\n",
			},
			{
				name: "Web UI",
				args: func(port int) []string { return []string{"--port", "0", "--ui", "--ui-port", strconv.Itoa(port)} },
				want: "(Web UI) is already in use by another process: stop that process " +
					"(`ss -ltnp 'sport = :%[1]d'` names it) or pick another port with --ui-port\n",
			},
		} {
			t.Run(tc.name, func(t *testing.T) {
				l, err := net.Listen("tcp", "127.0.0.1:0")
				require.NoError(t, err)
				defer l.Close()
				port := l.Addr().(*net.TCPAddr).Port

				var stdout, stderr testenv.Buffer
				cmd := exec.CommandContext(testenv.Context(t, 30*time.Second), bin,
					append([]string{"dev-server"}, tc.args(port)...)...)
				cmd.Stdout, cmd.Stderr = &stdout, &stderr
				began := time.Now()
				err = cmd.Run()
				took := time.Since(began)

				var exit *exec.ExitError
				require.ErrorAs(t, err, &exit, "cdswap dev-server %v: stdout %s\nstderr %s", cmd.Args, stdout.String(), stderr.String())
				assert.Equal(t, ExitFailure, exit.ExitCode(), "stderr %s", stderr.String())
				assert.Less(t, took, 10*time.Second, "cdswap dev-server took %s to fail", took)
				assert.Contains(t, stderr.String(),
					fmt.Sprintf("cdswap: the Temporal dev server could not start: 127.0.0.1:%d ", port)+fmt.Sprintf(tc.want, port))
				assert.Regexp(t, `\n  the server \(pid \d+\) ended with exit status 1, saying: ".*address already in use.*"\n`,
					stderr.String(), "the server's own line, quoted")
				assert.NotContains(t, stdout.String(), "Temporal dev server at", "it must not claim to serve")
			})
		}
	})

	t.Run("SIGKILL takes its server along", func(t *testing.T) {
		// The server, orphaned, comes to us: Reap tells the parent-death SIGKILL from a
		// later death of its own (a SIGPIPE once it writes to its dead parent's pipe).
		testenv.Subreaper(t)
		var stdout, stderr testenv.Buffer
		cmd := exec.Command(bin, "dev-server", "--port", "0")
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		require.NoError(t, cmd.Start())
		waited := make(chan error, 1)
		go func() { waited <- cmd.Wait() }()
		t.Cleanup(func() { _ = cmd.Process.Kill() }) // the test failed before it killed it
		require.Eventually(t, func() bool { return strings.Contains(stdout.String(), "stop it with Ctrl-C") },
			60*time.Second, 50*time.Millisecond, "dev-server did not start: stderr %s", stderr.String())

		kids := testenv.Children(cmd.Process.Pid)
		require.Len(t, kids, 1, "cdswap dev-server's children")
		server := kids[0]
		t.Cleanup(func() {
			if testenv.Alive(server) {
				_ = syscall.Kill(server, syscall.SIGKILL)
			}
		})

		require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
		select {
		case err := <-waited:
			var exit *exec.ExitError
			require.True(t, errors.As(err, &exit) && exit.Sys().(syscall.WaitStatus).Signal() == syscall.SIGKILL,
				"cdswap dev-server ended with %v, want killed", err)
		case <-time.After(10 * time.Second):
			t.Fatal("cdswap dev-server still runs 10 s after SIGKILL")
		}
		ws, err := testenv.Reap(server, 5*time.Second)
		require.NoError(t, err, "its Temporal server after cdswap dev-server was killed")
		require.True(t, ws.Signaled() && ws.Signal() == syscall.SIGKILL,
			"its Temporal server (pid %d) ended with %v (exit status %d), want the parent-death SIGKILL", server, ws.Signal(), ws.ExitStatus())
	})
}
