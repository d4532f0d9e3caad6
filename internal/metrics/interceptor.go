package metrics

import (
	"maps"
	"slices"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/interceptor"
	"go.temporal.io/sdk/workflow"
)

// Swaps says which workflows are swaps and how to read how one ended. This package does
// not know the workflows (they may report BatchProgress through it); the worker does.
type Swaps struct {
	// Types are the workflow types that are swaps (workflows.ChangeMediumName).
	Types []string
	// Ended reads how a swap ended from what its workflow function returned; ok false
	// when it cannot tell (the swap is then not counted).
	Ended func(result any, err error) (end SwapEnd, ok bool)
}

// WorkflowInterceptor returns a worker interceptor that keeps cdswap_swaps_in_flight and
// counts each swap's end (SwapEnded). A swap is in flight from the moment a worker runs its
// workflow code until that code returns; a run evicted from the worker's cache stays in
// flight (it has not ended), and a worker that restarts finds its open swaps again as they
// get their next workflow task. The end is counted only when the code returns outside
// replay, so that a run replayed for a query or after an eviction is not counted twice.
func (m *Metrics) WorkflowInterceptor(s Swaps) interceptor.WorkerInterceptor {
	types := map[string]bool{}
	for _, t := range s.Types {
		types[t] = true
	}
	return &workerInterceptor{m: m, types: types, ended: s.Ended}
}

type workerInterceptor struct {
	interceptor.WorkerInterceptorBase
	m     *Metrics
	types map[string]bool
	ended func(any, error) (SwapEnd, bool)
}

func (w *workerInterceptor) InterceptWorkflow(ctx workflow.Context, next interceptor.WorkflowInboundInterceptor) interceptor.WorkflowInboundInterceptor {
	i := &workflowInbound{w: w}
	i.Next = next
	return i
}

type workflowInbound struct {
	interceptor.WorkflowInboundInterceptorBase
	w *workerInterceptor
}

func (i *workflowInbound) ExecuteWorkflow(ctx workflow.Context, in *interceptor.ExecuteWorkflowInput) (any, error) {
	info := workflow.GetInfo(ctx)
	if !i.w.types[info.WorkflowType.Name] {
		return i.Next.ExecuteWorkflow(ctx, in)
	}
	runID := info.WorkflowExecution.RunID
	// Metrics live outside the workflow's state: recording them changes no command, so
	// replay stays deterministic.
	i.w.m.swapRunning(runID)
	res, err := i.Next.ExecuteWorkflow(ctx, in)
	// Not deferred: a run evicted from the cache leaves this function by runtime.Goexit,
	// and is still in flight.
	i.w.m.swapDone(runID)
	if !workflow.IsReplaying(ctx) && i.w.ended != nil {
		if end, ok := i.w.ended(res, err); ok {
			i.w.m.SwapEnded(end)
		}
	}
	return res, err
}

// The batch progress gauge, which a batch workflow sets through its metrics handler
// (BatchProgress): cdswap_batch_drives{batch, state}, plus the SDK's namespace, task_queue
// and workflow_type tags.
const (
	BatchDrivesGauge = "cdswap_batch_drives"
	TagBatch         = "batch"
	TagState         = "state"
)

// BatchProgress sets a batch's gauges, one per state (done, changed, failed, running,
// waiting...), through h: in a workflow, workflow.GetMetricsHandler(ctx), which drops what a
// replay reports. A worker started with --metrics-listen serves them with its own.
func BatchProgress(h client.MetricsHandler, batch string, drives map[string]int) {
	// In key order: workflow code does not range over maps (workflowcheck).
	for _, state := range slices.Sorted(maps.Keys(drives)) {
		h.WithTags(map[string]string{TagBatch: batch, TagState: state}).Gauge(BatchDrivesGauge).Update(float64(drives[state]))
	}
}
