package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/cdswap/cdswap/activities"
	"github.com/cdswap/cdswap/internal/devserver"
	"github.com/cdswap/cdswap/internal/metrics"
	"github.com/cdswap/cdswap/internal/testenv"
	"github.com/cdswap/cdswap/internal/xensim"
	"github.com/cdswap/cdswap/workflows"
)

// workerBin is the cdswap-worker binary built once for the tests.
var workerBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "cdsw")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	workerBin = filepath.Join(dir, "cdswap-worker")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	out, err := exec.CommandContext(ctx, "go", "build", "-o", workerBin, ".").CombinedOutput()
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "go build cdswap-worker: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// runWorker runs the binary to its end and returns its exit status and output.
func runWorker(t *testing.T, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, workerBin, args...)
	cmd.Env = append(os.Environ(), "TEMPORAL_ADDRESS=", "TEMPORAL_NAMESPACE=", "TEMPORAL_API_KEY=")
	var out testenv.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, out.String()
	case errors.As(err, &ee):
		return ee.ExitCode(), out.String()
	}
	t.Fatalf("run %s: %v", workerBin, err)
	return -1, ""
}

func TestBadFlags(t *testing.T) {
	dir := testenv.SocketDir(t)
	file := filepath.Join(dir, "file")
	require.NoError(t, os.WriteFile(file, nil, 0o644))
	tests := []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"no host", []string{"--iso-root", dir}, 2, []string{"--host is required", "cdswap-worker --help"}},
		{"no ISO root", []string{"--host", "h"}, 2, []string{"--iso-root is required"}},
		{"unknown flag", []string{"--host", "h", "--iso-root", dir, "--frobnicate"}, 2, []string{"unknown flag: --frobnicate"}},
		{"argument", []string{"--host", "h", "--iso-root", dir, "extra"}, 2, []string{`unknown command "extra"`}},
		{"flag without its value", []string{"--host", "h", "--iso-root", dir, "--address"}, 2, []string{"flag needs an argument: --address"}},
		{"bad boolean", []string{"--host", "h", "--iso-root", dir, "--tls=maybe"}, 2, []string{`invalid argument "maybe" for "--tls"`}},
		{"empty namespace", []string{"--host", "h", "--iso-root", dir, "-n", ""}, 2, []string{"--namespace is empty"}},
		{"tls off with a server name", []string{"--host", "h", "--iso-root", dir, "--tls=false", "--tls-server-name", "t.example"}, 2,
			[]string{"TLS turned off, yet TLS files or a server name were given"}},
		{"cert without key", []string{"--host", "h", "--iso-root", dir, "--tls-cert", file}, 2, []string{"--tls-cert and --tls-key go together"}},
		{"CA file not PEM", []string{"--host", "h", "--iso-root", dir, "--tls-ca", file}, 2, []string{"CA file " + file + " holds no PEM certificate"}},
		{"missing CA file", []string{"--host", "h", "--iso-root", dir, "--tls-ca", filepath.Join(dir, "nope.pem")}, 2,
			[]string{"read CA file: open " + filepath.Join(dir, "nope.pem")}},
		{"bad key pair", []string{"--host", "h", "--iso-root", dir, "--tls-cert", file, "--tls-key", file}, 2,
			[]string{"load client certificate " + file + " and key " + file}},
		{"bad log level", []string{"--host", "h", "--iso-root", dir, "--log-level", "loud"}, 2, []string{`--log-level "loud"`}},
		{"bad log format", []string{"--host", "h", "--iso-root", dir, "--log-format", "xml"}, 2, []string{`--log-format "xml"`}},
		{"missing ISO root", []string{"--host", "h", "--iso-root", filepath.Join(dir, "nope"), "--xenstore", filepath.Join(dir, "xs.sock")}, 1,
			[]string{"ISO root " + filepath.Join(dir, "nope"), "create it, or fix --iso-root"}},
		{"ISO root is a file", []string{"--host", "h", "--iso-root", file}, 1, []string{"is not a folder"}},
		{"no xenstored", []string{"--host", "h", "--iso-root", dir, "--xenstore", filepath.Join(dir, "xs.sock")}, 1,
			[]string{"xenstore at " + filepath.Join(dir, "xs.sock"), "is xenstored running?"}},
		{"xenstore is not a socket", []string{"--host", "h", "--iso-root", dir, "--xenstore", file}, 1,
			[]string{"xenstore at " + file}},
		{"root is /", []string{"--host", "h", "--iso-root", "/", "--xenstore", file}, 1,
			[]string{"ISO root / is too broad", "--allow-broad-root"}},
		{"root is /etc", []string{"--host", "h", "--iso-root", "/etc", "--xenstore", file}, 1,
			[]string{"ISO root /etc is too broad: it is, lies in or holds /etc"}},
		{"root holds /var/lib/xen", []string{"--host", "h", "--iso-root", "/var", "--xenstore", file}, 1,
			[]string{"ISO root /var is too broad"}},
		{"root holds the libxl folder", []string{"--host", "h", "--iso-root", dir, "--libxl-dir", filepath.Join(dir, "lib"), "--xenstore", file}, 1,
			[]string{"ISO root " + dir + " is too broad", filepath.Join(dir, "lib")}},
		{"broad root forced", []string{"--host", "h", "--iso-root", "/", "--allow-broad-root", "--xenstore", file}, 1,
			[]string{"xenstore at " + file}},
		{"raw images of no root", []string{"--host", "h", "--iso-root", dir, "--allow-raw-images", "/srv", "--xenstore", file}, 1,
			[]string{"--allow-raw-images /srv is not one of the ISO roots [" + dir + "]"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out := runWorker(t, tt.args...)
			assert.Equal(t, tt.code, code, "exit status of cdswap-worker %s\n%s", strings.Join(tt.args, " "), out)
			assert.True(t, strings.HasPrefix(out, "cdswap-worker: "), "output %q", out)
			for _, w := range tt.want {
				assert.Contains(t, out, w)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	code, out := runWorker(t, "--help")
	assert.Equal(t, 0, code)
	for _, f := range []string{"--host", "--address", "-n, --namespace", "--tls ", "--tls-cert", "--tls-key", "--tls-ca", "--tls-server-name",
		"--api-key", "--xenstore", "--qmp-dir", "--libxl-dir", "--iso-root", "--allow-raw-images", "--allow-broad-root", "--log-level", "--log-format", "--grpc-gzip"} {
		assert.Contains(t, out, f)
	}
	assert.Contains(t, out, "/var/run/xen")
	assert.Contains(t, out, "/var/lib/xen")
}

// TestGRPCCompression checks that the worker turns off the SDK's default gzip unless asked.
func TestGRPCCompression(t *testing.T) {
	assert.IsType(t, &client.GrpcCompressionNone{}, (&options{}).grpcCompression(), "without --grpc-gzip")
	assert.IsType(t, &client.GrpcCompressionGzip{}, (&options{grpcGzip: true}).grpcCompression(), "with --grpc-gzip")
}

// TestServe runs the worker against a simulated host and a real Temporal dev server:
// ResolveDrive and a ChangeMedium insert go through it, its metrics count them, and SIGTERM
// stops it cleanly.
func TestServe(t *testing.T) {
	_, err := devserver.CLIPath()
	testenv.Require(t, "the Temporal CLI", err)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	srv, err := devserver.Start(ctx, devserver.Options{})
	require.NoError(t, err)
	defer srv.Stop()
	h, err := xensim.Start(ctx, xensim.Config{Dir: testenv.SocketDir(t), QEMU: xensim.QEMUFake, StubdomGuests: 1, AgentDelay: 10 * time.Millisecond})
	require.NoError(t, err)
	defer h.Close()

	args := append(h.WorkerFlags(), "--log-format", "json", "--metrics-listen", "127.0.0.1:0")
	cmd := exec.Command(workerBin, args...)
	// The address comes from the environment, as the Temporal CLI's does.
	cmd.Env = append(os.Environ(), "TEMPORAL_ADDRESS="+srv.FrontendHostPort(), "TEMPORAL_NAMESPACE=", "TEMPORAL_API_KEY=")
	var out testenv.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	require.NoError(t, cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("cdswap-worker output:\n%s", out.String())
		}
	}()

	c := srv.Client()
	dom := h.Domains()[0]
	rin := activities.ResolveDriveInput{Host: h.Name(), Domain: dom.Name, Vdev: "hdc"}
	run, err := c.ExecuteWorkflow(ctx, workflows.ResolveDriveStartOptions(rin), workflows.ResolveDriveName, rin)
	require.NoError(t, err)
	var res activities.ResolveDriveResult
	require.NoError(t, run.Get(ctx, &res))
	assert.Equal(t, dom.DomID, res.DomID)

	tools := filepath.Join(h.ISODir(), xensim.ISOTools)
	cin := workflows.ChangeMediumInput{Host: h.Name(), Domain: dom.Name, DomID: res.DomID, Vdev: "hdc", Medium: tools, Requester: "test"}
	opts := workflows.StartOptions(cin)
	opts.TypedSearchAttributes = client.StartWorkflowOptions{}.TypedSearchAttributes // the test namespace may lack them
	run, err = c.ExecuteWorkflow(ctx, opts, workflows.ChangeMediumName, cin)
	require.NoError(t, err)
	var cres workflows.ChangeMediumResult
	require.NoError(t, run.Get(ctx, &cres))
	assert.Equal(t, workflows.OutcomeChanged, cres.Outcome)
	b, ok := h.QEMU(dom.DomID).Fake().Block(dom.DevID.QEMUID())
	require.True(t, ok)
	assert.Equal(t, tools, b.Path, "the guest's QEMU holds the new medium")
	checkMetrics(t, out.String(), h.Name())

	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-exited:
		assert.NoError(t, err, "exit status after SIGTERM")
	case <-time.After(20 * time.Second):
		t.Fatal("cdswap-worker did not stop within 20 s of SIGTERM")
	}
	logs := out.String()
	assert.Contains(t, logs, `"msg":"cdswap-worker serving"`)
	assert.Contains(t, logs, `"task_queue":"cdswap-host-`+h.Name()+`"`)
	assert.Contains(t, logs, `"temporal":"`+srv.FrontendHostPort()+`"`)
	assert.Contains(t, logs, `"msg":"cdswap-worker stopped"`)
}

// checkMetrics scrapes the worker's metrics, whose address its log gives, after one
// changed swap of a stubdom guest on host: cdswap's counters moved, the SDK's are there.
func checkMetrics(t *testing.T, logs, host string) {
	t.Helper()
	m := regexp.MustCompile(`"metrics_addr":"([^"]+)"`).FindStringSubmatch(logs)
	require.NotNil(t, m, "no metrics address in the log:\n%s", logs)
	h := regexp.QuoteMeta(`host="` + host + `"`)
	// The SDK's metrics reach the registry at the next flush of its scope (every second).
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		resp, err := http.Get("http://" + m[1] + "/metrics")
		if !assert.NoError(c, err) {
			return
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		assert.NoError(c, err)
		assert.Equal(c, http.StatusOK, resp.StatusCode)
		text := string(body)
		for _, want := range []string{
			`(?m)^cdswap_swaps_total\{` + h + `,kind="stubdom",outcome="changed"\} 1$`,
			`(?m)^cdswap_swaps_in_flight\{` + h + `\} 0$`,
			`(?m)^cdswap_step_duration_seconds_count\{` + h + `,result="ok",step="Inspect"\} [1-9]`,
			`(?m)^cdswap_step_duration_seconds_count\{` + h + `,result="ok",step="ChangeMedium"\} [1-9]`,
			`(?m)^cdswap_fdset_wait_seconds_count\{` + h + `,result="ok"\} [1-9]`,
			`(?m)^temporal_workflow_completed\{[^}]*workflow_type="ChangeMedium"[^}]*\} 1$`,
			// Verify runs as a local activity, WaitFdset as a regular one.
			`(?m)^temporal_local_activity_execution_latency_count\{[^}]*activity_type="Verify"`,
			`(?m)^temporal_activity_execution_latency_count\{[^}]*activity_type="WaitFdset"`,
		} {
			assert.Regexp(c, want, text)
		}
		assert.NotRegexp(c, `cdswap_restores_total\{`, text, "nothing was restored")
	}, 10*time.Second, 200*time.Millisecond)
}

func TestSwapEnd(t *testing.T) {
	restoredRes := workflows.ChangeMediumResult{Outcome: workflows.OutcomeFailedRestored, Kind: activities.KindDom0,
		Steps: []workflows.StepRecord{{Name: activities.NameEject}, {Name: activities.NameChangeMedium, Restore: true}}}
	restoreFailed := workflows.ChangeMediumResult{Outcome: workflows.OutcomeRestoreFailed, Kind: activities.KindStubdom,
		Steps: []workflows.StepRecord{{Name: activities.NameAttachVBD, Restore: true}}}
	tests := []struct {
		name   string
		result any
		err    error
		want   metrics.SwapEnd
		wantOK bool
	}{
		{"changed", workflows.ChangeMediumResult{Outcome: workflows.OutcomeChanged, Kind: activities.KindStubdom}, nil,
			metrics.SwapEnd{Outcome: "changed", Kind: "stubdom"}, true},
		{"restored, in the error", nil, temporal.NewApplicationError("fdset gone", workflows.ErrSwapFailedRestored, restoredRes),
			metrics.SwapEnd{Outcome: "failed-restored", Kind: "dom0", Restored: true}, true},
		{"restore failed", nil, temporal.NewApplicationError("stuck", workflows.ErrRestoreFailed, restoreFailed),
			metrics.SwapEnd{Outcome: "restore-failed", Kind: "stubdom", RestoreFailed: true}, true},
		{"canceled without a result", nil, temporal.NewCanceledError(), metrics.SwapEnd{Outcome: "canceled"}, true},
		{"a plain error", nil, errors.New("panic"), metrics.SwapEnd{Outcome: "error"}, true},
		{"no outcome", activities.ResolveDriveResult{}, nil, metrics.SwapEnd{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := swapEnd(tt.result, tt.err)
			assert.Equal(t, tt.wantOK, ok)
			assert.Equal(t, tt.want, got, "swapEnd(%v, %v)", tt.result, tt.err)
		})
	}
}
