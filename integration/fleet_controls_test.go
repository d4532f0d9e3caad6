package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	commonpb "go.temporal.io/api/common/v1"
	enumspb "go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/api/temporalproto"
	workflowpb "go.temporal.io/api/workflow/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/converter"

	"github.com/cdswap/cdswap/activities"
	"github.com/cdswap/cdswap/internal/cli"
	"github.com/cdswap/cdswap/internal/plan"
	"github.com/cdswap/cdswap/internal/testenv"
	"github.com/cdswap/cdswap/internal/xensim"
	"github.com/cdswap/cdswap/workflows"
)

// The batch controls (canary halt, failure budget, pause, resume, stop, cancel) and a
// drive busy with a single swap, each on the dev server through cdswap-worker and xensim,
// mostly driven with the cdswap binary as an operator would; every drive is checked
// against xensim's state at the end, and the batch's history replays (recorded into
// workflows/testdata/histories as FleetSwap-<scenario>-v1.json when recording).

// plannedDrive is a drive of a controls test's plan.
type plannedDrive struct {
	h      *xensim.Host
	d      xensim.DomainInfo
	medium string // the new medium
}

// controlPlan is a plan over hosts, in host then domid order, and its drives by swap id.
type controlPlan struct {
	file   string
	drives []plannedDrive
	byID   map[string]plannedDrive
}

// controlHost is a host with n stubdom and n dom0 guests (fake QEMU) and its worker.
func controlHost(t *testing.T, n int) *xensim.Host {
	h := startHost(t, xensim.Config{QEMU: xensim.QEMUFake, StubdomGuests: n, Dom0Guests: n, AgentDelay: 5 * time.Millisecond})
	startWorker(t, h, workerOpts{})
	return h
}

// newControlPlan writes a CSV plan giving every guest of hosts another ISO of its host.
func newControlPlan(t *testing.T, hosts ...*xensim.Host) controlPlan {
	p := controlPlan{byID: map[string]plannedDrive{}}
	var b strings.Builder
	b.WriteString("host,domain,vdev,medium\n")
	for _, h := range hosts {
		medium := newISO(t, h)
		for _, d := range h.Domains() {
			pd := plannedDrive{h: h, d: d, medium: medium}
			p.drives = append(p.drives, pd)
			p.byID[workflows.WorkflowID(h.Name(), d.DomID, d.Vdev)] = pd
			fmt.Fprintf(&b, "%s,%s,%s,%s\n", h.Name(), d.Name, d.Vdev, medium)
		}
	}
	p.file = writePlan(t, "plan.csv", b.String())
	return p
}

// slowCommand makes every guest's fake QEMU of hosts take d for each call of command.
func slowCommand(t *testing.T, command string, d time.Duration, hosts ...*xensim.Host) {
	for _, h := range hosts {
		for _, dom := range h.Domains() {
			q := h.QEMU(dom.DomID)
			require.NotNil(t, q, "guest %s has no QEMU", dom.Name)
			q.Fake().Delay(command, d)
		}
	}
}

// slowBatch starts a batch (with the cdswap binary, args added) over two hosts of two
// stubdom and two dom0 guests each, whose QEMUs take d for every call of command, so that
// the batch's swaps run long enough to be paused, stopped or canceled.
func slowBatch(t *testing.T, command string, d time.Duration, args ...string) (controlPlan, string) {
	t.Helper()
	a, b := controlHost(t, 2), controlHost(t, 2)
	p := newControlPlan(t, a, b)
	slowCommand(t, command, d, a, b)
	return p, startBatch(t, p.file, args...)
}

// startBatch starts a batch with the cdswap binary, without waiting, and returns its id.
func startBatch(t *testing.T, planFile string, args ...string) string {
	t.Helper()
	r := runCLI(t, append([]string{"batch", "start", "--plan", planFile, "--json"}, args...)...)
	require.Equal(t, 0, r.code, r.stderr)
	var started struct{ Batch string }
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &started), r.stdout)
	require.NotEmpty(t, started.Batch)
	return started.Batch
}

// batchUpdate runs `cdswap batch <update> ID --reason reason --json`, which must succeed,
// and returns the progress it printed.
func batchUpdate(t *testing.T, id, update, reason string) workflows.FleetProgress {
	t.Helper()
	r := runCLI(t, "batch", update, id, "--reason", reason, "--json")
	require.Equal(t, 0, r.code, r.stderr)
	var p workflows.FleetProgress
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &p), r.stdout)
	return p
}

// batchProgress asks a running batch for its progress (false if it does not answer now).
func batchProgress(ctx context.Context, id string) (workflows.FleetProgress, bool) {
	var p workflows.FleetProgress
	v, err := the.client.QueryWorkflow(ctx, id, "", workflows.ProgressQuery)
	if err != nil || v.Get(&p) != nil {
		return p, false
	}
	return p, true
}

// waitProgress waits until the batch's progress satisfies ok.
func waitProgress(t *testing.T, id, what string, ok func(workflows.FleetProgress) bool) workflows.FleetProgress {
	t.Helper()
	ctx := testenv.Context(t, 2*time.Minute)
	var last workflows.FleetProgress
	for {
		if p, answered := batchProgress(ctx, id); answered {
			last = p
			if ok(p) {
				return p
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("batch %s: %s: not within 2 min; last progress %+v", id, what, last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// batchResult waits for the batch's end and returns its result.
func batchResult(t *testing.T, id string) workflows.FleetSwapResult {
	t.Helper()
	ctx := testenv.Context(t, 3*time.Minute)
	var res workflows.FleetSwapResult
	require.NoError(t, the.client.GetWorkflow(ctx, id, "").Get(ctx, &res), "batch %s", id)
	return res
}

// batchReport is `cdswap batch report ID --json`.
func batchReport(t *testing.T, id string) []cli.ReportRow {
	t.Helper()
	r := runCLI(t, "batch", "report", id, "--json")
	require.Equal(t, 0, r.code, r.stderr)
	var rows []cli.ReportRow
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &rows), r.stdout)
	return rows
}

// checkReport checks every drive of the plan against xensim by the outcome the report
// gives it: a changed drive holds its new medium; any other holds its old one (untouched,
// or put back), in QEMU, xenstore and libxl's JSON. It returns the outcomes' counts.
func checkReport(t *testing.T, p controlPlan, rows []cli.ReportRow) map[string]int {
	t.Helper()
	require.Len(t, rows, len(p.drives))
	counts := map[string]int{}
	for _, row := range rows {
		id := workflows.WorkflowID(row.Host, row.DomID, row.Vdev)
		pd, ok := p.byID[id]
		require.True(t, ok, "report row %+v is not in the plan", row)
		counts[row.Outcome]++
		if row.Outcome == string(workflows.OutcomeChanged) {
			checkDrive(t, pd.h, pd.d, pd.medium, pd.d.Medium)
			continue
		}
		checkOldMedium(t, pd.h, pd.d, pd.medium)
	}
	return counts
}

// checkOldMedium checks that the drive holds its first medium: untouched (QEMU still has
// it by path), or put back by a restore (from an fdset, with the new medium let go).
func checkOldMedium(t *testing.T, h *xensim.Host, d xensim.DomainInfo, newMedium string) {
	t.Helper()
	if qemuView(t, h, d).file == d.Medium {
		checkUntouched(t, h, d)
		checkXenstore(t, h, d, d.Medium)
		return
	}
	checkDrive(t, h, d, d.Medium, newMedium)
}

// fleetHistoryNow is the version FleetSwap histories are recorded as: 2 since
// changeFleetRounds (v1 ran its swaps as children), 3 since its version 2 (the starts queued
// when a batch is paused, stopped or canceled are looked for before they are dropped).
const fleetHistoryNow = 3

// recordBatch fetches the batch's (last run's) history, checks that it replays, and writes
// it as FleetSwap-<scenario>-v<fleetHistoryNow>.json when recording (an existing file is kept unless
// -rerecord was given).
func recordBatch(t *testing.T, id, scenario string) *historypb.History {
	t.Helper()
	h, err := fetchHistory(testenv.Context(t, 30*time.Second), id, "")
	require.NoError(t, err)
	require.NoError(t, replay(h, registerAll), "replay of batch %s", id)
	if !recording() {
		return h
	}
	p := historyPath(workflows.FleetSwapName, scenario, fleetHistoryNow)
	if _, err := os.Stat(p); err == nil && !*rerecordFlag {
		t.Logf("kept %s (-rerecord overwrites it)", p)
		return h
	}
	js, err := temporalproto.CustomJSONMarshalOptions{Indent: "  "}.Marshal(h)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(p, append(js, '\n'), 0o644))
	t.Logf("wrote %s (%d events)", p, len(h.GetEvents()))
	return h
}

// updatesAccepted returns the names of the updates a history accepted, in order.
func updatesAccepted(h *historypb.History) []string {
	var out []string
	for _, e := range h.GetEvents() {
		if a := e.GetWorkflowExecutionUpdateAcceptedEventAttributes(); a != nil {
			out = append(out, a.GetAcceptedRequest().GetInput().GetName())
		}
	}
	return out
}

// eventIDOf returns the id of the n-th (from 1) accepted update named name, or 0.
func eventIDOf(h *historypb.History, name string) int64 {
	for _, e := range h.GetEvents() {
		if a := e.GetWorkflowExecutionUpdateAcceptedEventAttributes(); a != nil && a.GetAcceptedRequest().GetInput().GetName() == name {
			return e.GetEventId()
		}
	}
	return 0
}

// batchStart is a swap a batch's history started: the event that records the start (a
// child's initiated event, or the marker of the round that started it), the swap's id and,
// when known, its run.
type batchStart struct {
	event     int64
	id, runID string
}

// batchStarts returns the swaps a batch's history started, whether as children or in
// rounds.
func batchStarts(t *testing.T, h *historypb.History) []batchStart {
	t.Helper()
	var out []batchStart
	for _, e := range h.GetEvents() {
		if a := e.GetStartChildWorkflowExecutionInitiatedEventAttributes(); a != nil {
			out = append(out, batchStart{event: e.GetEventId(), id: a.GetWorkflowId()})
		}
		if a := e.GetChildWorkflowExecutionStartedEventAttributes(); a != nil {
			for i := range out {
				if out[i].id == a.GetWorkflowExecution().GetWorkflowId() && out[i].runID == "" {
					out[i].runID = a.GetWorkflowExecution().GetRunId()
				}
			}
		}
		if res, ok := roundResult(t, e); ok {
			for _, s := range res.Started {
				out = append(out, batchStart{event: e.GetEventId(), id: s.ID, runID: s.RunID})
			}
		}
	}
	return out
}

// batchRefusals counts the batch's starts of the swap id refused as busy: by the server
// (a child), or by a round.
func batchRefusals(t *testing.T, h *historypb.History, id string) int {
	t.Helper()
	n := 0
	for _, e := range h.GetEvents() {
		if a := e.GetStartChildWorkflowExecutionFailedEventAttributes(); a != nil && a.GetWorkflowId() == id {
			assert.Equal(t, enumspb.START_CHILD_WORKFLOW_EXECUTION_FAILED_CAUSE_WORKFLOW_ALREADY_EXISTS, a.GetCause())
			n++
		}
		if res, ok := roundResult(t, e); ok {
			for _, b := range res.Busy {
				if b.ID == id {
					n++
				}
			}
		}
	}
	return n
}

// roundResult decodes the result of a FleetRound local activity from its marker.
func roundResult(t *testing.T, e *historypb.HistoryEvent) (workflows.FleetRoundResult, bool) {
	t.Helper()
	var res workflows.FleetRoundResult
	a := e.GetMarkerRecordedEventAttributes()
	if a.GetMarkerName() != "LocalActivity" {
		return res, false
	}
	var data struct{ ActivityType string }
	dc := converter.GetDefaultDataConverter()
	require.NoError(t, dc.FromPayloads(a.GetDetails()["data"], &data))
	if data.ActivityType != workflows.FleetRoundName || a.GetDetails()["result"] == nil {
		return res, false
	}
	require.NoError(t, dc.FromPayloads(a.GetDetails()["result"], &res))
	return res, true
}

// TestFleetCanaryHalt: the first host's canary fails (its guest keeps the tray locked), so
// the batch halts after the canary wave: the other canary changed its drive, nothing else
// started, and `batch start --wait` fails saying which canary failed.
func TestFleetCanaryHalt(t *testing.T) {
	need(t)
	t.Parallel()
	a, b := controlHost(t, 2), controlHost(t, 2)
	p := newControlPlan(t, a, b)
	bad := p.drives[0] // the first drive of the first host: its canary
	require.NoError(t, a.SetFault(testenv.Context(t, 10*time.Second), bad.d.Name, xensim.KnobLockTray, "true"))

	r := runCLI(t, "batch", "start", "--plan", p.file, "--canary-hosts", "2", "--reason", "canary halt", "--wait", "--json")
	assert.Equal(t, 1, r.code, "a halted batch fails the command")
	var res workflows.FleetSwapResult
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &res), r.stdout)
	assert.Equal(t, workflows.FleetHalted, res.Status)
	badID := workflows.WorkflowID(a.Name(), bad.d.DomID, bad.d.Vdev)
	assert.Contains(t, res.Reason, "canary "+badID, "the reason names the failed canary")
	assert.Contains(t, r.stderr, "halted")
	assert.Equal(t, 2, res.Done, "only the canaries ran: %+v", res)
	assert.Equal(t, 1, res.Changed)
	assert.Equal(t, 1, res.Failed)
	assert.Equal(t, len(p.drives)-2, res.NotStarted)

	counts := checkReport(t, p, batchReport(t, res.Batch))
	assert.Equal(t, map[string]int{string(workflows.OutcomeChanged): 1, string(workflows.OutcomeFailed): 1, cli.NotStarted: len(p.drives) - 2}, counts)
	h := recordBatch(t, res.Batch, "canary-halt")
	assert.Len(t, batchStarts(t, h), 2, "the batch started the two canaries and nothing else")
}

// TestFleetFailureBudget: three guests of the second host keep their trays locked; with a
// budget of two failures and one swap at a time, the second failure halts the batch and
// the third locked drive is never tried.
func TestFleetFailureBudget(t *testing.T) {
	need(t)
	t.Parallel()
	a, b := controlHost(t, 3), controlHost(t, 3)
	p := newControlPlan(t, a, b)
	ctx := testenv.Context(t, 10*time.Second)
	// b's drives are p.drives[6:]; its first is a canary, which must pass.
	locked := map[string]bool{}
	for _, pd := range p.drives[7:10] {
		require.NoError(t, b.SetFault(ctx, pd.d.Name, xensim.KnobLockTray, "true"))
		locked[workflows.WorkflowID(b.Name(), pd.d.DomID, pd.d.Vdev)] = true
	}

	r := runCLI(t, "batch", "start", "--plan", p.file, "--limit", "1", "--per-host", "1", "--max-failures", "2",
		"--reason", "failure budget", "--wait", "--json")
	assert.Equal(t, 1, r.code)
	var res workflows.FleetSwapResult
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &res), r.stdout)
	assert.Equal(t, workflows.FleetHalted, res.Status)
	assert.Contains(t, res.Reason, fmt.Sprintf("failure budget spent: 2 of %d drives failed (budget 2)", len(p.drives)))
	assert.Equal(t, 2, res.Failed)
	assert.Positive(t, res.NotStarted)

	rows := batchReport(t, res.Batch)
	counts := checkReport(t, p, rows)
	assert.Equal(t, 2, counts[string(workflows.OutcomeFailed)])
	assert.Equal(t, res.Changed, counts[string(workflows.OutcomeChanged)])
	assert.Equal(t, res.NotStarted, counts[cli.NotStarted])
	failedLocked := 0
	for _, row := range rows {
		id := workflows.WorkflowID(row.Host, row.DomID, row.Vdev)
		switch {
		case row.Outcome == string(workflows.OutcomeFailed):
			assert.True(t, locked[id], "drive %s failed but its tray was not locked: %+v", id, row)
			failedLocked++
		case locked[id]:
			assert.Equal(t, cli.NotStarted, row.Outcome, "the third locked drive ran after the budget was spent: %+v", row)
		}
	}
	assert.Equal(t, 2, failedLocked)
	recordBatch(t, res.Batch, "budget-halt")
}

// TestFleetPauseResume pauses a running batch with the cdswap binary: the swaps running
// finish, none starts while it is paused (xensim's drives stay as they are), a resume of
// the running batch and a second pause are refused without an event in the history, and
// after resume the batch changes every drive.
func TestFleetPauseResume(t *testing.T) {
	need(t)
	t.Parallel()
	p, id := slowBatch(t, "eject", 1500*time.Millisecond, "--limit", "2", "--per-host", "1", "--reason", "pause and resume")

	waitProgress(t, id, "a swap running", func(p workflows.FleetProgress) bool { return p.Running > 0 })
	r := runCLI(t, "batch", "resume", id)
	assert.Equal(t, 1, r.code, "resume of a running batch")
	assert.Contains(t, r.stderr, "it is running, not paused")

	assert.Equal(t, workflows.FleetPaused, batchUpdate(t, id, workflows.UpdatePause, "maintenance window").Status)
	r = runCLI(t, "batch", "pause", id)
	assert.Equal(t, 1, r.code, "pause of a paused batch")
	assert.Contains(t, r.stderr, "paused already")

	held := waitProgress(t, id, "the running swaps end", func(p workflows.FleetProgress) bool { return p.Running == 0 })
	require.Less(t, held.Done, len(p.drives), "the batch ended before it could be paused: %+v", held)
	time.Sleep(3 * time.Second) // long enough for two swaps, had any started
	still := waitProgress(t, id, "progress", func(workflows.FleetProgress) bool { return true })
	assert.Equal(t, workflows.FleetPaused, still.Status)
	assert.Equal(t, held.Done, still.Done, "a swap ended while the batch was paused")
	assert.Zero(t, still.Running, "a swap started while the batch was paused")
	changed := 0
	for _, pd := range p.drives {
		if qemuView(t, pd.h, pd.d).file != pd.d.Medium {
			changed++
		}
	}
	assert.Equal(t, still.Changed, changed, "xensim's drives changed while paused against the batch's count")
	st := runCLI(t, "batch", "status", id)
	require.Equal(t, 0, st.code, st.stderr)
	assert.Contains(t, st.stdout, "paused")

	r = runCLI(t, "batch", "resume", id, "--reason", "window over")
	require.Equal(t, 0, r.code, r.stderr)
	res := batchResult(t, id)
	assert.Equal(t, workflows.FleetDone, res.Status)
	assert.Equal(t, len(p.drives), res.Changed, "%+v", res)
	counts := checkReport(t, p, batchReport(t, id))
	assert.Equal(t, map[string]int{string(workflows.OutcomeChanged): len(p.drives)}, counts)

	h := recordBatch(t, id, "pause-resume")
	assert.Equal(t, []string{workflows.UpdatePause, workflows.UpdateResume}, updatesAccepted(h),
		"the refused resume and pause must leave no event")
	pause, resume := eventIDOf(h, workflows.UpdatePause), eventIDOf(h, workflows.UpdateResume)
	for _, st := range batchStarts(t, h) {
		ev := st.event
		assert.False(t, ev > pause && ev < resume, "a swap started at event %d, between pause (%d) and resume (%d)", ev, pause, resume)
	}
}

// TestFleetStop stops a running batch with the cdswap binary: the running swaps finish
// (changed), none starts after the stop, the batch ends stopped, and a cancel of the ended
// batch is refused.
func TestFleetStop(t *testing.T) {
	need(t)
	t.Parallel()
	p, id := slowBatch(t, "eject", 1500*time.Millisecond, "--limit", "2", "--per-host", "1", "--reason", "stop")

	waitProgress(t, id, "a swap done and one running", func(p workflows.FleetProgress) bool { return p.Done > 0 && p.Running > 0 })
	assert.Equal(t, workflows.FleetStopping, batchUpdate(t, id, workflows.UpdateStop, "enough for tonight").Status)
	res := batchResult(t, id)
	assert.Equal(t, workflows.FleetStopped, res.Status)
	assert.Contains(t, res.Reason, "stopped by integration-test (enough for tonight)")
	assert.Zero(t, res.Failed+res.Canceled, "the running swaps finish: %+v", res)
	assert.Positive(t, res.NotStarted, "%+v", res)
	assert.Equal(t, len(p.drives), res.Changed+res.NotStarted, "%+v", res)
	counts := checkReport(t, p, batchReport(t, id))
	assert.Equal(t, map[string]int{string(workflows.OutcomeChanged): res.Changed, cli.NotStarted: res.NotStarted}, counts)

	r := runCLI(t, "batch", "cancel", id)
	assert.Equal(t, 1, r.code, "cancel of an ended batch")
	assert.Contains(t, r.stderr, "no running batch")

	h := recordBatch(t, id, "stop")
	assert.Equal(t, []string{workflows.UpdateStop}, updatesAccepted(h))
	stop := eventIDOf(h, workflows.UpdateStop)
	for _, st := range batchStarts(t, h) {
		ev := st.event
		assert.Less(t, ev, stop, "a swap started after the stop")
	}
}

// TestFleetCancel cancels a batch with the cdswap binary while its swaps are in the middle
// of their steps (every QEMU answers query-block slowly): the running swaps are canceled
// and put their old medium back, none starts after, and the batch ends canceled.
func TestFleetCancel(t *testing.T) {
	need(t)
	t.Parallel()
	// Each swap asks query-block several times: at 2 s a time, the swaps are still mid-way
	// when the cancel reaches them, which takes up to a round's wait (a second) after the
	// update, more on a loaded machine.
	p, id := slowBatch(t, "query-block", 2*time.Second, "--limit", "4", "--per-host", "2", "--reason", "cancel")

	waitProgress(t, id, "the main wave running", func(p workflows.FleetProgress) bool { return !p.Canary && p.Done >= 2 && p.Running >= 2 })
	assert.Equal(t, workflows.FleetCanceling, batchUpdate(t, id, workflows.UpdateCancel, "wrong ISO").Status)
	r := runCLI(t, "batch", "resume", id)
	assert.Equal(t, 1, r.code, "resume of a batch being canceled")

	res := batchResult(t, id)
	assert.Equal(t, workflows.FleetCanceled, res.Status)
	assert.Contains(t, res.Reason, "canceled by integration-test (wrong ISO)")
	assert.Positive(t, res.Canceled, "the running swaps were canceled: %+v", res)
	rows := batchReport(t, id)
	counts := checkReport(t, p, rows)
	assert.Equal(t, res.Canceled, counts[string(workflows.OutcomeCanceled)], "%v", counts)
	assert.Equal(t, res.Changed, counts[string(workflows.OutcomeChanged)], "%v", counts)
	for _, row := range rows {
		// A swap canceled while it inspected the drive (a local step, cut off at once)
		// never learned the old medium and touched nothing: its Old is "" (checkReport
		// checked the drive itself against xensim).
		if row.Outcome == string(workflows.OutcomeCanceled) && row.Old != "" {
			assert.Equal(t, p.byID[row.SwapID].d.Medium, row.Old, "%+v", row)
		}
	}

	h := recordBatch(t, id, "cancel")
	assert.Equal(t, []string{workflows.UpdateCancel}, updatesAccepted(h))
	cancel := eventIDOf(h, workflows.UpdateCancel)
	for _, st := range batchStarts(t, h) {
		ev := st.event
		assert.Less(t, ev, cancel, "a swap started after the cancel")
	}
	// Every swap asked to cancel ended canceled, or changed if the request reached it once
	// its new medium was verified (too late: a round carries it up to a second after the
	// update); every canceled swap was asked.
	requested := map[string]bool{}
	for _, e := range h.GetEvents() {
		if a := e.GetRequestCancelExternalWorkflowExecutionInitiatedEventAttributes(); a != nil {
			requested[a.GetWorkflowExecution().GetWorkflowId()] = true
		}
		if res, ok := roundResult(t, e); ok {
			for _, c := range res.Canceled {
				requested[c.ID] = true
			}
		}
	}
	for _, row := range rows {
		switch row.Outcome {
		case string(workflows.OutcomeCanceled):
			assert.True(t, requested[row.SwapID], "%s was canceled without the batch asking", row.SwapID)
		case string(workflows.OutcomeChanged):
		default:
			assert.False(t, requested[row.SwapID], "%s was asked to cancel and ended %s", row.SwapID, row.Outcome)
		}
	}
	assert.GreaterOrEqual(t, len(requested), res.Canceled, "one cancel request per canceled swap")
}

// TestFleetBusyDrive: a person's swap of a drive is held in WaitFdset (xensim's
// add-fd-delay knob) when the batch reaches that drive; the batch's start of the drive's
// swap (the same workflow id) is refused as already running, and the batch tries again
// until the person's swap ended, then changes the drive itself: one after the other,
// never both at once.
func TestFleetBusyDrive(t *testing.T) {
	need(t)
	t.Parallel()
	h := startHost(t, xensim.Config{QEMU: xensim.QEMUFake, StubdomGuests: 3, AgentDelay: 5 * time.Millisecond})
	w := startWorker(t, h, workerOpts{})
	ctx := testenv.Context(t, 3*time.Minute)
	doms := h.Domains()
	busy := doms[1]
	mine, batchMedium := iso(h, xensim.ISORescue), iso(h, xensim.ISOTools)

	// Long enough that the batch, started after it on a loaded machine (its plan saved, its
	// first workflow task run), still finds the drive busy.
	require.NoError(t, h.SetFault(ctx, busy.Name, xensim.KnobAddFDDelay, "15s"))
	single := startSwap(t, ctx, swapInput(h, busy, mine, ""))
	waitStepStarted(t, ctx, single, w, activities.NameWaitFdset)

	var drives []workflows.FleetDrive
	for _, d := range doms {
		drives = append(drives, workflows.FleetDrive{Host: h.Name(), Domain: d.Name, DomID: d.DomID, Vdev: d.Vdev, Medium: batchMedium, Old: d.Medium})
	}
	in := workflows.FleetSwapInput{
		Batch: "cdswap-batch-busy-" + hostName("b"), Total: len(drives), HostTotals: map[string]int{h.Name(): len(drives)},
		Limits: workflows.FleetLimits{Global: 3, PerHost: 3}, Canary: workflows.FleetCanary{Off: true},
		Requester: "integration-test", Reason: "busy drive", BusyWait: time.Second, BusyTries: 60,
	}
	startFleet(t, ctx, in, drives)
	// Only once the batch has met the busy drive may the batch's own swap of it run without
	// the hold (the knob is read when a vbd connects, so the person's swap keeps its 15 s).
	busyID := workflows.WorkflowID(h.Name(), busy.DomID, busy.Vdev)
	require.Eventually(t, func() bool {
		hist, err := fetchHistory(ctx, in.Batch, "")
		return err == nil && batchRefusals(t, hist, busyID) > 0
	}, time.Minute, 100*time.Millisecond, "the batch never tried the busy drive")
	require.NoError(t, h.SetFault(ctx, busy.Name, xensim.KnobAddFDDelay, "0s"))
	res := batchResult(t, in.Batch)
	assert.Equal(t, workflows.FleetDone, res.Status)
	assert.Equal(t, len(drives), res.Changed, "%+v", res)
	assert.Zero(t, res.Busy, "%+v", res)

	sres, err := waitSwap(ctx, single)
	require.NoError(t, err)
	assert.Equal(t, workflows.OutcomeChanged, sres.Outcome)
	for _, d := range doms {
		old := d.Medium
		if d.DomID == busy.DomID {
			old = mine
		}
		checkDrive(t, h, d, batchMedium, old)
	}

	hist := recordBatch(t, in.Batch, "busy-drive")
	var batchRun string
	for _, st := range batchStarts(t, hist) {
		if st.id == busyID {
			batchRun = st.runID
		}
	}
	assert.Positive(t, batchRefusals(t, hist, busyID), "the batch never met the busy drive: the person's swap ended too soon")
	require.NotEmpty(t, batchRun)
	singleEnd := describeRun(t, ctx, busyID, single.GetRunID()).GetCloseTime().AsTime()
	batchStart := describeRun(t, ctx, busyID, batchRun).GetStartTime().AsTime()
	assert.True(t, batchStart.After(singleEnd), "the batch's swap of %s started at %s, before the person's ended at %s", busyID, batchStart, singleEnd)
}

// startFleet saves a plan's pages and starts its FleetSwap as `cdswap batch start` does,
// for inputs the command does not offer (BusyWait).
func startFleet(t *testing.T, ctx context.Context, in workflows.FleetSwapInput, drives []workflows.FleetDrive) {
	t.Helper()
	pages := plan.Paginate(drives, 0, 0)
	in.Pages = len(pages)
	require.NoError(t, plan.SavePages(ctx, the.client, in.Batch, pages))
	_, err := the.client.ExecuteWorkflow(ctx, workflows.FleetStartOptions(in), workflows.FleetSwapName, in)
	require.NoError(t, err)
}

// describeRun describes a run.
func describeRun(t *testing.T, ctx context.Context, id, runID string) *workflowpb.WorkflowExecutionInfo {
	t.Helper()
	resp, err := the.client.WorkflowService().DescribeWorkflowExecution(ctx, &workflowservice.DescribeWorkflowExecutionRequest{
		Namespace: namespace, Execution: &commonpb.WorkflowExecution{WorkflowId: id, RunId: runID}})
	require.NoError(t, err)
	return resp.GetWorkflowExecutionInfo()
}
