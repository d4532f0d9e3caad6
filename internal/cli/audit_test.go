package cli

import (
	"encoding/csv"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"

	"github.com/cdswap/cdswap/internal/temporalclient"
	"github.com/cdswap/cdswap/workflows"
)

// readSummary reads an export's CSV summary into one map per record, by column.
func readSummary(t *testing.T, path string) []map[string]string {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	records, err := csv.NewReader(f).ReadAll()
	require.NoError(t, err)
	require.NotEmpty(t, records)
	require.Equal(t, auditCSVHeader, records[0])
	var rows []map[string]string
	for _, rec := range records[1:] {
		row := map[string]string{}
		for i, name := range records[0] {
			row[name] = rec[i]
		}
		rows = append(rows, row)
	}
	return rows
}

// exportJSON runs audit export with args and returns its counts.
func exportJSON(t *testing.T, args ...string) (AuditExportResult, result) {
	t.Helper()
	r := run(t, append([]string{"audit", "export", "--json"}, args...)...)
	require.Equal(t, ExitOK, r.code, "stderr %s", r.stderr)
	var res AuditExportResult
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &res), r.stdout)
	return res, r
}

func TestAuditExport(t *testing.T) {
	since := time.Now().Add(-time.Second).UTC().Truncate(time.Second)
	s := recordAuditSwaps(t, "h-ax")
	t.Parallel()
	s.waitListed(t)
	until := time.Now().Add(time.Second).UTC().Truncate(time.Second)
	window := []string{"--since", since.Format(time.RFC3339), "--until", until.Format(time.RFC3339)}
	dir := filepath.Join(t.TempDir(), "audit")
	// Let the window close first: the package's other tests keep starting runs, and one
	// started inside the window after the first export would change the second one's counts.
	time.Sleep(time.Until(until))

	res, r := exportJSON(t, append(window, "--out", dir)...)
	assert.Contains(t, r.stderr, "audit export: ", "progress on stderr")
	// Other tests run swaps in the same window: ours are among them.
	assert.GreaterOrEqual(t, res.Runs, 4)
	assert.Equal(t, res.Runs, res.Written, "a fresh folder: every history written")
	assert.Zero(t, res.Skipped+res.Rewritten+res.Failed)
	assert.Equal(t, filepath.Join(dir, "summary-"+since.Format("20060102T150405Z")+"-"+until.Format("20060102T150405Z")+".csv"), res.Summary)

	rows := readSummary(t, res.Summary)
	assert.Len(t, rows, res.Runs)
	mine := map[string]map[string]string{} // by ticket
	for _, row := range rows {
		if row["host"] == s.host1 || row["host"] == s.host2 {
			mine[row["ticket"]] = row
		}
	}
	require.Len(t, mine, 4, "rows: %v", rows)
	for i := 1; i < len(rows); i++ {
		assert.LessOrEqual(t, rows[i-1]["started"], rows[i]["started"], "oldest first")
	}
	insert := mine["OPS-1"]
	assert.Equal(t, "cdswap-"+s.host1+"-7-hdc", insert["workflow_id"])
	assert.Equal(t, workflows.ChangeMediumName, insert["type"])
	assert.Equal(t, "web1", insert["domain"])
	assert.Equal(t, "hdc", insert["vdev"])
	assert.Equal(t, oldISO, insert["old_medium"], "the medium before, from the history")
	assert.Equal(t, newISO, insert["new_medium"])
	assert.Equal(t, "changed", insert["outcome"])
	assert.Equal(t, "bob", insert["requester"])
	assert.Equal(t, "flag", insert["requester_source"])
	assert.Equal(t, `rollout\nstep 2, "drivers"`, insert["reason"], "escaped, one line")
	assert.Equal(t, "completed", insert["status"])
	assert.NotEmpty(t, insert["ended"])
	eject := mine["OPS-2"]
	assert.Equal(t, "ejected", eject["outcome"])
	assert.Equal(t, oldISO, eject["old_medium"])
	assert.Equal(t, "", eject["new_medium"])
	assert.Equal(t, "alice", eject["requester"])
	assert.Equal(t, "os", eject["requester_source"])
	assert.Equal(t, "carol@example.com", mine["OPS-3"]["requester"])
	assert.Equal(t, temporalclient.SourceJWT, mine["OPS-3"]["requester_source"])
	batch := mine["OPS-4"]
	assert.Equal(t, s.batch, batch["batch"])
	assert.Equal(t, s.batchRunID, batch["run_id"])
	assert.Equal(t, oldISO, batch["old_medium"])
	assert.Equal(t, batchISO, batch["new_medium"])
	assert.Equal(t, "changed", batch["outcome"])

	// Every history of ours reads back as Temporal's replayer reads `temporal workflow show
	// -o json`, and replays against the workflows.
	for _, row := range mine {
		path := filepath.Join(dir, row["history_file"])
		f, err := os.Open(path)
		require.NoError(t, err)
		h, err := client.HistoryFromJSON(f, client.HistoryJSONOptions{})
		f.Close()
		require.NoError(t, err, path)
		replayer := worker.NewWorkflowReplayer()
		workflows.Register(replayer)
		assert.NoError(t, replayer.ReplayWorkflowHistory(nil, h), "replay %s", path)
		// And the file is what `cdswap history` shows, from the server.
		built, err := BuildHistory(h.GetEvents(), HistoryExtras{})
		require.NoError(t, err)
		assert.Equal(t, row["outcome"], built.Outcome, path)
	}

	// Again over the same folder: the ended runs' files are kept as they are.
	before, err := os.ReadFile(filepath.Join(dir, mine["OPS-1"]["history_file"]))
	require.NoError(t, err)
	summary, err := os.ReadFile(res.Summary)
	require.NoError(t, err)
	again, _ := exportJSON(t, append(window, "--out", dir)...)
	assert.Equal(t, res.Runs, again.Runs)
	assert.Zero(t, again.Written)
	assert.Equal(t, again.Runs-again.Open, again.Skipped, "every ended run skipped")
	assert.Equal(t, again.Open, again.Rewritten, "open runs written again")
	after, err := os.ReadFile(filepath.Join(dir, mine["OPS-1"]["history_file"]))
	require.NoError(t, err)
	assert.Equal(t, before, after)
	summary2, err := os.ReadFile(res.Summary)
	require.NoError(t, err)
	if again.Open == 0 && res.Open == 0 {
		assert.Equal(t, string(summary), string(summary2), "the same window gives the same summary")
	}

	// A file cut short is written again; --overwrite writes every one again.
	require.NoError(t, os.WriteFile(filepath.Join(dir, mine["OPS-2"]["history_file"]), []byte(`{"events": [`), 0o640))
	cut, _ := exportJSON(t, append(window, "--out", dir)...)
	assert.Equal(t, cut.Open+1, cut.Rewritten)
	assert.NotNil(t, readHistoryFile(filepath.Join(dir, mine["OPS-2"]["history_file"])))
	all, r := exportJSON(t, append(window, "--out", dir, "--overwrite")...)
	assert.Equal(t, all.Runs, all.Rewritten)
	assert.Zero(t, all.Skipped)

	// The text report says which files were skipped.
	r = run(t, append([]string{"audit", "export", "--out", dir}, window...)...)
	require.Equal(t, ExitOK, r.code, "stderr %s", r.stderr)
	assert.Regexp(t, `^exported \d+ runs to .*: 0 written, \d+ already there and skipped, \d+ written again; summary `, r.stdout)

	// Filters narrow it; a window without runs writes a summary of its header alone.
	one, _ := exportJSON(t, append(window, "--out", filepath.Join(t.TempDir(), "one"), "--batch", s.batch)...)
	assert.Equal(t, 1, one.Runs)
	none, _ := exportJSON(t, "--since", "3h", "--until", "2h", "--out", filepath.Join(t.TempDir(), "none"))
	assert.Zero(t, none.Runs)
	assert.Empty(t, readSummary(t, none.Summary))
}

func TestAuditExportUsage(t *testing.T) {
	t.Parallel()
	r := run(t, "audit", "export", "--since", "1h")
	assert.Equal(t, ExitUsage, r.code)
	assert.Contains(t, r.stderr, "missing --out")
}

func TestHistoryFileName(t *testing.T) {
	for _, tt := range []struct {
		name, id, run, want string
	}{
		{"a swap", "cdswap-h1-7-hdc", "0195-ab", "cdswap-h1-7-hdc.0195-ab.json"},
		{"slashes and dots", "../../etc/passwd", "r", "_._.._etc_passwd.r.json"},
		{"hidden", ".x", "r", "_x.r.json"},
		{"not ASCII", "bätch 1", "r", "b__tch_1.r.json"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := historyFileName(tt.id, tt.run); got != tt.want {
				t.Errorf("historyFileName(%q, %q) = %q, want %q", tt.id, tt.run, got, tt.want)
			}
		})
	}
}
