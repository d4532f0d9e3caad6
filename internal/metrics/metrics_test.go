package metrics

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"
)

// scrape returns the text m serves.
func scrape(t assert.TestingT, m *Metrics) string {
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if !assert.NoError(t, err) {
		return ""
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	assert.NoError(t, err)
	return string(body)
}

func TestResultOf(t *testing.T) {
	for _, tt := range []struct {
		name string
		err  error
		want string
	}{
		{"nil", nil, ResultOK},
		{"typed", temporal.NewApplicationError("tray locked", "TrayLocked"), "TrayLocked"},
		{"wrapped", fmt.Errorf("eject: %w", temporal.NewNonRetryableApplicationError("no", "NoSuchDrive", nil)), "NoSuchDrive"},
		{"plain", errors.New("boom"), "error"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := ResultOf(tt.err); got != tt.want {
				t.Errorf("ResultOf(%v) = %q, want %q", tt.err, got, tt.want)
			}
		})
	}
}

func TestMetrics(t *testing.T) {
	m := New("h1")
	defer m.Close()
	m.swapRunning("run-a")
	m.swapRunning("run-b")
	m.swapRunning("run-a") // a replay of a run already in flight
	assert.Contains(t, scrape(t, m), `cdswap_swaps_in_flight{host="h1"} 2`)
	m.swapDone("run-a")
	m.SwapEnded(SwapEnd{Outcome: "changed", Kind: "stubdom"})
	m.SwapEnded(SwapEnd{Outcome: "failed-restored", Kind: "dom0", Restored: true})
	m.SwapEnded(SwapEnd{Outcome: "restore-failed", Restored: true, RestoreFailed: true})
	m.ObserveStep("Eject", 3*time.Millisecond, nil)
	m.ObserveStep("Eject", 2*time.Second, temporal.NewApplicationError("locked", "TrayLocked"))
	m.ObserveFdsetWait(40*time.Millisecond, nil)
	BatchProgress(m.SDKHandler(), "b-1", map[string]int{"done": 3, "running": 2})

	text := scrape(t, m)
	for _, want := range []string{
		`cdswap_swaps_in_flight{host="h1"} 1`,
		`cdswap_swaps_total{host="h1",kind="stubdom",outcome="changed"} 1`,
		`cdswap_swaps_total{host="h1",kind="dom0",outcome="failed-restored"} 1`,
		`cdswap_swaps_total{host="h1",kind="unknown",outcome="restore-failed"} 1`,
		`cdswap_restores_total{host="h1",result="ok"} 1`,
		`cdswap_restores_total{host="h1",result="failed"} 1`,
		`cdswap_step_duration_seconds_count{host="h1",result="ok",step="Eject"} 1`,
		`cdswap_step_duration_seconds_bucket{host="h1",result="ok",step="Eject",le="0.005"} 1`,
		`cdswap_step_duration_seconds_count{host="h1",result="TrayLocked",step="Eject"} 1`,
		`cdswap_fdset_wait_seconds_count{host="h1",result="ok"} 1`,
		`go_goroutines`,
	} {
		assert.Contains(t, text, want)
	}
	// The SDK's scope reaches the registry at its next report.
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		text := scrape(c, m)
		assert.Contains(c, text, `cdswap_batch_drives{batch="b-1",state="done"} 3`)
		assert.Contains(c, text, `cdswap_batch_drives{batch="b-1",state="running"} 2`)
	}, 5*time.Second, 100*time.Millisecond)
}
