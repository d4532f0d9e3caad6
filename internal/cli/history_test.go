package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	enumspb "go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/api/temporalproto"
	"go.temporal.io/sdk/client"

	"github.com/cdswap/cdswap/workflows"
)

// recordedHistories is where the CLI's recorded histories live: with the workflows' own,
// so that workflows' replay test replays them too (one copy of each).
const recordedHistories = "../../workflows/testdata/histories"

// recordHistory writes the history of a run to recordedHistories/cli-<name>.json, with its
// workflow id in testdata/<name>.id (server 1.29 leaves it out of the events).
func recordHistory(t *testing.T, id, runID, name string) {
	t.Helper()
	var events []*historypb.HistoryEvent
	it := testClient(t).GetWorkflowHistory(context.Background(), id, runID, false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	for it.HasNext() {
		ev, err := it.Next()
		require.NoError(t, err)
		events = append(events, ev)
	}
	data, err := temporalproto.CustomJSONMarshalOptions{Indent: "  "}.Marshal(&historypb.History{Events: events})
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(recordedHistories, "cli-"+name+".json"), append(data, '\n'), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join("testdata", name+".id"), []byte(id+"\n"), 0o644))
}

// TestHistoryGolden renders the recorded histories (recordedHistories/cli-*.json) and compares them
// with the golden text and JSON in testdata/. To record them again from the dev server and
// rewrite the golden files (two runs: the recording tests are parallel, so they run after
// this one):
//
//	go test ./internal/cli -run 'TestInsertWait$|TestRollbackHistory|TestCancelRestores' -update
//	go test ./internal/cli -run TestHistoryGolden -update
func TestHistoryGolden(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(recordedHistories, "cli-*.json"))
	require.NoError(t, err)
	require.NotEmpty(t, files, "no recorded history: see this test's comment")
	for _, file := range files {
		name := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(file), "cli-"), ".json")
		t.Run(name, func(t *testing.T) {
			f, err := os.Open(file)
			require.NoError(t, err)
			defer f.Close()
			hist, err := client.HistoryFromJSON(f, client.HistoryJSONOptions{})
			require.NoError(t, err)
			id, err := os.ReadFile(filepath.Join("testdata", name+".id"))
			require.NoError(t, err)
			h, err := BuildHistory(hist.GetEvents(), HistoryExtras{WorkflowID: strings.TrimSpace(string(id))})
			require.NoError(t, err)

			var text, js bytes.Buffer
			require.NoError(t, WriteHistoryText(&text, h, time.UTC))
			require.NoError(t, WriteHistoryJSON(&js, h))
			golden(t, filepath.Join("testdata", name+".txt"), text.Bytes())
			golden(t, filepath.Join("testdata", name+".history.json"), js.Bytes())
		})
	}
}

// golden compares got with the file, or rewrites the file with -update.
func golden(t *testing.T, file string, got []byte) {
	t.Helper()
	if *update {
		require.NoError(t, os.WriteFile(file, got, 0o644))
		return
	}
	want, err := os.ReadFile(file)
	require.NoError(t, err, "run with -update to create it")
	assert.Equal(t, string(want), string(got), "render of %s differs from the golden file (-update rewrites it)", file)
}

func TestBuildHistoryRejectsNonHistory(t *testing.T) {
	_, err := BuildHistory(nil, HistoryExtras{})
	assert.ErrorContains(t, err, "not a workflow history")
}

func TestStepPrinterTTY(t *testing.T) {
	t0 := time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)
	now := t0.Add(1500 * time.Millisecond)
	var out bytes.Buffer
	p := &stepPrinter{out: &out, tty: true, width: 60, now: func() time.Time { return now }}
	steps := []workflows.StepRecord{
		{Name: "Inspect", Attempts: 1, Started: t0, Ended: t0.Add(12 * time.Millisecond)},
		{Name: "WaitFdset", Started: t0.Add(100 * time.Millisecond)},
	}
	p.update(steps, nil)
	assert.Equal(t, "   1 Inspect               ok         12ms\n   2 WaitFdset             running    1.4s", out.String())

	out.Reset()
	steps[1].Ended, steps[1].Attempts = t0.Add(2*time.Second), 1
	steps = append(steps, workflows.StepRecord{Name: "ChangeMedium", Started: t0.Add(2 * time.Second), Restore: true})
	p.update(steps, nil)
	assert.Equal(t, "\r\x1b[K   2 WaitFdset             ok         1.9s\n   3 restore ChangeMedium  running     0ms", out.String())

	out.Reset()
	steps[2].Ended, steps[2].Error, steps[2].ErrorType = t0.Add(3*time.Second), "fdset 11 is gone", "FdsetGone"
	p.finish(steps)
	assert.Equal(t, "\r\x1b[K   3 restore ChangeMedium  failed     1.0s  FdsetGone: fdset 11 is gone\n", out.String())
}

func TestStepPrinterPlain(t *testing.T) {
	t0 := time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)
	var out bytes.Buffer
	p := &stepPrinter{out: &out, now: time.Now}
	steps := []workflows.StepRecord{{Name: "Inspect", Started: t0}}
	p.update(steps, nil)
	assert.Empty(t, out.String(), "a running step prints nothing when not on a terminal")
	steps[0].Ended, steps[0].Attempts = t0.Add(5*time.Millisecond), 3
	p.update(steps, nil)
	p.update(steps, nil)
	assert.Equal(t, "   1 Inspect               ok          5ms  3 attempts\n", out.String(), "each step printed once")
}

func TestFormatDuration(t *testing.T) {
	tests := []struct {
		name string
		in   time.Duration
		want string
	}{
		{name: "negative", in: -time.Second, want: "-"},
		{name: "zero", in: 0, want: "0ms"},
		{name: "millis", in: 231 * time.Millisecond, want: "231ms"},
		{name: "seconds", in: 25*time.Second + 40*time.Millisecond, want: "25.0s"},
		{name: "minutes", in: 2*time.Minute + 3400*time.Millisecond, want: "2m3s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := formatDuration(tt.in); got != tt.want {
				t.Errorf("formatDuration(%v) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseSince(t *testing.T) {
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name    string
		in      string
		want    time.Time
		wantErr bool
	}{
		{name: "hours", in: "24h", want: now.Add(-24 * time.Hour)},
		{name: "minutes", in: "90m", want: now.Add(-90 * time.Minute)},
		{name: "days", in: "7d", want: now.Add(-7 * 24 * time.Hour)},
		{name: "time", in: "2026-11-27T08:00:00Z", want: time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC)},
		{name: "negative", in: "-1h", wantErr: true},
		{name: "word", in: "yesterday", wantErr: true},
		{name: "zero days", in: "0d", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseSince(tt.in, now)
			if tt.wantErr {
				assert.Error(t, err, "parseSince(%q)", tt.in)
				return
			}
			require.NoError(t, err)
			if !got.Equal(tt.want) {
				t.Errorf("parseSince(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestListQuery(t *testing.T) {
	since := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		in   listFilter
		want string
	}{
		{name: "all", in: listFilter{since: since},
			want: "WorkflowType = 'ChangeMedium' AND StartTime > '2026-11-27T12:00:00Z'"},
		{name: "host and outcome", in: listFilter{since: since, host: "dom0-a", outcome: "failed-restored"},
			want: "WorkflowType = 'ChangeMedium' AND StartTime > '2026-11-27T12:00:00Z' AND CdswapHost = 'dom0-a' AND CdswapOutcome = 'failed-restored'"},
		{name: "quotes escaped", in: listFilter{since: since, domain: `o'brien\x`},
			want: `WorkflowType = 'ChangeMedium' AND StartTime > '2026-11-27T12:00:00Z' AND CdswapDomain = 'o\'brien\\x'`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.in.query(); got != tt.want {
				t.Errorf("query(%+v) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

// TestHistoryGoldenLocalSteps renders histories recorded with local steps (workflows'
// local-short-steps: LocalActivity markers, one per attempt) and compares them with the
// golden text in testdata/: each local step is one step, with its attempts, times and
// earlier failures from the run's step records, and restore steps are marked. v4 runs
// DetachVBD and AttachVBD as local steps too, v5 Eject, v7 dom0's AddFD (a dom0 run is one
// workflow task; the resumed one shows the lost worker and the steps run again). To rewrite
// the golden files:
// go test ./internal/cli -run TestHistoryGoldenLocalSteps -update
func TestHistoryGoldenLocalSteps(t *testing.T) {
	for _, tc := range []struct{ name, version, golden string }{
		{"stubdom-insert", "v3", "local-stubdom-insert.txt"},
		{"fdset-timeout-restored", "v3", "local-fdset-timeout-restored.txt"},
		{"worker-crash-in-local-steps-resumed", "v3", "local-worker-crash-in-local-steps-resumed.txt"},
		{"canceled-restored", "v3", "local-canceled-restored.txt"},
		{"stubdom-insert", "v4", "local-stubdom-insert-v4.txt"},
		{"fdset-timeout-restored", "v4", "local-fdset-timeout-restored-v4.txt"},
		{"worker-crash-in-local-vbd-resumed", "v4", "local-worker-crash-in-local-vbd-resumed-v4.txt"},
		{"canceled-restored", "v4", "local-canceled-restored-v4.txt"},
		{"stubdom-insert", "v5", "local-stubdom-insert-v5.txt"},
		{"worker-crash-in-local-eject-resumed", "v5", "local-worker-crash-in-local-eject-resumed-v5.txt"},
		{"fdset-timeout-restored", "v5", "local-fdset-timeout-restored-v5.txt"},
		{"dom0-insert", "v7", "local-dom0-insert-v7.txt"},
		{"worker-crash-after-dom0-change-resumed", "v7", "local-worker-crash-after-dom0-change-resumed-v7.txt"},
	} {
		name := tc.name
		t.Run(name+"-"+tc.version, func(t *testing.T) {
			f, err := os.Open(filepath.Join(recordedHistories, "ChangeMedium-"+name+"-"+tc.version+".json"))
			require.NoError(t, err)
			defer f.Close()
			hist, err := client.HistoryFromJSON(f, client.HistoryJSONOptions{})
			require.NoError(t, err)
			h, err := BuildHistory(hist.GetEvents(), HistoryExtras{WorkflowID: "recorded-" + name})
			require.NoError(t, err)
			var text bytes.Buffer
			require.NoError(t, WriteHistoryText(&text, h, time.UTC))
			golden(t, filepath.Join("testdata", tc.golden), text.Bytes())
			for _, s := range h.Steps {
				if s.Kind == StepActivity {
					assert.NotZero(t, s.Attempts, "step %d %s: attempts", s.Seq, s.Name)
					assert.NotNil(t, s.Ended, "step %d %s: ended", s.Seq, s.Name)
				}
			}
		})
	}
}
