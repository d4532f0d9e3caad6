package devserver

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/api/operatorservice/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/cdswap/cdswap/internal/testenv"
)

// helperEnv makes the test binary a process that starts a dev server, prints its pid and
// waits to be killed: the parent whose death the server must not outlive.
const helperEnv = "CDSWAP_DEVSERVER_TEST_HELPER"

func TestMain(m *testing.M) {
	// Keep the main thread for the main goroutine: the runtime never ends the main thread,
	// so a test goroutine that ran there could not show what a thread's end does to a
	// child it forked (TestServerOutlivesStartingThread).
	runtime.LockOSThread()
	if os.Getenv(helperEnv) == "1" {
		helperMain()
		return
	}
	os.Exit(m.Run())
}

func helperMain() {
	srv, err := Start(context.Background(), Options{})
	if err != nil {
		fmt.Printf("error %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("pid %d\n", srv.Pid())
	<-srv.Done()
	os.Exit(1)
}

// needCLI ends the test when there is no Temporal CLI to run (a failure under CI=true).
func needCLI(t *testing.T) {
	t.Helper()
	_, err := CLIPath()
	testenv.Require(t, "the Temporal CLI", err)
}

// holdPort listens on a free loopback port until the test ends and returns it: another
// process's socket, as far as a dev server is concerned.
func holdPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	return l.Addr().(*net.TCPAddr).Port
}

func TestStartPortTaken(t *testing.T) {
	needCLI(t)
	for _, tc := range []struct {
		name string
		opts func(port int) Options
		use  string
	}{
		{
			name: "frontend",
			opts: func(port int) Options { return Options{HostPort: fmt.Sprintf("127.0.0.1:%d", port)} },
			use:  UseFrontend,
		},
		{
			name: "Web UI",
			opts: func(port int) Options { return Options{UI: true, UIPort: strconv.Itoa(port)} },
			use:  UseUI,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			port := holdPort(t)
			ctx := testenv.Context(t, 30*time.Second)
			began := time.Now()
			srv, err := Start(ctx, tc.opts(port))
			if srv != nil {
				_ = srv.Stop()
			}
			took := time.Since(began)
			require.Error(t, err)
			assert.Less(t, took, 10*time.Second, "Start took %s to fail", took)
			assert.ErrorIs(t, err, ErrExited)
			var inUse *PortInUseError
			require.ErrorAs(t, err, &inUse)
			assert.Equal(t, port, inUse.Port, "%v", err)
			assert.Equal(t, tc.use, inUse.Use, "%v", err)
			assert.Contains(t, err.Error(), fmt.Sprintf("127.0.0.1:%d (%s) is already in use", port, tc.use))
			assert.Contains(t, err.Error(), "address already in use", "the server's own line")
		})
	}
}

func TestStartRegistersSearchAttributes(t *testing.T) {
	needCLI(t)
	ctx := testenv.Context(t, 60*time.Second)
	srv, err := Start(ctx, Options{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = srv.Stop() })

	resp, err := srv.Client().OperatorService().ListSearchAttributes(ctx,
		&operatorservice.ListSearchAttributesRequest{Namespace: "default"})
	require.NoError(t, err)
	for _, sa := range SearchAttributes {
		_, ok := resp.GetCustomAttributes()[sa]
		require.True(t, ok, "search attribute %s not registered; have %v", sa, resp.GetCustomAttributes())
	}

	// The server runs without the forced refresh of its search-attribute cache
	// (devServerDynamicConfig): the attributes must be usable at once, in a start and in a
	// visibility query, as when cdswap's first swap starts.
	key := temporal.NewSearchAttributeKeyKeyword(SearchAttributes[0])
	run, err := srv.Client().ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID: "sa-at-once", TaskQueue: "no-worker", TypedSearchAttributes: temporal.NewSearchAttributes(key.ValueSet("h1")),
	}, "NoSuchWorkflow")
	require.NoError(t, err, "start with search attribute %s right after the server started", key.GetName())
	t.Cleanup(func() {
		_ = srv.Client().TerminateWorkflow(context.Background(), run.GetID(), run.GetRunID(), "test over")
	})
	_, err = srv.Client().ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
		Namespace: "default", Query: fmt.Sprintf("%s = 'h1'", key.GetName()),
	})
	require.NoError(t, err, "visibility query on %s", key.GetName())

	// The server's GOGC is ours unless the environment set one.
	env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", srv.Pid()))
	require.NoError(t, err)
	want := "GOGC=" + serverGOGC
	if g, ok := os.LookupEnv("GOGC"); ok {
		want = "GOGC=" + g
	}
	assert.Contains(t, strings.Split(string(env), "\x00"), want, "the dev server's environment")

	// The bug this guards against: a second server on the same port answered through the
	// first one, so Start reported success with a dead child.
	t.Run("another server on the port", func(t *testing.T) {
		second, err := Start(ctx, Options{HostPort: srv.FrontendHostPort()})
		if second != nil {
			_ = second.Stop()
		}
		var inUse *PortInUseError
		require.ErrorAs(t, err, &inUse, "Start on a port another dev server holds")
		assert.Equal(t, UseFrontend, inUse.Use)
	})
}

func TestServerOutlivesStartingThread(t *testing.T) {
	needCLI(t)
	ctx := testenv.Context(t, 60*time.Second)
	var srv *Server
	var err error
	var tid int
	done := make(chan struct{})
	go func() {
		// Locked and never unlocked: the runtime ends this thread when the goroutine
		// returns, as it would end any thread a caller happened to start us on. A child
		// forked from it would get its parent-death signal now.
		runtime.LockOSThread()
		tid = syscall.Gettid()
		srv, err = Start(ctx, Options{})
		close(done)
	}()
	<-done
	require.NotEqual(t, os.Getpid(), tid, "Start ran on the main thread, which never ends")
	require.NoError(t, err)
	t.Cleanup(func() { _ = srv.Stop() })

	time.Sleep(time.Second) // a parent-death SIGKILL would have landed by now
	require.NoError(t, srv.Err())
	require.True(t, testenv.Alive(srv.Pid()), "the server (pid %d) died with the thread that called Start", srv.Pid())
	_, err = srv.Client().WorkflowService().DescribeNamespace(ctx,
		&workflowservice.DescribeNamespaceRequest{Namespace: "default"})
	require.NoError(t, err)

	t.Run("killed later", func(t *testing.T) {
		require.NoError(t, syscall.Kill(srv.Pid(), syscall.SIGKILL))
		select {
		case <-srv.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("Done not closed 10 s after the server was killed")
		}
		err := srv.Err()
		require.ErrorIs(t, err, ErrExited)
		assert.Contains(t, err.Error(), "exited while it ran (signal: killed)")
		assert.ErrorIs(t, srv.Stop(), ErrExited, "Stop after an unasked exit")
	})
}

func TestStopIsClean(t *testing.T) {
	needCLI(t)
	ctx := testenv.Context(t, 60*time.Second)
	srv, err := Start(ctx, Options{})
	require.NoError(t, err)
	require.NoError(t, srv.Stop())
	require.False(t, testenv.Alive(srv.Pid()))
	require.NoError(t, srv.Err(), "an exit Stop asked for is no error")
	require.NoError(t, srv.Stop(), "Stop again")
}

func TestServerDiesWithParent(t *testing.T) {
	needCLI(t)
	// The server, orphaned, comes to us: Reap tells the parent-death SIGKILL from a later
	// death of its own (a SIGPIPE once it writes to the pipe its dead parent read).
	testenv.Subreaper(t)
	ctx := testenv.Context(t, 60*time.Second)
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=1")
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

	line, err := bufio.NewReader(stdout).ReadString('\n')
	require.NoError(t, err, "the helper's first line")
	var pid int
	_, err = fmt.Sscanf(line, "pid %d", &pid)
	require.NoError(t, err, "the helper said %q", line)
	t.Cleanup(func() {
		if testenv.Alive(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	require.True(t, testenv.Alive(pid), "the server (pid %d) before its parent is killed", pid)

	require.NoError(t, cmd.Process.Kill())
	_ = cmd.Wait()
	ws, err := testenv.Reap(pid, 5*time.Second)
	require.NoError(t, err, "the server after its parent was killed")
	require.True(t, ws.Signaled() && ws.Signal() == syscall.SIGKILL,
		"the server (pid %d) ended with %v (exit status %d), want the parent-death SIGKILL", pid, ws.Signal(), ws.ExitStatus())
}

func TestListeningInodes(t *testing.T) {
	// Lines as Linux prints them (net/ipv4/tcp_ipv4.c, get_tcp4_sock; tcp6 likewise).
	const tcp4 = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1C41 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1111 1 0000000000000000 100 0 0 10 0
   1: 00000000:1C41 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2222 1 0000000000000000 100 0 0 10 0
   2: 0100007F:1C41 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000     0        0 3333 1 0000000000000000 20 4 30 10 -1
   3: 0100007F:2029 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4444 1 0000000000000000 100 0 0 10 0
`
	const tcp6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:1C41 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5555 1 0000000000000000 100 0 0 10 0
`
	for _, tc := range []struct {
		name  string
		table string
		port  int
		want  []string
	}{
		{name: "loopback and any address, not the connection", table: tcp4, port: 7233, want: []string{"1111", "2222"}},
		{name: "another port", table: tcp4, port: 8233, want: []string{"4444"}},
		{name: "nobody listens", table: tcp4, port: 9999, want: nil},
		{name: "IPv6", table: tcp6, port: 7233, want: []string{"5555"}},
		{name: "header only", table: "  sl  local_address\n", port: 7233, want: nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := listeningInodes(tc.table, tc.port)
			assert.Equal(t, tc.want, got, "listeningInodes(%d)", tc.port)
		})
	}
}

func TestHoldsListener(t *testing.T) {
	port := holdPort(t)
	ok, err := holdsListener(os.Getpid(), port)
	require.NoError(t, err)
	assert.True(t, ok, "holdsListener(self, %d), a port we listen on", port)

	// A port we do not hold: one whose listener is closed.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	free := l.Addr().(*net.TCPAddr).Port
	l.Close()
	ok, err = holdsListener(os.Getpid(), free)
	require.NoError(t, err)
	assert.False(t, ok, "holdsListener(self, %d), a port nobody listens on", free)
}

func TestTailWhy(t *testing.T) {
	for _, tc := range []struct {
		name     string
		output   string
		wantLine string
		wantPort *PortInUseError
	}{
		{
			name:     "frontend port",
			output:   "time=x level=ERROR msg=boom\nError: can't set frontend port 7233: listen tcp 127.0.0.1:7233: bind: address already in use\n",
			wantLine: "Error: can't set frontend port 7233: listen tcp 127.0.0.1:7233: bind: address already in use",
			wantPort: &PortInUseError{Addr: "127.0.0.1:7233", Port: 7233},
		},
		{
			name:     "UI panic, IPv6, unterminated",
			output:   "panic: listen tcp6 [::1]:8233: bind: address already in use\n\ngoroutine 1 [running]:\nmain.main()",
			wantLine: "panic: listen tcp6 [::1]:8233: bind: address already in use",
			wantPort: &PortInUseError{Addr: "[::1]:8233", Port: 8233},
		},
		{
			name:     "an error line before the trace",
			output:   "CLI 1.5.1\nError: failed starting server: unable to open database file\nexit\n",
			wantLine: "Error: failed starting server: unable to open database file",
		},
		{
			name:   "no error line",
			output: "Server:  localhost:7233\nMetrics: http://localhost:33589/metrics\n",
		},
		{name: "silent"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tl := &tail{out: &strings.Builder{}}
			// In pieces, as pipes deliver it.
			for _, chunk := range chunks(tc.output, 7) {
				_, _ = tl.Write([]byte(chunk))
			}
			line, port := tl.why()
			assert.Equal(t, tc.wantLine, line)
			assert.Equal(t, tc.wantPort, port)
			assert.Equal(t, tc.output, tl.out.(*strings.Builder).String(), "the output passed on")
		})
	}
}

func chunks(s string, n int) []string {
	var out []string
	for len(s) > n {
		out = append(out, s[:n])
		s = s[n:]
	}
	return append(out, s)
}

func TestExitErrorMessage(t *testing.T) {
	err := error(&ExitError{Pid: 42, State: "exit status 1", Starting: true,
		Line: "Error: x\x1b[2J", Port: &PortInUseError{Addr: "127.0.0.1:7233", Port: 7233, Use: UseFrontend}})
	assert.Equal(t, `the Temporal dev server (pid 42) exited during start-up (exit status 1): `+
		`127.0.0.1:7233 (frontend gRPC) is already in use by another process; it said "Error: x\x1b[2J"`, err.Error())
	assert.ErrorIs(t, err, ErrExited)
}

func TestFixed(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
		use  string
		want bool
	}{
		{name: "frontend picked", opts: Options{}, use: UseFrontend, want: false},
		{name: "frontend chosen", opts: Options{HostPort: "127.0.0.1:7233"}, use: UseFrontend, want: true},
		{name: "UI picked", opts: Options{UI: true}, use: UseUI, want: false},
		{name: "UI chosen", opts: Options{UI: true, UIPort: "8233"}, use: UseUI, want: true},
		{name: "UI from a chosen frontend port", opts: Options{UI: true, HostPort: "127.0.0.1:7233"}, use: UseUI, want: true},
		{name: "a port the server picked", opts: Options{HostPort: "127.0.0.1:7233", UIPort: "8233"}, use: "", want: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, fixed(tc.opts, tc.use), "fixed(%+v, %q)", tc.opts, tc.use)
		})
	}
}
