package cli

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cdswap/cdswap/activities"
	"github.com/cdswap/cdswap/internal/testenv"
	"github.com/cdswap/cdswap/internal/testenv/fakehost"
	"github.com/cdswap/cdswap/workflows"
)

// TestStatusShowsPausedGuestWait: a stubdom guest paused in the middle of a swap makes
// DetachVBD refuse (GuestPaused) twice, and the workflow sleeps between the tries. No step
// runs while it sleeps, so only the run's progress says why it stands still: status (text
// and --json) and insert --wait must print it.
func TestStatusShowsPausedGuestWait(t *testing.T) {
	host := "h-paused"
	startHost(t, host, map[string]fakehost.Hook{
		activities.NameDetachVBD: fakehost.FailCalls(2, activities.ErrGuestPaused, false,
			"domain web1 is paused (QEMU's run state is \"paused\"): waiting for the guest to be unpaused"),
	})
	id := workflows.WorkflowID(host, fakehost.DomID, fakehost.Vdev)

	followed := make(chan result, 1)
	go func() {
		followed <- run(t, "insert", "--host", host, "--domain", fakehost.Domain, "--vdev", fakehost.Vdev, "--medium", newISO, "--wait")
	}()

	// The first wait lasts 2 s, the second 4 s: status sees one of them.
	var text, asJSON string
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		r := run(t, "status", id)
		if r.code == ExitOK && strings.Contains(r.stdout, workflows.WaitingUnpause) {
			text = r.stdout
			if j := run(t, "status", "--json", id); j.code == ExitOK && strings.Contains(j.stdout, `"waiting"`) {
				asJSON = j.stdout
				break
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	require.NotEmpty(t, text, "cdswap status never said the swap waits for its guest")
	// The history's view of the run (its last step, or a timer) is what it is; what the
	// run waits for comes from its progress, on the line after.
	assert.Contains(t, text, ": running, ")
	assert.Contains(t, text, "  now "+workflows.WaitingUnpause+"\n")
	require.NotEmpty(t, asJSON, "cdswap status --json never gave the wait")
	var v statusView
	require.NoError(t, json.Unmarshal([]byte(asJSON), &v), asJSON)
	assert.Equal(t, workflows.WaitingUnpause, v.Waiting)

	var r result
	select {
	case r = <-followed:
	case <-time.After(60 * time.Second):
		t.Fatal("insert --wait did not end within 60 s")
	}
	require.Equal(t, ExitOK, r.code, r.stderr)
	assert.Contains(t, r.stdout, "     ... "+workflows.WaitingUnpause+"\n", "insert --wait does not say what the swap waits for")
	assert.Contains(t, r.stdout, "GuestPaused", "the refused DetachVBD is one of the steps")

	// Once the swap ended, nothing waits.
	r = run(t, "status", id)
	require.Equal(t, ExitOK, r.code, r.stderr)
	assert.NotContains(t, r.stdout, workflows.WaitingUnpause)
}

// TestWaitingEscaped: what a run says it waits for is the workflow's text, printed escaped
// as everything a program wrote is.
func TestWaitingEscaped(t *testing.T) {
	var buf testenv.Buffer
	p := &stepPrinter{out: &buf, now: time.Now}
	p.wait(evilMessage)
	p.wait(evilMessage) // the same wait again: printed once
	assertClean(t, "wait line", buf.String())
	assert.Equal(t, 1, strings.Count(buf.String(), "\n"), "a wait is printed once: %q", buf.String())

	var out, errOut testenv.Buffer
	a := newApp(&out, &errOut)
	a.writeStatus(statusView{WorkflowID: "id", RunID: "run", Waiting: evilMessage})
	assertClean(t, "status", out.String())
	assert.Contains(t, out.String(), `now tray locked\x1b[1A\r`)
}
