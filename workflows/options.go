package workflows

import (
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/cdswap/cdswap/activities"
)

// Tunables of the stubdom fdset wait and of the restore.
const (
	// fdsetPollInterval is WaitFdset's query-fdsets period until the stubdom's vbd
	// connects (libxl polls every 200 ms); a xenstore watch on the vbd frontend wakes the
	// wait when it connects, and it then polls every 10 ms for up to a second
	// (WaitFdsetInput.Wake): the stubdom add-fds soon after connecting.
	fdsetPollInterval = 50 * time.Millisecond
	// fdsetWaitTimeout bounds one WaitFdset attempt; it stays under the step's
	// StartToCloseTimeout so that the activity reports ErrFdsetTimeout itself.
	fdsetWaitTimeout = 25 * time.Second
	// addFDRounds bounds AddFD + ChangeMedium rounds when QEMU lost the fdset in between.
	addFDRounds = 3
	// restoreRounds is how many times the whole restore sequence runs before the run gives
	// up with ErrRestoreFailed; restorePause[i] is the pause after round i+1.
	restoreRounds = 3
)

// Change ids for workflow.GetVersion: each names a change to the commands a running
// ChangeMedium issues (see doc.go), and stays here for as long as histories from before it
// may still be replayed.
const (
	// changeStubdomReattach: a stubdom's lost fdset cycles the PV disk (forwardStubdom)
	// instead of restoring the old medium.
	changeStubdomReattach = "stubdom-reattach-on-fdset-gone"
)

// restorePause is the pause between restore rounds.
func restorePause(round int) time.Duration {
	if round <= 1 {
		return 10 * time.Second
	}
	return 30 * time.Second
}

// WorkflowTaskTimeout is the workflow task timeout ChangeMedium runs (StartOptions) and
// batches (FleetStartOptions) start with. A workflow task that a worker took and then died
// with is given to another worker only after it: the server's default, 10 s, was most of
// the stall after a crash, and for a batch it held a cancel on its way to the running swaps
// until most had ended (a clean-clone CI run; the integration tests kill workers, and every
// worker serves the batch queue). A task takes milliseconds plus its local activities (a
// ChangeMedium step, a batch's round); the SDK keeps a task whose local activities run
// longer alive by completing it every 80 % of the timeout (1.6 s) and going on in a new
// one, so 2 s still bounds the stall after a crash, and a task that times out under load is
// only retried.
const WorkflowTaskTimeout = 2 * time.Second

// stepHeartbeat is every regular step's heartbeat timeout (a local activity has none: a dead
// worker's local steps run again with the workflow task). The worker keeps a heartbeat going while a
// step runs (activities.NewHeartbeatInterceptor; WaitFdset heartbeats from its poll), so a
// step whose worker died is retried this long after its last heartbeat instead of at its
// StartToClose. The SDK sends at most one heartbeat per 80 % of it; 2 s keeps that to a
// call every 1.6 s and survives a second's pause of a busy worker.
const stepHeartbeat = 2 * time.Second

// policy is one step's timeouts and retries.
type policy struct {
	startToClose time.Duration
	heartbeat    time.Duration
	initial      time.Duration
	attempts     int32
}

// stepPolicy sizes each step. Retries start at 100-200 ms and double up to 2 s. StartToClose
// bounds what one attempt may take while its worker is alive: 5 s for the lock steps (Lock
// waits up to the worker's LockWait), 10 s for a QMP or xenstore exchange (blockdev-change-
// medium opens the image; Record retries xenstore conflicts), 15 s for Inspect, 20 s for the
// PV disk steps (libxl waits up to 10 s for a backend state), 30 s for WaitFdset (its own
// wait is fdsetWaitTimeout). Every step heartbeats (stepHeartbeat), so a dead worker is
// noticed within 2 s whatever the StartToClose.
func stepPolicy(step string) policy {
	p := stepPolicyOf(step)
	p.heartbeat = stepHeartbeat
	return p
}

func stepPolicyOf(step string) policy {
	switch step {
	case activities.NameInspect:
		return policy{startToClose: 15 * time.Second, initial: 200 * time.Millisecond, attempts: 3}
	case activities.NameLock:
		// ErrLockBusy is retried for about a minute: xl holds the lock for one change.
		return policy{startToClose: 5 * time.Second, initial: 200 * time.Millisecond, attempts: 30}
	case activities.NameUnlock:
		return policy{startToClose: 5 * time.Second, initial: 200 * time.Millisecond, attempts: 10}
	case activities.NameEject:
		// A locked tray (ErrTrayLocked) is retried 4 times over about 3 s: a Linux guest
		// opens it after the first refused eject.
		return policy{startToClose: 10 * time.Second, initial: 200 * time.Millisecond, attempts: 5}
	case activities.NameReleaseFdset, activities.NameAddFD, activities.NameChangeMedium:
		return policy{startToClose: 10 * time.Second, initial: 100 * time.Millisecond, attempts: 5}
	case activities.NameDetachVBD, activities.NameAttachVBD:
		return policy{startToClose: 20 * time.Second, initial: 200 * time.Millisecond, attempts: 3}
	case activities.NameWaitFdset:
		return policy{startToClose: 30 * time.Second, initial: 200 * time.Millisecond, attempts: 3}
	case activities.NameRecord:
		// xenstore transaction conflicts are retried inside the activity; these attempts
		// cover a busy or restarting xenstored.
		return policy{startToClose: 10 * time.Second, initial: 100 * time.Millisecond, attempts: 10}
	case activities.NameVerify:
		return policy{startToClose: 10 * time.Second, initial: 200 * time.Millisecond, attempts: 3}
	case activities.NameResolveDrive:
		return policy{startToClose: 10 * time.Second, initial: 200 * time.Millisecond, attempts: 3}
	}
	return policy{startToClose: 10 * time.Second, initial: 200 * time.Millisecond, attempts: 3}
}

// activityOptions are the options of step on host's task queue. A restore step gets more
// attempts and a longer backoff cap: the drive must not be left without its old medium.
func activityOptions(host, step string, restore bool) workflow.ActivityOptions {
	p := stepPolicy(step)
	maxInterval := 2 * time.Second
	if restore {
		p.attempts = max(3*p.attempts, 10)
		maxInterval = 10 * time.Second
	}
	return workflow.ActivityOptions{
		TaskQueue:           activities.TaskQueue(host),
		StartToCloseTimeout: p.startToClose,
		HeartbeatTimeout:    p.heartbeat,
		// Wait for a canceled activity to finish before compensating, so that a restore
		// never races with a step still changing the drive.
		WaitForCancellation: true,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval:        p.initial,
			BackoffCoefficient:     2,
			MaximumInterval:        maxInterval,
			MaximumAttempts:        p.attempts,
			NonRetryableErrorTypes: activities.PermanentErrorTypes(),
		},
	}
}
