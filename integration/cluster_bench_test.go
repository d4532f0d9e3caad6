package integration

import (
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"

	"github.com/cdswap/cdswap/internal/testenv"
	"github.com/cdswap/cdswap/internal/xensim"
	"github.com/cdswap/cdswap/workflows"
)

// burstDrives is how many stubdom drives of one host a throughput burst swaps at once.
const burstDrives = 20

// serverFigures are one Temporal server's figures: single swaps one after the other, and
// bursts of burstDrives swaps at once.
type serverFigures struct {
	swaps  []swapStats
	bursts []time.Duration // wall time of each burst, from the first start to the last result
}

// measureServer runs, on the server the package's helpers point at, n single stubdom
// inserts (after 3 to warm up) and two bursts, each on a host and worker of its own.
func measureServer(t *testing.T, n int) serverFigures {
	var f serverFigures
	h, _, dom := benchHost(t)
	startWorker(t, h, workerOpts{})
	for i := range 3 {
		serverSwap(t, h, dom, benchMedium(h, i))
	}
	for i := range n {
		f.swaps = append(f.swaps, serverSwap(t, h, dom, benchMedium(h, i+1)))
	}

	bh := startHost(t, xensim.Config{
		HostName: hostName("burst"), StubdomGuests: burstDrives, QEMU: xensim.QEMUFake, AgentDelay: -1,
	})
	startWorker(t, bh, workerOpts{})
	var doms []xensim.DomainInfo
	for _, d := range bh.Domains() {
		if d.Kind == xensim.KindStubdom {
			doms = append(doms, d)
		}
	}
	for round := range 3 { // the first round warms up
		ctx := testenv.Context(t, 3*time.Minute)
		t0 := time.Now()
		runs := make([]client.WorkflowRun, len(doms))
		for i, d := range doms {
			runs[i] = startSwap(t, ctx, swapInput(bh, d, benchMedium(bh, round), ""))
		}
		for i, run := range runs {
			res, err := waitSwap(ctx, run)
			require.NoError(t, err, "burst swap of %s: result %+v", doms[i].Name, res)
			require.Equal(t, workflows.OutcomeChanged, res.Outcome)
		}
		if round > 0 {
			f.bursts = append(f.bursts, time.Since(t0))
		}
	}
	return f
}

// serverSwap runs one stubdom insert, production's way, on the server the package's helpers
// point at: its time from the start request to the result, and each step's time in the
// workflow (StepRecord.Started to Ended).
func serverSwap(t *testing.T, h *xensim.Host, dom xensim.DomainInfo, medium string) swapStats {
	t.Helper()
	ctx := testenv.Context(t, time.Minute)
	t0 := time.Now()
	run := startSwap(t, ctx, swapInput(h, dom, medium, ""))
	res, err := waitSwap(ctx, run)
	total := time.Since(t0)
	require.NoError(t, err, "result %+v", res)
	require.Equal(t, workflows.OutcomeChanged, res.Outcome)
	st := swapStats{total: total, steps: map[string]time.Duration{}, detect: -1}
	for _, s := range res.Steps {
		st.steps[s.Name] += s.Ended.Sub(s.Started)
	}
	return st
}

// TestClusterLatencyReport measures single swaps and bursts on the dev server and on the
// cluster of scripts/cluster.sh (the same dynamic-config tuning), one after the other in
// one run, and prints a markdown table for BENCHMARKS.md. It runs only when asked:
//
//	go test ./integration -run TestClusterLatencyReport -count=1 -v -args -report [-swaps 50]
//
// Like TestCluster, it must not call t.Parallel (see useCluster).
func TestClusterLatencyReport(t *testing.T) {
	if !*reportFlag {
		t.Skip("prints the cluster's latency table only when asked: go test ./integration -run TestClusterLatencyReport -count=1 -v -args -report")
	}
	need(t)
	n := *swapsFlag
	require.Positive(t, n, "-swaps")
	dev := measureServer(t, n)
	c := startCluster(t)
	useCluster(t, c)
	cl := measureServer(t, n)
	fmt.Fprintf(os.Stdout, "\n%d stubdom inserts one after the other, then 2 bursts of %d at once, on each server (fake QEMU, add-fd delay 0); %s, %d CPUs\n\n%s\n",
		n, burstDrives, time.Now().Format("2006-01-02"), runtime.NumCPU(), serverTable(dev, cl))
}

// serverTable renders the two servers' figures side by side.
func serverTable(dev, cl serverFigures) string {
	var b strings.Builder
	f := func(d time.Duration) string { return fmt.Sprintf("%.1f", ms(d)) }
	b.WriteString("| step | dev server p50 | p95 | max | cluster p50 | p95 | max |\n|---|---:|---:|---:|---:|---:|---:|\n")
	for _, step := range append([]string{""}, benchSteps...) {
		name := step
		if step == "" {
			name = "**whole swap**"
		}
		d, c := column(dev.swaps, step), column(cl.swaps, step)
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s |\n", name,
			f(percentile(d, 50)), f(percentile(d, 95)), f(slices.Max(d)),
			f(percentile(c, 50)), f(percentile(c, 95)), f(slices.Max(c)))
	}
	rate := func(bs []time.Duration) string {
		var s []string
		for _, d := range bs {
			s = append(s, fmt.Sprintf("%.1f", burstDrives/d.Seconds()))
		}
		return strings.Join(s, ", ")
	}
	fmt.Fprintf(&b, "| **swaps/s, %d at once** | %s | | | %s | | |\n", burstDrives, rate(dev.bursts), rate(cl.bursts))
	b.WriteString("\n(milliseconds; a step from ActivityTaskScheduled to ActivityTaskCompleted, the whole swap from the start request to the result; swaps/s: one figure per burst)\n")
	return b.String()
}
