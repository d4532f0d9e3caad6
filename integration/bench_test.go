package integration

import (
	"context"
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/sdk/testsuite"

	"github.com/cdswap/cdswap/activities"
	"github.com/cdswap/cdswap/internal/testenv"
	"github.com/cdswap/cdswap/internal/xensim"
	"github.com/cdswap/cdswap/workflows"
)

// benchSteps are the steps of a stubdom insert, in the order they run.
var benchSteps = []string{
	activities.NameInspect, activities.NameLock, activities.NameEject, activities.NameReleaseFdset,
	activities.NameDetachVBD, activities.NameAttachVBD, activities.NameWaitFdset,
	activities.NameChangeMedium, activities.NameRecord, activities.NameVerify, activities.NameUnlock,
}

// swapTiming is one swap's time, as its caller saw it, and the time of each step.
type swapTiming struct {
	total time.Duration
	steps map[string]time.Duration
}

// benchHost starts a host with one stubdom guest on the fake QEMU, whose stubdom adds the fd
// at once: what is measured is cdswap, not a simulated delay.
func benchHost(tb testing.TB) (*xensim.Host, xensim.DomainInfo) {
	tb.Helper()
	h := startHost(tb, xensim.Config{
		HostName: hostName("bench"), Domains: []xensim.DomainSpec{{Kind: xensim.KindStubdom}},
		QEMU: xensim.QEMUFake, AgentDelay: -1,
	})
	return h, domainOf(tb, h, xensim.KindStubdom)
}

// benchMedium alternates between two images, so that every swap changes the medium.
func benchMedium(h *xensim.Host, i int) string {
	if i%2 == 0 {
		return iso(h, xensim.ISOTools)
	}
	return iso(h, xensim.ISORescue)
}

// durableSwap runs one insert as a ChangeMedium run on the dev server: total is from the
// start request to the result, each step from its ActivityTaskScheduled to its
// ActivityTaskCompleted event (dispatch to the worker included).
func durableSwap(tb testing.TB, h *xensim.Host, dom xensim.DomainInfo, medium string) swapTiming {
	tb.Helper()
	ctx := testenv.Context(tb, time.Minute)
	in := swapInput(h, dom, medium, "")
	t0 := time.Now()
	run, err := the.client.ExecuteWorkflow(ctx, workflows.StartOptions(in), workflows.ChangeMediumName, in)
	require.NoError(tb, err)
	res, err := waitSwap(ctx, run)
	total := time.Since(t0)
	require.NoError(tb, err, "result %+v", res)
	require.Equal(tb, workflows.OutcomeChanged, res.Outcome)
	hist, err := fetchHistory(ctx, run.GetID(), run.GetRunID())
	require.NoError(tb, err)
	return swapTiming{total: total, steps: stepTimes(hist)}
}

// stepTimes sums, per activity type, the time from scheduled to completed.
func stepTimes(h *historypb.History) map[string]time.Duration {
	type sched struct {
		step string
		at   time.Time
	}
	scheduled := map[int64]sched{}
	out := map[string]time.Duration{}
	for _, e := range h.GetEvents() {
		if a := e.GetActivityTaskScheduledEventAttributes(); a != nil {
			scheduled[e.GetEventId()] = sched{a.GetActivityType().GetName(), e.GetEventTime().AsTime()}
		}
		if a := e.GetActivityTaskCompletedEventAttributes(); a != nil {
			if s, ok := scheduled[a.GetScheduledEventId()]; ok {
				out[s.step] += e.GetEventTime().AsTime().Sub(s.at)
			}
		}
	}
	return out
}

// directRunner runs the steps of an insert by calling the host's activities in process,
// without a Temporal server: the workflow's sequence and inputs, none of its durability.
// The calls go through the SDK's TestActivityEnvironment, which gives each call an activity
// context (the activities log through activity.GetLogger, which needs one) and costs a few
// microseconds of encoding per call.
type directRunner struct {
	env *testsuite.TestActivityEnvironment
	h   *xensim.Host
	dom xensim.DomainInfo
	key string
}

// newDirectRunner makes the activities of h as the worker would (its --flags), in process.
func newDirectRunner(tb testing.TB, h *xensim.Host, dom xensim.DomainInfo) *directRunner {
	tb.Helper()
	ctx := testenv.Context(tb, 30*time.Second)
	a, err := activities.New(ctx, activities.Config{
		Host: h.Name(), XenstorePath: h.XenstoredPath(), QMPDir: h.RunDir(), LibxlDir: h.LibDir(),
		ISORoots: []string{h.ISODir()},
	})
	require.NoError(tb, err)
	tb.Cleanup(func() { _ = activities.Close(a) })
	var s testsuite.WorkflowTestSuite
	s.SetLogger(quietLogger)
	env := s.NewTestActivityEnvironment()
	env.RegisterActivity(a)
	return &directRunner{env: env, h: h, dom: dom, key: "direct-" + h.Name()}
}

// call runs one step and decodes its result into out, timing it into t.
func call[I, O any](tb testing.TB, r *directRunner, t *swapTiming, step string, fn func(context.Context, I) (O, error), in I) O {
	tb.Helper()
	var out O
	t0 := time.Now()
	v, err := r.env.ExecuteActivity(fn, in)
	if err == nil {
		err = v.Get(&out)
	}
	t.steps[step] += time.Since(t0)
	require.NoError(tb, err, "direct %s", step)
	return out
}

// swap runs one insert of medium step by step, as ChangeMedium does for a stubdom guest.
func (r *directRunner) swap(tb testing.TB, medium string) swapTiming {
	tb.Helper()
	var a *activities.Activities
	t := swapTiming{steps: map[string]time.Duration{}}
	t0 := time.Now()
	insp := call(tb, r, &t, activities.NameInspect, a.Inspect, activities.InspectInput{
		Host: r.h.Name(), DomID: r.dom.DomID, Vdev: r.dom.Vdev, Medium: medium, Format: activities.FormatRaw,
	})
	d := insp.Drive
	call(tb, r, &t, activities.NameLock, a.Lock, activities.LockInput{DomID: d.DomID, Key: r.key})
	call(tb, r, &t, activities.NameEject, a.Eject, activities.EjectInput{Drive: d, Key: r.key})
	rel := call(tb, r, &t, activities.NameReleaseFdset, a.ReleaseFdset, activities.ReleaseFdsetInput{Drive: d, Key: r.key})
	call(tb, r, &t, activities.NameDetachVBD, a.DetachVBD, activities.DetachVBDInput{Drive: d, Key: r.key})
	call(tb, r, &t, activities.NameAttachVBD, a.AttachVBD, activities.AttachVBDInput{Drive: d, Key: r.key, Params: insp.NewParams})
	known := append(slices.Clone(insp.Fdsets), rel.FdsetIDs...)
	slices.Sort(known)
	w := call(tb, r, &t, activities.NameWaitFdset, a.WaitFdset, activities.WaitFdsetInput{
		Drive: d, KnownFdsets: slices.Compact(known), Interval: 50 * time.Millisecond, Timeout: 25 * time.Second,
	})
	call(tb, r, &t, activities.NameChangeMedium, a.ChangeMedium, activities.ChangeMediumInput{
		Drive: d, Key: r.key, FdsetID: w.FdsetID, Format: activities.FormatHostDevice,
	})
	call(tb, r, &t, activities.NameRecord, a.Record, activities.RecordInput{
		Drive: d, Key: r.key, Medium: insp.Medium, Format: insp.Format, Params: insp.NewParams,
	})
	call(tb, r, &t, activities.NameVerify, a.Verify, activities.VerifyInput{Drive: d, Filename: activities.FdsetFilename(w.FdsetID)})
	call(tb, r, &t, activities.NameUnlock, a.Unlock, activities.UnlockInput{DomID: d.DomID, Key: r.key})
	t.total = time.Since(t0)
	return t
}

// percentile returns the p-th percentile (nearest rank) of ds.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(i, 0)]
}

// column returns the total (step "") or one step's time of every swap.
func column(ts []swapTiming, step string) []time.Duration {
	out := make([]time.Duration, len(ts))
	for i, t := range ts {
		if step == "" {
			out[i] = t.total
		} else {
			out[i] = t.steps[step]
		}
	}
	return out
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// reportMetrics reports p50 and p95 of the whole swap and of each step, in ms.
func reportMetrics(b *testing.B, ts []swapTiming) {
	for _, step := range append([]string{""}, benchSteps...) {
		name := "swap"
		if step != "" {
			name = step
		}
		col := column(ts, step)
		b.ReportMetric(ms(percentile(col, 50)), name+"-p50-ms")
		b.ReportMetric(ms(percentile(col, 95)), name+"-p95-ms")
	}
}

// BenchmarkSwapEndToEnd runs stubdom inserts end to end: the cdswap-worker process, the
// dev server, xensim with the fake QEMU. Its metrics are p50 and p95 of the swap as the
// caller sees it and of each step (scheduled to completed).
func BenchmarkSwapEndToEnd(b *testing.B) {
	need(b)
	h, dom := benchHost(b)
	startWorker(b, h, workerOpts{})
	for i := range 2 { // warm up the worker's connections and the server's caches
		durableSwap(b, h, dom, benchMedium(h, i))
	}
	var ts []swapTiming
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		ts = append(ts, durableSwap(b, h, dom, benchMedium(h, i)))
	}
	b.StopTimer()
	reportMetrics(b, ts)
}

// BenchmarkSwapDirect runs the same steps by calling the activities in process, without
// Temporal: BenchmarkSwapEndToEnd over this is the price of durability.
func BenchmarkSwapDirect(b *testing.B) {
	need(b)
	h, dom := benchHost(b)
	r := newDirectRunner(b, h, dom)
	for i := range 2 {
		r.swap(b, benchMedium(h, i))
	}
	var ts []swapTiming
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		ts = append(ts, r.swap(b, benchMedium(h, i)))
	}
	b.StopTimer()
	reportMetrics(b, ts)
}

// TestSwapLatencyReport runs -swaps stubdom inserts each way (durable, on the dev server
// with a cdswap-worker; direct, in process) and prints p50, p95 and max per step and for
// the whole swap as a markdown table for BENCHMARKS.md. It runs only when asked:
//
//	go test ./integration -run TestSwapLatencyReport -count=1 -v -args -report [-swaps 50]
func TestSwapLatencyReport(t *testing.T) {
	if !*reportFlag {
		t.Skip("prints the latency table only when asked: go test ./integration -run TestSwapLatencyReport -count=1 -v -args -report")
	}
	need(t)
	n := *swapsFlag
	require.Positive(t, n, "-swaps")

	h, dom := benchHost(t)
	startWorker(t, h, workerOpts{})
	for i := range 3 {
		durableSwap(t, h, dom, benchMedium(h, i))
	}
	durable := make([]swapTiming, 0, n)
	for i := range n {
		durable = append(durable, durableSwap(t, h, dom, benchMedium(h, i+1)))
	}

	h2, dom2 := benchHost(t)
	r := newDirectRunner(t, h2, dom2)
	for i := range 3 {
		r.swap(t, benchMedium(h2, i))
	}
	direct := make([]swapTiming, 0, n)
	for i := range n {
		direct = append(direct, r.swap(t, benchMedium(h2, i+1)))
	}

	table := latencyTable(durable, direct)
	fmt.Fprintf(os.Stdout, "\n%d stubdom inserts each way (fake QEMU, stubdom add-fd delay 0), %s\n\n%s\n", n, time.Now().Format("2006-01-02"), table)
}

// latencyTable renders the report.
func latencyTable(durable, direct []swapTiming) string {
	var b strings.Builder
	f := func(d time.Duration) string { return fmt.Sprintf("%.1f", ms(d)) }
	b.WriteString("| step | durable p50 | p95 | max | direct p50 | p95 | max | p50 ratio |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, step := range append(slices.Clone(benchSteps), "") {
		name := step
		if step == "" {
			name = "**whole swap**"
		}
		dc, xc := column(durable, step), column(direct, step)
		ratio := "-"
		if p := percentile(xc, 50); p > 0 {
			ratio = fmt.Sprintf("%.1f×", float64(percentile(dc, 50))/float64(p))
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s |\n", name,
			f(percentile(dc, 50)), f(percentile(dc, 95)), f(slices.Max(dc)),
			f(percentile(xc, 50)), f(percentile(xc, 95)), f(slices.Max(xc)), ratio)
	}
	b.WriteString("\n(milliseconds; durable: a step from ActivityTaskScheduled to ActivityTaskCompleted, the whole swap from the start request to the result; direct: the activity call in process)\n")
	return b.String()
}
