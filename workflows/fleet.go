package workflows

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/log"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/cdswap/cdswap/activities"
)

// RegisterFleet registers FleetSwap and FleetPlanPage, for a worker of BatchTaskQueue.
func RegisterFleet(r Registry) {
	r.RegisterWorkflowWithOptions(FleetSwap, workflow.RegisterOptions{Name: FleetSwapName})
	r.RegisterWorkflowWithOptions(FleetPlanPage, workflow.RegisterOptions{Name: FleetPlanPageName})
}

// RegisterInventory registers Inventory, for a worker of a host's queue.
func RegisterInventory(r Registry) {
	r.RegisterWorkflowWithOptions(Inventory, workflow.RegisterOptions{Name: InventoryName})
}

// FleetSwap runs a batch: one ChangeMedium run per drive of the plan whose pages
// PlanPageID(in.Batch, i) hold, each with the drive's own workflow id (WorkflowID(host,
// domid, vdev)), so that a batch and a person never change one drive at once: a drive whose
// swap someone else runs is tried again later (BusyWait, BusyTries), then reported busy,
// never raced. The swaps start and end in rounds (changeFleetRounds, fleet_rounds.go);
// runs recorded before it ran them as children with ParentClosePolicy ABANDON.
//
// A run reads one page at a time (ReadPlanPage on BatchTaskQueue). On the first page, the
// canary wave (FleetCanary) runs first; a failed canary halts the batch. Then the page's
// drives start in a sliding window, at most Limits.Global in flight and Limits.PerHost on
// one host, the hosts taken in turn. Once the failure budget is spent (FleetBudget) no new
// swap starts and the batch halts when the running ones end. Updates pause, resume, stop
// (no new swaps; the running ones finish) and cancel (the running swaps are canceled and
// put their old medium back) are validated, so a request that makes no sense is refused
// without an event in the history; ProgressQuery answers FleetProgress.
//
// At a page boundary, once DrivesPerRun drives ran or the server suggests it, the run
// continues as new carrying only FleetState (a page cursor and counters). A run first
// drains: it waits for all its swaps to end, so that the next run owns none and needs no
// way to learn of an earlier run's swaps. The cost is the page's tail: the window narrows
// while its last swaps end (the repo's DESIGN.md, "Fleet: swaps in rounds, not children").
//
// A cancellation of the FleetSwap run itself (Temporal's cancel) cancels its swaps like
// the cancel update, waits for them to put their media back, and ends Canceled.
func FleetSwap(ctx workflow.Context, in FleetSwapInput) (FleetSwapResult, error) {
	in.setDefaults()
	f := &fleet{
		in:         in,
		log:        log.With(workflow.GetLogger(ctx), "batch", in.Batch),
		running:    map[string]int{},
		cancels:    map[string]workflow.CancelFunc{},
		tries:      map[DriveRef]int{},
		drives:     map[DriveRef]roundDrive{},
		runs:       map[DriveRef]FleetSwapRun{},
		cancelSent: map[DriveRef]bool{},
	}
	if in.State != nil {
		f.st = *in.State
	} else {
		f.st = FleetState{Status: FleetRunning}
	}
	if f.st.Hosts == nil {
		f.st.Hosts = map[string]FleetCounters{}
	}
	if err := f.setHandlers(ctx); err != nil {
		return FleetSwapResult{}, err
	}
	v := workflow.GetVersion(ctx, changeFleetRounds, workflow.DefaultVersion, roundsFindDroppedVersion)
	f.rounds = v >= 1 && !in.BenchChildren
	f.findDropped = v >= roundsFindDroppedVersion
	return f.run(ctx)
}

// fleet is the state of one FleetSwap run.
type fleet struct {
	in  FleetSwapInput
	st  FleetState
	log log.Logger

	canary   bool           // the canary wave runs
	inFlight int            // swaps started (or queued for a round) and not ended, all hosts
	running  map[string]int // the same per host
	retrying int            // busy drives waiting for their next try
	// cancels cancels the running children, by child workflow id.
	cancels map[string]workflow.CancelFunc
	// tries counts the starts of a drive refused as busy.
	tries map[DriveRef]int
	// tick changes whenever something the loop waits on changes.
	tick int
	// canaryFailed says which canary failed, "" if none did.
	canaryFailed string
	drivesRun    int // drives of the pages this run finished

	// rounds: the swaps start and end in rounds (changeFleetRounds), not as children.
	rounds     bool
	toStart    []FleetStart              // swaps the next round starts
	toCancel   []FleetSwapRun            // swaps the next round cancels
	drives     map[DriveRef]roundDrive   // drives counted in flight: to start, or running
	runs       map[DriveRef]FleetSwapRun // swaps started and not ended
	cancelSent map[DriveRef]bool         // swaps asked to cancel
	unsure     []FleetStart              // starts of a failed round: made or not
	idle       int                       // rounds in a row that saw nothing
	// findDropped: starts queued when the batch was paused, stopped or canceled are looked
	// for before they are dropped (roundsFindDroppedVersion).
	findDropped bool
}

func (f *fleet) setHandlers(ctx workflow.Context) error {
	if err := workflow.SetQueryHandler(ctx, ProgressQuery, func() (FleetProgress, error) { return f.progress(), nil }); err != nil {
		return fmt.Errorf("set query handler: %w", err)
	}
	updates := []struct {
		name     string
		validate func() error
		apply    func(FleetUpdate)
	}{
		{UpdatePause, func() error { return f.want("pause", FleetRunning) }, func(u FleetUpdate) {
			f.setStatus(FleetPaused, "")
		}},
		{UpdateResume, func() error { return f.want("resume", FleetPaused) }, func(u FleetUpdate) {
			f.setStatus(FleetRunning, "")
		}},
		{UpdateStop, func() error { return f.want("stop", FleetRunning, FleetPaused) }, func(u FleetUpdate) {
			f.setStatus(FleetStopping, "stopped by "+who(u))
		}},
		{UpdateCancel, func() error { return f.want("cancel", FleetRunning, FleetPaused, FleetStopping, FleetHalting) }, func(u FleetUpdate) {
			f.cancelAll("canceled by " + who(u))
		}},
	}
	for _, u := range updates {
		err := workflow.SetUpdateHandlerWithOptions(ctx, u.name,
			func(ctx workflow.Context, req FleetUpdate) (FleetProgress, error) {
				f.log.Info("Batch update", "update", u.name, "requester", req.Requester, "reason", req.Reason)
				u.apply(req)
				return f.progress(), nil
			},
			workflow.UpdateHandlerOptions{Validator: func(ctx workflow.Context, req FleetUpdate) error {
				if err := ValidateAudit(req.Requester, req.Reason, ""); err != nil {
					return err
				}
				return u.validate()
			}})
		if err != nil {
			return fmt.Errorf("set update handler %s: %w", u.name, err)
		}
	}
	return nil
}

// want refuses an update unless the batch's status is one of ok.
func (f *fleet) want(what string, ok ...FleetStatus) error {
	if slices.Contains(ok, f.st.Status) {
		return nil
	}
	hint := ""
	switch {
	case f.st.Status == FleetPaused && what == "pause":
		hint = ": it is paused already; resume it to go on"
	case f.st.Status == FleetRunning && what == "resume":
		hint = ": it is running, not paused"
	case f.st.Status == FleetCanceling:
		hint = ": it is being canceled already"
	default:
		hint = fmt.Sprintf(" while it is %s", f.st.Status)
	}
	return fmt.Errorf("batch %s cannot %s%s", f.in.Batch, what, hint)
}

func who(u FleetUpdate) string {
	s := u.Requester
	if s == "" {
		s = "someone"
	}
	if u.Reason != "" {
		s += " (" + u.Reason + ")"
	}
	return s
}

func (f *fleet) setStatus(s FleetStatus, reason string) {
	f.st.Status = s
	if reason != "" {
		f.st.Reason = reason
	}
	f.tick++
}

// active reports whether new swaps may be planned: running or paused.
func (f *fleet) active() bool { return f.st.Status == FleetRunning || f.st.Status == FleetPaused }

// cancelAll asks every running swap to cancel (each puts its old medium back).
func (f *fleet) cancelAll(reason string) {
	f.setStatus(FleetCanceling, reason)
	if f.rounds {
		f.cancelRounds()
		return
	}
	// The keys are sorted before use, so the map's order never shows.
	//workflowcheck:ignore
	for _, id := range slices.Sorted(maps.Keys(f.cancels)) {
		f.cancels[id]()
	}
}

// halt stops new swaps for reason; the running ones finish.
func (f *fleet) halt(reason string) {
	if f.active() {
		f.log.Warn("Batch halting", "reason", reason)
		f.setStatus(FleetHalting, reason)
	}
}

func (f *fleet) run(ctx workflow.Context) (FleetSwapResult, error) {
	dctx, _ := workflow.NewDisconnectedContext(ctx)
	for f.st.Page < f.in.Pages && f.active() {
		drives, err := f.readPage(ctx, f.st.Page)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			f.halt(fmt.Sprintf("plan page %d cannot be read: %s", f.st.Page, ErrorMessage(err, "")))
			break
		}
		rows := make([]int, len(drives))
		for i := range rows {
			rows[i] = i
		}
		if f.st.Page == 0 && !f.in.Canary.Off {
			canaries := pickCanaries(drives, f.in.Canary.Hosts)
			if !f.st.CanaryDone {
				f.canary = true
				f.runRows(ctx, drives, canaries)
				f.canary = false
				f.st.CanaryDone = true
				if f.canaryFailed != "" {
					f.halt("canary " + f.canaryFailed)
				}
			}
			rows = slices.DeleteFunc(rows, func(r int) bool { return slices.Contains(canaries, r) })
		}
		f.runRows(ctx, drives, rows)
		if ctx.Err() != nil || !f.active() {
			break
		}
		f.st.Page++
		f.drivesRun += len(drives)
		if f.st.Page < f.in.Pages && (f.drivesRun >= f.in.DrivesPerRun || workflow.GetInfo(ctx).GetContinueAsNewSuggested()) {
			return f.continueAsNew(ctx)
		}
	}
	// Whatever ended the loop, no swap may be left running: a canceled batch waits for
	// its swaps to put their media back.
	if ctx.Err() != nil && f.st.Status != FleetCanceling {
		f.cancelAll("the batch workflow was canceled")
	}
	for f.rounds && f.inFlight > 0 {
		f.round(dctx)
	}
	_ = workflow.Await(dctx, func() bool { return f.inFlight == 0 && f.retrying == 0 })
	f.st.Status = f.st.Status.ending()
	f.upsertStatus(dctx)
	f.release(dctx)
	_ = workflow.Await(dctx, func() bool { return workflow.AllHandlersFinished(dctx) })
	res := f.result()
	f.log.Info("Batch ended", "status", res.Status, "done", res.Done, "failed", res.Failed, "not_started", res.NotStarted)
	if ctx.Err() != nil {
		return FleetSwapResult{}, temporal.NewCanceledError(res)
	}
	return res, nil
}

// continueAsNew carries the cursor and counters to a new run, once the update handlers
// are done.
func (f *fleet) continueAsNew(ctx workflow.Context) (FleetSwapResult, error) {
	if err := workflow.Await(ctx, func() bool { return workflow.AllHandlersFinished(ctx) }); err != nil {
		return FleetSwapResult{}, err
	}
	next := f.in
	st := f.st
	st.Runs++
	st.Hosts = maps.Clone(f.st.Hosts)
	next.State = &st
	f.log.Info("Batch continues as new", "page", st.Page, "done", st.Counters.Done)
	return FleetSwapResult{}, workflow.NewContinueAsNewError(ctx, FleetSwapName, next)
}

// readPage reads a plan page back from its holder.
func (f *fleet) readPage(ctx workflow.Context, page int) ([]FleetDrive, error) {
	opts := workflow.ActivityOptions{
		TaskQueue:           BatchTaskQueue,
		StartToCloseTimeout: planPageReadStartToClose,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval:        time.Second,
			BackoffCoefficient:     2,
			MaximumInterval:        30 * time.Second,
			MaximumAttempts:        20,
			NonRetryableErrorTypes: []string{ErrPlanPageMissing},
		},
	}
	var out ReadPlanPageResult
	err := workflow.ExecuteActivity(workflow.WithActivityOptions(ctx, opts), ReadPlanPageName,
		ReadPlanPageInput{Batch: f.in.Batch, Page: page}).Get(ctx, &out)
	return out.Drives, err
}

// pickCanaries returns the rows of the first drive of each of the first n hosts.
func pickCanaries(drives []FleetDrive, n int) []int {
	var rows []int
	seen := map[string]bool{}
	for i, d := range drives {
		if len(rows) == n {
			break
		}
		if !seen[d.Host] {
			seen[d.Host] = true
			rows = append(rows, i)
		}
	}
	return rows
}

// runRows runs the given rows of a page within the limits and returns once each has ended
// or will not start (the batch stopped, halted or was canceled).
func (f *fleet) runRows(ctx workflow.Context, drives []FleetDrive, rows []int) {
	queue := map[string][]int{} // rows not started, per host, in plan order
	var hosts []string          // hosts in order of first appearance: the turn order
	for _, r := range rows {
		h := drives[r].Host
		if _, ok := queue[h]; !ok {
			hosts = append(hosts, h)
		}
		queue[h] = append(queue[h], r)
	}
	pending := len(rows)
	turn := 0
	requeue := func(r int) {
		h := drives[r].Host
		queue[h] = append([]int{r}, queue[h]...)
		pending++
	}
	for {
		// Start what the limits allow, a host at a time in turn.
		for f.st.Status == FleetRunning && pending > 0 && f.inFlight < f.in.Limits.Global && ctx.Err() == nil {
			started := false
			for i := range hosts {
				h := hosts[(turn+i)%len(hosts)]
				if len(queue[h]) == 0 || f.running[h] >= f.in.Limits.PerHost {
					continue
				}
				r := queue[h][0]
				queue[h] = queue[h][1:]
				pending--
				turn = (turn + i + 1) % len(hosts)
				if f.rounds {
					f.queueStart(ctx, drives[r], DriveRef{Page: f.st.Page, Row: r}, requeue)
				} else {
					f.start(ctx, drives[r], DriveRef{Page: f.st.Page, Row: r}, requeue)
				}
				started = true
				break
			}
			if !started {
				break
			}
		}
		if f.inFlight == 0 && f.retrying == 0 && (pending == 0 || !f.active() || ctx.Err() != nil) {
			return
		}
		if f.rounds && f.inFlight > 0 {
			f.round(ctx)
			if ctx.Err() != nil {
				return // canceled: run drives the rounds that are left
			}
			continue
		}
		seen := f.tick
		if err := workflow.Await(ctx, func() bool { return f.tick != seen }); err != nil {
			return // canceled: run waits for the swaps on a disconnected context
		}
	}
}

// childOptions are the options of a drive's ChangeMedium child: the single swap's id,
// queue, memo and search attributes, plus CdswapBatch, and ABANDON so that no close of
// the batch's run ends the swap half-way (a cancel is explicit, and waited for).
func (f *fleet) childOptions(in ChangeMediumInput) workflow.ChildWorkflowOptions {
	so := StartOptions(in)
	return workflow.ChildWorkflowOptions{
		WorkflowID:            so.ID,
		TaskQueue:             so.TaskQueue,
		WorkflowTaskTimeout:   so.WorkflowTaskTimeout,
		WorkflowIDReusePolicy: enumspb.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE,
		ParentClosePolicy:     enumspb.PARENT_CLOSE_POLICY_ABANDON,
		WaitForCancellation:   true,
		Memo:                  so.Memo,
		TypedSearchAttributes: so.TypedSearchAttributes, // CdswapBatch among them, from in.BatchID
	}
}

// changeInput is the ChangeMedium request of a drive of the batch.
func (f *fleet) changeInput(d FleetDrive) ChangeMediumInput {
	in := ChangeMediumInput{Host: d.Host, Domain: d.Domain, DomID: d.DomID, Vdev: d.Vdev, Medium: d.Medium,
		Format: d.Format, Force: f.in.Force, Requester: f.in.Requester, Reason: f.in.Reason, Ticket: f.in.Ticket,
		BatchID: f.in.Batch}
	if in.Medium != "" && in.Format == "" {
		in.Format = activities.FormatRaw
	}
	return in
}

// start starts a drive's child and a coroutine that records its end.
func (f *fleet) start(ctx workflow.Context, d FleetDrive, ref DriveRef, requeue func(int)) {
	id := d.ID()
	cctx, cancel := workflow.WithCancel(ctx)
	cctx = workflow.WithChildOptions(cctx, f.childOptions(f.changeInput(d)))
	fut := workflow.ExecuteChildWorkflow(cctx, ChangeMediumName, f.changeInput(d))
	f.inFlight++
	f.running[d.Host]++
	f.cancels[id] = cancel
	f.tick++
	dctx, _ := workflow.NewDisconnectedContext(ctx)
	workflow.Go(dctx, func(gctx workflow.Context) {
		var res ChangeMediumResult
		err := fut.GetChildWorkflowExecution().Get(gctx, nil)
		if err == nil {
			err = fut.Get(gctx, &res)
		}
		f.inFlight--
		f.running[d.Host]--
		delete(f.cancels, id)
		f.tick++
		var busy *temporal.ChildWorkflowExecutionAlreadyStartedError
		if errors.As(err, &busy) {
			f.busy(ctx, gctx, d, ref, requeue)
			return
		}
		e, msg := judge(res, err)
		f.record(d, e, msg)
	})
}

// busy handles a drive whose swap someone else runs: try again after BusyWait unless the
// batch winds down, or report it busy after BusyTries. It runs in the drive's coroutine,
// so it blocks on that coroutine's gctx (blocking on the batch's ctx from another
// coroutine panics the workflow task); ctx only says whether the batch was canceled.
func (f *fleet) busy(ctx, gctx workflow.Context, d FleetDrive, ref DriveRef, requeue func(int)) {
	f.tries[ref]++
	try := f.tries[ref]
	if try >= f.in.BusyTries {
		f.log.Warn("Drive busy with another swap; giving up", "host", d.Host, "domid", d.DomID, "vdev", d.Vdev, "tries", try)
		f.count(d, endBusy)
		if len(f.st.Busy) < maxBusyListed {
			f.st.Busy = append(f.st.Busy, ref)
		}
		return
	}
	f.log.Info("Drive busy with another swap; trying again later", "host", d.Host, "domid", d.DomID, "vdev", d.Vdev, "try", try)
	f.retrying++
	_, _ = workflow.AwaitWithTimeout(gctx, f.in.BusyWait, func() bool { return !f.active() || ctx.Err() != nil })
	f.retrying--
	f.tick++
	if !f.active() || ctx.Err() != nil {
		return // not started: the batch winds down
	}
	requeue(ref.Row)
}

// record counts a swap's end; msg is a failed one's message.
func (f *fleet) record(d FleetDrive, e driveEnd, msg string) {
	f.count(d, e)
	if e == endFailed || e == endRestored {
		what := fmt.Sprintf("%s (%s of %s on host %s): %s", d.ID(), d.Vdev, d.Domain, d.Host, msg)
		if f.canary {
			// The canary wave halts the batch itself, naming the canary.
			if f.canaryFailed == "" {
				f.canaryFailed = what
			}
			return
		}
		if allowed := f.in.Budget.Allowed(f.in.Total); f.st.Counters.Failed >= allowed {
			f.halt(fmt.Sprintf("failure budget spent: %d of %d drives failed (budget %d); last: %s", f.st.Counters.Failed, f.in.Total, allowed, what))
		}
	}
}

func (f *fleet) count(d FleetDrive, e driveEnd) {
	f.st.Counters.add(e)
	h := f.st.Hosts[d.Host]
	h.add(e)
	f.st.Hosts[d.Host] = h
	f.tick++
}

// classify says how a child ended.
func classify(res ChangeMediumResult, err error) driveEnd {
	if err == nil {
		if res.Outcome == OutcomeUnchanged {
			return endUnchanged
		}
		return endChanged
	}
	if r, ok := ResultFromError(err); ok {
		res = r
	}
	switch {
	case res.Outcome == OutcomeFailedRestored:
		return endRestored
	case res.Outcome == OutcomeCanceled, temporal.IsCanceledError(err):
		return endCanceled
	}
	return endFailed
}

// upsertStatus sets CdswapOutcome to the batch's status, if the starter set it.
func (f *fleet) upsertStatus(ctx workflow.Context) {
	if _, ok := workflow.GetTypedSearchAttributes(ctx).GetKeyword(CdswapOutcome); !ok {
		return
	}
	if err := workflow.UpsertTypedSearchAttributes(ctx, CdswapOutcome.ValueSet(string(f.st.Status))); err != nil {
		f.log.Error("Upsert of CdswapOutcome failed", "error", err)
	}
}

// release ends the plan pages' holders: the batch needs them no more. A holder already
// gone is no matter.
func (f *fleet) release(ctx workflow.Context) {
	const group = 100 // bounds the pending signals
	for first := 0; first < f.in.Pages; first += group {
		var futs []workflow.Future
		for p := first; p < min(first+group, f.in.Pages); p++ {
			futs = append(futs, workflow.SignalExternalWorkflow(ctx, PlanPageID(f.in.Batch, p), "", FleetReleaseSignal, nil))
		}
		for _, fut := range futs {
			_ = fut.Get(ctx, nil)
		}
	}
}

func (f *fleet) result() FleetSwapResult {
	return FleetSwapResult{Batch: f.in.Batch, Status: f.st.Status, Reason: f.st.Reason, Total: f.in.Total,
		FleetCounters: f.st.Counters, NotStarted: f.in.Total - f.st.Counters.Done + f.st.Counters.Busy,
		Runs: f.st.Runs + 1, Busy: f.st.Busy}
}

func (f *fleet) progress() FleetProgress {
	p := FleetProgress{Batch: f.in.Batch, Status: f.st.Status, Reason: f.st.Reason, Canary: f.canary,
		Run: f.st.Runs + 1, Page: f.st.Page, Pages: f.in.Pages, Total: f.in.Total, FleetCounters: f.st.Counters,
		FailureBudget: f.in.Budget.Allowed(f.in.Total), Limits: f.in.Limits,
		Hosts: map[string]HostProgress{}}
	running, perHost := f.runningOn()
	p.Running = running
	p.Waiting = max(0, p.Total-p.Done-p.Running)
	// It fills another map, whose order cannot show; and a query issues no commands.
	//workflowcheck:ignore
	for h, total := range f.in.HostTotals {
		hp := HostProgress{FleetCounters: f.st.Hosts[h], Total: total, Running: perHost[h]}
		hp.Waiting = max(0, total-hp.Done-hp.Running)
		p.Hosts[h] = hp
	}
	return p
}

// FleetPlanPage holds one page of a batch's plan: the page is its input, which
// ReadPlanPage reads back from the first event of its history. It stays open, so that
// the namespace's retention cannot remove it while its batch runs, until the batch
// signals FleetReleaseSignal, or for FleetPlanPageKeep at most.
func FleetPlanPage(ctx workflow.Context, page PlanPage) error {
	ch := workflow.GetSignalChannel(ctx, FleetReleaseSignal)
	sel := workflow.NewSelector(ctx)
	sel.AddReceive(ch, func(c workflow.ReceiveChannel, _ bool) { c.Receive(ctx, nil) })
	sel.AddFuture(workflow.NewTimer(ctx, FleetPlanPageKeep), func(workflow.Future) {})
	sel.Select(ctx)
	return nil
}

// PlanPageStartOptions are the options of a plan page's holder.
func PlanPageStartOptions(batch string, page int) client.StartWorkflowOptions {
	return client.StartWorkflowOptions{
		ID:                       PlanPageID(batch, page),
		TaskQueue:                BatchTaskQueue,
		WorkflowIDConflictPolicy: enumspb.WORKFLOW_ID_CONFLICT_POLICY_FAIL,
		WorkflowIDReusePolicy:    enumspb.WORKFLOW_ID_REUSE_POLICY_REJECT_DUPLICATE,
		WorkflowExecutionTimeout: FleetPlanPageKeep + time.Hour,
		TypedSearchAttributes:    temporal.NewSearchAttributes(CdswapBatch.ValueSet(batch)),
	}
}

// FleetStartOptions are the options of a batch's FleetSwap run: CdswapBatch (its own id)
// and CdswapOutcome "running" (set to the status at the end), CdswapRequester and
// CdswapTicket for the audit.
func FleetStartOptions(in FleetSwapInput) client.StartWorkflowOptions {
	return client.StartWorkflowOptions{
		ID:                                       in.Batch,
		TaskQueue:                                BatchTaskQueue,
		WorkflowTaskTimeout:                      WorkflowTaskTimeout,
		WorkflowIDConflictPolicy:                 enumspb.WORKFLOW_ID_CONFLICT_POLICY_FAIL,
		WorkflowIDReusePolicy:                    enumspb.WORKFLOW_ID_REUSE_POLICY_REJECT_DUPLICATE,
		WorkflowExecutionErrorWhenAlreadyStarted: true,
		Memo:                                     map[string]any{"requester": in.Requester, "reason": in.Reason, "ticket": in.Ticket},
		TypedSearchAttributes: temporal.NewSearchAttributes(
			CdswapBatch.ValueSet(in.Batch),
			CdswapOutcome.ValueSet(string(OutcomeRunning)),
			CdswapRequester.ValueSet(in.Requester),
			CdswapTicket.ValueSet(in.Ticket),
		),
	}
}

// Inventory runs activities.Inventory on the host's queue; as ResolveDrive, it fails with
// activities.ErrNoWorker when no worker takes the activity within resolveScheduleToStart.
func Inventory(ctx workflow.Context, in activities.InventoryInput) (activities.InventoryResult, error) {
	if in.Host == "" {
		return activities.InventoryResult{}, badInput("no host given")
	}
	opts := activityOptions(in.Host, activities.NameInventory, false)
	opts.StartToCloseTimeout = DefaultInventoryTimeout
	opts.ScheduleToStartTimeout = resolveScheduleToStart
	opts.WaitForCancellation = false // it only reads
	var out activities.InventoryResult
	err := workflow.ExecuteActivity(workflow.WithActivityOptions(ctx, opts), act.Inventory, in).Get(ctx, &out)
	var timeout *temporal.TimeoutError
	if errors.As(err, &timeout) && timeout.TimeoutType() == enumspb.TIMEOUT_TYPE_SCHEDULE_TO_START {
		return out, temporal.NewNonRetryableApplicationError(fmt.Sprintf(
			"no cdswap-worker is polling host %s (task queue %s): start cdswap-worker on %s",
			in.Host, activities.TaskQueue(in.Host), in.Host), activities.ErrNoWorker, err)
	}
	return out, err
}

// InventoryStartOptions are the options of an Inventory run of host; nonce makes its id
// unique.
func InventoryStartOptions(host, nonce string) client.StartWorkflowOptions {
	return client.StartWorkflowOptions{
		ID:                       fmt.Sprintf("cdswap-inventory-%s-%s", host, nonce),
		TaskQueue:                activities.TaskQueue(host),
		WorkflowExecutionTimeout: DefaultInventoryTimeout + ResolveDriveTimeout,
	}
}
