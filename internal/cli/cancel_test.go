package cli

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/converter"

	"github.com/cdswap/cdswap/activities"
	"github.com/cdswap/cdswap/internal/testenv/fakehost"
	"github.com/cdswap/cdswap/workflows"
)

// TestCancelTooLate cancels a swap while it releases the lock at its end, its new medium
// verified: cancel must not promise the old medium back. It waits for the end, says the
// swap had already completed and how to put the old medium back, and exits 1; the run ends
// changed (Completed, not Canceled) with CancelTooLate in its result and the memo's note,
// after the WorkflowExecutionCancelRequested event in its history.
func TestCancelTooLate(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	startHost(t, "h-late", map[string]fakehost.Hook{activities.NameUnlock: blockFirst(entered, release)})
	t.Parallel()
	const id = "cdswap-h-late-7-hdc"
	r := run(t, "insert", "--host", "h-late", "--domain", "web1", "--vdev", "hdc", "--medium", newISO)
	require.Equal(t, ExitOK, r.code, "stderr %s", r.stderr)
	select {
	case <-entered:
	case <-time.After(20 * time.Second):
		t.Fatal("the swap never reached Unlock")
	}
	// Unlock ends once the cancellation is in the history: the run sees it before its end.
	c := testClient(t)
	go func() {
		defer close(release)
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			it := c.GetWorkflowHistory(context.Background(), id, "", false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
			for it.HasNext() {
				ev, err := it.Next()
				if err != nil {
					break
				}
				if ev.GetEventType() == enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED {
					return
				}
			}
		}
	}()

	r = run(t, "cancel", id, "--reason", "wrong image")
	assert.Equal(t, ExitFailure, r.code, "stdout %s", r.stdout)
	assert.Regexp(t, `^cancellation of swap `+id+` \(run \S+\) requested; the swap is verifying or has verified its new medium: waiting for its end\n$`, r.stdout)
	assert.Regexp(t, `^cdswap: too late to cancel swap `+id+`: it had already completed at \d\d:\d\d:\d\d \(changed\); the new medium `+newISO+` stays; to put the old one back run: cdswap insert --host h-late --domain web1 --vdev hdc --medium `+oldISO+"\n$", r.stderr)

	var res workflows.ChangeMediumResult
	require.NoError(t, c.GetWorkflow(context.Background(), id, "").Get(context.Background(), &res))
	assert.Equal(t, workflows.OutcomeChanged, res.Outcome)
	assert.True(t, res.CancelTooLate, "result %+v", res)
	desc, err := describe(context.Background(), c, id, "")
	require.NoError(t, err)
	assert.Equal(t, enumspb.WORKFLOW_EXECUTION_STATUS_COMPLETED, desc.GetWorkflowExecutionInfo().GetStatus())
	var note string
	require.NoError(t, converter.GetDefaultDataConverter().FromPayload(desc.GetWorkflowExecutionInfo().GetMemo().GetFields()[workflows.MemoCancel], &note))
	assert.Regexp(t, `^too late: the new medium was already verified at \S+; the run kept it and ended changed$`, note)
}
