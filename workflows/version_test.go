package workflows_test

import (
	"cmp"
	"github.com/cdswap/cdswap/internal/testenv"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	enumspb "go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/interceptor"
	tlog "go.temporal.io/sdk/log"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/cdswap/cdswap/activities"
	"github.com/cdswap/cdswap/workflows"
)

// The two recorded runs of the path that GetVersion ChangeStubdomReattach changed: the
// same scenario (the worker killed inside a stubdom's ChangeMedium, so that QEMU drops the
// fdset and the new worker's ChangeMedium fails with ErrFdsetGone), run by the code before
// the change, which restored the old medium, and by the code after it, which cycled the PV
// disk and finished the change.
const (
	restoredV1History = "ChangeMedium-stubdom-fdset-gone-restored-v1.json"
	recycledV2History = "ChangeMedium-stubdom-fdset-lost-recycled-v2.json"
)

// forcedVersion is a worker interceptor that answers workflow.GetVersion for one change id
// with a fixed version, without recording a marker: the workflow then runs as if that
// GetVersion call had been replaced by the constant, which is what deleting the guard (and
// keeping only the branch of that version) does to the code. With no changeID it changes
// nothing. With got, it notes what each GetVersion answered, change id to version.
type forcedVersion struct {
	interceptor.WorkerInterceptorBase
	changeID string
	version  workflow.Version
	got      map[string]workflow.Version
}

func (f *forcedVersion) InterceptWorkflow(_ workflow.Context, next interceptor.WorkflowInboundInterceptor) interceptor.WorkflowInboundInterceptor {
	in := &forcedVersionInbound{f: f}
	in.Next = next
	return in
}

type forcedVersionInbound struct {
	interceptor.WorkflowInboundInterceptorBase
	f *forcedVersion
}

func (i *forcedVersionInbound) Init(outbound interceptor.WorkflowOutboundInterceptor) error {
	out := &forcedVersionOutbound{f: i.f}
	out.Next = outbound
	return i.Next.Init(out)
}

type forcedVersionOutbound struct {
	interceptor.WorkflowOutboundInterceptorBase
	f *forcedVersion
}

func (o *forcedVersionOutbound) GetVersion(ctx workflow.Context, changeID string, minSupported, maxSupported workflow.Version) workflow.Version {
	v := o.f.version
	if changeID != o.f.changeID || o.f.changeID == "" {
		v = o.Next.GetVersion(ctx, changeID, minSupported, maxSupported)
	}
	if o.f.got != nil {
		o.f.got[changeID] = v
	}
	return v
}

// forceLocalSteps answers GetVersion local-short-steps with v (forcedVersion).
func forceLocalSteps(v workflow.Version) *forcedVersion {
	return &forcedVersion{changeID: workflows.ChangeLocalSteps, version: v}
}

// readHistory decodes a recorded history of testdata/histories.
func readHistory(t *testing.T, name string) *historypb.History {
	t.Helper()
	f, err := os.Open(filepath.Join(historiesDir, name))
	require.NoError(t, err, "the recorded history %s (see %s/README.md)", name, historiesDir)
	defer f.Close()
	h, err := client.HistoryFromJSON(f, client.HistoryJSONOptions{})
	require.NoError(t, err, "decode %s", name)
	require.NotEmpty(t, h.GetEvents(), "%s holds no events", name)
	return h
}

// replayHistory replays h against ChangeMedium and ResolveDrive with the worker interceptors
// given (none: the code as it is).
func replayHistory(h *historypb.History, interceptors ...interceptor.WorkerInterceptor) error {
	r, err := worker.NewWorkflowReplayerWithOptions(worker.WorkflowReplayerOptions{Interceptors: interceptors})
	if err != nil {
		return err
	}
	workflows.Register(r)
	workflows.RegisterFleet(r)
	// The expected failures log the non-determinism at error level; the test reports it.
	return r.ReplayWorkflowHistory(tlog.NewStructuredLogger(slog.New(slog.DiscardHandler)), h)
}

// scheduledAfterFdsetGone returns the activity scheduled first after the ChangeMedium
// attempt that failed with ErrFdsetGone, and whether h holds such a failure.
func scheduledAfterFdsetGone(h *historypb.History) (string, bool) {
	failed := false
	for _, e := range h.GetEvents() {
		switch e.GetEventType() {
		case enumspb.EVENT_TYPE_ACTIVITY_TASK_FAILED:
			if e.GetActivityTaskFailedEventAttributes().GetFailure().GetApplicationFailureInfo().GetType() == activities.ErrFdsetGone {
				failed = true
			}
		case enumspb.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
			if failed {
				return e.GetActivityTaskScheduledEventAttributes().GetActivityType().GetName(), true
			}
		}
	}
	return "", false
}

// TestStubdomReattachGuard shows that GetVersion ChangeStubdomReattach is what keeps runs of
// the old code replaying. The two histories are real runs of the same scenario (see
// restoredV1History): the v1 one, recorded by the code before the change, has no version
// marker and restores (Eject) after the lost fdset; the v2 one has the marker and cycles the
// PV disk (ReleaseFdset). The current code replays both (as TestReplayHistories does for every
// file); with the guard removed — GetVersion answering 1 unconditionally, the new branch
// for every run — the v1 history fails with a non-determinism error, and so does the v2 one
// with only the old branch kept.
func TestStubdomReattachGuard(t *testing.T) {
	v1 := readHistory(t, restoredV1History)
	v2 := readHistory(t, recycledV2History)

	// The files are the runs described above.
	assert.Empty(t, testenv.VersionMarkers(t, v1), "%s was recorded before the change: no version marker", restoredV1History)
	assert.Equal(t, map[string]workflow.Version{workflows.ChangeStubdomReattach: 1}, testenv.VersionMarkers(t, v2), recycledV2History)
	next, ok := scheduledAfterFdsetGone(v1)
	require.True(t, ok, "%s has no activity failed with %s followed by another step", restoredV1History, activities.ErrFdsetGone)
	assert.Equal(t, activities.NameEject, next, "%s: the old code restores (a forced Eject first) after the lost fdset", restoredV1History)
	next, ok = scheduledAfterFdsetGone(v2)
	require.True(t, ok, "%s has no activity failed with %s followed by another step", recycledV2History, activities.ErrFdsetGone)
	assert.Equal(t, activities.NameReleaseFdset, next, "%s: the new code cycles the PV disk after the lost fdset", recycledV2History)

	runGuardCases(t, []guardCase{
		{name: "v1 with the guard", history: v1},
		{name: "v2 with the guard", history: v2},
		{name: "v1 without the guard (new branch only)", history: v1, force: &forcedVersion{changeID: workflows.ChangeStubdomReattach, version: 1}, wantErr: true},
		{name: "v2 without the guard (new branch only)", history: v2, force: &forcedVersion{changeID: workflows.ChangeStubdomReattach, version: 1}},
		{name: "v2 with the old branch only", history: v2, force: &forcedVersion{changeID: workflows.ChangeStubdomReattach, version: workflow.DefaultVersion}, wantErr: true},
	})
}

// How a recorded run ran a step: as a regular activity (ActivityTaskScheduled), as a local
// one (a LocalActivity marker), or not at all.
const (
	ranRegular = "regular"
	ranLocal   = "local"
	ranNot     = "not run"
)

// howRan reports how the run of h ran step, by its first record in h.
func howRan(t *testing.T, h *historypb.History, step string) string {
	t.Helper()
	for _, e := range h.GetEvents() {
		if a := e.GetActivityTaskScheduledEventAttributes(); a != nil && a.GetActivityType().GetName() == step {
			return ranRegular
		}
		if a := e.GetMarkerRecordedEventAttributes(); a != nil && a.GetMarkerName() == "LocalActivity" {
			var d struct{ ActivityType string }
			ps := a.GetDetails()["data"].GetPayloads()
			require.NotEmpty(t, ps, "LocalActivity marker %d without data", e.GetEventId())
			require.NoError(t, converter.GetDefaultDataConverter().FromPayload(ps[0], &d))
			if d.ActivityType == step {
				return ranLocal
			}
		}
	}
	return ranNot
}

// TestLocalStepsGuard shows that versions 2 and 3 of GetVersion local-short-steps are what
// keep the runs of the version before replaying: the same stubdom insert recorded with
// versions 1, 2 and 3 (v3, v4 and v5 of the corpus) ran DetachVBD and AttachVBD as regular
// activities, then as local ones, and Eject as a regular activity, then as a local one. The
// code replays each; with the guard removed (GetVersion answering one version for every
// run) the recording of the other version fails with a non-determinism error. Version 4
// (v6 of the corpus) runs the steps of version 3 and records no validate-input-limits, whose
// limits it implies: two events fewer (a Version marker and its upsert).
func TestLocalStepsGuard(t *testing.T) {
	v3 := readHistory(t, "ChangeMedium-stubdom-insert-v3.json")
	v4 := readHistory(t, "ChangeMedium-stubdom-insert-v4.json")
	v5 := readHistory(t, "ChangeMedium-stubdom-insert-v5.json")
	v6 := readHistory(t, "ChangeMedium-stubdom-insert-v6.json")
	for h, v := range map[*historypb.History]workflow.Version{v3: 1, v4: workflows.LocalVBDVersion, v5: workflows.LocalEjectVersion, v6: workflows.ImpliedLimitsVersion} {
		assert.Equal(t, v, testenv.VersionMarkers(t, h)[workflows.ChangeLocalSteps], "version of local-short-steps")
	}
	for i, h := range []*historypb.History{v3, v4, v5} {
		assert.Equal(t, workflow.Version(1), testenv.VersionMarkers(t, h)[workflows.ChangeValidateLimits], "v%d: validate-input-limits", i+3)
	}
	assert.NotContains(t, testenv.VersionMarkers(t, v6), workflows.ChangeValidateLimits, "v6: validate-input-limits")
	assert.Len(t, v6.GetEvents(), len(v5.GetEvents())-2, "v6 events: v5's less a Version marker and its upsert")
	ran := map[string][4]string{ // v3, v4, v5, v6
		activities.NameEject:        {ranRegular, ranRegular, ranLocal, ranLocal},
		activities.NameReleaseFdset: {ranLocal, ranLocal, ranLocal, ranLocal},
		activities.NameDetachVBD:    {ranRegular, ranLocal, ranLocal, ranLocal},
		activities.NameAttachVBD:    {ranRegular, ranLocal, ranLocal, ranLocal},
		activities.NameWaitFdset:    {ranRegular, ranRegular, ranRegular, ranRegular},
		activities.NameChangeMedium: {ranLocal, ranLocal, ranLocal, ranLocal},
	}
	for step, want := range ran {
		for i, h := range []*historypb.History{v3, v4, v5, v6} {
			assert.Equal(t, want[i], howRan(t, h, step), "v%d: %s", i+3, step)
		}
	}

	runGuardCases(t, []guardCase{
		{name: "v3 with the guard", history: v3},
		{name: "v4 with the guard", history: v4},
		{name: "v5 with the guard", history: v5},
		{name: "v3 without the guard (version 2 only)", history: v3, force: forceLocalSteps(workflows.LocalVBDVersion), wantErr: true},
		{name: "v4 without the guard (version 1 only)", history: v4, force: forceLocalSteps(1), wantErr: true},
		{name: "v4 without the guard (version 3 only)", history: v4, force: forceLocalSteps(workflows.LocalEjectVersion), wantErr: true},
		{name: "v5 without the guard (version 2 only)", history: v5, force: forceLocalSteps(workflows.LocalVBDVersion), wantErr: true},
		{name: "v6 with the guard", history: v6},
		{name: "v6 without the guard (version 2 only)", history: v6, force: forceLocalSteps(workflows.LocalVBDVersion), wantErr: true},
	})
}

// A guardCase replays a recorded history with the code as it is (force nil) or with one
// GetVersion answered by a constant, and expects a non-determinism error or none.
type guardCase struct {
	name    string
	history *historypb.History
	force   *forcedVersion
	wantErr bool
	// errText is what the replay error says, when not the SDK's non-determinism: a history
	// whose results the code reads wrong can fail on a check of the code first.
	errText string
}

// runGuardCases runs each case as a subtest.
func runGuardCases(t *testing.T, cases []guardCase) {
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			var icpts []interceptor.WorkerInterceptor
			if tt.force != nil {
				icpts = append(icpts, tt.force)
			}
			err := replayHistory(tt.history, icpts...)
			if !tt.wantErr {
				require.NoError(t, err)
				return
			}
			require.Error(t, err, "the replay succeeded: the guard would not be needed")
			// TMPRL1100 is the SDK's code for every non-determinism it detects.
			assert.Contains(t, err.Error(), cmp.Or(tt.errText, "[TMPRL1100]"), "replay error %v", err)
			t.Logf("replay error: %v", err)
		})
	}
}

// markerOrder returns the change ids of h's version markers in the order recorded.
func markerOrder(t *testing.T, h *historypb.History) []string {
	t.Helper()
	var ids []string
	for _, e := range h.GetEvents() {
		m := e.GetMarkerRecordedEventAttributes()
		if m == nil || m.GetMarkerName() != "Version" {
			continue
		}
		var id string
		require.NoError(t, converter.GetDefaultDataConverter().FromPayloads(m.GetDetails()["change-id"], &id))
		ids = append(ids, id)
	}
	return ids
}

// TestVersionsAnsweredAsRecorded replays every recorded ChangeMedium run and checks that each
// GetVersion the code asks is answered with the version the run recorded, whatever order the
// run recorded them in. A version marker that the code asks for in another order, or not at
// all, fails no replay by itself (the SDK matches no command against a version marker), so
// TestReplayHistories alone would not show a wrong answer that changes nothing for a valid
// request, such as validate-input-limits answered 0, which skips the limits.
//
// Since impliedLimitsVersion, ChangeMedium asks local-short-steps before
// validate-input-limits, where runs of versions 1 to 3 recorded validate-input-limits first;
// the SDK reads a workflow task's version markers before it runs the code, so those runs get
// both answers as recorded. Runs of impliedLimitsVersion record and ask no
// validate-input-limits.
func TestVersionsAnsweredAsRecorded(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(historiesDir, "ChangeMedium-*.json"))
	require.NoError(t, err)
	reversed, implied := 0, 0
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			h := readHistory(t, filepath.Base(f))
			recorded := testenv.VersionMarkers(t, h)
			a := &forcedVersion{got: map[string]workflow.Version{}}
			require.NoError(t, replayHistory(h, a))
			for id, v := range recorded {
				assert.Equal(t, v, a.got[id], "GetVersion(%q)", id)
			}
			for id, v := range a.got {
				if _, ok := recorded[id]; !ok {
					assert.Equal(t, workflow.DefaultVersion, v, "GetVersion(%q), not recorded", id)
				}
			}
			order := markerOrder(t, h)
			if i := slices.Index(order, workflows.ChangeValidateLimits); i >= 0 && i < slices.Index(order, workflows.ChangeLocalSteps) {
				reversed++
			}
			if recorded[workflows.ChangeLocalSteps] >= workflows.ImpliedLimitsVersion {
				implied++
				assert.NotContains(t, recorded, workflows.ChangeValidateLimits, "recorded with the limits implied")
				assert.NotContains(t, a.got, workflows.ChangeValidateLimits, "asked with the limits implied")
			}
		})
	}
	// The corpus holds both kinds of run, or the test proves nothing.
	assert.Positive(t, reversed, "runs that recorded validate-input-limits before local-short-steps")
	assert.Positive(t, implied, "runs of version %d of local-short-steps", workflows.ImpliedLimitsVersion)
}

// TestFleetRoundsGuard: a batch recorded with children (v1) replays as children, and one
// recorded in rounds (v2) replays in rounds; answering either with the other's version is
// a non-determinism, so the GetVersion of changeFleetRounds is what keeps both.
func TestFleetRoundsGuard(t *testing.T) {
	v1 := readHistory(t, "FleetSwap-cancel-v1.json")
	v2 := readHistory(t, "FleetSwap-cancel-v2.json")
	assert.NotContains(t, testenv.VersionMarkers(t, v1), workflows.ChangeFleetRounds, "v1")
	assert.Equal(t, workflow.Version(1), testenv.VersionMarkers(t, v2)[workflows.ChangeFleetRounds], "v2")
	force := func(v workflow.Version) *forcedVersion {
		return &forcedVersion{changeID: workflows.ChangeFleetRounds, version: v}
	}
	runGuardCases(t, []guardCase{
		{name: "v1 with the guard", history: v1},
		{name: "v2 with the guard", history: v2},
		{name: "v1 without the guard (rounds)", history: v1, force: force(1), wantErr: true},
		{name: "v2 without the guard (children)", history: v2, force: force(workflow.DefaultVersion), wantErr: true},
	})
}

// TestFleetFindDroppedGuard: a batch paused while its next starts were queued (recorded
// with version 2 of changeFleetRounds) looked for those starts in a round; replayed with
// version 1, which dropped them at once, it is a non-determinism. The batches recorded with
// version 1 (v2 histories) replay as they ran.
func TestFleetFindDroppedGuard(t *testing.T) {
	queued := readHistory(t, "FleetSwap-pause-queued-v3.json")
	paused := readHistory(t, "FleetSwap-pause-resume-v2.json")
	assert.Equal(t, workflows.RoundsFindDroppedVersion, testenv.VersionMarkers(t, queued)[workflows.ChangeFleetRounds])
	assert.Equal(t, workflow.Version(1), testenv.VersionMarkers(t, paused)[workflows.ChangeFleetRounds])
	runGuardCases(t, []guardCase{
		{name: "v3 paused with starts queued, with the guard", history: queued},
		{name: "v2 paused, with the guard", history: paused},
		{name: "v3 paused with starts queued, answered version 1", history: queued,
			force: &forcedVersion{changeID: workflows.ChangeFleetRounds, version: 1}, wantErr: true,
			// Version 1 runs no round where the history has the one that looked, so the
			// next round's call gets that round's result, for drives it does not hold.
			errText: "not made by this code"},
	})
}

// TestLocalAddFDGuard: the v7 dom0 insert (version 5 of local-short-steps) runs AddFD as a
// local step and the v6 one (version 4) as a regular activity; each replays with the guard,
// and answered with the other's version each is a non-determinism. The v7 run resumed after
// its change took ran no Eject, AddFD nor ChangeMedium again.
func TestLocalAddFDGuard(t *testing.T) {
	v6 := readHistory(t, "ChangeMedium-dom0-insert-v6.json")
	v7 := readHistory(t, "ChangeMedium-dom0-insert-v7.json")
	assert.Equal(t, workflows.ImpliedLimitsVersion, testenv.VersionMarkers(t, v6)[workflows.ChangeLocalSteps])
	assert.Equal(t, workflows.LocalAddFDVersion, testenv.VersionMarkers(t, v7)[workflows.ChangeLocalSteps])
	assert.Equal(t, ranRegular, howRan(t, v6, activities.NameAddFD), "v6: AddFD")
	assert.Equal(t, ranLocal, howRan(t, v7, activities.NameAddFD), "v7: AddFD")
	assert.Less(t, len(v7.GetEvents()), len(v6.GetEvents()), "v7 events: one workflow task and no activity events")

	resumed := readHistory(t, "ChangeMedium-worker-crash-after-dom0-change-resumed-v7.json")
	for _, step := range []string{activities.NameEject, activities.NameAddFD, activities.NameChangeMedium} {
		assert.Equal(t, ranNot, howRan(t, resumed, step), "the resumed run ran %s", step)
	}
	assert.Equal(t, ranLocal, howRan(t, resumed, activities.NameRecord))

	runGuardCases(t, []guardCase{
		{name: "v6 with the guard", history: v6},
		{name: "v7 with the guard", history: v7},
		{name: "resumed v7 with the guard", history: resumed},
		{name: "v6 without the guard (version 5)", history: v6, force: forceLocalSteps(workflows.LocalAddFDVersion), wantErr: true},
		{name: "v7 without the guard (version 4)", history: v7, force: forceLocalSteps(workflows.ImpliedLimitsVersion), wantErr: true},
	})
}

// TestCancelAtInspectGuard: a run killed in Eject, then canceled while no worker ran, asked
// Inspect's note when its next task found it canceled, and put the old medium back; without
// the guard (a run recorded before it, canceled that early, ended at once) the replay is a
// non-determinism.
func TestCancelAtInspectGuard(t *testing.T) {
	h := readHistory(t, "ChangeMedium-worker-crash-in-eject-canceled-restored-v7.json")
	assert.Equal(t, workflow.Version(1), testenv.VersionMarkers(t, h)[workflows.ChangeCancelAtInspect])
	runGuardCases(t, []guardCase{
		{name: "with the guard", history: h},
		{name: "without the guard", history: h, force: &forcedVersion{changeID: workflows.ChangeCancelAtInspect, version: workflow.DefaultVersion}, wantErr: true},
	})
}
