package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/worker"
	"google.golang.org/protobuf/proto"

	"github.com/cdswap/cdswap/activities"
	"github.com/cdswap/cdswap/internal/plan"
	"github.com/cdswap/cdswap/internal/testenv"
	"github.com/cdswap/cdswap/internal/xen"
	"github.com/cdswap/cdswap/internal/xensim"
	"github.com/cdswap/cdswap/workflows"
)

// A plan of 100,000 drives is more than this machine can simulate (xensim's guests cost
// about 0.1 MB each, and each host a worker), so most of the big plan's hosts are
// inventory-only: a worker in this process polls each one's task queue with the real
// Inventory workflow and an Inventory activity that answers a fleet of guests from a
// table. The CLI, the plan's pages, the batch workflow and its worker are the real ones,
// and the one drive that changes (the canary) is on a xensim host.
const (
	bigPlanRows      = 100_000
	bigPlanHosts     = 40 // inventory-only hosts, besides the xensim host
	bigPlanOldMedium = "/isos/drivers-2025.iso"
	bigPlanNewMedium = "/isos/drivers-2026.iso"
)

// inventoryOnlyHost serves Inventory for host: guests guest-1..guest-n, domids from 1, one
// stubdom-kind hdc drive each holding bigPlanOldMedium, and every medium asked accepted.
func inventoryOnlyHost(t *testing.T, host string, n int) {
	t.Helper()
	drives := make([]activities.InventoryDrive, n)
	for i := range drives {
		drives[i] = activities.InventoryDrive{DomID: uint32(i + 1), Name: fmt.Sprintf("guest-%d", i+1), Vdev: "hdc", DevID: xen.DevID(5632),
			Kind: activities.KindStubdom, Medium: bigPlanOldMedium, Format: activities.FormatRaw, ConfigMedium: bigPlanOldMedium}
	}
	inventory := func(ctx context.Context, in activities.InventoryInput) (activities.InventoryResult, error) {
		res := activities.InventoryResult{Host: host, Drives: drives}
		for _, m := range in.Media {
			for _, k := range []activities.Kind{activities.KindStubdom, activities.KindDom0} {
				res.Media = append(res.Media, activities.MediumCheck{Medium: m.Medium, Format: activities.FormatRaw, Kind: k, Resolved: m.Medium})
			}
		}
		return res, nil
	}
	w := worker.New(the.client, activities.TaskQueue(host), worker.Options{
		MaxConcurrentWorkflowTaskPollers: 2, MaxConcurrentActivityTaskPollers: 2,
	})
	workflows.RegisterInventory(w)
	w.RegisterActivityWithOptions(inventory, activity.RegisterOptions{Name: activities.NameInventory})
	require.NoError(t, w.Start(), "worker of inventory-only host %s", host)
	t.Cleanup(w.Stop)
}

// TestFleetPlan100k: a CSV plan of 100,000 drives over 41 hosts is checked and accepted by
// `cdswap batch start` within a bounded memory, stored as plan pages that hold every row,
// and started; the batch is paused during its canary (held on a xensim host by a slow
// eject) and canceled. The batch's input carries no drive, and its run's history, with a
// page read into it and every page released, stays far below Temporal's limits (51,200
// events, 50 MB).
func TestFleetPlan100k(t *testing.T) {
	s := need(t)
	t.Parallel()
	sim := startHost(t, xensim.Config{QEMU: xensim.QEMUFake, StubdomGuests: 1, Dom0Guests: 1, AgentDelay: 5 * time.Millisecond})
	startWorker(t, sim, workerOpts{})
	slowCommand(t, "eject", 4*time.Second, sim)
	medium := newISO(t, sim)

	var b strings.Builder
	b.WriteString("host,domain,vdev,medium\n")
	for _, d := range sim.Domains() {
		fmt.Fprintf(&b, "%s,%s,%s,%s\n", sim.Name(), d.Name, d.Vdev, medium)
	}
	rest := bigPlanRows - len(sim.Domains())
	per := (rest + bigPlanHosts - 1) / bigPlanHosts
	prefix := hostName("inv")
	for i := 0; rest > 0; i++ {
		n := min(per, rest)
		host := fmt.Sprintf("%s-%d", prefix, i)
		inventoryOnlyHost(t, host, n)
		for g := 1; g <= n; g++ {
			fmt.Fprintf(&b, "%s,guest-%d,hdc,%s\n", host, g, bigPlanNewMedium)
		}
		rest -= n
	}
	file := writePlan(t, "plan100k.csv", b.String())
	t.Logf("plan: %d rows, %.1f MB", bigPlanRows, float64(b.Len())/1e6)

	// The CLI, measured: its peak memory while it parses, asks 41 inventories, checks the
	// rows against them and stores the pages.
	ctx := testenv.Context(t, 5*time.Minute)
	cmd := exec.CommandContext(ctx, s.cliBin, "--address", s.address, "--namespace", namespace,
		"batch", "start", "--plan", file, "--canary-hosts", "1", "--reason", "100,000 drives", "--json")
	cmd.Env = append(os.Environ(), "USER=integration-test")
	t0 := time.Now()
	out, err := cmd.Output()
	took := time.Since(t0)
	var stderr string
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		stderr = string(ee.Stderr)
	}
	require.NoError(t, err, "cdswap batch start: %s", stderr)
	var started struct {
		Batch  string
		Drives int
	}
	require.NoError(t, json.Unmarshal(out, &started), string(out))
	assert.Equal(t, bigPlanRows, started.Drives)
	maxRSS := cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss << 10 // KiB on Linux
	t.Logf("batch start of %d rows: %s, peak RSS %.0f MiB", bigPlanRows, took.Round(time.Millisecond), float64(maxRSS)/(1<<20))
	assert.Less(t, maxRSS, int64(1<<30), "the CLI's peak memory for 100,000 rows")
	id := started.Batch

	// Pause while the canary holds, so that nothing else starts; then cancel.
	assert.Equal(t, workflows.FleetPaused, batchUpdate(t, id, workflows.UpdatePause, "big plan: look, do not touch").Status)
	assert.Equal(t, workflows.FleetCanceling, batchUpdate(t, id, workflows.UpdateCancel, "big plan: done looking").Status)
	res := batchResult(t, id)
	assert.Equal(t, workflows.FleetCanceled, res.Status)
	assert.Equal(t, bigPlanRows, res.Total)
	assert.Equal(t, bigPlanRows-res.Done, res.NotStarted, "%+v", res)
	assert.LessOrEqual(t, res.Done, 1, "only the canary may have run: %+v", res)
	canary := sim.Domains()[0]
	if res.Changed == 1 {
		checkDrive(t, sim, canary, medium, canary.Medium)
	} else {
		checkOldMedium(t, sim, canary, medium)
	}
	checkUntouched(t, sim, sim.Domains()[1])

	// The pages hold every row, in plan order, each page's payload within the 512 KB
	// at which Temporal starts to warn.
	pages := (bigPlanRows + plan.PageRows - 1) / plan.PageRows
	rows, largest := 0, 0
	for p := 0; p < pages; p++ {
		it := the.client.GetWorkflowHistory(ctx, workflows.PlanPageID(id, p), "", false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
		require.True(t, it.HasNext(), "page %d", p)
		first, err := it.Next()
		require.NoError(t, err, "page %d", p)
		largest = max(largest, proto.Size(first.GetWorkflowExecutionStartedEventAttributes().GetInput()))
		drives, err := plan.ReadPage(ctx, the.client, id, p)
		require.NoError(t, err, "page %d", p)
		require.NotEmpty(t, drives, "page %d", p)
		require.Equal(t, rows+2, drives[0].Line, "page %d starts at line %d", p, drives[0].Line)
		rows += len(drives)
	}
	assert.Equal(t, bigPlanRows, rows)
	assert.Less(t, largest, 512<<10, "largest plan page payload")
	_, err = plan.ReadPage(ctx, the.client, id, pages)
	assert.Error(t, err, "a page past the last: the plan has %d pages", pages)

	h, err := fetchHistory(ctx, id, "")
	require.NoError(t, err)
	require.NoError(t, replay(h, registerAll))
	input := proto.Size(h.GetEvents()[0].GetWorkflowExecutionStartedEventAttributes().GetInput())
	size := proto.Size(h)
	t.Logf("batch %s: input %d bytes; history %d events, %d bytes; %d pages, the largest %d bytes", id, input, len(h.GetEvents()), size, pages, largest)
	assert.Less(t, input, 16<<10, "the batch's input carries a plan of 100,000 drives")
	assert.Less(t, len(h.GetEvents()), 2_000, "events of the batch's run")
	assert.Less(t, size, 2<<20, "bytes of the batch's run")
}

// TestFleetYAMLPlan: a YAML plan (a "drives:" mapping, a BOM, CRLF line ends) with media
// and an eject is resolved by --dry-run with its lines and run to the end: each drive ends
// as its row asked.
func TestFleetYAMLPlan(t *testing.T) {
	need(t)
	t.Parallel()
	h := startHost(t, xensim.Config{QEMU: xensim.QEMUFake, StubdomGuests: 2, Dom0Guests: 1, AgentDelay: 5 * time.Millisecond})
	startWorker(t, h, workerOpts{})
	doms := h.Domains()
	tools, rescue := iso(h, xensim.ISOTools), iso(h, xensim.ISORescue)
	body := "\xef\xbb\xbf# tonight's change\r\ndrives:\r\n" +
		fmt.Sprintf("  - {host: %s, domain: %s, vdev: hdc, medium: %s}\r\n", h.Name(), doms[0].Name, tools) +
		fmt.Sprintf("  - host: %s\r\n    domain: \"%d\"\r\n    vdev: hdc\r\n    medium: %s\r\n    format: raw\r\n", h.Name(), doms[1].DomID, rescue) +
		fmt.Sprintf("  - {host: %s, domain: %s, vdev: hdc, eject: true}\r\n", h.Name(), doms[2].Name)
	file := writePlan(t, "plan.yaml", body)

	dry := runCLI(t, "batch", "start", "--plan", file, "--dry-run", "--json")
	require.Equal(t, 0, dry.code, dry.stderr)
	var resolved struct {
		Drives []workflows.FleetDrive
	}
	require.NoError(t, json.Unmarshal([]byte(dry.stdout), &resolved), dry.stdout)
	require.Len(t, resolved.Drives, 3)
	for i, want := range []struct {
		line   int
		domain string
		medium string
	}{{3, doms[0].Name, tools}, {4, doms[1].Name, rescue}, {9, doms[2].Name, ""}} {
		got := resolved.Drives[i]
		assert.Equal(t, want.line, got.Line, "drive %d: %+v", i, got)
		assert.Equal(t, want.domain, got.Domain, "drive %d: %+v", i, got)
		assert.Equal(t, want.medium, got.Medium, "drive %d: %+v", i, got)
		assert.Equal(t, doms[i].Medium, got.Old, "drive %d: %+v", i, got)
	}

	r := runCLI(t, "batch", "start", "--plan", file, "--reason", "yaml plan", "--wait", "--json")
	require.Equal(t, 0, r.code, r.stderr)
	var res workflows.FleetSwapResult
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &res), r.stdout)
	assert.Equal(t, workflows.FleetDone, res.Status)
	assert.Equal(t, 3, res.Changed, "%+v", res)
	checkDrive(t, h, doms[0], tools, doms[0].Medium)
	checkDrive(t, h, doms[1], rescue, doms[1].Medium)
	checkDrive(t, h, doms[2], "", doms[2].Medium)
}
