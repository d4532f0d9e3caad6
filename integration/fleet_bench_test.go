package integration

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/workflowservice/v1"

	"github.com/cdswap/cdswap/activities"
	"github.com/cdswap/cdswap/internal/testenv"
	"github.com/cdswap/cdswap/internal/xensim"
	"github.com/cdswap/cdswap/workflows"
)

var (
	fleetBenchDrivesFlag = flag.Int("fleet-bench-drives", 300, "TestFleetThroughputReport: drives in each batch")
	fleetBenchHostsFlag  = flag.String("fleet-bench-hosts", "1,5,10", "TestFleetThroughputReport: host counts (comma-separated, at most 10)")
	fleetBenchByFlag     = flag.String("fleet-bench-by", "children,batch,direct", "TestFleetThroughputReport: who starts the swaps: children (a batch as before rounds), batch, direct, direct-addfd (direct, AddFD a regular activity as before version 5 of local-short-steps) (comma-separated)")
)

// fleetBenchMaxHosts and fleetBenchLimits bound the cases of TestFleetThroughputReport:
// every host count of -fleet-bench-hosts with every pair of limits.
var (
	fleetBenchMaxHosts = 10
	fleetBenchLimits   = []workflows.FleetLimits{{Global: 20, PerHost: 2}, {Global: 50, PerHost: 5}}
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat: 100 on every
// Linux architecture Go runs on.
const clockTicks = 100

// cpuTime is the user and system time pid has used, from /proc/<pid>/stat.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces: count from after it.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name in %q", pid, s)
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields after the name", pid, len(f))
	}
	var ticks int64
	for _, v := range f[11:13] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// cpuOf adds up the CPU time of pids.
func cpuOf(t testing.TB, pids ...int) time.Duration {
	t.Helper()
	var sum time.Duration
	for _, pid := range pids {
		d, err := cpuTime(pid)
		require.NoError(t, err)
		sum += d
	}
	return sum
}

// fleetCase is one row of the throughput table.
type fleetCase struct {
	hosts  int
	limits workflows.FleetLimits
	by     string // who started the swaps: children, batch (rounds), direct or direct-addfd (runDirect)
	// batchTasks counts the batch's workflow tasks, over all its runs.
	batchTasks int
	drives     int
	wall       time.Duration // `cdswap batch start --wait`, plan check included
	swaps      time.Duration // first swap's start to last swap's close
	steady     float64       // drives/s between the closes of the 10th and 90th percentile swaps
	maxOut     int           // the most drives' media out at once on one host, by xensim
	load       string        // the 1-minute load average when the batch started
	// CPU time of the dev server, of every worker, of this process (the xensim hosts run
	// in it) and of the cdswap CLI.
	server, workers, xensim, cli time.Duration
}

// TestFleetThroughputReport measures batches of -fleet-bench-drives drives (fake QEMU,
// stubdom add-fd delay 0, half stubdom and half dom0 guests) over 1, 5 and 10 xensim hosts,
// each with its worker process, at two pairs of limits, and prints drives per second with
// the CPU time of the dev server, the workers, xensim and the CLI as a markdown table for
// BENCHMARKS.md. It runs only when asked (make bench-fleet):
//
//	go test ./integration -run TestFleetThroughputReport -count=1 -v -args -report [-fleet-bench-drives 200]
func TestFleetThroughputReport(t *testing.T) {
	if !*reportFlag {
		t.Skip("prints the fleet's throughput table only when asked: make bench-fleet")
	}
	s := need(t)
	n := *fleetBenchDrivesFlag
	var fleetBenchHosts []int
	for _, f := range strings.Split(*fleetBenchHostsFlag, ",") {
		k, err := strconv.Atoi(f)
		require.NoError(t, err, "-fleet-bench-hosts")
		require.True(t, k >= 1 && k <= fleetBenchMaxHosts, "-fleet-bench-hosts: %d is not 1 to %d", k, fleetBenchMaxHosts)
		fleetBenchHosts = append(fleetBenchHosts, k)
	}
	maxHosts := slices.Max(fleetBenchHosts)
	require.GreaterOrEqual(t, n, maxHosts, "-fleet-bench-drives")

	// Host i holds the drives of the case with the fewest hosts that uses it.
	f := &scaleFleet{holds: map[string]string{}}
	for i := range maxHosts {
		guests := 0
		for _, k := range fleetBenchHosts {
			if i < k {
				guests = max(guests, (n+k-1)/k)
			}
		}
		h := startHost(t, xensim.Config{
			HostName: hostName("fbench"), QEMU: xensim.QEMUFake, Domains: scaleGuests(guests, false), AgentDelay: -1,
		})
		f.hosts = append(f.hosts, h)
		for _, d := range h.Domains() {
			f.holds[workflows.WorkflowID(h.Name(), d.DomID, d.Vdev)] = d.Medium
		}
	}
	var workerPIDs []int
	for _, h := range f.hosts {
		w := startWorker(t, h, workerOpts{})
		f.workers = append(f.workers, w)
		workerPIDs = append(workerPIDs, w.PID())
	}
	var rows []fleetCase
	for _, k := range fleetBenchHosts {
		for _, lim := range fleetBenchLimits {
			for _, by := range strings.Split(*fleetBenchByFlag, ",") {
				require.Contains(t, []string{"children", "batch", "direct", "direct-addfd"}, by, "-fleet-bench-by")
				c := f.benchCase(t, s, k, n, lim, by, workerPIDs)
				rows = append(rows, c)
				t.Logf("%d hosts, limits %d/%d, by %s: %d drives in %s", k, lim.Global, lim.PerHost, by, c.drives, c.wall.Round(time.Millisecond))
			}
		}
	}
	// What a swap costs the server: the events of the last swap of a stubdom and a dom0 drive.
	var events []string
	ctx := testenv.Context(t, time.Minute)
	for _, d := range f.hosts[0].Domains()[:2] {
		h, err := fetchHistory(ctx, workflows.WorkflowID(f.hosts[0].Name(), d.DomID, d.Vdev), "")
		require.NoError(t, err)
		events = append(events, fmt.Sprintf("%d (%s)", len(h.GetEvents()), d.Kind))
	}
	fmt.Fprintf(os.Stdout, "\nbatches of %d drives (fake QEMU, stubdom add-fd delay 0, half stubdom, half dom0), a worker process per host; history events per swap: %s; %s, %d CPUs\n\n%s\n",
		n, strings.Join(events, ", "), time.Now().Format("2006-01-02"), runtime.NumCPU(), fleetTable(rows))
}

// benchCase runs one row: n drives over the first k hosts, by a batch (`cdswap batch start
// --wait`, in rounds, or with by "children" as children), or with by "direct" started by
// this process itself (runDirect).
func (f *scaleFleet) benchCase(t *testing.T, s *suite, k, n int, lim workflows.FleetLimits, by string, workerPIDs []int) fleetCase {
	t.Helper()
	c := fleetCase{hosts: k, limits: lim, by: by}
	planFile, want := f.benchPlan(t, k, n)
	c.drives = len(want)
	for _, h := range f.hosts {
		h.ResetMedia()
	}
	c.load = loadAverage()
	server0, workers0, self0 := cpuOf(t, s.srv.Pid()), cpuOf(t, workerPIDs...), cpuOf(t, os.Getpid())
	t0 := time.Now()
	var batch string
	if strings.HasPrefix(by, "direct") {
		batch = fmt.Sprintf("direct-%d-%d-%d", k, lim.Global, time.Now().UnixNano())
		var bench *workflows.BenchOptions
		if by == "direct-addfd" {
			bench = &workflows.BenchOptions{RegularAddFD: true}
		}
		runDirect(t, f.benchDrives(k, n), want, lim, batch, bench)
	} else {
		args := []string{"batch", "start", "--plan", planFile,
			"--limit", strconv.Itoa(lim.Global), "--per-host", strconv.Itoa(lim.PerHost),
			"--reason", "throughput", "--wait", "--timeout", "20m", "--json"}
		if by == "children" {
			args = append(args, "--bench-children")
		}
		r := runCLIFor(t, 20*time.Minute, args...)
		c.cli = r.cpu
		require.Equal(t, 0, r.code, r.stderr)
		var res workflows.FleetSwapResult
		require.NoError(t, json.Unmarshal([]byte(r.stdout), &res))
		require.Equal(t, c.drives, res.Changed, "batch %s", res.Batch)
		batch = res.Batch
	}
	c.wall = time.Since(t0)
	c.server = cpuOf(t, s.srv.Pid()) - server0
	c.workers = cpuOf(t, workerPIDs...) - workers0
	c.xensim = cpuOf(t, os.Getpid()) - self0
	c.swaps, c.steady = swapSpan(t, batch, c.drives)
	if !strings.HasPrefix(by, "direct") {
		c.batchTasks = batchTasks(t, batch)
	}
	for _, h := range f.hosts[:k] {
		c.maxOut = max(c.maxOut, h.Media().MaxOut)
	}
	require.LessOrEqual(t, c.maxOut, lim.PerHost, "xensim saw more media out at once than the per-host limit")
	for id, m := range want {
		f.holds[id] = m
	}
	return c
}

// benchPlan writes a plan changing n drives spread evenly over the first k hosts (each to
// the ISO it does not hold) and returns it with each swap's new medium.
func (f *scaleFleet) benchPlan(t testing.TB, k, n int) (string, map[string]string) {
	t.Helper()
	return f.plan(t, f.benchDrives(k, n))
}

// benchDrives are n drives spread evenly over the first k hosts.
func (f *scaleFleet) benchDrives(k, n int) []hostDrives {
	drives := make([]hostDrives, k)
	for i, h := range f.hosts[:k] {
		per := n / k
		if i < n%k {
			per++
		}
		drives[i] = hostDrives{h, h.Domains()[:per]}
	}
	return drives
}

// runDirect changes drives to the media of want without a batch: this process starts each
// drive's ChangeMedium itself, as `cdswap insert` would, within the batch's limits (at most
// lim.PerHost on a host and lim.Global in all), and waits for its end. Its CPU beside a
// batch's is what the batch itself costs: its workflow tasks, one as each swap starts and
// one as it ends. The swaps carry batch as their CdswapBatch, for swapSpan, and bench as
// their BenchOptions.
func runDirect(t testing.TB, drives []hostDrives, want map[string]string, lim workflows.FleetLimits, batch string, bench *workflows.BenchOptions) {
	t.Helper()
	ctx := testenv.Context(t, 20*time.Minute)
	global := make(chan struct{}, lim.Global)
	var wg sync.WaitGroup
	errs := make(chan error, len(want))
	for _, hd := range drives {
		host := make(chan struct{}, lim.PerHost)
		for _, d := range hd.doms {
			in := workflows.ChangeMediumInput{Host: hd.h.Name(), Domain: d.Name, DomID: d.DomID, Vdev: d.Vdev,
				Medium: want[workflows.WorkflowID(hd.h.Name(), d.DomID, d.Vdev)], Format: activities.FormatRaw,
				Requester: "bench", Reason: "throughput", BatchID: batch, Bench: bench}
			wg.Go(func() {
				host <- struct{}{}
				global <- struct{}{}
				defer func() { <-global; <-host }()
				run, err := the.client.ExecuteWorkflow(ctx, workflows.StartOptions(in), workflows.ChangeMediumName, in)
				var res workflows.ChangeMediumResult
				if err == nil {
					err = run.Get(ctx, &res)
				}
				if err == nil && res.Outcome != workflows.OutcomeChanged {
					err = fmt.Errorf("outcome %s", res.Outcome)
				}
				if err != nil {
					errs <- fmt.Errorf("%s: %w", workflows.WorkflowID(in.Host, in.DomID, in.Vdev), err)
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
}

// swapSpan is the time from the batch's first swap's start to its last swap's close, as
// the server recorded them, and the rate at which swaps closed from the 10th to the 90th
// percentile: the batch's pace without its ramp and its tail.
func swapSpan(t testing.TB, batch string, n int) (time.Duration, float64) {
	t.Helper()
	ctx := testenv.Context(t, time.Minute)
	var first, last time.Time
	var closes []time.Time
	var token []byte
	seen := 0
	for {
		resp, err := the.client.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
			Namespace: namespace, PageSize: 1000, NextPageToken: token,
			Query: fmt.Sprintf("CdswapBatch = '%s' AND WorkflowType = '%s'", batch, workflows.ChangeMediumName),
		})
		require.NoError(t, err)
		for _, e := range resp.GetExecutions() {
			start, end := e.GetStartTime().AsTime(), e.GetCloseTime().AsTime()
			if first.IsZero() || start.Before(first) {
				first = start
			}
			if end.After(last) {
				last = end
			}
			closes = append(closes, end)
			seen++
		}
		if token = resp.GetNextPageToken(); len(token) == 0 {
			break
		}
	}
	require.Equal(t, n, seen, "swaps of batch %s", batch)
	slices.SortFunc(closes, time.Time.Compare)
	lo, hi := n/10, n*9/10
	return last.Sub(first), float64(hi-lo) / closes[hi].Sub(closes[lo]).Seconds()
}

// batchTasks counts the workflow tasks of every run of batch.
func batchTasks(t testing.TB, batch string) int {
	t.Helper()
	ctx := testenv.Context(t, time.Minute)
	runs, err := the.client.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{Namespace: namespace,
		Query: fmt.Sprintf("WorkflowId = '%s'", batch)})
	require.NoError(t, err)
	n := 0
	for _, e := range runs.GetExecutions() {
		h, err := fetchHistory(ctx, batch, e.GetExecution().GetRunId())
		require.NoError(t, err)
		for _, ev := range h.GetEvents() {
			if ev.GetEventType() == enumspb.EVENT_TYPE_WORKFLOW_TASK_COMPLETED {
				n++
			}
		}
	}
	return n
}

// loadAverage is the 1-minute load average ("?" if unknown).
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) > 0 {
		return f[0]
	}
	return "?"
}

// fleetTable renders the throughput rows.
func fleetTable(rows []fleetCase) string {
	var b strings.Builder
	b.WriteString("| started by | hosts | limit | per host | drives/s (end to end) | drives/s (swaps) | steady | max out on a host | batch tasks/drive | CPU ms/drive: dev server | workers | xensim | CLI | CPU busy | load |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, c := range rows {
		total := c.server + c.workers + c.xensim + c.cli
		perDrive := func(d time.Duration) string {
			return fmt.Sprintf("%.0f (%.0f %%)", float64(d.Milliseconds())/float64(c.drives), 100*d.Seconds()/total.Seconds())
		}
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %.1f | %.1f | %.1f | %d | %.2f | %s | %s | %s | %s | %.0f %% | %s |\n",
			c.by, c.hosts, c.limits.Global, c.limits.PerHost,
			float64(c.drives)/c.wall.Seconds(), float64(c.drives)/c.swaps.Seconds(), c.steady, c.maxOut, float64(c.batchTasks)/float64(c.drives),
			perDrive(c.server), perDrive(c.workers), perDrive(c.xensim), perDrive(c.cli),
			100*total.Seconds()/c.wall.Seconds()/float64(runtime.NumCPU()), c.load)
	}
	b.WriteString("\n(started by: a batch (`cdswap batch start --wait`) in rounds, or as children (the way before rounds, `--bench-children`), or direct: the test process starts each swap itself within the same limits, without a batch (direct-addfd: with AddFD a regular activity, as before version 5 of local-short-steps); end to end: the batch's command, the plan's check on every host included, or the direct starts; swaps: the first swap's start to the last one's close; steady: from the 10th to the 90th percentile swap's close; max out: the most drives with their medium out at once on one host, by xensim; batch tasks/drive: the batch's workflow tasks over its drives; CPU: user and system time from /proc/<pid>/stat over the batch, per drive and as a share; xensim: the test process, in which the hosts run (and the direct starts); CPU busy: all of it against the wall time of both CPUs; load: the 1-minute load average as the batch started)\n")
	return b.String()
}
