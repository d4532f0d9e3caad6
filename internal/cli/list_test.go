package cli

import (
	"context"
	"encoding/base64"
	"encoding/csv"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cdswap/cdswap/internal/temporalclient"
	"github.com/cdswap/cdswap/internal/testenv/fakehost"
	"github.com/cdswap/cdswap/workflows"
)

// testJWT is an API key that is a JWT naming carol (never checked: the dev server takes any
// key, and cdswap reads the claim without verifying it).
var testJWT = func() string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"HS256"}`)) + "." + enc([]byte(`{"sub":"carol@example.com"}`)) + "." + enc([]byte("sig"))
}()

// batchISO is the medium of the recorded batch's swap.
const batchISO = "/isos/batch.iso"

// auditReason is a reason with a line break, a comma and quotes: one CSV field, escaped.
const auditReason = "rollout\nstep 2, \"drivers\""

// recordedSwaps are the swaps recordAuditSwaps ran.
type recordedSwaps struct {
	host1, host2 string
	batch        string
	batchRunID   string
}

// recordAuditSwaps runs four swaps through the CLI and the dev server on two fake hosts
// named prefix+"1" and prefix+"2", each with what the audit records about it:
//
//	host1: insert new.iso by bob (--requester, plain connection), ticket OPS-1, auditReason
//	host1: eject by alice ($USER), ticket OPS-2
//	host2: insert new.iso over an API key naming carol, ticket OPS-3
//	host2: insert batchISO as part of batch prefix+"-batch" (started as FleetSwap starts it)
func recordAuditSwaps(t *testing.T, prefix string) recordedSwaps {
	t.Helper()
	s := recordedSwaps{host1: prefix + "1", host2: prefix + "2", batch: prefix + "-batch"}
	startHost(t, s.host1, nil)
	startHost(t, s.host2, nil)
	for _, args := range [][]string{
		{"insert", "--host", s.host1, "--domain", "web1", "--vdev", "hdc", "--medium", newISO, "--requester", "bob", "--ticket", "OPS-1", "--reason", auditReason, "--wait"},
		{"eject", "--host", s.host1, "--domain", "web1", "--vdev", "hdc", "--ticket", "OPS-2", "--wait"},
		{"--tls=false", "--api-key", testJWT, "insert", "--host", s.host2, "--domain", "web1", "--vdev", "hdc", "--medium", newISO, "--ticket", "OPS-3", "--wait"},
	} {
		r := run(t, args...)
		require.Equal(t, ExitOK, r.code, "cdswap %q: stderr %s", args, r.stderr)
	}
	in := workflows.ChangeMediumInput{Host: s.host2, Domain: fakehost.Domain, DomID: fakehost.DomID, Vdev: fakehost.Vdev, Medium: batchISO,
		Requester: "fleet", RequesterSource: "os", Ticket: "OPS-4", BatchID: s.batch}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	run, err := testClient(t).ExecuteWorkflow(ctx, workflows.StartOptions(in), workflows.ChangeMediumName, in)
	require.NoError(t, err)
	require.NoError(t, run.Get(ctx, nil))
	s.batchRunID = run.GetRunID()
	return s
}

// waitListed waits until visibility, which lags a little behind, lists all four swaps.
func (s recordedSwaps) waitListed(t *testing.T) {
	t.Helper()
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		assert.Len(c, listJSON(c, t, "--host", s.host1), 2)
		assert.Len(c, listJSON(c, t, "--host", s.host2), 2)
	}, 20*time.Second, 200*time.Millisecond)
}

// listJSON runs list --json with args and returns the swaps; c receives the failures (t, or
// EventuallyWithT's collector).
func listJSON(c assert.TestingT, t *testing.T, args ...string) []SwapSummary {
	r := run(t, append([]string{"list", "--json"}, args...)...)
	if !assert.Equal(c, ExitOK, r.code, "stderr %s", r.stderr) {
		return nil
	}
	var got struct{ Swaps []SwapSummary }
	assert.NoError(c, json.Unmarshal([]byte(r.stdout), &got), r.stdout)
	return got.Swaps
}

func TestListFilters(t *testing.T) {
	s := recordAuditSwaps(t, "h-lf")
	t.Parallel()
	s.waitListed(t)

	tests := []struct {
		name string
		args []string
		want []string // tickets, newest first
	}{
		{"requester from the flag", []string{"--requester", "bob", "--host", s.host1}, []string{"OPS-1"}},
		{"requester from the OS", []string{"--host", s.host1, "--requester", "alice"}, []string{"OPS-2"}},
		{"requester from a JWT", []string{"--requester", "carol@example.com", "--host", s.host2}, []string{"OPS-3"}},
		{"ticket", []string{"--ticket", "OPS-2", "--host", s.host1}, []string{"OPS-2"}},
		{"batch", []string{"--batch", s.batch}, []string{"OPS-4"}},
		{"medium", []string{"--host", s.host2, "--medium", newISO}, []string{"OPS-3"}},
		{"outcome", []string{"--host", s.host1, "--outcome", "ejected"}, []string{"OPS-2"}},
		{"outcome from the status", []string{"--host", s.host1, "--outcome", "running"}, nil},
		{"domain and vdev", []string{"--host", s.host2, "--domain", "web1", "--vdev", "hdc"}, []string{"OPS-4", "OPS-3"}},
		{"all filters at once", []string{"--host", s.host1, "--domain", "web1", "--vdev", "hdc", "--medium", newISO, "--requester", "bob",
			"--ticket", "OPS-1", "--outcome", "changed", "--since", "1h", "--until", time.Now().Add(time.Minute).UTC().Format(time.RFC3339)}, []string{"OPS-1"}},
		{"until before them", []string{"--host", s.host1, "--since", "2h", "--until", "1h"}, nil},
		{"no match", []string{"--host", s.host1, "--ticket", "OPS-3"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			swaps := listJSON(t, t, tt.args...)
			var tickets []string
			for _, sw := range swaps {
				tickets = append(tickets, sw.Ticket)
			}
			assert.Equal(t, tt.want, tickets, "list %q", tt.args)
		})
	}

	byTicket := map[string]SwapSummary{}
	for _, sw := range append(listJSON(t, t, "--host", s.host1), listJSON(t, t, "--host", s.host2)...) {
		byTicket[sw.Ticket] = sw
	}
	assert.Equal(t, "bob", byTicket["OPS-1"].Requester)
	assert.Equal(t, "flag", byTicket["OPS-1"].RequesterSource)
	assert.Equal(t, auditReason, byTicket["OPS-1"].Reason, "JSON keeps the reason as it was")
	assert.Equal(t, "alice", byTicket["OPS-2"].Requester)
	assert.Equal(t, "os", byTicket["OPS-2"].RequesterSource)
	assert.Equal(t, "", byTicket["OPS-2"].Medium, "an eject has no medium")
	assert.Equal(t, "carol@example.com", byTicket["OPS-3"].Requester)
	assert.Equal(t, temporalclient.SourceJWT, byTicket["OPS-3"].RequesterSource)
	assert.Equal(t, s.batch, byTicket["OPS-4"].Batch)

	// CSV: one record per swap, the reason's line break escaped, the quotes and the comma
	// left to CSV's quoting.
	r := run(t, "list", "--csv", "--host", s.host1)
	require.Equal(t, ExitOK, r.code, "stderr %s", r.stderr)
	assert.Equal(t, 3, strings.Count(r.stdout, "\n"), "a header and two records, one line each:\n%s", r.stdout)
	records, err := csv.NewReader(strings.NewReader(r.stdout)).ReadAll()
	require.NoError(t, err)
	require.Len(t, records, 3)
	assert.Equal(t, listCSVHeader, records[0])
	col := map[string]int{}
	for i, name := range records[0] {
		col[name] = i
	}
	older := records[2] // newest first: the insert is the older one
	assert.Equal(t, `rollout\nstep 2, "drivers"`, older[col["reason"]])
	assert.Equal(t, "bob", older[col["requester"]])
	assert.Equal(t, "flag", older[col["requester_source"]])
	assert.Equal(t, newISO, older[col["medium"]])
	assert.Equal(t, "changed", older[col["outcome"]])
	assert.Equal(t, "cdswap-"+s.host1+"-7-hdc", older[col["workflow_id"]])
	_, err = time.Parse(time.RFC3339Nano, older[col["ended"]])
	assert.NoError(t, err, "ended %q", older[col["ended"]])

	// The table escapes the reason and shows the batch.
	r = run(t, "list", "--host", s.host2)
	require.Equal(t, ExitOK, r.code, "stderr %s", r.stderr)
	assert.Regexp(t, `(?m)\s+`+s.host2+`\s+web1\s+hdc\s+/isos/batch.iso\s+changed\s+fleet\s+-\s+OPS-4\s+`+s.batch+`\s+cdswap-`+s.host2+`-7-hdc$`, r.stdout)
	r = run(t, "list", "--host", s.host1)
	require.Equal(t, ExitOK, r.code, "stderr %s", r.stderr)
	assert.Contains(t, r.stdout, `rollout\nstep 2, "drivers"`)
}

func TestListUsage(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"json and csv", []string{"list", "--json", "--csv"}, "--json and --csv: give one"},
		{"empty window", []string{"list", "--since", "1h", "--until", "2h"}, "is not after --since"},
		{"bad until", []string{"list", "--until", "soon"}, `--until "soon"`},
		{"relative medium", []string{"list", "--medium", "x.iso"}, "--medium"},
		{"ticket with escapes", []string{"list", "--ticket", "a\x1b[2J"}, "--ticket"},
		{"long batch", []string{"list", "--batch", strings.Repeat("b", 300)}, "--batch is 300 bytes long"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := run(t, tt.args...)
			assert.Equal(t, ExitUsage, r.code, "stderr %s", r.stderr)
			assert.Contains(t, r.stderr, tt.want)
		})
	}
	// On a connection that authenticates someone, --requester cannot name someone else.
	r := run(t, "--tls=false", "--api-key", testJWT, "insert", "--host", "h-none", "--domain", "web1", "--vdev", "hdc", "--medium", newISO, "--requester", "mallory")
	assert.Equal(t, ExitUsage, r.code, "stderr %s", r.stderr)
	assert.Contains(t, r.stderr, `--requester "mallory": this connection authenticates as "carol@example.com"`)
}

func TestListQueryFilters(t *testing.T) {
	since := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	base := "WorkflowType = 'ChangeMedium' AND StartTime > '2026-11-27T12:00:00Z'"
	long := "/" + strings.Repeat("m", 3000)
	tests := []struct {
		name string
		in   listFilter
		want string
	}{
		{"until", listFilter{since: since, until: since.Add(time.Hour)}, base + " AND StartTime <= '2026-11-27T13:00:00Z'"},
		{"audit fields", listFilter{since: since, requester: "CN=a,O=b", ticket: "OPS-1", batch: "b-1", medium: "/isos/x.iso"},
			base + " AND CdswapMedium = '/isos/x.iso' AND CdswapRequester = 'CN=a,O=b' AND CdswapTicket = 'OPS-1' AND CdswapBatch = 'b-1'"},
		{"a long medium as its search attribute keeps it", listFilter{since: since, medium: long},
			base + " AND CdswapMedium = '" + workflows.KeywordMedium(long) + "'"},
		{"running is a status", listFilter{since: since, outcome: "running"}, base + " AND ExecutionStatus = 'Running'"},
		{"terminated is a status", listFilter{since: since, outcome: "terminated"}, base + " AND ExecutionStatus = 'Terminated'"},
		{"two types", listFilter{since: since, types: []string{"ChangeMedium", "FleetSwap"}},
			"WorkflowType IN ('ChangeMedium', 'FleetSwap') AND StartTime > '2026-11-27T12:00:00Z'"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.in.query(); got != tt.want {
				t.Errorf("query(%+v) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}
