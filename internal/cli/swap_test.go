package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cdswap/cdswap/activities"
	"github.com/cdswap/cdswap/internal/testenv"
	"github.com/cdswap/cdswap/internal/testenv/fakehost"
	"github.com/cdswap/cdswap/workflows"
)

func TestUsageErrors(t *testing.T) {
	drive := []string{"--host", "h", "--domain", "web1", "--vdev", "hdc"}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{name: "unknown command", args: []string{"swap"}, want: `unknown command "swap"`},
		{name: "insert without flags", args: []string{"insert"}, want: "missing --host, --domain, --vdev, --medium"},
		{name: "insert without medium", args: append([]string{"insert"}, drive...), want: "missing --medium"},
		{name: "insert relative medium", args: append([]string{"insert", "--medium", "x.iso"}, drive...), want: `--medium "x.iso" must be an absolute path on host h`},
		{name: "insert bad timeout", args: append([]string{"insert", "--medium", "/isos/x.iso", "--timeout", "0s"}, drive...), want: "--timeout must be positive"},
		{name: "insert positional", args: append([]string{"insert", "extra", "--medium", "/isos/x.iso"}, drive...), want: `unknown command "extra"`},
		{name: "insert bad duration", args: append([]string{"insert", "--medium", "/isos/x.iso", "--timeout", "soon"}, drive...), want: `invalid argument "soon"`},
		{name: "eject with medium", args: append([]string{"eject", "--medium", "/isos/x.iso"}, drive...), want: "unknown flag: --medium"},
		{name: "eject without vdev", args: []string{"eject", "--host", "h", "--domain", "web1"}, want: "missing --vdev"},
		{name: "status without target", args: []string{"status"}, want: "give a swap ID, or --host, --domain and --vdev"},
		{name: "status with both", args: []string{"status", "cdswap-h-7-hdc", "--host", "h"}, want: "not both"},
		{name: "status partial drive", args: []string{"status", "--host", "h", "--vdev", "hdc"}, want: "--host, --domain and --vdev go together"},
		{name: "history without id", args: []string{"history"}, want: "give a swap ID, or --host, --domain and --vdev"},
		{name: "history id and drive", args: []string{"history", "x", "--host", "h"}, want: "give a swap ID or --host/--domain/--vdev, not both"},
		{name: "cancel two ids", args: []string{"cancel", "a", "b"}, want: "expected one swap ID, got 2 argument(s)"},
		{name: "list bad since", args: []string{"list", "--since", "yesterday"}, want: `--since "yesterday": give a positive duration`},
		{name: "list bad limit", args: []string{"list", "--limit", "0"}, want: "--limit must be positive"},
		{name: "half a client certificate", args: []string{"list", "--tls-cert", "c.pem"}, want: "--tls-cert and --tls-key go together"},
		{name: "dev-server bad port", args: []string{"dev-server", "--port", "70000"}, want: "--port 70000 is not a TCP port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := run(t, tt.args...)
			assert.Equal(t, ExitUsage, r.code, "exit code of %v; stderr %s", tt.args, r.stderr)
			assert.Contains(t, r.stderr, tt.want)
			assert.Contains(t, r.stderr, "Usage:", "usage follows the message")
			assert.Empty(t, r.stdout)
		})
	}
}

func TestHelpExitsZero(t *testing.T) {
	r := run(t, "insert", "--help")
	assert.Equal(t, ExitOK, r.code)
	assert.Contains(t, r.stdout, "--medium")
}

func TestServerUnreachable(t *testing.T) {
	// A port that was free a moment ago: nothing listens there.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout, stderr testenv.Buffer
	app := newApp(&stdout, &stderr)
	app.ConnectTimeout = time.Second
	code := app.Run(ctx, []string{"--address", addr, "list"})
	assert.Equal(t, ExitFailure, code)
	assert.Equal(t, fmt.Sprintf("cdswap: cannot reach Temporal at %s: is the server running? (make demo starts one; or set --address)\n", addr), stderr.String())
}

func TestNoWorker(t *testing.T) {
	needServer(t)
	t.Parallel()
	r := run(t, "insert", "--host", "h-none", "--domain", "web1", "--vdev", "hdc", "--medium", newISO)
	assert.Equal(t, ExitFailure, r.code)
	assert.Equal(t, "cdswap: no cdswap-worker is polling host h-none (task queue cdswap-host-h-none): check the host's name (cdswap list --since 30d shows the hosts of recent swaps), or start cdswap-worker --host h-none on that dom0\n", r.stderr)
	// Not a speed measurement: the refusal must come from the poller check, before any run
	// starts, not from ResolveDrive's 10 s schedule-to-start timeout.
	assert.Less(t, r.took, 5*time.Second, "the refusal of a host no worker polls took %s: did a run start?", r.took)
}

func TestRefusals(t *testing.T) {
	startHost(t, "h-ref", nil)
	t.Parallel()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{
			name: "unknown domain",
			args: []string{"eject", "--domain", "nosuch"},
			want: `cdswap: resolve hdc on domain nosuch (host h-ref): no guest named or numbered "nosuch" on host h-ref: xl list shows its guests` + "\n",
		},
		{
			name: "medium outside the roots",
			args: []string{"insert", "--domain", "web1", "--medium", "/etc/shadow", "--wait"},
			want: "cdswap: change of hdc on domain web1 (host h-ref) refused: medium /etc/shadow is outside the ISO roots of host h-ref (/isos): copy it under a root, or start the worker with --iso-root\n" +
				"  every step, attempt and error: cdswap history cdswap-h-ref-7-hdc\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := run(t, append(tt.args, "--host", "h-ref", "--vdev", "hdc")...)
			assert.Equal(t, ExitFailure, r.code, "stdout %s", r.stdout)
			assert.Equal(t, tt.want, r.stderr)
		})
	}
}

// stepLineRE matches a finished step's line: number, name, result.
var stepLineRE = regexp.MustCompile(`^\s+(\d+) (restore )?(\w+)\s+(ok|failed)\s+\S+`)

// stepsOf returns "Name result" for each step line of out.
func stepsOf(out string) []string {
	var steps []string
	for _, line := range strings.Split(out, "\n") {
		if m := stepLineRE.FindStringSubmatch(line); m != nil {
			steps = append(steps, m[2]+m[3]+" "+m[4])
		}
	}
	return steps
}

func TestInsertWait(t *testing.T) {
	startHost(t, "h-wait", map[string]fakehost.Hook{
		activities.NameEject: fakehost.FailCalls(1, activities.ErrTrayLocked, true, "the guest keeps the tray of hdc locked"),
	})
	t.Parallel()
	r := run(t, "insert", "--host", "h-wait", "--domain", "7", "--vdev", "hdc", "--medium", newISO,
		"--reason", "reinstall", "--ticket", "OPS-42", "--wait")
	require.Equal(t, ExitOK, r.code, "stderr %s", r.stderr)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	require.GreaterOrEqual(t, len(lines), 3, r.stdout)
	assert.Regexp(t, `^insert /isos/new.iso into drive hdc of web1 \(domid 7\) on host h-wait: workflow cdswap-h-wait-7-hdc \(run [0-9a-f-]+\)$`, lines[0])
	assert.Equal(t, []string{
		"Inspect ok", "Lock ok", "Eject ok", "ReleaseFdset ok", "DetachVBD ok", "AttachVBD ok",
		"WaitFdset ok", "ChangeMedium ok", "Record ok", "Verify ok", "Unlock ok",
	}, stepsOf(r.stdout))
	assert.Len(t, lines, 13, "one line per step, a first and a last line:\n%s", r.stdout)
	assert.Regexp(t, `(?m)^\s+3 Eject\s+ok\s+\S+\s+2 attempts$`, r.stdout)
	assert.Regexp(t, `(?m)^\s+8 ChangeMedium\s+ok\s+\S+\s+fdset 10$`, r.stdout)
	assert.Equal(t, "done: drive hdc of web1 on host h-wait now holds /isos/new.iso (it held /isos/old.iso)", lines[len(lines)-1])
	assert.NotContains(t, r.stdout, "\r", "no redraw when stdout is not a terminal")

	// The audit trail: memo and search attributes.
	desc, err := describe(context.Background(), testClient(t), "cdswap-h-wait-7-hdc", "")
	require.NoError(t, err)
	info := desc.GetWorkflowExecutionInfo()
	memo := info.GetMemo().GetFields()
	assert.Equal(t, "alice", memoString(memo, "requester"))
	assert.Equal(t, "reinstall", memoString(memo, "reason"))
	assert.Equal(t, "OPS-42", memoString(memo, "ticket"))
	sa := info.GetSearchAttributes().GetIndexedFields()
	for key, want := range map[string]string{"CdswapHost": "h-wait", "CdswapDomain": "web1", "CdswapVdev": "hdc",
		"CdswapMedium": newISO, "CdswapOutcome": "changed"} {
		assert.Equal(t, want, payloadString(sa[key]), "search attribute %s", key)
	}
	if *update {
		recordHistory(t, "cdswap-h-wait-7-hdc", info.GetExecution().GetRunId(), "insert")
	}
}

func TestInsertNoWaitJSON(t *testing.T) {
	startHost(t, "h-json", nil)
	t.Parallel()
	r := run(t, "eject", "--host", "h-json", "--domain", "web1", "--vdev", "hdc", "--json")
	require.Equal(t, ExitOK, r.code, "stderr %s", r.stderr)
	var got swapStarted
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &got), r.stdout)
	assert.Equal(t, "cdswap-h-json-7-hdc", got.WorkflowID)
	assert.Equal(t, uint32(7), got.DomID)
	assert.Equal(t, "", got.Medium)
	assert.Contains(t, r.stderr, "eject drive hdc of web1 (domid 7) on host h-json: workflow cdswap-h-json-7-hdc")

	var res workflows.ChangeMediumResult
	require.NoError(t, testClient(t).GetWorkflow(context.Background(), got.WorkflowID, got.RunID).Get(context.Background(), &res))
	assert.Equal(t, workflows.OutcomeEjected, res.Outcome)

	r = run(t, "eject", "--host", "h-json", "--domain", "web1", "--vdev", "hdc", "--json", "--wait")
	require.Equal(t, ExitOK, r.code, "stderr %s", r.stderr)
	var done swapDone
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &done), r.stdout)
	assert.Equal(t, "ejected", done.Outcome)
	require.NotNil(t, done.Result)
	assert.Len(t, done.Result.Steps, 10, "Inspect Lock Eject ReleaseFdset DetachVBD AttachVBD WaitFdset Record Verify Unlock")
	assert.Contains(t, r.stderr, "   7 WaitFdset", "progress goes to stderr with --json")
}

func TestDuplicateRefused(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	startHost(t, "h-dup", map[string]fakehost.Hook{activities.NameLock: blockFirst(entered, release)})
	t.Parallel()
	first := run(t, "insert", "--host", "h-dup", "--domain", "web1", "--vdev", "hdc", "--medium", newISO, "--reason", "first")
	require.Equal(t, ExitOK, first.code, "stderr %s", first.stderr)
	assert.Contains(t, first.stdout, "follow it: cdswap status cdswap-h-dup-7-hdc")
	select {
	case <-entered:
	case <-time.After(20 * time.Second):
		t.Fatal("the first swap never reached Lock")
	}
	desc, err := describe(context.Background(), testClient(t), "cdswap-h-dup-7-hdc", "")
	require.NoError(t, err)
	runID := desc.GetWorkflowExecutionInfo().GetExecution().GetRunId()

	second := run(t, "insert", "--host", "h-dup", "--domain", "7", "--vdev", "hdc", "--medium", "/isos/other.iso", "--requester", "bob")
	close(release)
	assert.Equal(t, ExitFailure, second.code)
	assert.Regexp(t, regexp.QuoteMeta("cdswap: drive hdc of guest web1 on host h-dup is already being changed by workflow cdswap-h-dup-7-hdc (run "+runID+"), started by alice at ")+
		`\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC`+
		regexp.QuoteMeta(": wait for it (cdswap status cdswap-h-dup-7-hdc) or cancel it (cdswap cancel cdswap-h-dup-7-hdc)")+"\n$", second.stderr)

	// The first swap goes on, untouched by the refused one.
	var res workflows.ChangeMediumResult
	require.NoError(t, testClient(t).GetWorkflow(context.Background(), "cdswap-h-dup-7-hdc", runID).Get(context.Background(), &res))
	assert.Equal(t, newISO, res.New)
}

func TestCancelRestores(t *testing.T) {
	entered := make(chan struct{})
	startHost(t, "h-cancel", map[string]fakehost.Hook{activities.NameWaitFdset: blockFirst(entered, nil)})
	t.Parallel()
	r := run(t, "insert", "--host", "h-cancel", "--domain", "web1", "--vdev", "hdc", "--medium", newISO)
	require.Equal(t, ExitOK, r.code, "stderr %s", r.stderr)
	select {
	case <-entered:
	case <-time.After(20 * time.Second):
		t.Fatal("the swap never reached WaitFdset")
	}
	r = run(t, "status", "cdswap-h-cancel-7-hdc")
	require.Equal(t, ExitOK, r.code, "stderr %s", r.stderr)
	assert.Regexp(t, `^swap cdswap-h-cancel-7-hdc \(run \S+\): running, step 7 WaitFdset \(`, r.stdout)

	r = run(t, "history", "cdswap-h-cancel-7-hdc")
	require.Equal(t, ExitOK, r.code, "stderr %s", r.stderr)
	assert.Contains(t, r.stdout, "  outcome: running\n")
	assert.Regexp(t, `(?m)^\s+7  WaitFdset\s+running\s+1\s+\S+\s+-\s+known \[3\]$`, r.stdout)

	r = run(t, "cancel", "cdswap-h-cancel-7-hdc", "--reason", "wrong image", "--wait")
	require.Equal(t, ExitOK, r.code, "stderr %s", r.stderr)
	assert.Contains(t, r.stdout, "cancellation of swap cdswap-h-cancel-7-hdc")
	assert.Contains(t, r.stdout, "canceled: swap cdswap-h-cancel-7-hdc ended canceled")

	r = run(t, "cancel", "cdswap-h-cancel-7-hdc")
	assert.Equal(t, ExitFailure, r.code)
	assert.Equal(t, "cdswap: swap cdswap-h-cancel-7-hdc is not running (it ended canceled): nothing to cancel\n", r.stderr)

	r = run(t, "history", "cdswap-h-cancel-7-hdc", "--json")
	require.Equal(t, ExitOK, r.code, "stderr %s", r.stderr)
	var h History
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &h))
	assert.Equal(t, "canceled", h.Status)
	assert.Equal(t, "canceled", h.Outcome)
	require.NotNil(t, h.CancelRequested)
	assert.Equal(t, "wrong image", h.CancelRequested.Reason)
	assert.Contains(t, h.CancelRequested.By, "(for alice)")
	var restored []string
	for _, s := range h.Steps {
		if s.Restore {
			restored = append(restored, s.Name)
		}
	}
	assert.Equal(t, []string{"Eject", "ReleaseFdset", "DetachVBD", "AttachVBD", "WaitFdset", "ChangeMedium", "Record", "Verify"}, restored)
	assert.Equal(t, StepCanceled, h.Steps[6].Status, "the WaitFdset that was running: %+v", h.Steps[6])
	if *update {
		recordHistory(t, "cdswap-h-cancel-7-hdc", h.RunID, "canceled")
	}
}

func TestStatusAndList(t *testing.T) {
	startHost(t, "h-list", nil)
	t.Parallel()
	r := run(t, "insert", "--host", "h-list", "--domain", "web1", "--vdev", "hdc", "--medium", newISO, "--reason", "monthly update", "--wait")
	require.Equal(t, ExitOK, r.code, "stderr %s", r.stderr)

	r = run(t, "status", "--host", "h-list", "--domain", "7", "--vdev", "hdc", "--json")
	require.Equal(t, ExitOK, r.code, "stderr %s", r.stderr)
	var v statusView
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &v))
	assert.Equal(t, "changed", v.Outcome)
	assert.Equal(t, oldISO, v.Old)
	assert.Nil(t, v.Step)

	// By name the swap is found through visibility, which lags a little behind.
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		r := run(t, "status", "--host", "h-list", "--domain", "web1", "--vdev", "hdc")
		assert.Equal(c, ExitOK, r.code, "stderr %s", r.stderr)
		assert.Regexp(c, `^swap cdswap-h-list-7-hdc \(run \S+\): changed at `, r.stdout)
		assert.Contains(c, r.stdout, `asked by alice: "monthly update"`)
	}, 20*time.Second, 200*time.Millisecond)

	require.EventuallyWithT(t, func(c *assert.CollectT) {
		r := run(t, "list", "--host", "h-list", "--since", "1h", "--json")
		assert.Equal(c, ExitOK, r.code, "stderr %s", r.stderr)
		var got struct{ Swaps []SwapSummary }
		if !assert.NoError(c, json.Unmarshal([]byte(r.stdout), &got)) || !assert.Len(c, got.Swaps, 1) {
			return
		}
		s := got.Swaps[0]
		assert.Equal(c, SwapSummary{WorkflowID: "cdswap-h-list-7-hdc", RunID: s.RunID, Host: "h-list", Domain: "web1", Vdev: "hdc",
			Medium: newISO, Status: "completed", Outcome: "changed", Requester: "alice", RequesterSource: "os", Reason: "monthly update",
			Started: s.Started, Ended: s.Ended}, s)
	}, 20*time.Second, 200*time.Millisecond)

	r = run(t, "list", "--host", "h-list")
	require.Equal(t, ExitOK, r.code, "stderr %s", r.stderr)
	assert.Regexp(t, `(?m)^STARTED\s+HOST\s+DOMAIN\s+VDEV\s+MEDIUM\s+OUTCOME\s+REQUESTER\s+REASON\s+TICKET\s+BATCH\s+ID$`, r.stdout)
	assert.Regexp(t, `(?m)\s+h-list\s+web1\s+hdc\s+/isos/new.iso\s+changed\s+alice\s+monthly update\s+-\s+-\s+cdswap-h-list-7-hdc$`, r.stdout)

	r = run(t, "status", "cdswap-h-nosuch-7-hdc")
	assert.Equal(t, ExitFailure, r.code)
	assert.Contains(t, r.stderr, `cdswap: no swap "cdswap-h-nosuch-7-hdc" in namespace default`)
}

func TestRollbackHistory(t *testing.T) {
	startHost(t, "h-rb", map[string]fakehost.Hook{
		activities.NameEject:     fakehost.FailCalls(1, activities.ErrTrayLocked, true, "the guest keeps the tray of hdc locked"),
		activities.NameWaitFdset: fakehost.FailCalls(1, activities.ErrFdsetTimeout, false, "the stubdom of web1 published no new fdset for hdc in 25s: check its add-fd hook"),
	})
	t.Parallel()
	r := run(t, "insert", "--host", "h-rb", "--domain", "web1", "--vdev", "hdc", "--medium", newISO,
		"--reason", "new installer", "--ticket", "OPS-7", "--wait")
	require.Equal(t, ExitFailure, r.code, "stdout %s", r.stdout)
	assert.Equal(t, "cdswap: change of hdc on domain web1 (host h-rb) failed at WaitFdset: the stubdom of web1 published no new fdset for hdc in 25s: check its add-fd hook; the old medium /isos/old.iso was put back\n"+
		"  every step, attempt and error: cdswap history cdswap-h-rb-7-hdc\n", r.stderr)
	assert.Equal(t, []string{
		"Inspect ok", "Lock ok", "Eject ok", "ReleaseFdset ok", "DetachVBD ok", "AttachVBD ok", "WaitFdset failed",
		"restore Eject ok", "restore ReleaseFdset ok", "restore DetachVBD ok", "restore AttachVBD ok",
		"restore WaitFdset ok", "restore ChangeMedium ok", "restore Record ok", "restore Verify ok", "Unlock ok",
	}, stepsOf(r.stdout))

	r = run(t, "history", "cdswap-h-rb-7-hdc")
	require.Equal(t, ExitOK, r.code, "stderr %s", r.stderr)
	for _, want := range []string{
		"swap cdswap-h-rb-7-hdc (run ",
		"  insert /isos/new.iso (raw) into drive hdc of web1 (domid 7) on host h-rb\n",
		`  asked by alice: "new installer" (ticket OPS-7); started by client cdswap:alice@`,
		"  outcome: failed-restored (the drive holds its old medium /isos/old.iso again)\n",
		"  error: change of hdc on domain web1 (host h-rb) failed at WaitFdset:",
		"attempt 1 failed: TrayLocked: the guest keeps the tray of hdc locked\n",
		"attempt 1 failed: FdsetTimeout: the stubdom of web1 published no new fdset for hdc in 25s: check its add-fd hook\n",
	} {
		assert.Contains(t, r.stdout, want)
	}
	assert.Regexp(t, `(?m)^\s+3  Eject\s+ok\s+2\s+\d\d:\d\d:\d\d\.\d{3}\s+\S+$`, r.stdout)
	assert.Regexp(t, `(?m)^\s+7  WaitFdset\s+failed\s+1\s+`, r.stdout)
	assert.Regexp(t, `(?m)^\s+8  restore Eject\s+ok\s+1\s+\S+\s+\S+\s+force$`, r.stdout)

	r = run(t, "history", "cdswap-h-rb-7-hdc", "--json")
	require.Equal(t, ExitOK, r.code, "stderr %s", r.stderr)
	var h History
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &h))
	assert.Equal(t, HistorySchema, h.Schema)
	assert.Equal(t, "failed", h.Status)
	assert.Equal(t, "failed-restored", h.Outcome)
	assert.Equal(t, Audit{Requester: "alice", Reason: "new installer", Ticket: "OPS-7", StartedBy: h.Audit.StartedBy}, h.Audit)
	assert.Equal(t, Request{Host: "h-rb", Domain: "web1", DomID: 7, Vdev: "hdc", Medium: newISO, Format: "raw"}, h.Request)
	require.NotNil(t, h.Error)
	assert.Equal(t, Failure{Type: workflows.ErrSwapFailedRestored, Message: h.Error.Message, Cause: activities.ErrFdsetTimeout}, *h.Error)
	require.Len(t, h.Steps, 16)
	eject := h.Steps[2]
	assert.Equal(t, int32(2), eject.Attempts)
	assert.Equal(t, []AttemptFailure{{Attempt: 1, Failure: Failure{Type: activities.ErrTrayLocked, Message: "the guest keeps the tray of hdc locked"}}}, eject.Failures)
	wait := h.Steps[6]
	assert.Equal(t, StepFailed, wait.Status)
	assert.False(t, wait.Restore)
	assert.True(t, h.Steps[7].Restore)
	assert.Equal(t, "force", h.Steps[7].Detail)
	for _, s := range h.Steps {
		require.NotNil(t, s.Ended, "step %d %s", s.Seq, s.Name)
		assert.GreaterOrEqual(t, s.DurationMS, 0.0)
	}
	if *update {
		recordHistory(t, "cdswap-h-rb-7-hdc", h.RunID, "rollback")
	}
}

func TestDevServerCommand(t *testing.T) {
	if testServer == nil {
		needServer(t)
	}
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var stdout, stderr testenv.Buffer
	done := make(chan int, 1)
	go func() { done <- newApp(&stdout, &stderr).Run(ctx, []string{"dev-server", "--port", "0"}) }()
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		assert.Contains(c, stdout.String(), "stop it with Ctrl-C")
	}, 50*time.Second, 50*time.Millisecond, "stderr %s", stderr.String())
	assert.Regexp(t, `^Temporal dev server at 127\.0\.0\.1:\d+, namespace default\nstate: in memory`, stdout.String())
	cancel()
	select {
	case code := <-done:
		assert.Equal(t, ExitOK, code, "stderr %s", stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatal("dev-server did not stop when its context ended")
	}
	assert.Contains(t, stdout.String(), "dev server stopped")
}

func TestInsertWaitTTY(t *testing.T) {
	srv := needServer(t)
	startHost(t, "h-tty", map[string]fakehost.Hook{
		activities.NameWaitFdset: func(ctx context.Context, n int, _ any) error {
			if n == 1 {
				time.Sleep(600 * time.Millisecond) // long enough for a few redraws
			}
			return nil
		},
	})
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var stdout, stderr testenv.Buffer
	app := newApp(&stdout, &stderr)
	app.TTY = true
	code := app.Run(ctx, []string{"--address", srv.FrontendHostPort(), "insert", "--host", "h-tty", "--domain", "web1",
		"--vdev", "hdc", "--medium", newISO, "--wait"})
	require.Equal(t, ExitOK, code, "stderr %s", stderr.String())
	out := stdout.String()
	assert.Regexp(t, `\s+7 WaitFdset\s+running\s+\S+  attempt 1\r\x1b\[K`, out, "the running step is drawn, then erased")
	// What stays on screen: each line's text after its last erase.
	var screen []string
	for _, line := range strings.Split(out, "\n") {
		if i := strings.LastIndex(line, "\r\x1b[K"); i >= 0 {
			line = line[i+len("\r\x1b[K"):]
		}
		screen = append(screen, line)
	}
	assert.Equal(t, []string{
		"Inspect ok", "Lock ok", "Eject ok", "ReleaseFdset ok", "DetachVBD ok", "AttachVBD ok",
		"WaitFdset ok", "ChangeMedium ok", "Record ok", "Verify ok", "Unlock ok",
	}, stepsOf(strings.Join(screen, "\n")))
	assert.Contains(t, out, "done: drive hdc of web1 on host h-tty now holds /isos/new.iso")
}
