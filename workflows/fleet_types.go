package workflows

import (
	"fmt"
	"math"
	"time"
)

// Names of the fleet's workflows, activity, queue, signal, query and updates.
const (
	// FleetSwapName is the batch workflow: one ChangeMedium run per drive of a plan.
	FleetSwapName = "FleetSwap"
	// FleetPlanPageName holds one page of a batch's plan as its input, open until the
	// batch releases it (FleetReleaseSignal) or FleetPlanPageKeep ends it.
	FleetPlanPageName = "FleetPlanPage"
	// InventoryName is the workflow that runs activities.Inventory on a host's queue.
	InventoryName = "Inventory"
	// ReadPlanPageName is the activity, on BatchTaskQueue, that reads a plan page back
	// from its holder's history (internal/plan.PageReader).
	ReadPlanPageName = "ReadPlanPage"
	// BatchTaskQueue is the queue of FleetSwap, FleetPlanPage and ReadPlanPage: every
	// cdswap-worker polls it besides its host's, so a batch goes on while any host's
	// worker runs.
	BatchTaskQueue = "cdswap-batch"
	// FleetReleaseSignal ends a FleetPlanPage run.
	FleetReleaseSignal = "release"
	// The updates of a FleetSwap run; each takes a FleetUpdate and returns FleetProgress.
	UpdatePause  = "pause"
	UpdateResume = "resume"
	UpdateStop   = "stop"
	UpdateCancel = "cancel"
)

// Defaults of FleetSwapInput.
const (
	DefaultFleetGlobal       = 20
	DefaultFleetPerHost      = 2
	DefaultCanaryHosts       = 3
	DefaultFailureShare      = 0.05
	DefaultDrivesPerRun      = 1000
	DefaultBusyWait          = 30 * time.Second
	DefaultBusyTries         = 10
	DefaultInventoryTimeout  = 30 * time.Second
	FleetPlanPageKeep        = 30 * 24 * time.Hour
	maxBusyListed            = 1000
	planPageReadStartToClose = 30 * time.Second
)

// FleetDrive is one drive of a checked plan, as the plan pages store it: short JSON
// names, since a 100,000-drive plan is stored whole.
type FleetDrive struct {
	// Line is the drive's line in the plan file (0 for a plan of selectors).
	Line int `json:"l,omitempty"`
	// Host is the dom0 host.
	Host string `json:"h"`
	// Domain is the guest's name (the domid's, when it has one).
	Domain string `json:"d"`
	// DomID is the guest's domid, as the host's inventory found it.
	DomID uint32 `json:"i"`
	// Vdev is the drive.
	Vdev string `json:"v"`
	// Medium is the new medium; "" ejects.
	Medium string `json:"m,omitempty"`
	// Format is the medium's format ("" = raw).
	Format string `json:"f,omitempty"`
	// Old is the medium the inventory found in the drive ("" = empty), for the report.
	Old string `json:"o,omitempty"`
}

// ID is the workflow id of the drive's ChangeMedium run.
func (d FleetDrive) ID() string { return WorkflowID(d.Host, d.DomID, d.Vdev) }

// PlanPage is one page of a batch's plan: the input of a FleetPlanPage run.
type PlanPage struct {
	Batch  string
	Index  int
	Drives []FleetDrive
}

// PlanPageID is the workflow id of a batch's plan page.
func PlanPageID(batch string, page int) string { return fmt.Sprintf("%s-plan-%05d", batch, page) }

// ReadPlanPageInput asks for one page of a batch's plan.
type ReadPlanPageInput struct {
	Batch string
	Page  int
}

// ReadPlanPageResult is a page's drives.
type ReadPlanPageResult struct {
	Drives []FleetDrive
}

// ErrPlanPageMissing is the error type of a plan page that cannot be read back: its holder
// was deleted or is past the namespace's retention. No retry helps.
const ErrPlanPageMissing = "PlanPageMissing"

// FleetLimits bound the swaps in flight.
type FleetLimits struct {
	// Global bounds the swaps in flight over all hosts (default DefaultFleetGlobal).
	Global int
	// PerHost bounds them on each host (default DefaultFleetPerHost): xenopsd serialises
	// a host's device operations for a reason.
	PerHost int
}

// FleetCanary is the first wave: the first drive of each of the first Hosts hosts of the
// plan (in its order) runs alone, and the batch halts if one of them fails.
type FleetCanary struct {
	// Hosts is how many hosts give a canary (default DefaultCanaryHosts).
	Hosts int
	// Off skips the canary wave.
	Off bool
}

// FleetBudget is how many failures stop new swaps. With neither field set, it is
// DefaultFailureShare of the plan, at least one; with both, the smaller.
type FleetBudget struct {
	// Failures stops new swaps at the Failures-th failed drive.
	Failures int
	// Share stops them once this share (0 to 1) of the plan's drives failed.
	Share float64
}

// Allowed is the failure count that spends the budget for a plan of total drives.
func (b FleetBudget) Allowed(total int) int {
	byShare := func(s float64) int { return max(1, int(math.Ceil(s*float64(total)))) }
	switch {
	case b.Failures > 0 && b.Share > 0:
		return min(b.Failures, byShare(b.Share))
	case b.Failures > 0:
		return b.Failures
	case b.Share > 0:
		return byShare(b.Share)
	}
	return byShare(DefaultFailureShare)
}

// FleetSwapInput is a batch: where its plan is, how to run it, and who asked.
type FleetSwapInput struct {
	// Batch is the batch id: the FleetSwap workflow id, the CdswapBatch of every swap.
	Batch string
	// Pages is how many plan pages hold the plan (PlanPageID(Batch, 0..Pages-1)); Total
	// the drives in them, HostTotals the drives per host.
	Pages      int
	Total      int
	HostTotals map[string]int
	Limits     FleetLimits
	Canary     FleetCanary
	Budget     FleetBudget
	// Force ejects trays the guests keep locked.
	Force bool
	// Requester, Reason and Ticket go to every swap.
	Requester, Reason, Ticket string
	// DrivesPerRun: a run continues as new at the first page boundary after this many
	// drives (default DefaultDrivesPerRun), or earlier if the server suggests it.
	DrivesPerRun int
	// BusyWait and BusyTries: a drive whose swap someone else runs is tried again after
	// BusyWait, up to BusyTries times, then reported busy.
	BusyWait  time.Duration
	BusyTries int
	// State is what an earlier run carried over; nil on the first run.
	State *FleetState
	// BenchChildren runs the swaps as children, as batches did before changeFleetRounds,
	// so that the fleet benchmark measures both ways in one run. Production leaves it
	// false.
	BenchChildren bool `json:",omitempty"`
}

func (in *FleetSwapInput) setDefaults() {
	if in.Limits.Global <= 0 {
		in.Limits.Global = DefaultFleetGlobal
	}
	if in.Limits.PerHost <= 0 {
		in.Limits.PerHost = DefaultFleetPerHost
	}
	if in.Canary.Hosts <= 0 {
		in.Canary.Hosts = DefaultCanaryHosts
	}
	if in.DrivesPerRun <= 0 {
		in.DrivesPerRun = DefaultDrivesPerRun
	}
	if in.BusyWait <= 0 {
		in.BusyWait = DefaultBusyWait
	}
	if in.BusyTries <= 0 {
		in.BusyTries = DefaultBusyTries
	}
}

// FleetStatus is where a batch is.
type FleetStatus string

// Batch statuses. The first five are a running batch's; the others a finished one's.
const (
	FleetRunning   FleetStatus = "running"
	FleetPaused    FleetStatus = "paused"
	FleetStopping  FleetStatus = "stopping"
	FleetHalting   FleetStatus = "halting"
	FleetCanceling FleetStatus = "canceling"
	FleetDone      FleetStatus = "done"
	FleetStopped   FleetStatus = "stopped"
	FleetHalted    FleetStatus = "halted"
	FleetCanceled  FleetStatus = "canceled"
)

// Ended reports whether s is a finished batch's status.
func (s FleetStatus) Ended() bool {
	switch s {
	case FleetDone, FleetStopped, FleetHalted, FleetCanceled:
		return true
	}
	return false
}

// ending is the status a winding-down status ends as.
func (s FleetStatus) ending() FleetStatus {
	switch s {
	case FleetStopping:
		return FleetStopped
	case FleetHalting:
		return FleetHalted
	case FleetCanceling:
		return FleetCanceled
	}
	return FleetDone
}

// FleetCounters count finished drives by outcome.
type FleetCounters struct {
	// Done counts every finished drive (each is in one of the counters below, and a
	// restored one in Failed too).
	Done      int
	Changed   int // changed or ejected
	Unchanged int // already held what was asked
	Failed    int // refused, failed, failed-restored, restore-failed, or ended otherwise
	Restored  int // failed, and the old medium was put back
	Canceled  int // canceled (by the batch's cancel, or by a person)
	Busy      int // someone else's swap held the drive through every try: not started
}

func (c *FleetCounters) add(o driveEnd) {
	c.Done++
	switch o {
	case endChanged:
		c.Changed++
	case endUnchanged:
		c.Unchanged++
	case endFailed:
		c.Failed++
	case endRestored:
		c.Failed++
		c.Restored++
	case endCanceled:
		c.Canceled++
	case endBusy:
		c.Busy++
	}
}

// DriveRef names a drive of a plan by page and row.
type DriveRef struct {
	Page, Row int
}

// FleetState is what a FleetSwap run carries to the next: a cursor and counters, never
// the plan.
type FleetState struct {
	// Page is the next page to run; every drive of the earlier pages has finished.
	Page       int
	Status     FleetStatus
	Reason     string
	CanaryDone bool
	Counters   FleetCounters
	Hosts      map[string]FleetCounters
	// Busy lists (up to 1,000) drives reported busy, for the report.
	Busy []DriveRef `json:",omitempty"`
	// Runs counts the runs before this one.
	Runs int
}

// FleetUpdate is the argument of every update: who asks, and why, for the record.
type FleetUpdate struct {
	Requester string
	Reason    string
}

// HostProgress is a host's part of a batch.
type HostProgress struct {
	FleetCounters
	Total   int
	Running int
	Waiting int
}

// FleetProgress is the answer to ProgressQuery, and to every update.
type FleetProgress struct {
	Batch  string
	Status FleetStatus
	// Reason says why the batch halted, stopped or was canceled.
	Reason string `json:",omitempty"`
	// Canary is true while the canary wave runs.
	Canary bool
	// Run counts runs (1 = the first); Page is the page running, of Pages.
	Run, Page, Pages int
	Total            int
	FleetCounters
	// Running are the swaps in flight; Waiting the drives not finished nor running.
	Running, Waiting int
	// FailureBudget is the failure count that stops new swaps.
	FailureBudget int
	Hosts         map[string]HostProgress
	Limits        FleetLimits
}

// FleetSwapResult is how a batch ended. The drives' own outcomes are in their
// ChangeMedium runs (visibility: CdswapBatch = Batch); `cdswap batch report` joins them
// with the plan.
type FleetSwapResult struct {
	Batch  string
	Status FleetStatus
	Reason string `json:",omitempty"`
	Total  int
	FleetCounters
	// NotStarted counts the drives never started (halted, stopped, canceled or busy).
	NotStarted int
	Runs       int
	Busy       []DriveRef `json:",omitempty"`
}

// driveEnd is how one drive of a batch ended.
type driveEnd int

const (
	endChanged driveEnd = iota
	endUnchanged
	endFailed
	endRestored
	endCanceled
	endBusy
)
