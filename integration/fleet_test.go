package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/api/temporalproto"
	"go.temporal.io/api/workflowservice/v1"

	"github.com/cdswap/cdswap/internal/testenv"
	"github.com/cdswap/cdswap/internal/xensim"
	"github.com/cdswap/cdswap/workflows"
)

// registerAll registers every workflow a worker runs, the batch's too.
func registerAll(r workflows.Registry) {
	workflows.Register(r)
	workflows.RegisterInventory(r)
	workflows.RegisterFleet(r)
}

// fleetHost is a simulated host of a fleet test, with its worker.
func fleetHost(t *testing.T, stub, dom0 int) *xensim.Host {
	h := startHost(t, xensim.Config{QEMU: xensim.QEMUFake, StubdomGuests: stub, Dom0Guests: dom0, TradGuests: 1, AgentDelay: 5 * time.Millisecond})
	startWorker(t, h, workerOpts{})
	return h
}

// newISO is an ISO of h other than the one its guests start with.
func newISO(t *testing.T, h *xensim.Host) string {
	for _, p := range h.ISOs() {
		if filepath.Base(p) != xensim.DefaultMedium {
			return p
		}
	}
	t.Fatalf("host %s has no ISO but %s: %v", h.Name(), xensim.DefaultMedium, h.ISOs())
	return ""
}

func writePlan(t *testing.T, name, body string) string {
	p := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(p, []byte(body), 0o644))
	return p
}

// TestFleetBatch runs a batch of a few dozen drives over three hosts from a CSV plan (BOM,
// CRLF), in plan pages small enough for the batch to continue as new twice, and checks
// every drive against xensim's own state, the per-host limit against the swaps' own start
// and close times, the report, and that every run's history replays.
func TestFleetBatch(t *testing.T) {
	t.Parallel()
	hosts := []*xensim.Host{fleetHost(t, 8, 4), fleetHost(t, 8, 4), fleetHost(t, 6, 4)}
	var b strings.Builder
	b.WriteString("\xef\xbb\xbfhost,domain,vdev,medium\r\n")
	want := map[string]string{} // swap id -> new medium
	total := 0
	for _, h := range hosts {
		medium := newISO(t, h)
		for _, d := range h.Domains() {
			if d.Kind == xensim.KindTraditional {
				continue
			}
			fmt.Fprintf(&b, "%s,%s,%s,%s\r\n", h.Name(), d.Name, d.Vdev, medium)
			want[workflows.WorkflowID(h.Name(), d.DomID, d.Vdev)] = medium
			total++
		}
	}
	planFile := writePlan(t, "plan.csv", b.String())

	dry := runCLI(t, "batch", "start", "--plan", planFile, "--dry-run", "--json")
	require.Equal(t, 0, dry.code, dry.stderr)
	var resolved struct {
		Drives []workflows.FleetDrive
	}
	require.NoError(t, json.Unmarshal([]byte(dry.stdout), &resolved))
	assert.Len(t, resolved.Drives, total)

	r := runCLI(t, "batch", "start", "--plan", planFile, "--limit", "6", "--per-host", "2", "--page-rows", "12",
		"--drives-per-run", "12", "--reason", "drivers 2026", "--ticket", "CHG-1", "--wait", "--json")
	require.Equal(t, 0, r.code, r.stderr)
	var res workflows.FleetSwapResult
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &res))
	assert.Equal(t, workflows.FleetDone, res.Status)
	assert.Equal(t, total, res.Done)
	assert.Equal(t, total, res.Changed)
	assert.Equal(t, 3, res.Runs, "pages of 12 of %d drives, a run per page", total)

	for _, h := range hosts {
		for _, d := range h.Domains() {
			if d.Kind == xensim.KindTraditional {
				checkUntouched(t, h, d)
				continue
			}
			checkDrive(t, h, d, want[workflows.WorkflowID(h.Name(), d.DomID, d.Vdev)], d.Medium)
		}
	}

	ctx := testenv.Context(t, time.Minute)
	// The swaps, as the server recorded them: one per drive, never more than 2 at once on
	// a host.
	resp, err := the.client.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{Namespace: namespace, PageSize: 1000,
		Query: fmt.Sprintf("CdswapBatch = '%s' AND WorkflowType = 'ChangeMedium'", res.Batch)})
	require.NoError(t, err)
	require.Len(t, resp.GetExecutions(), total)
	type span struct{ start, end time.Time }
	perHost := map[string][]span{}
	for _, e := range resp.GetExecutions() {
		id := e.GetExecution().GetWorkflowId()
		_, ok := want[id]
		require.True(t, ok, "swap %s is not in the plan", id)
		for _, h := range hosts {
			if strings.HasPrefix(id, "cdswap-"+h.Name()+"-") {
				perHost[h.Name()] = append(perHost[h.Name()], span{e.GetStartTime().AsTime(), e.GetCloseTime().AsTime()})
			}
		}
	}
	for h, spans := range perHost {
		for _, s := range spans {
			n := 0
			for _, o := range spans {
				if !o.start.After(s.start) && o.end.After(s.start) {
					n++
				}
			}
			assert.LessOrEqual(t, n, 2, "swaps in flight on host %s at %s", h, s.start)
		}
	}

	rep := runCLI(t, "batch", "report", res.Batch, "--json")
	require.Equal(t, 0, rep.code, rep.stderr)
	var rows []struct {
		Host, Outcome, Old, New string
		SwapID                  string `json:"swap_id"`
	}
	require.NoError(t, json.Unmarshal([]byte(rep.stdout), &rows))
	require.Len(t, rows, total)
	for _, row := range rows {
		assert.Equal(t, string(workflows.OutcomeChanged), row.Outcome, "%+v", row)
		assert.Equal(t, want[row.SwapID], row.New, "%+v", row)
		assert.NotEmpty(t, row.Old, "%+v", row)
	}

	// Both runs' histories replay; a recording run keeps the first two.
	runs, err := the.client.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{Namespace: namespace,
		Query: fmt.Sprintf("WorkflowId = '%s'", res.Batch)})
	require.NoError(t, err)
	require.Len(t, runs.GetExecutions(), 3)
	for i, e := range runs.GetExecutions() {
		h, err := fetchHistory(ctx, res.Batch, e.GetExecution().GetRunId())
		require.NoError(t, err)
		require.NoError(t, replay(h, registerAll), "run %s", e.GetExecution().GetRunId())
		if recording() && i > 0 {
			// Newest first: i=2 is the first run, i=1 the one continued from it.
			p := historyPath(workflows.FleetSwapName, fmt.Sprintf("continued-run%d", 3-i), fleetHistoryNow)
			if _, err := os.Stat(p); err == nil && !*rerecordFlag {
				t.Logf("kept %s (-rerecord overwrites it)", p)
				continue
			}
			js, err := temporalproto.CustomJSONMarshalOptions{Indent: "  "}.Marshal(h)
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(p, append(js, '\n'), 0o644))
			t.Logf("wrote %s (%d events)", p, len(h.GetEvents()))
		}
	}
}

// TestFleetBadPlans: every bad plan is refused with its lines, and nothing starts.
func TestFleetBadPlans(t *testing.T) {
	t.Parallel()
	h := fleetHost(t, 2, 1)
	stub, dom0, trad := h.Domains()[0], h.Domains()[2], h.Domains()[3]
	medium := newISO(t, h)
	outside := writePlan(t, "outside.iso", strings.Repeat("x", 4096))
	head := "host,domain,vdev,medium\n"
	tests := []struct {
		name, file, body string
		want             []string
	}{
		{"empty file", "p.csv", "", []string{"the file is empty"}},
		{"missing column", "p.csv", "host,domain,medium\n" + h.Name() + "," + stub.Name + "," + medium + "\n", []string{`line 1: the header has no "vdev" column`}},
		{"unknown host", "p.csv", head + "nosuchhost,web1,hdc," + medium + "\n", []string{"line 2: host nosuchhost: no cdswap-worker polls host nosuchhost"}},
		{"no such domain, no such drive", "p.csv", head + fmt.Sprintf("%s,nosuchguest,hdc,%s\n%s,%s,xvdz,%s\n", h.Name(), medium, h.Name(), stub.Name, medium),
			[]string{"line 2:", "has no guest nosuchguest", "line 3:", "has no CD-ROM drive xvdz"}},
		{"duplicate drive by name and domid", "p.csv", head + fmt.Sprintf("%s,%s,hdc,%s\n%s,%d,hdc,%s\n", h.Name(), stub.Name, medium, h.Name(), stub.DomID, medium),
			[]string{"line 3:", "the same drive as line 2"}},
		{"medium outside the roots", "p.csv", head + fmt.Sprintf("%s,%s,hdc,%s\n", h.Name(), dom0.Name, outside), []string{"line 2:", "outside the ISO roots"}},
		{"traditional guest", "p.yaml", fmt.Sprintf("- {host: %s, domain: %s, vdev: hdc, eject: true}\n", h.Name(), trad.Name), []string{"line 1:", "qemu-xen-traditional"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runCLI(t, "batch", "start", "--plan", writePlan(t, tt.file, tt.body))
			assert.Equal(t, 1, r.code)
			for _, w := range tt.want {
				assert.Contains(t, r.stderr, w)
			}
			assert.Contains(t, r.stderr, "nothing was started")
		})
	}
	// Nothing started: no batch of this host's drives, and the drives hold what they held.
	for _, d := range h.Domains() {
		checkUntouched(t, h, d)
	}
}

// checkUntouched checks that libxl's records of a drive still name its first medium.
func checkUntouched(t *testing.T, h *xensim.Host, d xensim.DomainInfo) {
	t.Helper()
	if d.Kind != xensim.KindTraditional {
		assert.Equal(t, d.Medium, qemuView(t, h, d).file, "QEMU of %s", d.Name)
	}
	checkConfig(t, d, d.Medium)
}
