package integration

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/workflowservice/v1"

	"github.com/cdswap/cdswap/activities"
	"github.com/cdswap/cdswap/internal/testenv"
	"github.com/cdswap/cdswap/internal/xensim"
)

// logBuffer collects the lines of a host's or a worker's log and prints them to the test's
// log only when the test fails: parallel tests would otherwise drown each other, and a
// goroutine may not call t.Log once its test has ended.
type logBuffer struct {
	mu  sync.Mutex // guards buf
	buf bytes.Buffer
}

// maxLog bounds what a logBuffer keeps: the end of a log tells what went wrong.
const maxLog = 256 << 10

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Write(p)
	if b.buf.Len() > 2*maxLog {
		tail := append([]byte("[...]\n"), b.buf.Bytes()[b.buf.Len()-maxLog:]...)
		b.buf.Reset()
		b.buf.Write(tail)
	}
	return len(p), nil
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitFor waits until the log holds substr.
func (b *logBuffer) waitFor(ctx context.Context, substr string) error {
	return b.waitForCount(ctx, substr, 1)
}

// waitForCount waits until the log holds substr n times.
func (b *logBuffer) waitForCount(ctx context.Context, substr string, n int) error {
	for strings.Count(b.String(), substr) < n {
		select {
		case <-ctx.Done():
			return fmt.Errorf("log line %q: %w", substr, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// dumpOnFailure prints b under title at cleanup if t failed (always with CDSWAP_IT_LOGS=1).
func dumpOnFailure(t testing.TB, title string, b *logBuffer) {
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("CDSWAP_IT_LOGS") != "" {
			t.Logf("----- %s -----\n%s", title, b.String())
		}
	})
}

// hostSeq numbers the hosts of a package run: every host needs its own name, since its name
// is its task queue on the shared dev server.
var hostSeq atomic.Int64

// hostName is a fresh host name starting with prefix.
func hostName(prefix string) string {
	return fmt.Sprintf("%s-%d", prefix, hostSeq.Add(1))
}

// startHost starts a simulated dom0 in process, in a short folder, logging to a buffer shown
// if the test fails; it is closed at cleanup. cfg.HostName defaults to a fresh name.
func startHost(t testing.TB, cfg xensim.Config) *xensim.Host {
	t.Helper()
	h, _ := startHostLogs(t, cfg)
	return h
}

// startHostLogs is startHost that also returns the host's log.
func startHostLogs(t testing.TB, cfg xensim.Config) (*xensim.Host, *logBuffer) {
	t.Helper()
	if cfg.HostName == "" {
		cfg.HostName = hostName("it")
	}
	if cfg.Dir == "" {
		cfg.Dir = testenv.SocketDir(t)
	}
	logs := &logBuffer{}
	dumpOnFailure(t, "xensim "+cfg.HostName, logs)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	h, err := xensim.Start(ctx, cfg)
	require.NoError(t, err, "start xensim host %s", cfg.HostName)
	t.Cleanup(func() {
		if err := h.Close(); err != nil {
			t.Errorf("close xensim host %s: %v", cfg.HostName, err)
		}
	})
	return h, logs
}

// domainOf returns the host's first guest of kind k.
func domainOf(t testing.TB, h *xensim.Host, k xensim.Kind) xensim.DomainInfo {
	t.Helper()
	for _, d := range h.Domains() {
		if d.Kind == k {
			return d
		}
	}
	t.Fatalf("host %s has no %s guest: %+v", h.Name(), k, h.Domains())
	return xensim.DomainInfo{}
}

// workerProc is a cdswap-worker process.
type workerProc struct {
	cmd     *exec.Cmd
	logs    *logBuffer
	started time.Time
	done    chan struct{} // closed when the process has exited and been waited for
	err     error         // Wait's result, set before done closes
}

// workerOpts adjust a worker's command line.
type workerOpts struct {
	// xenstore replaces the host's xenstored socket (a proxy's, to hold a step).
	xenstore string
	// extra flags.
	extra []string
}

// startWorker starts a cdswap-worker pointed at h (its WorkerFlags) and the dev server, and
// waits until it polls the host's task queue. It is killed at cleanup if still running.
func startWorker(t testing.TB, h *xensim.Host, o workerOpts) *workerProc {
	t.Helper()
	s := need(t)
	args := append([]string(nil), h.WorkerFlags()...)
	if o.xenstore != "" {
		for i := range args {
			if args[i] == "--xenstore" && i+1 < len(args) {
				args[i+1] = o.xenstore
			}
		}
	}
	// Debug level logs each step's start ("Step started"), which is how a test sees a local
	// step running (waitStepStarted); a later --log-level in o.extra wins.
	args = append(args, "--address", s.address, "--namespace", namespace, "--log-level", "debug")
	args = append(args, o.extra...)
	w := &workerProc{logs: &logBuffer{}, done: make(chan struct{})}
	dumpOnFailure(t, fmt.Sprintf("cdswap-worker %s (started %s)", h.Name(), time.Now().Format("15:04:05.000")), w.logs)
	w.cmd = exec.Command(s.workerBin, args...)
	w.cmd.Stdout, w.cmd.Stderr = w.logs, w.logs
	w.started = time.Now()
	require.NoError(t, w.cmd.Start(), "start %s %s", s.workerBin, strings.Join(args, " "))
	go func() {
		w.err = w.cmd.Wait()
		close(w.done)
	}()
	t.Cleanup(func() { w.kill() })
	w.waitPolling(t, h.Name())
	return w
}

// PID is the worker's process id.
func (w *workerProc) PID() int { return w.cmd.Process.Pid }

// kill sends SIGKILL and waits for the process to be gone.
func (w *workerProc) kill() {
	select {
	case <-w.done:
		return
	default:
	}
	_ = w.cmd.Process.Signal(syscall.SIGKILL)
	<-w.done
}

// stop asks the worker to shut down (SIGTERM) and waits up to d; then it kills it.
func (w *workerProc) stop(d time.Duration) error {
	select {
	case <-w.done:
		return w.err
	default:
	}
	_ = w.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-w.done:
		return w.err
	case <-time.After(d):
		w.kill()
		return fmt.Errorf("worker %d did not stop within %s of SIGTERM", w.PID(), d)
	}
}

// isMe reports whether a poller identity is this process's: cdswap-worker names itself
// "cdswap-worker@<host>:<pid>", the SDK's default is "<pid>@<hostname>@". (A killed
// worker's pollers stay listed, with recent access times, for a while.)
func (w *workerProc) isMe(identity string) bool {
	pid := strconv.Itoa(w.PID())
	return strings.HasSuffix(identity, ":"+pid) || strings.HasPrefix(identity, pid+"@")
}

// waitPolling waits until the host's task queue has a workflow and an activity poller of
// this worker, and fails t if the worker exits first.
func (w *workerProc) waitPolling(t testing.TB, host string) time.Duration {
	t.Helper()
	ctx := testenv.Context(t, 30*time.Second)
	tq := activities.TaskQueue(host)
	for {
		ok := true
		for _, typ := range []enumspb.TaskQueueType{enumspb.TASK_QUEUE_TYPE_WORKFLOW, enumspb.TASK_QUEUE_TYPE_ACTIVITY} {
			resp, err := the.client.WorkflowService().DescribeTaskQueue(ctx, &workflowservice.DescribeTaskQueueRequest{
				Namespace: namespace, TaskQueue: taskQueue(tq), TaskQueueType: typ,
			})
			if err != nil {
				ok = false
				break
			}
			fresh := false
			for _, p := range resp.GetPollers() {
				if w.isMe(p.GetIdentity()) {
					fresh = true
				}
			}
			ok = ok && fresh
		}
		if ok {
			return time.Since(w.started)
		}
		select {
		case <-w.done:
			t.Fatalf("cdswap-worker exited before it polled %s: %v", tq, w.err)
		case <-ctx.Done():
			t.Fatalf("cdswap-worker (pid %d) did not poll task queue %s within 30 s", w.PID(), tq)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// itoa is strconv.Itoa for uint32 ids.
func itoa(n uint32) string { return strconv.FormatUint(uint64(n), 10) }
