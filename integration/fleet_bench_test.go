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
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/api/workflowservice/v1"

	"github.com/cdswap/cdswap/internal/testenv"
	"github.com/cdswap/cdswap/internal/xensim"
	"github.com/cdswap/cdswap/workflows"
)

var fleetBenchDrivesFlag = flag.Int("fleet-bench-drives", 300, "TestFleetThroughputReport: drives in each batch")

// fleetBenchHosts and fleetBenchLimits are the cases of TestFleetThroughputReport: every
// host count with every pair of limits.
var (
	fleetBenchHosts  = []int{1, 5, 10}
	fleetBenchLimits = []workflows.FleetLimits{{Global: 20, PerHost: 2}, {Global: 50, PerHost: 5}}
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
	drives int
	wall   time.Duration // `cdswap batch start --wait`, plan check included
	swaps  time.Duration // first swap's start to last swap's close
	steady float64       // drives/s between the closes of the 10th and 90th percentile swaps
	maxOut int           // the most drives' media out at once on one host, by xensim
	load   string        // the 1-minute load average when the batch started
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
	maxHosts := fleetBenchHosts[len(fleetBenchHosts)-1]
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
			c := fleetCase{hosts: k, limits: lim}
			planFile, want := f.benchPlan(t, k, n)
			c.drives = len(want)
			for _, h := range f.hosts {
				h.ResetMedia()
			}
			c.load = loadAverage()
			server0, workers0, self0 := cpuOf(t, s.srv.Pid()), cpuOf(t, workerPIDs...), cpuOf(t, os.Getpid())
			t0 := time.Now()
			r := runCLIFor(t, 20*time.Minute, "batch", "start", "--plan", planFile,
				"--limit", strconv.Itoa(lim.Global), "--per-host", strconv.Itoa(lim.PerHost),
				"--reason", "throughput", "--wait", "--timeout", "20m", "--json")
			c.wall = time.Since(t0)
			c.server = cpuOf(t, s.srv.Pid()) - server0
			c.workers = cpuOf(t, workerPIDs...) - workers0
			c.xensim = cpuOf(t, os.Getpid()) - self0
			c.cli = r.cpu
			require.Equal(t, 0, r.code, r.stderr)
			var res workflows.FleetSwapResult
			require.NoError(t, json.Unmarshal([]byte(r.stdout), &res))
			require.Equal(t, c.drives, res.Changed, "batch %s", res.Batch)
			c.swaps, c.steady = swapSpan(t, res.Batch, c.drives)
			for _, h := range f.hosts[:k] {
				c.maxOut = max(c.maxOut, h.Media().MaxOut)
			}
			require.LessOrEqual(t, c.maxOut, lim.PerHost, "xensim saw more media out at once than the per-host limit")
			for id, m := range want {
				f.holds[id] = m
			}
			rows = append(rows, c)
			t.Logf("%d hosts, limits %d/%d: %d drives in %s", k, lim.Global, lim.PerHost, c.drives, c.wall.Round(time.Millisecond))
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

// benchPlan writes a plan changing n drives spread evenly over the first k hosts (each to
// the ISO it does not hold) and returns it with each swap's new medium.
func (f *scaleFleet) benchPlan(t testing.TB, k, n int) (string, map[string]string) {
	t.Helper()
	drives := make([]hostDrives, k)
	for i, h := range f.hosts[:k] {
		per := n / k
		if i < n%k {
			per++
		}
		drives[i] = hostDrives{h, h.Domains()[:per]}
	}
	return f.plan(t, drives)
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
	b.WriteString("| hosts | limit | per host | drives/s (end to end) | drives/s (swaps) | steady | max out on a host | CPU ms/drive: dev server | workers | xensim | CLI | CPU busy | load |\n")
	b.WriteString("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, c := range rows {
		total := c.server + c.workers + c.xensim + c.cli
		perDrive := func(d time.Duration) string {
			return fmt.Sprintf("%.0f (%.0f %%)", float64(d.Milliseconds())/float64(c.drives), 100*d.Seconds()/total.Seconds())
		}
		fmt.Fprintf(&b, "| %d | %d | %d | %.1f | %.1f | %.1f | %d | %s | %s | %s | %s | %.0f %% | %s |\n",
			c.hosts, c.limits.Global, c.limits.PerHost,
			float64(c.drives)/c.wall.Seconds(), float64(c.drives)/c.swaps.Seconds(), c.steady, c.maxOut,
			perDrive(c.server), perDrive(c.workers), perDrive(c.xensim), perDrive(c.cli),
			100*total.Seconds()/c.wall.Seconds()/float64(runtime.NumCPU()), c.load)
	}
	b.WriteString("\n(end to end: `cdswap batch start --wait`, the plan's check on every host included; swaps: the first swap's start to the last one's close; steady: from the 10th to the 90th percentile swap's close; max out: the most drives with their medium out at once on one host, by xensim; CPU: user and system time from /proc/<pid>/stat over the batch, per drive and as a share; xensim: the test process, in which the hosts run; CPU busy: all of it against the wall time of both CPUs; load: the 1-minute load average as the batch started)\n")
	return b.String()
}
