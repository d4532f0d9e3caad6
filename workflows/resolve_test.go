package workflows_test

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/temporal"

	"github.com/cdswap/cdswap/activities"
	"github.com/cdswap/cdswap/internal/testenv/fakehost"
	"github.com/cdswap/cdswap/workflows"
)

// resolve runs ResolveDrive against h and returns its result and error.
func resolve(t *testing.T, h *fakehost.Host, in activities.ResolveDriveInput) (activities.ResolveDriveResult, error) {
	t.Helper()
	env := newTestEnv()
	workflows.Register(env)
	h.Register(env)
	env.ExecuteWorkflow(workflows.ResolveDriveName, in)
	require.True(t, env.IsWorkflowCompleted())
	var res activities.ResolveDriveResult
	err := env.GetWorkflowError()
	if err == nil {
		require.NoError(t, env.GetWorkflowResult(&res))
	}
	return res, err
}

func TestResolveDrive(t *testing.T) {
	h := newFakeHost(activities.KindStubdom)
	in := activities.ResolveDriveInput{Host: testHost, Domain: testDomain, Vdev: testVdev}
	res, err := resolve(t, h, in)
	require.NoError(t, err)
	// The run returns the activity's result, its attempt included.
	assert.Equal(t, activities.ResolveDriveResult{Meta: activities.Meta{Attempt: 1}, DomID: testDomID, Name: testDomain, DevID: testDevID, Kind: activities.KindStubdom}, res)
	assert.Equal(t, []activities.ResolveDriveInput{{Host: testHost, Domain: testDomain, Vdev: testVdev}},
		fakehost.Inputs[activities.ResolveDriveInput](h, "ResolveDrive"))
}

func TestResolveDriveErrors(t *testing.T) {
	tests := []struct {
		name     string
		in       activities.ResolveDriveInput
		hook     fakehost.Hook
		calls    int
		wantType string
		// causeType is CauseType's answer when it differs from wantType.
		causeType *string
		noWorker  bool
	}{
		{
			name:     "no such domain",
			in:       activities.ResolveDriveInput{Host: testHost, Domain: "nope", Vdev: testVdev},
			hook:     fakehost.FailWith(activities.ErrNoSuchDomain),
			calls:    1,
			wantType: activities.ErrNoSuchDomain,
		},
		{
			name:     "no such drive",
			in:       activities.ResolveDriveInput{Host: testHost, Domain: testDomain, Vdev: "hdd"},
			hook:     fakehost.FailWith(activities.ErrNoSuchDrive),
			calls:    1,
			wantType: activities.ErrNoSuchDrive,
		},
		{
			name: "no worker",
			in:   activities.ResolveDriveInput{Host: "h9", Domain: testDomain, Vdev: testVdev},
			hook: func(ctx context.Context, n int, in any) error {
				// What the server reports when no worker took the task within
				// ScheduleToStartTimeout.
				return temporal.NewTimeoutError(enumspb.TIMEOUT_TYPE_SCHEDULE_TO_START, nil)
			},
			calls:    1,
			wantType: activities.ErrNoWorker,
			noWorker: true,
		},
		{
			name: "transient errors exhaust the attempts",
			in:   activities.ResolveDriveInput{Host: testHost, Domain: testDomain, Vdev: testVdev},
			hook: func(ctx context.Context, n int, in any) error {
				return errors.New("dial xenstored: connection refused")
			},
			calls:     3,
			wantType:  workflows.ErrResolveFailed,
			causeType: new(""), // a plain Go error has no type
		},
		{
			name:     "no domain",
			in:       activities.ResolveDriveInput{Host: testHost, Vdev: testVdev},
			wantType: activities.ErrBadInput,
		},
		{
			name:     "no host",
			in:       activities.ResolveDriveInput{Domain: testDomain, Vdev: testVdev},
			wantType: activities.ErrBadInput,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newFakeHost(activities.KindDom0)
			if tt.hook != nil {
				h.On("ResolveDrive", tt.hook)
			}
			_, err := resolve(t, h, tt.in)
			appErr := requireAppError(t, err, tt.wantType)
			wantCause := tt.wantType
			if tt.causeType != nil {
				wantCause = *tt.causeType
			}
			assert.Equal(t, wantCause, workflows.CauseType(err))
			assert.Equal(t, tt.noWorker, workflows.IsNoWorker(err), "IsNoWorker(%v)", err)
			assert.Len(t, h.Names(), tt.calls)
			if tt.noWorker {
				assert.Contains(t, appErr.Error(), "no cdswap-worker is polling host h9 (task queue cdswap-host-h9)")
			}
		})
	}
}
