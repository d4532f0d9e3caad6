package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	commonpb "go.temporal.io/api/common/v1"
	enumspb "go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	taskqueuepb "go.temporal.io/api/taskqueue/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"
	"go.temporal.io/sdk/worker"
	"google.golang.org/protobuf/proto"

	"github.com/cdswap/cdswap/internal/qmp"
	"github.com/cdswap/cdswap/internal/testenv"
	"github.com/cdswap/cdswap/internal/xen"
	"github.com/cdswap/cdswap/internal/xensim"
	"github.com/cdswap/cdswap/workflows"
)

func taskQueue(name string) *taskqueuepb.TaskQueue {
	return &taskqueuepb.TaskQueue{Name: name, Kind: enumspb.TASK_QUEUE_KIND_NORMAL}
}

// iso is the path of one of the host's images (xensim.ISODebian...).
func iso(h *xensim.Host, name string) string { return filepath.Join(h.ISODir(), name) }

// swapInput is a change of dom's cdrom to medium ("" ejects) in format ("" = raw).
func swapInput(h *xensim.Host, dom xensim.DomainInfo, medium, format string) workflows.ChangeMediumInput {
	return workflows.ChangeMediumInput{
		Host: h.Name(), Domain: dom.Name, DomID: dom.DomID, Vdev: dom.Vdev,
		Medium: medium, Format: format,
		Requester: "integration-test", Reason: "cdswap integration test", Ticket: "IT-1",
	}
}

// startSwap starts a ChangeMedium run as the cdswap CLI does (workflows.StartOptions).
func startSwap(t testing.TB, ctx context.Context, in workflows.ChangeMediumInput) client.WorkflowRun {
	t.Helper()
	run, err := the.client.ExecuteWorkflow(ctx, workflows.StartOptions(in), workflows.ChangeMediumName, in)
	require.NoError(t, err, "start ChangeMedium %+v", in)
	return run
}

// waitSwap waits for a run's end and returns its result: the value of a successful run, or
// the one a failed run carries in its error, with the error.
func waitSwap(ctx context.Context, run client.WorkflowRun) (workflows.ChangeMediumResult, error) {
	var res workflows.ChangeMediumResult
	err := run.Get(ctx, &res)
	if err != nil {
		if r, ok := workflows.ResultFromError(err); ok {
			res = r
		}
	}
	return res, err
}

// swapOK runs a change to the end, requires the outcome want, and checks that its history
// replays.
func swapOK(t testing.TB, h *xensim.Host, dom xensim.DomainInfo, medium string, want workflows.Outcome) workflows.ChangeMediumResult {
	t.Helper()
	ctx := testenv.Context(t, 90*time.Second)
	run := startSwap(t, ctx, swapInput(h, dom, medium, ""))
	res, err := waitSwap(ctx, run)
	require.NoError(t, err, "swap of %s on %s to %q: result %+v", dom.Vdev, dom.Name, medium, res)
	require.Equal(t, want, res.Outcome, "swap of %s on %s to %q: result %+v", dom.Vdev, dom.Name, medium, res)
	requireReplays(t, run)
	return res
}

// fetchHistory reads a run's whole history.
func fetchHistory(ctx context.Context, workflowID, runID string) (*historypb.History, error) {
	it := the.client.GetWorkflowHistory(ctx, workflowID, runID, false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	h := &historypb.History{}
	for it.HasNext() {
		e, err := it.Next()
		if err != nil {
			return nil, fmt.Errorf("history of %s/%s: %w", workflowID, runID, err)
		}
		h.Events = append(h.Events, e)
	}
	return h, nil
}

// quietLogger is an SDK logger that drops everything (the replayer's own logs).
var quietLogger = sdklog.NewStructuredLogger(slog.New(slog.DiscardHandler))

// replay replays h against the workflows register registers.
func replay(h *historypb.History, register func(workflows.Registry)) error {
	r := worker.NewWorkflowReplayer()
	register(r)
	// The replayer consumes the history it is given.
	return r.ReplayWorkflowHistory(quietLogger, proto.Clone(h).(*historypb.History))
}

// requireReplays checks that a finished run's history replays against the current code.
func requireReplays(t testing.TB, run client.WorkflowRun) *historypb.History {
	t.Helper()
	h, err := fetchHistory(testenv.Context(t, 30*time.Second), run.GetID(), run.GetRunID())
	require.NoError(t, err)
	require.NoError(t, replay(h, workflows.Register), "replay of %s/%s", run.GetID(), run.GetRunID())
	return h
}

// pendingStep returns the pending activity of type step of a run, if any.
func pendingStep(ctx context.Context, run client.WorkflowRun, step string) (*workflowservice.DescribeWorkflowExecutionResponse, bool, error) {
	resp, err := the.client.WorkflowService().DescribeWorkflowExecution(ctx, &workflowservice.DescribeWorkflowExecutionRequest{
		Namespace: namespace,
		Execution: &commonpb.WorkflowExecution{WorkflowId: run.GetID(), RunId: run.GetRunID()},
	})
	if err != nil {
		return nil, false, err
	}
	for _, pa := range resp.GetPendingActivities() {
		if pa.GetActivityType().GetName() != step {
			continue
		}
		// Started now, or between attempts after one that started (a step that fails and
		// retries, such as Lock on a busy lock).
		if pa.GetState() == enumspb.PENDING_ACTIVITY_STATE_STARTED || pa.GetAttempt() > 1 {
			return resp, true, nil
		}
	}
	return resp, false, nil
}

// stepStarted returns the time of the first "Step started" line of step in run that a
// worker logged (at debug level, which startWorker sets).
func stepStarted(logs string, run client.WorkflowRun, step string) (time.Time, bool) {
	for _, l := range strings.Split(logs, "\n") {
		if !strings.Contains(l, `msg="Step started"`) || !strings.Contains(l, " step="+step+" ") ||
			!strings.Contains(l, " RunID="+run.GetRunID()+" ") {
			continue
		}
		ts, _, _ := strings.Cut(strings.TrimPrefix(l, "time="), " ")
		at, err := time.Parse(time.RFC3339Nano, ts)
		return at, err == nil
	}
	return time.Time{}, false
}

// waitStepStarted waits until the run's step has started on worker w: a regular activity is
// then a pending activity of the run, a local one (workflows.RunsLocal) is seen only in the
// worker's log.
func waitStepStarted(t testing.TB, ctx context.Context, run client.WorkflowRun, w *workerProc, step string) {
	t.Helper()
	if workflows.RunsLocal(step) {
		for {
			if _, ok := stepStarted(w.logs.String(), run, step); ok {
				return
			}
			select {
			case <-ctx.Done():
				t.Fatalf("local step %s of run %s did not start on worker %d: %v", step, run.GetID(), w.PID(), ctx.Err())
			case <-w.done:
				t.Fatalf("worker %d exited before local step %s of run %s started: %v", w.PID(), step, run.GetID(), w.err)
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	var last *workflowservice.DescribeWorkflowExecutionResponse
	for {
		resp, ok, err := pendingStep(ctx, run, step)
		if err == nil && ok {
			return
		}
		if resp != nil {
			last = resp
			if resp.GetWorkflowExecutionInfo().GetStatus() != enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING {
				t.Fatalf("run %s ended (%s) before step %s started", run.GetID(), resp.GetWorkflowExecutionInfo().GetStatus(), step)
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("step %s of run %s did not start: %v; pending activities: %v", step, run.GetID(), ctx.Err(), last.GetPendingActivities())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// stepAttempts returns, from a finished run's history, the attempt of each completed or
// failed activity of type step (the ActivityTaskStarted event that ended it), in order.
func stepAttempts(h *historypb.History, step string) []int32 {
	types := map[int64]string{}
	var out []int32
	for _, e := range h.GetEvents() {
		if a := e.GetActivityTaskScheduledEventAttributes(); a != nil {
			types[e.GetEventId()] = a.GetActivityType().GetName()
		}
		if a := e.GetActivityTaskStartedEventAttributes(); a != nil && types[a.GetScheduledEventId()] == step {
			out = append(out, a.GetAttempt())
		}
	}
	return out
}

// heldFiles lists the files the guest's QEMU holds open (fdset members and inserted media),
// with loop devices resolved to their backing files.
func heldFiles(t testing.TB, h *xensim.Host, dom xensim.DomainInfo) []string {
	t.Helper()
	q := h.QEMU(dom.DomID)
	require.NotNil(t, q, "guest %s has no QEMU", dom.Name)
	var raw []string
	if f := q.Fake(); f != nil {
		raw = f.HeldFiles()
	} else {
		dir := fmt.Sprintf("/proc/%d/fd", q.PID())
		ents, err := os.ReadDir(dir)
		require.NoError(t, err)
		for _, e := range ents {
			if l, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil && strings.HasPrefix(l, "/") {
				raw = append(raw, l)
			}
		}
	}
	var out []string
	for _, p := range raw {
		if strings.HasPrefix(p, "/dev/loop") {
			b, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(p), "loop", "backing_file"))
			if err == nil {
				p = strings.TrimSpace(string(b))
			}
		}
		out = append(out, p)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// blockView is what the checks need of QEMU's view of the drive and its fdsets.
type blockView struct {
	inserted bool
	file     string // inserted.file
	trayOpen bool
	fdsets   []qmp.FdsetInfo
}

// qemuView reads the drive's state: from the fake directly, or over QMP from a real QEMU on
// libxl's monitor (which takes one client at a time: no worker may hold it).
func qemuView(t testing.TB, h *xensim.Host, dom xensim.DomainInfo) blockView {
	t.Helper()
	q := h.QEMU(dom.DomID)
	require.NotNil(t, q, "guest %s has no QEMU", dom.Name)
	id := dom.DevID.QEMUID()
	if f := q.Fake(); f != nil {
		b, ok := f.Block(id)
		require.True(t, ok, "fake QEMU of %s has no drive %s", dom.Name, id)
		return blockView{inserted: b.Inserted, file: b.File, trayOpen: b.TrayOpen, fdsets: f.Fdsets()}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := qmp.Dial(ctx, dom.QMPSocket)
	require.NoError(t, err, "QMP %s (busy? a real QEMU's monitor serves one client at a time)", dom.QMPSocket)
	defer c.Close()
	blocks, err := c.QueryBlock(ctx)
	require.NoError(t, err)
	sets, err := c.QueryFdsets(ctx)
	require.NoError(t, err)
	var v blockView
	v.fdsets = sets
	found := false
	for _, b := range blocks {
		if b.QDev == id || b.Device == id {
			found = true
			v.inserted = b.Inserted != nil
			if b.Inserted != nil {
				v.file = b.Inserted.File
			}
			v.trayOpen = b.TrayOpen != nil && *b.TrayOpen
		}
	}
	require.True(t, found, "query-block of %s has no %s: %+v", dom.Name, id, blocks)
	return v
}

// checkDrive checks everything a finished change must leave: QEMU holds medium ("" = an
// empty drive) from an fdset with the tray closed, does not hold old any more, and keeps
// no fdset for it; xenstore has exactly one vbd for the drive, with the params and type
// libxl records; libxl's JSON config names medium.
func checkDrive(t testing.TB, h *xensim.Host, dom xensim.DomainInfo, medium, old string) {
	t.Helper()
	checkQEMU(t, h, dom, medium, old)
	checkXenstore(t, h, dom, medium)
	checkConfig(t, dom, medium)
}

// checkQEMU checks QEMU's side of checkDrive.
func checkQEMU(t testing.TB, h *xensim.Host, dom xensim.DomainInfo, medium, old string) {
	t.Helper()
	v := qemuView(t, h, dom)
	held := heldFiles(t, h, dom)
	if medium == "" {
		assert.False(t, v.inserted, "%s of %s: medium %q inserted, want an empty drive", dom.Vdev, dom.Name, v.file)
	} else {
		assert.True(t, v.inserted, "%s of %s: no medium inserted, want %s", dom.Vdev, dom.Name, medium)
		assert.False(t, v.trayOpen, "%s of %s: tray open with %s", dom.Vdev, dom.Name, medium)
		assert.True(t, strings.HasPrefix(v.file, "/dev/fdset/"), "%s of %s: inserted file %q, want /dev/fdset/N", dom.Vdev, dom.Name, v.file)
		assert.Contains(t, held, medium, "QEMU of %s does not hold %s", dom.Name, medium)
	}
	if old != "" && old != medium {
		assert.NotContains(t, held, old, "QEMU of %s still holds the old medium %s (fdset left behind?); fdsets %+v", dom.Name, old, v.fdsets)
	}
	opaque := dom.DevID.StubOpaque()
	var stubSets []int64
	for _, s := range v.fdsets {
		for _, fd := range s.FDs {
			if dom.Kind == xensim.KindStubdom && fd.Opaque == opaque {
				stubSets = append(stubSets, s.FdsetID)
			}
			if dom.Kind == xensim.KindDom0 && old != "" && old != medium && strings.HasSuffix(fd.Opaque, ":"+old) {
				t.Errorf("QEMU of %s keeps fdset %d for the old medium (opaque %s)", dom.Name, s.FdsetID, fd.Opaque)
			}
		}
	}
	if dom.Kind == xensim.KindStubdom {
		if medium != "" {
			assert.Len(t, stubSets, 1, "QEMU of %s: fdsets with opaque %s: %v, want exactly the inserted one; all: %+v", dom.Name, opaque, stubSets, v.fdsets)
			if len(stubSets) == 1 {
				assert.Equal(t, fmt.Sprintf("/dev/fdset/%d", stubSets[0]), v.file, "QEMU of %s inserts from another set than the stubdom's", dom.Name)
			}
		} else {
			// The empty-cdrom file's set is in no drive: QEMU before 9.1 drops it once no
			// monitor is connected.
			assert.LessOrEqual(t, len(stubSets), 1, "QEMU of %s: fdsets with opaque %s: %v; all: %+v", dom.Name, opaque, stubSets, v.fdsets)
		}
	}
}

// xsRead reads a node of the host's xenstore ("" when absent).
func xsRead(h *xensim.Host, p string) string {
	v, _ := h.XS().Read(p)
	return v
}

// xsDir lists a node's children (nil when absent).
func xsDir(h *xensim.Host, p string) []string {
	v, _ := h.XS().Directory(p)
	slices.Sort(v)
	return v
}

// checkXenstore checks xenstore's side of checkDrive.
func checkXenstore(t testing.TB, h *xensim.Host, dom xensim.DomainInfo, medium string) {
	t.Helper()
	devid := itoa(uint32(dom.DevID))
	switch dom.Kind {
	case xensim.KindStubdom:
		sid := dom.StubDomID
		params := medium
		if params == "" {
			params = dom.EmptyCDROM
		}
		want := []string{devid}
		assert.Equal(t, want, xsDir(h, fmt.Sprintf("/libxl/%d/device/vbd", sid)), "vbds of stubdom %d in /libxl", sid)
		assert.Equal(t, want, xsDir(h, fmt.Sprintf("/local/domain/0/backend/vbd/%d", sid)), "backend vbds of stubdom %d", sid)
		assert.Equal(t, want, xsDir(h, fmt.Sprintf("/local/domain/%d/device/vbd", sid)), "frontend vbds of stubdom %d", sid)
		lp := xen.LibxlPath(sid, dom.DevID)
		be := xen.BackendPath(0, sid, xen.KindVBD, dom.DevID)
		assert.Equal(t, params, xsRead(h, lp+"/params"), "%s/params", lp)
		assert.Equal(t, "phy", xsRead(h, lp+"/type"), "%s/type", lp)
		assert.Equal(t, be, xsRead(h, lp+"/backend"), "%s/backend", lp)
		assert.Equal(t, params, xsRead(h, be+"/params"), "%s/params", be)
		assert.Equal(t, "4", xsRead(h, be+"/state"), "%s/state (Connected)", be)
		assert.Equal(t, "cdrom", xsRead(h, be+"/device-type"), "%s/device-type", be)
	case xensim.KindDom0:
		params := ""
		if medium != "" {
			params = "aio:" + medium
		}
		assert.Equal(t, []string{devid}, xsDir(h, fmt.Sprintf("/libxl/%d/device/vbd", dom.DomID)), "vbds of domain %d in /libxl", dom.DomID)
		lp := xen.LibxlPath(dom.DomID, dom.DevID)
		be := xen.BackendPath(0, dom.DomID, xen.KindQdisk, dom.DevID)
		assert.Equal(t, params, xsRead(h, lp+"/params"), "%s/params", lp)
		assert.Equal(t, "qdisk", xsRead(h, lp+"/type"), "%s/type", lp)
		assert.Equal(t, params, xsRead(h, be+"/params"), "%s/params", be)
	default:
		t.Fatalf("checkXenstore: guest %s of kind %s", dom.Name, dom.Kind)
	}
}

// libxlDisk is the part of a libxl-json disk entry the checks read.
type libxlDisk struct {
	PdevPath string `json:"pdev_path"`
	Vdev     string `json:"vdev"`
	Format   string `json:"format"`
	IsCDROM  int    `json:"is_cdrom"`
}

// configDisk returns the one disk entry of dom's drive in libxl's JSON config.
func configDisk(t testing.TB, dom xensim.DomainInfo) libxlDisk {
	t.Helper()
	b, err := os.ReadFile(dom.ConfigPath)
	require.NoError(t, err)
	var cfg struct {
		Disks []libxlDisk `json:"disks"`
	}
	require.NoError(t, json.Unmarshal(b, &cfg), "decode %s", dom.ConfigPath)
	var got []libxlDisk
	for _, d := range cfg.Disks {
		if d.Vdev == dom.Vdev {
			got = append(got, d)
		}
	}
	require.Len(t, got, 1, "disks with vdev %s in %s: %+v", dom.Vdev, dom.ConfigPath, cfg.Disks)
	return got[0]
}

// checkConfig checks libxl's JSON config side of checkDrive.
func checkConfig(t testing.TB, dom xensim.DomainInfo, medium string) {
	t.Helper()
	d := configDisk(t, dom)
	assert.Equal(t, 1, d.IsCDROM, "%s: is_cdrom", dom.ConfigPath)
	if medium == "" {
		assert.Equal(t, "", d.PdevPath, "%s: pdev_path of an empty drive", dom.ConfigPath)
		assert.Equal(t, "empty", d.Format, "%s: format of an empty drive", dom.ConfigPath)
	} else {
		assert.Equal(t, medium, d.PdevPath, "%s: pdev_path", dom.ConfigPath)
		assert.Equal(t, "raw", d.Format, "%s: format", dom.ConfigPath)
	}
}
