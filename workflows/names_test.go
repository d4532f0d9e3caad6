package workflows_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/temporal"

	"github.com/cdswap/cdswap/activities"
	"github.com/cdswap/cdswap/workflows"
)

func TestWorkflowID(t *testing.T) {
	tests := []struct {
		name  string
		host  string
		domid uint32
		vdev  string
		want  string
	}{
		{name: "hdc", host: "dom0-a", domid: 7, vdev: "hdc", want: "cdswap-dom0-a-7-hdc"},
		{name: "xvdc", host: "h1.example.org", domid: 12345, vdev: "xvdc", want: "cdswap-h1.example.org-12345-xvdc"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := workflows.WorkflowID(tt.host, tt.domid, tt.vdev); got != tt.want {
				t.Errorf("WorkflowID(%q, %d, %q) = %q, want %q", tt.host, tt.domid, tt.vdev, got, tt.want)
			}
		})
	}
	if got, want := activities.TaskQueue("dom0-a"), "cdswap-host-dom0-a"; got != want {
		t.Errorf("TaskQueue(%q) = %q, want %q", "dom0-a", got, want)
	}
}

// TestActivityNames checks that the Name constants are the method names the SDK derives
// from the method values the workflows call.
func TestActivityNames(t *testing.T) {
	var a *activities.Activities
	tests := []struct {
		name string
		fn   any
	}{
		{activities.NameResolveDrive, a.ResolveDrive},
		{activities.NameInspect, a.Inspect},
		{activities.NameLock, a.Lock},
		{activities.NameUnlock, a.Unlock},
		{activities.NameEject, a.Eject},
		{activities.NameReleaseFdset, a.ReleaseFdset},
		{activities.NameDetachVBD, a.DetachVBD},
		{activities.NameAttachVBD, a.AttachVBD},
		{activities.NameWaitFdset, a.WaitFdset},
		{activities.NameAddFD, a.AddFD},
		{activities.NameChangeMedium, a.ChangeMedium},
		{activities.NameRecord, a.Record},
		{activities.NameVerify, a.Verify},
		{activities.NameInventory, a.Inventory},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			full := runtime.FuncForPC(reflect.ValueOf(tt.fn).Pointer()).Name()
			got := strings.TrimSuffix(full[strings.LastIndex(full, ".")+1:], "-fm")
			if got != tt.name {
				t.Errorf("activity type of %s = %q, want %q", full, got, tt.name)
			}
		})
	}
	// Every exported method of Activities is in the table.
	typ := reflect.TypeOf(a)
	assert.Equal(t, len(tests), typ.NumMethod(), "methods of *Activities")
}

func TestPermanentErrorTypes(t *testing.T) {
	perm := activities.PermanentErrorTypes()
	for _, retryable := range []string{activities.ErrTrayLocked, activities.ErrLockBusy, activities.ErrVBDBusy, activities.ErrVerifyMismatch} {
		assert.NotContains(t, perm, retryable)
	}
	for _, p := range []string{activities.ErrMediumOutsideRoots, activities.ErrUnsupportedDeviceModel, activities.ErrFdsetTimeout} {
		assert.Contains(t, perm, p)
	}
	perm[0] = "changed"
	assert.NotEqual(t, "changed", activities.PermanentErrorTypes()[0], "PermanentErrorTypes shares its slice")
}

func TestStartOptions(t *testing.T) {
	in := testInput()
	o := workflows.StartOptions(in)
	assert.Equal(t, "cdswap-h1-7-hdc", o.ID)
	assert.Equal(t, "cdswap-host-h1", o.TaskQueue)
	assert.Equal(t, enumspb.WORKFLOW_ID_CONFLICT_POLICY_FAIL, o.WorkflowIDConflictPolicy)
	// A task a dead worker took waits this long for another worker (the default is 10 s);
	// a batch's too.
	assert.Equal(t, 2*time.Second, o.WorkflowTaskTimeout)
	assert.Equal(t, 2*time.Second, workflows.FleetStartOptions(workflows.FleetSwapInput{Batch: "b1"}).WorkflowTaskTimeout)
	assert.Equal(t, map[string]any{"requester": "alice", "reason": "monthly ISO", "ticket": "OPS-1"}, o.Memo)
	for _, k := range []struct {
		key  temporal.SearchAttributeKeyKeyword
		want string
	}{
		{workflows.CdswapHost, testHost}, {workflows.CdswapDomain, testDomain}, {workflows.CdswapVdev, testVdev},
		{workflows.CdswapMedium, newISO}, {workflows.CdswapOutcome, "running"},
		{workflows.CdswapRequester, "alice"}, {workflows.CdswapTicket, "OPS-1"}, {workflows.CdswapBatch, ""},
	} {
		got, ok := o.TypedSearchAttributes.GetKeyword(k.key)
		assert.True(t, ok, "attribute %s not set", k.key.GetName())
		assert.Equal(t, k.want, got, "attribute %s", k.key.GetName())
	}
	// A swap of a batch, by an authenticated requester, says so in its memo and attributes.
	in.BatchID, in.RequesterSource = "batch-42", "mtls"
	o = workflows.StartOptions(in)
	assert.Equal(t, map[string]any{"requester": "alice", "requester_source": "mtls", "reason": "monthly ISO", "ticket": "OPS-1",
		"batch": "batch-42"}, o.Memo)
	got, _ := o.TypedSearchAttributes.GetKeyword(workflows.CdswapBatch)
	assert.Equal(t, "batch-42", got)
	// The new fields leave an older input's JSON as it was, and an older input still decodes.
	in.BatchID, in.RequesterSource = "", ""
	data, err := json.Marshal(in)
	require.NoError(t, err)
	assert.NotContains(t, string(data), "BatchID")
	assert.NotContains(t, string(data), "RequesterSource")
	var back workflows.ChangeMediumInput
	require.NoError(t, json.Unmarshal([]byte(`{"Host":"h1","Vdev":"hdc","Requester":"bob"}`), &back))
	assert.Equal(t, workflows.ChangeMediumInput{Host: "h1", Vdev: "hdc", Requester: "bob"}, back)
	var names []string
	for _, k := range workflows.SearchAttributeKeys() {
		names = append(names, k.GetName())
	}
	assert.Equal(t, []string{"CdswapHost", "CdswapDomain", "CdswapVdev", "CdswapMedium", "CdswapOutcome",
		"CdswapRequester", "CdswapTicket", "CdswapBatch"}, names)

	r := workflows.ResolveDriveStartOptions(activities.ResolveDriveInput{Host: "h1", Domain: "web1", Vdev: "hdc"})
	assert.Equal(t, "cdswap-resolve-h1-web1-hdc", r.ID)
	assert.Equal(t, "cdswap-host-h1", r.TaskQueue)
	assert.Equal(t, workflows.ResolveDriveTimeout, r.WorkflowExecutionTimeout)
}

func TestErrorHelpers(t *testing.T) {
	res := workflows.ChangeMediumResult{Outcome: workflows.OutcomeFailedRestored, Old: oldISO, FdsetID: 4}
	activityErr := temporal.NewApplicationError("tray locked", activities.ErrTrayLocked)
	tests := []struct {
		name      string
		err       error
		causeType string
		noWorker  bool
		result    *workflows.ChangeMediumResult
	}{
		{name: "nil", err: nil},
		{name: "plain", err: errors.New("boom")},
		{
			name:      "workflow error with result",
			err:       temporal.NewApplicationErrorWithOptions("failed", workflows.ErrSwapFailedRestored, temporal.ApplicationErrorOptions{Cause: activityErr, Details: []any{res}}),
			causeType: activities.ErrTrayLocked,
			result:    &res,
		},
		{
			name:   "canceled with result",
			err:    temporal.NewCanceledError(res),
			result: &res,
		},
		{
			name:      "wrapped",
			err:       fmt.Errorf("start: %w", temporal.NewApplicationError("x", activities.ErrNoWorker)),
			causeType: activities.ErrNoWorker,
			noWorker:  true,
		},
		{
			name:     "run timed out",
			err:      temporal.NewTimeoutError(enumspb.TIMEOUT_TYPE_START_TO_CLOSE, nil),
			noWorker: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := workflows.CauseType(tt.err); got != tt.causeType {
				t.Errorf("CauseType(%v) = %q, want %q", tt.err, got, tt.causeType)
			}
			if got := workflows.IsNoWorker(tt.err); got != tt.noWorker {
				t.Errorf("IsNoWorker(%v) = %v, want %v", tt.err, got, tt.noWorker)
			}
			got, ok := workflows.ResultFromError(tt.err)
			require.Equal(t, tt.result != nil, ok, "ResultFromError(%v) found a result", tt.err)
			if tt.result != nil {
				assert.Equal(t, *tt.result, got)
			}
		})
	}
}

func TestErrorMessage(t *testing.T) {
	app := temporal.NewNonRetryableApplicationError("domain web1 has no drive hdd", activities.ErrNoSuchDrive, nil)
	timeout := temporal.NewTimeoutError(enumspb.TIMEOUT_TYPE_START_TO_CLOSE, nil)
	tests := []struct {
		name     string
		err      error
		step     string // ErrorMessage(err, "")
		workflow string // ErrorMessage(err, "the workflow")
	}{
		{"application error under wrapping", fmt.Errorf("activity error: %w", app), "domain web1 has no drive hdd", "domain web1 has no drive hdd"},
		{"the first application error wins", temporal.NewApplicationErrorWithCause("change failed", "SwapFailed", app), "change failed", "change failed"},
		{"timeout", fmt.Errorf("wrapped: %w", timeout), "timed out (StartToClose)", "the workflow timed out (StartToClose)"},
		{"canceled", temporal.NewCanceledError(), "canceled", "the workflow was canceled"},
		{"terminated", &temporal.TerminatedError{}, "terminated (by an operator, or by the Temporal CLI or Web UI)", "the workflow was terminated (by an operator, or by the Temporal CLI or Web UI)"},
		{"plain error", errors.New("connection refused"), "connection refused", "connection refused"},
		{"nil", nil, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := workflows.ErrorMessage(tt.err, ""); got != tt.step {
				t.Errorf(`ErrorMessage(%v, "") = %q, want %q`, tt.err, got, tt.step)
			}
			if got := workflows.ErrorMessage(tt.err, "the workflow"); got != tt.workflow {
				t.Errorf(`ErrorMessage(%v, "the workflow") = %q, want %q`, tt.err, got, tt.workflow)
			}
		})
	}
}
