package cli

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cdswap/cdswap/activities"
	"github.com/cdswap/cdswap/internal/termtext"
	"github.com/cdswap/cdswap/internal/testenv"
	"github.com/cdswap/cdswap/internal/testenv/fakehost"
	"github.com/cdswap/cdswap/workflows"
)

// Fields as a hostile or careless person, or a broken tool, could write them: each would
// clear the screen, retitle the window, forge a line or reverse the text if printed raw.
const (
	evilTicket    = "x\x1b[2J\x1b]0;t\a\r\nfake line: outcome changed"
	evilReason    = "reinstall \u202etxt.exe\u2028next\u0085line\x7f"
	evilRequester = "bob\u009b31m\u2066"
	evilMessage   = "tray locked\x1b[1A\rfake line: outcome changed \u202e\u009b2J"
	evilMedium    = "/isos/new\x1b]0;pwned\a.iso"
	evilDomain    = "web\u202e1"
)

// assertClean fails t if out holds a character that could steer a terminal: a C0 control
// other than the newline ending each line, DEL, a C1 control, ESC, a bidirectional
// formatting character, a line separator, or a byte that is not UTF-8.
func assertClean(t *testing.T, what, out string) {
	t.Helper()
	for i, r := range out {
		switch {
		case r == utf8.RuneError && !strings.HasPrefix(out[i:], "\ufffd"):
			t.Errorf("%s: byte %#x at %d is not UTF-8:\n%s", what, out[i], i, out)
		case r != '\n' && termtext.IsUnsafe(r):
			t.Errorf("%s: %q at byte %d reaches the output:\n%s", what, r, i, out)
		}
	}
}

func TestCleanAndJSON(t *testing.T) {
	in := evilTicket + evilReason + evilRequester + evilMessage + "\xff\\"
	assertClean(t, "clean", clean(in))
	assert.Contains(t, clean(in), `\x1b[2J`)
	assert.Contains(t, clean(in), `\xff\`, "clean leaves backslashes alone")

	var buf testenv.Buffer
	v := map[string]string{"ticket": evilTicket, "reason": evilReason, "requester": evilRequester}
	require.NoError(t, writeJSON(&buf, v))
	assertClean(t, "writeJSON", buf.String())
	var back map[string]string
	require.NoError(t, json.Unmarshal([]byte(buf.String()), &back), "writeJSON's output is not JSON: %s", buf.String())
	assert.Equal(t, v, back, "the JSON reads back the same")
}

func TestStepLinesEscaped(t *testing.T) {
	now := time.Date(2026, 11, 28, 1, 0, 0, 0, time.UTC)
	steps := []workflows.StepRecord{
		{Name: activities.NameEject, Attempts: 2, Started: now, Ended: now.Add(time.Second), Error: evilMessage, ErrorType: "Tray\x1bLocked"},
		{Name: activities.NameRecord, Started: now, Ended: now.Add(time.Second), Detail: "params " + evilMedium},
	}
	var buf testenv.Buffer
	p := &stepPrinter{out: &buf, tty: true, now: func() time.Time { return now }}
	p.finish(steps)
	assertClean(t, "step lines", buf.String())
	in := workflows.ChangeMediumInput{Host: "h", Domain: evilDomain, DomID: 7, Vdev: "hdc", Medium: evilMedium, Format: "raw\x1b"}
	res := workflows.ChangeMediumResult{Outcome: workflows.OutcomeChanged, Old: evilMedium, New: evilMedium}
	for _, s := range []string{describeRequest(in), describeOutcome(in, res), swapFailure(in, "id", workflows.ChangeMediumResult{Outcome: workflows.OutcomeCanceled, Old: evilMedium}, nil).Error()} {
		assertClean(t, "description", s)
	}
}

// TestOutputEscaped feeds every output command the escape-laden fields, through runs on the
// dev server: a swap whose memo holds them and whose Eject fails with an escape-laden
// message, a swap whose request holds them (refused by the workflow), and a swap started
// with the CLI and followed with --wait. No command, in any format, may print them raw.
func TestOutputEscaped(t *testing.T) {
	host := "h-esc"
	startHost(t, host, map[string]fakehost.Hook{
		activities.NameEject: fakehost.FailCalls(1000, activities.ErrTrayLocked, false, evilMessage),
	})
	c := testClient(t)
	ctx := testenv.Context(t, time.Minute)

	// A: a valid request with a hostile memo, written by another starter.
	a := workflows.ChangeMediumInput{Host: host, Domain: fakehost.Domain, DomID: fakehost.DomID, Vdev: fakehost.Vdev, Medium: newISO}
	optsA := workflows.StartOptions(a)
	optsA.Memo = map[string]any{"requester": evilRequester, "reason": evilReason, "ticket": evilTicket}
	runA, err := c.ExecuteWorkflow(ctx, optsA, workflows.ChangeMediumName, a)
	require.NoError(t, err)
	// B: a hostile request, which the workflow refuses.
	b := a
	b.Domain, b.DomID, b.Medium = evilDomain, fakehost.DomID+1, evilMedium
	b.Requester, b.Reason, b.Ticket = evilRequester, evilReason, evilTicket
	runB, err := c.ExecuteWorkflow(ctx, workflows.StartOptions(b), workflows.ChangeMediumName, b)
	require.NoError(t, err)
	require.Error(t, runA.Get(ctx, nil), "Eject fails for good")
	errB := runB.Get(ctx, nil)
	require.Error(t, errB)
	assert.Equal(t, activities.ErrBadInput, workflows.CauseType(errB), "%v", errB)
	require.Equal(t, activities.ErrTrayLocked, workflows.CauseType(runA.Get(ctx, nil)))

	commands := [][]string{
		{"list", "--host", host},
		{"list", "--host", host, "--json"},
		{"cancel", runA.GetID()},
		{"insert", "--host", host, "--domain", "7", "--vdev", "hdc", "--medium", newISO, "--wait"},
		{"insert", "--host", host, "--domain", "7", "--vdev", "hdc", "--medium", newISO, "--wait", "--json"},
		{"status", "--host", host, "--domain", evilDomain, "--vdev", "hdc"},
		{"insert", "--host", host, "--domain", "7", "--vdev", "hdc", "--medium", evilMedium, "--ticket", evilTicket},
	}
	for _, id := range []string{runA.GetID(), runB.GetID()} {
		commands = append(commands,
			[]string{"status", id}, []string{"status", "--json", id},
			[]string{"history", id}, []string{"history", "--json", id})
	}
	// The insert runs above replace A's run under the same id: check A's texts first.
	r := run(t, "history", runA.GetID(), "--run", runA.GetRunID())
	require.Equal(t, ExitOK, r.code, r.stderr)
	assertClean(t, "history A", r.stdout)
	for _, want := range []string{`x\x1b[2J\x1b]0;t\x07\r\nfake line`, `bob\u009b31m\u2066`, `\u202etxt.exe`, `tray locked\x1b[1A\rfake line`} {
		assert.Contains(t, r.stdout, want, "history shows the field, escaped")
	}
	r = run(t, "list", "--host", host, "--json")
	require.Equal(t, ExitOK, r.code, r.stderr)
	var listed struct{ Swaps []SwapSummary }
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &listed), r.stdout)
	require.NotEmpty(t, listed.Swaps)
	tickets := map[string]bool{}
	for _, s := range listed.Swaps {
		tickets[s.Ticket] = true
	}
	assert.True(t, tickets[evilTicket], "list --json keeps the ticket as it was: %v", tickets)

	for _, args := range commands {
		t.Run(strings.Join(args[:1], " ")+fmt.Sprint(len(args)), func(t *testing.T) {
			r := run(t, args...)
			t.Logf("cdswap %q: exit %d", args, r.code)
			assertClean(t, fmt.Sprintf("stdout of %q", args), r.stdout)
			assertClean(t, fmt.Sprintf("stderr of %q", args), r.stderr)
			assert.NotEmpty(t, r.stdout+r.stderr)
		})
	}
}
