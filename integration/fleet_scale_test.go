package integration

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"

	"github.com/cdswap/cdswap/internal/devserver"
	"github.com/cdswap/cdswap/internal/testenv"
	"github.com/cdswap/cdswap/internal/xensim"
	"github.com/cdswap/cdswap/workflows"
)

// Flags of the fleet's scale runs (after -args).
var (
	fleetDrivesFlag = flag.Int("fleet-drives", 200, "TestFleetScale: drives in the batch, over -fleet-hosts hosts (make test-fleet-large: 1000)")
	fleetHostsFlag  = flag.Int("fleet-hosts", 10, "TestFleetScale: xensim hosts, each with its own cdswap-worker")
)

// The limits of TestFleetScale's batch: ten hosts at their per-host limit fill the global
// one.
const (
	scaleGlobal  = 50
	scalePerHost = 5
)

// scaleFleet is the hosts of a scale test with their workers, and what each drive holds.
type scaleFleet struct {
	hosts   []*xensim.Host
	workers []*workerProc     // workers[i] serves hosts[i]
	holds   map[string]string // swap id -> the medium the drive holds now
}

// scaleGuests returns n guests, stubdom and dom0 in turn, on the fake QEMU; with realQEMU,
// the first stubdom and dom0 guests run a real QEMU.
func scaleGuests(n int, realQEMU bool) []xensim.DomainSpec {
	specs := make([]xensim.DomainSpec, n)
	for i := range specs {
		kind, mode := xensim.KindStubdom, xensim.QEMUFake
		if i%2 == 1 {
			kind = xensim.KindDom0
		}
		if realQEMU && i < 2 {
			mode = xensim.QEMUReal
		}
		specs[i] = xensim.DomainSpec{Kind: kind, QEMU: mode}
	}
	return specs
}

// startScaleFleet starts hosts hosts holding drives drives between them (xensim gives each
// guest one cdrom, hdc, so a drive is a guest), the first realHosts of them with a stubdom
// and a dom0 guest on a real QEMU, and one cdswap-worker process per host, as production
// runs them.
func startScaleFleet(t testing.TB, hosts, drives, realHosts int, agentDelay time.Duration) *scaleFleet {
	t.Helper()
	f := &scaleFleet{holds: map[string]string{}}
	for i := range hosts {
		n := drives / hosts
		if i < drives%hosts {
			n++
		}
		h := startHost(t, xensim.Config{
			HostName: hostName("scale"), QEMU: xensim.QEMUFake,
			Domains: scaleGuests(n, i < realHosts), AgentDelay: agentDelay,
		})
		for j, d := range h.Domains() {
			if i < realHosts && j < 2 {
				require.Equal(t, "real", d.QEMU, "guest %s of host %s: no real QEMU (read-only loop devices missing?)", d.Name, h.Name())
			}
			f.holds[workflows.WorkflowID(h.Name(), d.DomID, d.Vdev)] = d.Medium
		}
		f.hosts = append(f.hosts, h)
	}
	for _, h := range f.hosts {
		f.workers = append(f.workers, startWorker(t, h, workerOpts{}))
	}
	return f
}

// hostDrives are drives of one host.
type hostDrives struct {
	h    *xensim.Host
	doms []xensim.DomainInfo
}

// everyDrive lists every drive of hosts.
func everyDrive(hosts []*xensim.Host) []hostDrives {
	out := make([]hostDrives, len(hosts))
	for i, h := range hosts {
		out[i] = hostDrives{h, h.Domains()}
	}
	return out
}

// plan writes a CSV plan that gives each of drives the ISO it does not hold (tools, or
// rescue when it holds tools), and returns it with each swap's new medium.
func (f *scaleFleet) plan(t testing.TB, drives []hostDrives) (string, map[string]string) {
	t.Helper()
	var b strings.Builder
	b.WriteString("host,domain,vdev,medium\n")
	want := map[string]string{}
	for _, hd := range drives {
		for _, d := range hd.doms {
			id := workflows.WorkflowID(hd.h.Name(), d.DomID, d.Vdev)
			medium := iso(hd.h, xensim.ISOTools)
			if f.holds[id] == medium {
				medium = iso(hd.h, xensim.ISORescue)
			}
			fmt.Fprintf(&b, "%s,%s,%s,%s\n", hd.h.Name(), d.Name, d.Vdev, medium)
			want[id] = medium
		}
	}
	p := filepath.Join(t.TempDir(), "plan.csv")
	require.NoError(t, os.WriteFile(p, []byte(b.String()), 0o644))
	return p, want
}

// changes is the number of changes the fleet's QEMUs carried out, by xensim's count.
func (f *scaleFleet) changes() int {
	n := 0
	for _, h := range f.hosts {
		n += h.Media().Changes
	}
	return n
}

// waitUntil waits until ok holds, polling every 20 ms.
func waitUntil(ctx context.Context, t testing.TB, what string, ok func() bool) {
	t.Helper()
	for !ok() {
		select {
		case <-ctx.Done():
			t.Fatalf("waiting until %s: %v", what, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// check checks every drive of the fleet against xensim's own state: the medium want names
// in QEMU, in xenstore and in libxl's JSON; one change (and one eject) by its QEMU's own
// count, with nothing left out; and no host ever with more than perHost drives' media out
// at once. It returns the most media any host had out at once.
func (f *scaleFleet) check(t testing.TB, want map[string]string, perHost int) int {
	t.Helper()
	most := 0
	for _, h := range f.hosts {
		m := h.Media()
		counts := map[uint32]xensim.DriveMedia{}
		for _, c := range m.Drives {
			counts[c.DomID] = c
		}
		for _, d := range h.Domains() {
			id := workflows.WorkflowID(h.Name(), d.DomID, d.Vdev)
			checkDrive(t, h, d, want[id], f.holds[id])
			c, ok := counts[d.DomID]
			if assert.True(t, ok, "xensim has no counts for %s of %s on %s", d.Vdev, d.Name, h.Name()) {
				assert.Equal(t, 1, c.Changes, "changes of %s of %s on %s (QEMU %s), by xensim's count", d.Vdev, d.Name, h.Name(), d.QEMU)
				assert.Equal(t, 1, c.Ejects, "ejects of %s of %s on %s (QEMU %s), by xensim's count", d.Vdev, d.Name, h.Name(), d.QEMU)
				assert.False(t, c.Out, "%s of %s on %s has its medium out", d.Vdev, d.Name, h.Name())
			}
		}
		assert.Equal(t, len(h.Domains()), m.Changes, "changes on host %s", h.Name())
		assert.LessOrEqual(t, m.MaxOut, perHost, "host %s had %d drives' media out at once (at %s), over the per-host limit",
			h.Name(), m.MaxOut, m.MaxOutAt.Format("15:04:05.000"))
		most = max(most, m.MaxOut)
	}
	for id, m := range want {
		f.holds[id] = m
	}
	return most
}

// TestFleetScale runs one batch over -fleet-hosts xensim hosts (default 10) holding
// -fleet-drives drives (default 200; 1,000 in `make test-fleet-large`): fake QEMU, but for a
// real QEMU stubdom and dom0 guest on each of the first two hosts, with a cdswap-worker
// process per host, through `cdswap batch start` and the dev server. Every drive is then
// checked against xensim's own state, changed exactly once by xensim's count, and no host
// ever had more drives' media out at once than the per-host limit, as xensim measured it.
func TestFleetScale(t *testing.T) {
	need(t)
	t.Parallel()
	hosts, drives := *fleetHostsFlag, *fleetDrivesFlag
	require.Positive(t, hosts, "-fleet-hosts")
	require.GreaterOrEqual(t, drives, 2*hosts, "-fleet-drives: at least two a host")
	t0 := time.Now()
	f := startScaleFleet(t, hosts, drives, min(2, hosts), 5*time.Millisecond)
	planFile, want := f.plan(t, everyDrive(f.hosts))
	t.Logf("%d hosts with %d drives and their workers up in %s", hosts, drives, time.Since(t0).Round(time.Millisecond))

	t1 := time.Now()
	r := runCLIFor(t, 20*time.Minute, "batch", "start", "--plan", planFile,
		"--limit", fmt.Sprint(scaleGlobal), "--per-host", fmt.Sprint(scalePerHost),
		"--reason", "scale test", "--wait", "--timeout", "20m", "--json")
	took := time.Since(t1)
	require.Equal(t, 0, r.code, r.stderr)
	var res workflows.FleetSwapResult
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &res))
	assert.Equal(t, workflows.FleetDone, res.Status)
	assert.Equal(t, drives, res.Total)
	assert.Equal(t, drives, res.Done)
	assert.Equal(t, drives, res.Changed)
	t.Logf("batch %s: %d drives in %s (%.1f drives/s, plan check included), %d run(s)",
		res.Batch, drives, took.Round(time.Millisecond), float64(drives)/took.Seconds(), res.Runs)

	most := f.check(t, want, scalePerHost)
	// A batch that ran one swap at a time would pass the limit check without testing it.
	assert.GreaterOrEqual(t, most, 2, "no host ever had two media out at once")
	t.Logf("most drives' media out at once on one host: %d (limit %d)", most, scalePerHost)
}

// startDevServer starts a dev server of the test's own, stopped at cleanup.
func startDevServer(t testing.TB, opts devserver.Options) *devserver.Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srv, err := devserver.Start(ctx, opts)
	require.NoError(t, err, "start a dev server on %s", opts.DBFile)
	t.Cleanup(func() {
		srv.Client().Close()
		_ = srv.Stop() // a server the test killed reports how it died
	})
	return srv
}

// useServer points the package's helpers (startWorker, swapOK, runCLI...) at another
// server until t ends. A test that calls it must not call t.Parallel: the package's parallel
// tests only resume once every serial top-level test has ended, so none of them sees it.
func useServer(t testing.TB, c client.Client, address string) {
	prevClient, prevAddress := the.client, the.address
	the.client, the.address = c, address
	t.Cleanup(func() { the.client, the.address = prevClient, prevAddress })
}

// TestFleetScaleCrash runs a batch through a SIGKILL of a host's worker (restarted, as
// systemd would) and then a SIGKILL of the dev server, restarted on its SQLite file and
// port: the batch finishes with every drive changed exactly once by xensim's count (none
// lost, none twice) and the per-host limit held, as xensim measured it. It must not call
// t.Parallel (see useServer).
func TestFleetScaleCrash(t *testing.T) {
	need(t)
	const hosts, drives, perHost = 4, 120, 3
	db := filepath.Join(t.TempDir(), "temporal.db")
	srv := startDevServer(t, devserver.Options{Namespace: namespace, DBFile: db})
	addr := srv.FrontendHostPort()
	useServer(t, srv.Client(), addr)
	f := startScaleFleet(t, hosts, drives, 0, 5*time.Millisecond)
	planFile, want := f.plan(t, everyDrive(f.hosts))

	r := runCLI(t, "batch", "start", "--plan", planFile, "--limit", "12", "--per-host", fmt.Sprint(perHost), "--json")
	require.Equal(t, 0, r.code, r.stderr)
	var started struct {
		Batch string `json:"batch"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &started))
	ctx := testenv.Context(t, 10*time.Minute)

	// Kill the first host's worker while a swap of its has a drive's medium out: that swap
	// must go on under the next worker, neither lost nor done twice.
	h0 := f.hosts[0]
	waitUntil(ctx, t, "a fifth of the drives changed and one of the first host's out", func() bool {
		return f.changes() >= drives/5 && h0.Media().Out > 0
	})
	at, out := f.changes(), h0.Media().Out
	f.workers[0].kill()
	t.Logf("SIGKILLed the worker of %s after %d changes, with %d of its drives' media out", h0.Name(), at, out)
	// The other hosts go on; the dead worker's swaps wait for its successor.
	waitUntil(ctx, t, "ten more changes", func() bool { return f.changes() >= at+10 })
	f.workers[0] = startWorker(t, h0, workerOpts{})

	out = 0
	waitUntil(ctx, t, "half the drives changed and some media out", func() bool {
		out = 0
		for _, h := range f.hosts {
			out += h.Media().Out
		}
		return f.changes() >= drives/2 && out > 0
	})
	at = f.changes()
	require.NoError(t, syscall.Kill(-srv.Pid(), syscall.SIGKILL))
	<-srv.Done()
	t.Logf("SIGKILLed the dev server after %d changes, with %d drives' media out", at, out)
	t0 := time.Now()
	srv2 := startDevServer(t, devserver.Options{Namespace: namespace, DBFile: db, HostPort: addr})
	useServer(t, srv2.Client(), addr)

	var res workflows.FleetSwapResult
	require.NoError(t, the.client.GetWorkflow(ctx, started.Batch, "").Get(ctx, &res), "batch %s", started.Batch)
	t.Logf("the batch ended %s after the dev server's restart began", time.Since(t0).Round(time.Millisecond))
	assert.Equal(t, workflows.FleetDone, res.Status)
	assert.Equal(t, drives, res.Done)
	assert.Equal(t, drives, res.Changed)
	f.check(t, want, perHost)
}
