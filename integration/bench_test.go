package integration

import (
	"context"
	"flag"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	enumspb "go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/testsuite"

	"github.com/cdswap/cdswap/activities"
	"github.com/cdswap/cdswap/internal/qmp"
	"github.com/cdswap/cdswap/internal/testenv"
	"github.com/cdswap/cdswap/internal/xensim"
	"github.com/cdswap/cdswap/workflows"
)

// The report's rows for what a durable swap spends outside its steps: from the start request
// to the first step's call (the start, the first workflow task's dispatch) and from the last
// step's end to the result (the last workflow task's completion, the result's delivery).
const (
	rowStart = "(start)"
	rowEnd   = "(end)"
)

// benchSteps are the report's rows: the steps of a stubdom insert, in the order they run,
// between the start and the end.
var benchSteps = []string{
	rowStart,
	activities.NameInspect, activities.NameLock, activities.NameEject, activities.NameReleaseFdset,
	activities.NameDetachVBD, activities.NameAttachVBD, activities.NameWaitFdset,
	activities.NameChangeMedium, activities.NameRecord, activities.NameVerify, activities.NameUnlock,
	rowEnd,
}

// oldFdsetInterval is WaitFdset's poll interval before the wake-up (and the direct path's).
const oldFdsetInterval = 50 * time.Millisecond

// A benchMode is one way of running a swap, for the side-by-side report: through Temporal
// with some of today's levers (BenchOptions, nil for production's way), or by calling the
// activities directly.
type benchMode struct {
	name   string
	what   string
	direct bool
	bench  *workflows.BenchOptions // durable modes: nil runs the production way
	wake   bool                    // direct modes: WaitFdsetInput.Wake
}

// benchModes are the report's modes, in the order they are printed; each lever alone, then
// together. A mode's version (of local-short-steps) names the steps it runs as that version
// did; every mode records the GetVersions of a new run, since version 4 one marker and one
// upsert (workflows.BenchOptions).
var benchModes = []benchMode{
	{name: "old", what: "every step a regular activity, no eager execution, WaitFdset polls every 50 ms (before today)",
		bench: &workflows.BenchOptions{RegularSteps: true, NoEager: true, FdsetPollOnly: true, FdsetPollInterval: oldFdsetInterval}},
	{name: "eager", what: "old + eager activity execution",
		bench: &workflows.BenchOptions{RegularSteps: true, FdsetPollOnly: true, FdsetPollInterval: oldFdsetInterval}},
	{name: "local", what: "old + the short steps as local activities",
		bench: &workflows.BenchOptions{NoEager: true, FdsetPollOnly: true, FdsetPollInterval: oldFdsetInterval, RegularVBD: true}},
	{name: "local+eager", what: "local activities and eager execution, WaitFdset polls every 50 ms",
		bench: &workflows.BenchOptions{FdsetPollOnly: true, FdsetPollInterval: oldFdsetInterval, RegularVBD: true}},
	{name: "local+eager+poll10", what: "local+eager, WaitFdset polls every 10 ms",
		bench: &workflows.BenchOptions{FdsetPollOnly: true, FdsetPollInterval: 10 * time.Millisecond, RegularVBD: true}},
	{name: "local+eager+wake", what: "local+eager, WaitFdset wakes on the stubdom's vbd frontend (xenstore watch) and polls every 10 ms for up to 1 s once it connected (production with version 1 of local-short-steps)",
		bench: &workflows.BenchOptions{RegularVBD: true}},
	{name: "+localvbd", what: "local+eager+wake, and DetachVBD and AttachVBD as local activities (version 2 of local-short-steps)",
		bench: &workflows.BenchOptions{RegularEject: true}},
	{name: "new", what: "production now: +localvbd, and Eject as a local activity, Inspect keeping its answer on the host until Unlock (version 3 of local-short-steps)"},
	{name: "new+localwait", what: "new, and WaitFdset as a local activity too (not done in production: the run would have no durable point between its first and last workflow task)",
		bench: &workflows.BenchOptions{LocalWait: true}},
	{name: "direct", what: "the activities called in process, WaitFdset polling every 50 ms (the old direct path)", direct: true},
	{name: "direct+wake", what: "the activities called in process, WaitFdset with the wake-up", direct: true, wake: true},
}

// modesFlag selects the report's modes.
var modesFlag = flag.String("modes", "", "TestSwapLatencyReport: comma-separated modes to run (default all: old,eager,local,local+eager,local+eager+poll10,local+eager+wake,+localvbd,new,new+localwait,direct,direct+wake)")

// swapStats is one swap: its time as its caller saw it, each step's, and what it cost.
type swapStats struct {
	total time.Duration
	steps map[string]time.Duration
	// events and tasks are the run's history events and workflow tasks (durable only).
	events, tasks int
	// serverCPU and workerCPU are the dev server's and the worker's CPU time over the swap
	// (durable only; the server's idle share subtracted).
	serverCPU, workerCPU time.Duration
	// detect is the time from the stubdom's add-fd to WaitFdset's end, -1 if unknown.
	detect time.Duration
	// polls is WaitFdset's query-fdsets count.
	polls int
}

// benchHost starts a host with one stubdom guest on the fake QEMU, whose stubdom adds the fd
// at once: what is measured is cdswap, not a simulated delay.
func benchHost(tb testing.TB) (*xensim.Host, *logBuffer, xensim.DomainInfo) {
	tb.Helper()
	h, logs := startHostLogs(tb, xensim.Config{
		HostName: hostName("bench"), Domains: []xensim.DomainSpec{{Kind: xensim.KindStubdom}},
		QEMU: xensim.QEMUFake, AgentDelay: -1,
	})
	return h, logs, domainOf(tb, h, xensim.KindStubdom)
}

// benchMedium alternates between two images, so that every swap changes the medium.
func benchMedium(h *xensim.Host, i int) string {
	if i%2 == 0 {
		return iso(h, xensim.ISOTools)
	}
	return iso(h, xensim.ISORescue)
}

// procCPU is a process's user+system CPU time so far (0 if it cannot be read).
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:]) // field 3 (state) on
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)           // field 14
	stime, _ := strconv.ParseInt(f[12], 10, 64)           // field 15
	return time.Duration(utime+stime) * time.Second / 100 // USER_HZ is 100 on Linux
}

// settle returns once the processes' CPU time has stood still for quietFor (Linux counts it
// in 10 ms ticks), or after a second: the work a swap leaves behind (the server's visibility
// tasks, a garbage collection it set off) is then counted with that swap, not with the next
// one, which in the report is another mode's.
func settle(quietFor time.Duration, pids ...int) {
	sum := func() time.Duration {
		var t time.Duration
		for _, p := range pids {
			t += procCPU(p)
		}
		return t
	}
	last, still := sum(), time.Now()
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
		if now := sum(); now != last {
			last, still = now, time.Now()
		} else if time.Since(still) >= quietFor {
			return
		}
	}
}

// idleCPURate measures a process's CPU share while nothing is asked of it, over d.
func idleCPURate(pid int, d time.Duration) float64 {
	c0, t0 := procCPU(pid), time.Now()
	time.Sleep(d)
	return float64(procCPU(pid)-c0) / float64(time.Since(t0))
}

// lastAddFD is the time of the last "stub domain added the fd" line of a host's log.
func lastAddFD(logs *logBuffer) (time.Time, bool) {
	lines := strings.Split(logs.String(), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		l := lines[i]
		if !strings.Contains(l, `msg="stub domain added the fd"`) || !strings.HasPrefix(l, "time=") {
			continue
		}
		ts, _, _ := strings.Cut(strings.TrimPrefix(l, "time="), " ")
		t, err := time.Parse(time.RFC3339Nano, ts)
		return t, err == nil
	}
	return time.Time{}, false
}

// durableRig is a host with its worker, for the durable modes.
type durableRig struct {
	h         *xensim.Host
	logs      *logBuffer
	dom       xensim.DomainInfo
	w         *workerProc
	idle      float64       // the dev server's idle CPU share
	idleWork  float64       // the worker's
	settleFor time.Duration // how long the CPU must stand still after a swap (settle)
}

// newDurableRig starts a bench host and its worker, and measures their idle CPU.
func newDurableRig(tb testing.TB) *durableRig {
	tb.Helper()
	h, logs, dom := benchHost(tb)
	r := &durableRig{h: h, logs: logs, dom: dom, w: startWorker(tb, h, workerOpts{}), settleFor: 50 * time.Millisecond}
	r.idle = idleCPURate(the.srv.Pid(), 2*time.Second)
	r.idleWork = idleCPURate(r.w.PID(), time.Second)
	return r
}

// swap runs one insert as a ChangeMedium run on the dev server with bench (nil: production's
// way). total is from the start request to the result; a step from its call to its end in the
// workflow (StepRecord.Started to Ended: workflow task times). The CPU of the server and the
// worker is read from the start until it has stood still for settleFor after the result
// (settle), before the history is read.
func (r *durableRig) swap(tb testing.TB, medium string, bench *workflows.BenchOptions) swapStats {
	tb.Helper()
	ctx := testenv.Context(tb, time.Minute)
	in := swapInput(r.h, r.dom, medium, "")
	in.Bench = bench
	s0, w0 := procCPU(the.srv.Pid()), procCPU(r.w.PID())
	t0 := time.Now()
	run, err := the.client.ExecuteWorkflow(ctx, workflows.StartOptions(in), workflows.ChangeMediumName, in)
	require.NoError(tb, err)
	res, err := waitSwap(ctx, run)
	total := time.Since(t0)
	require.NoError(tb, err, "result %+v", res)
	require.Equal(tb, workflows.OutcomeChanged, res.Outcome)
	settle(r.settleFor, the.srv.Pid(), r.w.PID())
	window := time.Since(t0)
	st := swapStats{
		total:     total,
		steps:     map[string]time.Duration{},
		serverCPU: procCPU(the.srv.Pid()) - s0 - time.Duration(r.idle*float64(window)),
		workerCPU: procCPU(r.w.PID()) - w0 - time.Duration(r.idleWork*float64(window)),
		detect:    -1,
	}
	for _, s := range res.Steps {
		st.steps[s.Name] += s.Ended.Sub(s.Started)
	}
	if n := len(res.Steps); n > 0 {
		st.steps[rowStart] = res.Steps[0].Started.Sub(t0)
		st.steps[rowEnd] = t0.Add(total).Sub(res.Steps[n-1].Ended)
	}
	hist, err := fetchHistory(ctx, run.GetID(), run.GetRunID())
	require.NoError(tb, err)
	st.events = len(hist.GetEvents())
	waitEnd, polls := waitFdsetEnd(hist)
	st.tasks, st.polls = countEvents(hist, enumspb.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED), polls
	if added, ok := lastAddFD(r.logs); ok && !waitEnd.IsZero() {
		st.detect = waitEnd.Sub(added)
	}
	return st
}

// countEvents counts the events of type typ.
func countEvents(h *historypb.History, typ enumspb.EventType) int {
	n := 0
	for _, e := range h.GetEvents() {
		if e.GetEventType() == typ {
			n++
		}
	}
	return n
}

// waitFdsetEnd is the time of the last WaitFdset's ActivityTaskCompleted event, and its
// result's poll count.
func waitFdsetEnd(h *historypb.History) (time.Time, int) {
	waits := map[int64]bool{}
	var at time.Time
	polls := 0
	for _, e := range h.GetEvents() {
		if a := e.GetActivityTaskScheduledEventAttributes(); a != nil && a.GetActivityType().GetName() == activities.NameWaitFdset {
			waits[e.GetEventId()] = true
		}
		if a := e.GetActivityTaskCompletedEventAttributes(); a != nil && waits[a.GetScheduledEventId()] {
			at = e.GetEventTime().AsTime()
			var res activities.WaitFdsetResult
			if ps := a.GetResult().GetPayloads(); len(ps) > 0 && converter.GetDefaultDataConverter().FromPayload(ps[0], &res) == nil {
				polls = res.Polls
			}
		}
	}
	return at, polls
}

// directRunner runs the steps of an insert by calling the host's activities in process,
// without a Temporal server: the workflow's sequence and inputs, none of its durability.
// The calls go through the SDK's TestActivityEnvironment, which gives each call an activity
// context (the activities log through activity.GetLogger, which needs one) and costs a few
// microseconds of encoding per call.
type directRunner struct {
	env  *testsuite.TestActivityEnvironment
	h    *xensim.Host
	logs *logBuffer
	dom  xensim.DomainInfo
	key  string
}

// newDirectRunner makes the activities of a new bench host as the worker would (its
// --flags), in process.
func newDirectRunner(tb testing.TB) *directRunner {
	tb.Helper()
	h, logs, dom := benchHost(tb)
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
	return &directRunner{env: env, h: h, logs: logs, dom: dom, key: "direct-" + h.Name()}
}

// call runs one step and decodes its result into out, timing it into t.
func call[I, O any](tb testing.TB, r *directRunner, t *swapStats, step string, fn func(context.Context, I) (O, error), in I) O {
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

// swap runs one insert of medium step by step, as ChangeMedium does for a stubdom guest;
// wake is WaitFdsetInput.Wake.
func (r *directRunner) swap(tb testing.TB, medium string, wake bool) swapStats {
	tb.Helper()
	var a *activities.Activities
	t := swapStats{steps: map[string]time.Duration{}, detect: -1}
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
		Drive: d, KnownFdsets: slices.Compact(known), Interval: oldFdsetInterval, Timeout: 25 * time.Second, Wake: wake,
	})
	waitEnd := time.Now()
	t.polls = w.Polls
	call(tb, r, &t, activities.NameChangeMedium, a.ChangeMedium, activities.ChangeMediumInput{
		Drive: d, Key: r.key, FdsetID: w.FdsetID, Format: activities.FormatHostDevice,
	})
	call(tb, r, &t, activities.NameRecord, a.Record, activities.RecordInput{
		Drive: d, Key: r.key, Medium: insp.Medium, Format: insp.Format, Params: insp.NewParams,
	})
	call(tb, r, &t, activities.NameVerify, a.Verify, activities.VerifyInput{Drive: d, Filename: activities.FdsetFilename(w.FdsetID)})
	call(tb, r, &t, activities.NameUnlock, a.Unlock, activities.UnlockInput{DomID: d.DomID, Key: r.key})
	t.total = time.Since(t0)
	if added, ok := lastAddFD(r.logs); ok {
		t.detect = waitEnd.Sub(added)
	}
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

// column returns one figure of every swap: the total (""), a step's time, or the fdset
// detection time ("detect").
func column(ts []swapStats, what string) []time.Duration {
	out := make([]time.Duration, 0, len(ts))
	for _, t := range ts {
		switch what {
		case "":
			out = append(out, t.total)
		case "detect":
			if t.detect >= 0 {
				out = append(out, t.detect)
			}
		default:
			out = append(out, t.steps[what])
		}
	}
	return out
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// mean is the average of f over ts.
func mean(ts []swapStats, f func(swapStats) float64) float64 {
	if len(ts) == 0 {
		return 0
	}
	sum := 0.0
	for _, t := range ts {
		sum += f(t)
	}
	return sum / float64(len(ts))
}

// reportMetrics reports p50 and p95 of the whole swap and of each step, in ms.
func reportMetrics(b *testing.B, ts []swapStats) {
	for _, step := range append([]string{""}, benchSteps...) {
		name := "swap"
		if step != "" {
			name = step
		}
		col := column(ts, step)
		b.ReportMetric(ms(percentile(col, 50)), name+"-p50-ms")
		b.ReportMetric(ms(percentile(col, 95)), name+"-p95-ms")
	}
	b.ReportMetric(mean(ts, func(s swapStats) float64 { return float64(s.events) }), "events/swap")
}

// BenchmarkSwapEndToEnd runs stubdom inserts end to end the production way: the
// cdswap-worker process, the dev server, xensim with the fake QEMU. Its metrics are p50 and
// p95 of the swap as the caller sees it and of each step.
func BenchmarkSwapEndToEnd(b *testing.B) {
	need(b)
	r := newDurableRig(b)
	for i := range 2 { // warm up the worker's connections and the server's caches
		r.swap(b, benchMedium(r.h, i), nil)
	}
	var ts []swapStats
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		ts = append(ts, r.swap(b, benchMedium(r.h, i), nil))
	}
	b.StopTimer()
	reportMetrics(b, ts)
}

// BenchmarkSwapDirect runs the same steps by calling the activities in process, without
// Temporal: BenchmarkSwapEndToEnd over this is the price of durability.
func BenchmarkSwapDirect(b *testing.B) {
	need(b)
	r := newDirectRunner(b)
	for i := range 2 {
		r.swap(b, benchMedium(r.h, i), true)
	}
	var ts []swapStats
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		ts = append(ts, r.swap(b, benchMedium(r.h, i), true))
	}
	b.StopTimer()
	reportMetrics(b, ts)
}

// selectedModes are the modes -modes names (all by default).
func selectedModes(t *testing.T) []benchMode {
	if *modesFlag == "" {
		return benchModes
	}
	var out []benchMode
	for _, name := range strings.Split(*modesFlag, ",") {
		i := slices.IndexFunc(benchModes, func(m benchMode) bool { return m.name == strings.TrimSpace(name) })
		require.GreaterOrEqual(t, i, 0, "-modes: no mode %q", name)
		out = append(out, benchModes[i])
	}
	return out
}

// TestSwapLatencyReport runs -swaps stubdom inserts in each mode (benchModes: the old way,
// each of today's levers, the new way, and the activities called directly), interleaved
// one swap of each mode at a time on one dev server, one worker and two xensim hosts, so
// that the machine's load falls on all alike, and prints markdown tables for
// BENCHMARKS.md: the whole swap, its cost to the server, the fdset detection, and each step.
// It runs only when asked:
//
//	go test ./integration -run TestSwapLatencyReport -count=1 -v -args -report [-swaps 50] [-modes old,new,direct+wake]
func TestSwapLatencyReport(t *testing.T) {
	if !*reportFlag {
		t.Skip("prints the latency tables only when asked: go test ./integration -run TestSwapLatencyReport -count=1 -v -args -report")
	}
	need(t)
	n := *swapsFlag
	require.Positive(t, n, "-swaps")
	modes := selectedModes(t)

	dur := newDurableRig(t)
	dir := newDirectRunner(t)
	// Each host's drive alternates between two media, so that every swap changes it.
	var durN, dirN int
	one := func(m benchMode) swapStats {
		if m.direct {
			dirN++
			return dir.swap(t, benchMedium(dir.h, dirN), m.wake)
		}
		durN++
		return dur.swap(t, benchMedium(dur.h, durN), m.bench)
	}
	for range 2 { // warm-up
		for _, m := range modes {
			one(m)
		}
	}
	stats := make([][]swapStats, len(modes))
	for range n {
		for j, m := range modes {
			stats[j] = append(stats[j], one(m))
		}
	}
	fmt.Fprintf(os.Stdout, "\n%d stubdom inserts per mode, interleaved (fake QEMU, stubdom add-fd delay 0), %s; dev server idle %.1f%% of a core, worker idle %.1f%%\n\n%s\n",
		n, time.Now().Format("2006-01-02"), 100*dur.idle, 100*dur.idleWork, reportTables(modes, stats))
}

// reportTables renders the report.
func reportTables(modes []benchMode, stats [][]swapStats) string {
	var b strings.Builder
	f := func(d time.Duration) string { return fmt.Sprintf("%.1f", ms(d)) }
	b.WriteString("| mode | swap p50 | p95 | p99 | max | events/swap | workflow tasks/swap | server CPU ms/swap | worker CPU ms/swap | fdset seen after add-fd p50 | p95 | max | polls/swap |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for j, m := range modes {
		ts := stats[j]
		tot, det := column(ts, ""), column(ts, "detect")
		durable := func(v float64) string {
			if m.direct {
				return "-"
			}
			return fmt.Sprintf("%.1f", v)
		}
		detect := func(p float64) string {
			if len(det) == 0 {
				return "-"
			}
			return f(percentile(det, p))
		}
		maxDet := "-"
		if len(det) > 0 {
			maxDet = f(slices.Max(det))
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %.1f |\n", m.name,
			f(percentile(tot, 50)), f(percentile(tot, 95)), f(percentile(tot, 99)), f(slices.Max(tot)),
			durable(mean(ts, func(s swapStats) float64 { return float64(s.events) })),
			durable(mean(ts, func(s swapStats) float64 { return float64(s.tasks) })),
			durable(mean(ts, func(s swapStats) float64 { return ms(s.serverCPU) })),
			durable(mean(ts, func(s swapStats) float64 { return ms(s.workerCPU) })),
			detect(50), detect(95), maxDet,
			mean(ts, func(s swapStats) float64 { return float64(s.polls) }))
	}
	b.WriteString("\n(milliseconds; a durable swap from the start request to the result; CPU over the swap and until the server's and the worker's CPU stood still for 50 ms, less each process's idle share; fdset seen: from the stubdom's add-fd (xensim's log) to WaitFdset's ActivityTaskCompleted event, or its return when direct)\n\n")

	b.WriteString("| step |")
	for _, m := range modes {
		fmt.Fprintf(&b, " %s p50 |", m.name)
	}
	b.WriteString("\n|---|" + strings.Repeat("---:|", len(modes)) + "\n")
	for _, step := range benchSteps {
		fmt.Fprintf(&b, "| %s |", step)
		for j := range modes {
			fmt.Fprintf(&b, " %s |", f(percentile(column(stats[j], step), 50)))
		}
		b.WriteString("\n")
	}
	b.WriteString("\n(milliseconds; durable: from the step's call to its end in the workflow's time, i.e. workflow task to workflow task, dispatch included; direct: the call in process; (start): from the start request to the first step's call, (end): from the last step's end to the result)\n\nModes:\n")
	for _, m := range modes {
		fmt.Fprintf(&b, "- %s: %s\n", m.name, m.what)
	}
	return b.String()
}

// TestFdsetPollLoadReport measures what WaitFdset's polls cost a real QEMU's monitor
// (qemu-system-x86_64, TCG, idle guest): its CPU (/proc/<pid>/stat utime+stime, less its
// idle share) while one client polls query-fdsets steadily at 50, 10 and 5 ms, and per swap
// with the old wait (a poll every 50 ms) and the new one (a xenstore watch on the stubdom's
// vbd, then a poll every 10 ms for at most 1 s once it connected), -swaps/5 swaps each,
// interleaved, on a stubdom guest whose stubdom add-fds 100 ms after its vbd connects. It
// runs only when asked:
//
//	go test ./integration -run TestFdsetPollLoadReport -count=1 -v -args -report [-swaps 50]
func TestFdsetPollLoadReport(t *testing.T) {
	if !*reportFlag {
		t.Skip("prints the QEMU load table only when asked: go test ./integration -run TestFdsetPollLoadReport -count=1 -v -args -report")
	}
	need(t)
	h, logs := startHostLogs(t, xensim.Config{
		HostName: hostName("qemuload"), Domains: []xensim.DomainSpec{{Kind: xensim.KindStubdom}},
		QEMU: xensim.QEMUReal, AgentDelay: 100 * time.Millisecond,
	})
	dom := domainOf(t, h, xensim.KindStubdom)
	pid := h.QEMU(dom.DomID).PID()
	require.Positive(t, pid, "the guest's QEMU has no process")
	r := &durableRig{h: h, logs: logs, dom: dom, w: startWorker(t, h, workerOpts{}), settleFor: 30 * time.Millisecond}
	time.Sleep(time.Second) // the guest's boot settles
	idle := idleCPURate(pid, 5*time.Second)

	var b strings.Builder
	fmt.Fprintf(&b, "\nreal QEMU (pid %d) idle: %.2f%% of a core\n\n| steady polling | polls/s | QEMU %% of a core over idle | QEMU CPU µs per poll |\n|---|---:|---:|---:|\n", pid, 100*idle)
	ctx := testenv.Context(t, 2*time.Minute)
	c, err := qmp.Dial(ctx, dom.QMPSocket)
	require.NoError(t, err)
	defer c.Close()
	for _, every := range []time.Duration{50 * time.Millisecond, 10 * time.Millisecond, 5 * time.Millisecond} {
		const span = 5 * time.Second
		c0, t0, n := procCPU(pid), time.Now(), 0
		tick := time.NewTicker(every)
		for time.Since(t0) < span {
			_, err := c.QueryFdsets(ctx)
			require.NoError(t, err)
			n++
			<-tick.C
		}
		tick.Stop()
		el := time.Since(t0)
		over := float64(procCPU(pid)-c0) - idle*float64(el)
		fmt.Fprintf(&b, "| every %s | %.0f | %.2f | %.0f |\n", every, float64(n)/el.Seconds(), 100*over/float64(el), over/float64(time.Microsecond)/float64(n))
	}
	require.NoError(t, c.Close())

	modes := []benchMode{benchModes[0], benchModes[len(benchModes)-3]} // old, new
	require.Equal(t, "new", modes[1].name)
	n := max(*swapsFlag/5, 3)
	cpu := make([][]time.Duration, len(modes))
	polls := make([][]swapStats, len(modes))
	k := 0
	for i := range n + 1 {
		for j, m := range modes {
			k++
			c0, t0 := procCPU(pid), time.Now()
			st := r.swap(t, benchMedium(h, k), m.bench)
			if i == 0 {
				continue // warm-up
			}
			cpu[j] = append(cpu[j], procCPU(pid)-c0-time.Duration(idle*float64(time.Since(t0))))
			polls[j] = append(polls[j], st)
		}
	}
	fmt.Fprintf(&b, "\n| wait (%d swaps each) | polls/swap | QEMU CPU ms/swap over idle (the whole swap) | swap p50 | fdset seen after add-fd p50 |\n|---|---:|---:|---:|---:|\n", n)
	for j, m := range modes {
		sum := time.Duration(0)
		for _, d := range cpu[j] {
			sum += d
		}
		fmt.Fprintf(&b, "| %s | %.1f | %.2f | %.1f | %.1f |\n", m.name,
			mean(polls[j], func(s swapStats) float64 { return float64(s.polls) }),
			ms(sum)/float64(len(cpu[j])), ms(percentile(column(polls[j], ""), 50)), ms(percentile(column(polls[j], "detect"), 50)))
	}
	b.WriteString("\n(CPU from /proc/<pid>/stat in 10 ms ticks, less QEMU's idle share; a swap's QEMU CPU includes its other QMP commands, the same in both ways)\n")
	fmt.Fprintln(os.Stdout, b.String())
}
