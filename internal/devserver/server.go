package devserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
)

// Options configure Start. The zero value starts an in-memory server on a free loopback
// port with the UI off.
type Options struct {
	// HostPort to bind the frontend; "" picks a free port on 127.0.0.1.
	HostPort string
	// Namespace to create; "" means "default".
	Namespace string
	// DBFile keeps state in this SQLite file; "" keeps it in memory.
	DBFile string
	// UI turns on the Web UI, at UIPort ("" = frontend port + 1000, as the Temporal CLI
	// does).
	UI     bool
	UIPort string
	// Output receives the server's stdout and stderr; nil discards them.
	Output io.Writer
}

// What a port is for, in PortInUseError.Use.
const (
	UseFrontend = "frontend gRPC"
	UseUI       = "Web UI"
)

const (
	// startTimeout bounds a start-up that neither serves nor exits; a healthy server is
	// ready in 1 to 3 s, and a port conflict ends it in well under a second.
	startTimeout = 60 * time.Second
	// pollInterval is how often Start checks that the server serves.
	pollInterval = 100 * time.Millisecond
	// probeTimeout bounds one dial and namespace check while the server starts.
	probeTimeout = 2 * time.Second
	// stopGrace is how long Stop waits for the server's own shutdown before killing it.
	stopGrace = 15 * time.Second
	// freePortTries is how many times Start picks a new free port when one it picked (or
	// the server picked) was taken before the server could bind it.
	freePortTries = 3
	// tailLines is how many lines of the server's output are kept to explain its exit.
	tailLines = 40
)

// ErrExited means the dev server's process exited unasked, during start-up or while it
// ran; the error is an *ExitError.
var ErrExited = errors.New("the Temporal dev server exited")

// PortInUseError means the dev server could not listen on a port because another process
// holds it.
type PortInUseError struct {
	// Addr is the address it failed to bind, as the server's message gave it.
	Addr string
	// Port is the port in Addr.
	Port int
	// Use is UseFrontend, UseUI, or "" for a port the server picked itself (its HTTP API,
	// metrics or an internal service).
	Use string
}

func (e *PortInUseError) Error() string {
	use := e.Use
	if use == "" {
		use = "one the server picked itself; starting again picks another"
	}
	return fmt.Sprintf("%s (%s) is already in use by another process", e.Addr, use)
}

// ExitError is the dev server's process ending unasked: how it ended and the line of its
// output that says why. It matches ErrExited with errors.Is, and unwraps to a
// *PortInUseError when the server said a port was in use.
type ExitError struct {
	// Pid was the server's process id.
	Pid int
	// State is how the process ended ("exit status 1", "signal: killed").
	State string
	// Line is the last line of its output that reports an error ("Error: ...", a panic, a
	// log line at error level); "" when none did.
	Line string
	// Starting is true when it exited before it served.
	Starting bool
	// Port is set when Line says a port was in use.
	Port *PortInUseError
}

func (e *ExitError) Error() string {
	when := "while it ran"
	if e.Starting {
		when = "during start-up"
	}
	msg := fmt.Sprintf("the Temporal dev server (pid %d) exited %s (%s)", e.Pid, when, e.State)
	if e.Port != nil {
		msg += ": " + e.Port.Error()
	}
	if e.Line != "" {
		// Quoted: the line is another program's output, and may hold control characters.
		msg += fmt.Sprintf("; it said %q", e.Line)
	}
	return msg
}

// Is reports whether target is ErrExited.
func (e *ExitError) Is(target error) bool { return target == ErrExited }

// Unwrap returns the *PortInUseError, if any.
func (e *ExitError) Unwrap() error {
	if e.Port == nil {
		return nil
	}
	return e.Port
}

// Server is a running Temporal dev server: a child process that Start checked is serving,
// and that dies with this process (see startChild). Its methods are safe for concurrent
// use.
type Server struct {
	client    client.Client
	hostPort  string
	namespace string
	pid       int
	ports     []port // the ports the server must hold, for ExitError
	tail      *tail

	done     chan struct{} // closed when the process has been waited for
	state    string        // how it ended; written before done is closed
	stopping chan struct{} // closed by Stop, so that an exit is not reported as unasked

	stopOnce sync.Once
	stopErr  error
}

// port is a port the server is asked to listen on, for what.
type port struct {
	num int
	use string
}

// Start runs the dev server and returns once it serves: its own process holds the
// frontend port (and the UI's, with UI), and the frontend answers for the namespace. When
// the server exits first, Start returns its *ExitError at once; a port that another process
// holds is a *PortInUseError within it. Ports that Start or the server picked are picked
// again, up to three times, when another process takes one first.
func Start(ctx context.Context, opts Options) (*Server, error) {
	cli, err := CLIPath()
	if err != nil {
		return nil, err
	}
	for try := 1; ; try++ {
		srv, err := start(ctx, cli, opts)
		var inUse *PortInUseError
		if err != nil && try < freePortTries && errors.As(err, &inUse) && !fixed(opts, inUse.Use) {
			continue
		}
		return srv, err
	}
}

// fixed reports whether the caller chose the port used for use, so that picking another
// would not be what was asked.
func fixed(opts Options, use string) bool {
	switch use {
	case UseFrontend:
		return opts.HostPort != ""
	case UseUI:
		return opts.UIPort != "" || opts.HostPort != ""
	}
	return false
}

func start(ctx context.Context, cli string, opts Options) (*Server, error) {
	hostPort := opts.HostPort
	if hostPort == "" {
		var err error
		if hostPort, err = freeHostPort(); err != nil {
			return nil, err
		}
	}
	host, portStr, err := net.SplitHostPort(hostPort)
	if err != nil {
		return nil, fmt.Errorf("dev server address %q: %w (want host:port)", hostPort, err)
	}
	frontend, err := strconv.Atoi(portStr)
	if err != nil || frontend <= 0 || frontend > 65535 {
		return nil, fmt.Errorf("dev server address %q: %q is not a TCP port", hostPort, portStr)
	}
	ns := opts.Namespace
	if ns == "" {
		ns = "default"
	}
	ports := []port{{frontend, UseFrontend}}
	args := []string{
		"server", "start-dev",
		"--ip", host, "--port", portStr,
		"--namespace", ns,
		"--log-level", "error",
		"--dynamic-config-value", "frontend.enableServerVersionCheck=false",
	}
	if opts.UI {
		ui := min(frontend+1000, 65535) // the Temporal CLI's default
		if opts.UIPort != "" {
			if ui, err = strconv.Atoi(opts.UIPort); err != nil || ui <= 0 || ui > 65535 {
				return nil, fmt.Errorf("dev server UI port %q is not a TCP port", opts.UIPort)
			}
		}
		ports = append(ports, port{ui, UseUI})
		args = append(args, "--ui-ip", "127.0.0.1", "--ui-port", strconv.Itoa(ui))
	} else {
		args = append(args, "--headless")
	}
	if opts.DBFile != "" {
		args = append(args, "--db-filename", opts.DBFile)
	}
	for _, kv := range slices.Concat(TunedDynamicConfig, devServerDynamicConfig) {
		args = append(args, "--dynamic-config-value", kv)
	}
	for _, sa := range SearchAttributes {
		args = append(args, "--search-attribute", sa+"=Keyword")
	}

	out := opts.Output
	if out == nil {
		out = io.Discard
	}
	s := &Server{
		hostPort:  hostPort,
		namespace: ns,
		ports:     ports,
		tail:      &tail{out: out},
		done:      make(chan struct{}),
		stopping:  make(chan struct{}),
	}
	cmd := exec.Command(cli, args...)
	if _, set := os.LookupEnv("GOGC"); !set {
		cmd.Env = append(os.Environ(), "GOGC="+serverGOGC)
	}
	cmd.Stdout, cmd.Stderr = s.tail, s.tail
	if err := s.startChild(cmd); err != nil {
		return nil, fmt.Errorf("start the Temporal dev server %s: %w", cli, err)
	}
	if err := s.waitServing(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// startChild starts cmd so that it dies with this process, even by SIGKILL: the kernel
// sends the child SIGKILL (Pdeathsig) when its parent goes. Linux takes the parent to be
// the thread that forked the child, not the process, and Go ends a thread when a
// goroutine locked to it returns (or at random, as far as the caller knows, for an
// unlocked one), so the child is started and waited for on a goroutine that holds its own
// thread for the child's whole life. SIGKILL rather than SIGTERM: a parent that died
// without stopping its server cannot wait for a graceful stop, and SQLite survives it.
// The child gets its own process group, so that a terminal's Ctrl-C reaches only us and
// Stop shuts it down in order.
func (s *Server) startChild(cmd *exec.Cmd) error {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the child's wait
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		s.pid = cmd.Process.Pid
		started <- nil
		err := cmd.Wait()
		if cmd.ProcessState != nil {
			s.state = cmd.ProcessState.String()
		} else {
			s.state = err.Error()
		}
		close(s.done)
	}()
	return <-started
}

// waitServing waits until the server serves, exits, or runs out of time; on anything but
// serving the process is gone when it returns.
func (s *Server) waitServing(ctx context.Context) error {
	deadline := time.NewTimer(startTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	var last error
	for {
		select {
		case <-s.done:
			return s.exitError(true)
		case <-ctx.Done():
			s.kill()
			return fmt.Errorf("start the Temporal dev server: %w", ctx.Err())
		case <-deadline.C:
			s.kill()
			return fmt.Errorf("the Temporal dev server (pid %d) did not serve on %s within %s (%v); "+
				"its last output: %q", s.pid, s.hostPort, startTimeout, last, s.tail.last())
		case <-tick.C:
		}
		c, err := s.probe(ctx)
		if err == nil {
			s.client = c
			return nil
		}
		last = err
	}
}

// probe checks once that the server serves: its own process holds each of its ports, and
// the frontend answers for the namespace. The ownership check is what tells our server from
// another one already on the port, which would answer just the same.
func (s *Server) probe(ctx context.Context) (client.Client, error) {
	for _, p := range s.ports {
		ok, err := holdsListener(s.pid, p.num)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, fmt.Errorf("its process does not listen on port %d (%s) yet", p.num, p.use)
		}
	}
	pctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	c, err := client.DialContext(pctx, client.Options{HostPort: s.hostPort, Namespace: s.namespace, Logger: quietLogger{}})
	if err != nil {
		return nil, err
	}
	if _, err := c.WorkflowService().DescribeNamespace(pctx,
		&workflowservice.DescribeNamespaceRequest{Namespace: s.namespace}); err != nil {
		c.Close()
		return nil, fmt.Errorf("describe namespace %s: %w", s.namespace, err)
	}
	return c, nil
}

// exitError explains the process's exit; call it once done is closed.
func (s *Server) exitError(starting bool) *ExitError {
	e := &ExitError{Pid: s.pid, State: s.state, Starting: starting}
	e.Line, e.Port = s.tail.why()
	if e.Port != nil {
		for _, p := range s.ports {
			if p.num == e.Port.Port {
				e.Port.Use = p.use
			}
		}
	}
	return e
}

// kill ends the server's process group at once and waits for it.
func (s *Server) kill() {
	_ = syscall.Kill(-s.pid, syscall.SIGKILL)
	<-s.done
}

// Client is a client of the server's namespace, connected when Start returned.
func (s *Server) Client() client.Client { return s.client }

// FrontendHostPort is the frontend's host:port.
func (s *Server) FrontendHostPort() string { return s.hostPort }

// Pid is the server's process id.
func (s *Server) Pid() int { return s.pid }

// Done is closed when the server's process has ended, asked to by Stop or not.
func (s *Server) Done() <-chan struct{} { return s.done }

// Err is nil while the server runs or after Stop; once it has exited unasked, an
// *ExitError saying how and why.
func (s *Server) Err() error {
	select {
	case <-s.done:
	default:
		return nil
	}
	select {
	case <-s.stopping:
		return nil
	default:
		return s.exitError(false)
	}
}

// Stop interrupts the server, as Ctrl-C would, and waits for it to end: up to 15 s, after
// which it is killed. It returns the server's *ExitError if it had already exited unasked,
// or an error if it did not end cleanly. Calling it again returns the same.
func (s *Server) Stop() error {
	s.stopOnce.Do(func() {
		s.stopErr = s.Err()
		close(s.stopping)
		if s.stopErr != nil {
			return
		}
		_ = syscall.Kill(-s.pid, syscall.SIGINT)
		select {
		case <-s.done:
			if s.state != "exit status 0" {
				s.stopErr = fmt.Errorf("the Temporal dev server (pid %d) ended with %s when interrupted; "+
					"its last output: %q", s.pid, s.state, s.tail.last())
			}
		case <-time.After(stopGrace):
			s.kill()
			s.stopErr = fmt.Errorf("the Temporal dev server (pid %d) did not stop within %s of an interrupt; "+
				"it was killed", s.pid, stopGrace)
		}
	})
	return s.stopErr
}

// freeHostPort picks a free port on 127.0.0.1. Another process may take it before the
// server binds it; Start notices and picks again.
func freeHostPort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("pick a free port for the dev server: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// tail passes the server's output on and keeps its last lines, to explain an exit.
type tail struct {
	out io.Writer

	mu      sync.Mutex // guards partial and lines
	partial []byte
	lines   []string
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	t.partial = append(t.partial, p...)
	for {
		i := bytes.IndexByte(t.partial, '\n')
		if i < 0 {
			break
		}
		if line := strings.TrimSpace(string(t.partial[:i])); line != "" {
			t.lines = append(t.lines, line)
			if len(t.lines) > tailLines {
				t.lines = t.lines[len(t.lines)-tailLines:]
			}
		}
		t.partial = t.partial[i+1:]
	}
	t.mu.Unlock()
	_, _ = t.out.Write(p) // a lost copy of the server's output must not stop the server
	return len(p), nil
}

func (t *tail) snapshot() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	lines := append([]string(nil), t.lines...)
	if rest := strings.TrimSpace(string(t.partial)); rest != "" {
		lines = append(lines, rest)
	}
	return lines
}

// last is the last line of output, or "".
func (t *tail) last() string {
	lines := t.snapshot()
	if len(lines) == 0 {
		return ""
	}
	return lines[len(lines)-1]
}

// inUse matches Go's message for a port that another socket holds, as the Temporal CLI
// passes it on ("listen tcp 127.0.0.1:7233: bind: address already in use").
var inUse = regexp.MustCompile(`listen tcp[46]? (\S+):(\d+): bind: address already in use`)

// errorLine matches a line that reports why the server failed: the CLI's "Error: ...", a
// panic, or a log line at error level or above.
var errorLine = regexp.MustCompile(`(?i)^(error|panic|fatal)\b|"level":"(error|fatal|panic|dpanic)"|\blevel=(error|fatal)\b`)

// why picks the line that explains an exit, if any, and, if it says a port was in use,
// which.
func (t *tail) why() (string, *PortInUseError) {
	lines := t.snapshot()
	for i := len(lines) - 1; i >= 0; i-- {
		if m := inUse.FindStringSubmatch(lines[i]); m != nil {
			n, _ := strconv.Atoi(m[2])
			return lines[i], &PortInUseError{Addr: m[1] + ":" + m[2], Port: n}
		}
	}
	for i := len(lines) - 1; i >= 0; i-- {
		if errorLine.MatchString(lines[i]) {
			return lines[i], nil
		}
	}
	return "", nil
}

// holdsListener reports whether process pid has a TCP socket listening on port (any local
// address, IPv4 or IPv6): the socket inodes /proc/net/tcp{,6} list as listening on the port,
// against the sockets among pid's open files.
func holdsListener(pid, port int) (bool, error) {
	want := map[string]bool{}
	for _, f := range []string{"tcp", "tcp6"} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, f))
		if errors.Is(err, os.ErrNotExist) && f == "tcp6" {
			continue // no IPv6 in this kernel
		}
		if err != nil {
			return false, fmt.Errorf("list the listening sockets: %w", err)
		}
		for _, ino := range listeningInodes(string(b), port) {
			want["socket:["+ino+"]"] = true
		}
	}
	if len(want) == 0 {
		return false, nil
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return false, fmt.Errorf("list the dev server's open files: %w", err)
	}
	for _, fd := range fds {
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())); err == nil && want[l] {
			return true, nil
		}
	}
	return false, nil
}

// tcpListen is the state column of a listening socket in /proc/net/tcp (TCP_LISTEN, 10, in
// include/net/tcp_states.h).
const tcpListen = "0A"

// listeningInodes returns the inodes of the sockets that table (the text of /proc/net/tcp or
// tcp6: "sl local_address rem_address st ... inode", addresses as HEXADDR:HEXPORT) lists as
// listening on port.
func listeningInodes(table string, port int) []string {
	var inodes []string
	for _, line := range strings.Split(table, "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 10 || f[3] != tcpListen {
			continue
		}
		i := strings.LastIndexByte(f[1], ':')
		if i < 0 {
			continue
		}
		if p, err := strconv.ParseUint(f[1][i+1:], 16, 16); err == nil && int(p) == port {
			inodes = append(inodes, f[9])
		}
	}
	return inodes
}
