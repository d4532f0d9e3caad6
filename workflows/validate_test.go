package workflows_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/workflow"
	"google.golang.org/protobuf/proto"

	"github.com/cdswap/cdswap/activities"
	"github.com/cdswap/cdswap/internal/termtext"
	"github.com/cdswap/cdswap/internal/testenv"
	"github.com/cdswap/cdswap/workflows"
)

func TestValidate(t *testing.T) {
	long := func(n int) string { return strings.Repeat("a", n) }
	tests := []struct {
		name      string
		mutate    func(*workflows.ChangeMediumInput)
		wantField string // "" = valid
		wantText  string
	}{
		{name: "valid insert"},
		{name: "valid eject", mutate: func(in *workflows.ChangeMediumInput) { in.Medium, in.Format = "", "" }},
		{name: "domid", mutate: func(in *workflows.ChangeMediumInput) { in.Domain = "7" }},
		{name: "UTF-8 guest name", mutate: func(in *workflows.ChangeMediumInput) { in.Domain = "wéb-1" }},
		{name: "medium at the limit", mutate: func(in *workflows.ChangeMediumInput) { in.Medium = "/" + long(workflows.MaxMedium-1) }},
		{name: "reason with lines", mutate: func(in *workflows.ChangeMediumInput) { in.Reason = "one\nand\ttwo" }},
		{name: "reason at the limit", mutate: func(in *workflows.ChangeMediumInput) { in.Reason = long(workflows.MaxReason) }},
		{name: "empty host", mutate: func(in *workflows.ChangeMediumInput) { in.Host = "" }, wantField: "host", wantText: "is empty"},
		{name: "long host", mutate: func(in *workflows.ChangeMediumInput) { in.Host = long(65) }, wantField: "host", wantText: "is 65 bytes long: at most 64"},
		{name: "host with a space", mutate: func(in *workflows.ChangeMediumInput) { in.Host = "h 1" }, wantField: "host", wantText: `holds " "`},
		{name: "host with ESC", mutate: func(in *workflows.ChangeMediumInput) { in.Host = "h\x1b1" }, wantField: "host", wantText: `"\x1b"`},
		{name: "host with a slash", mutate: func(in *workflows.ChangeMediumInput) { in.Host = "h/1" }, wantField: "host", wantText: "only letters, digits"},
		{name: "host not ASCII", mutate: func(in *workflows.ChangeMediumInput) { in.Host = "hé" }, wantField: "host", wantText: `"\u00e9"`},
		{name: "long domain", mutate: func(in *workflows.ChangeMediumInput) { in.Domain = long(65) }, wantField: "domain", wantText: "at most 64"},
		{name: "empty domain", mutate: func(in *workflows.ChangeMediumInput) { in.Domain = "" }, wantField: "domain", wantText: "is empty"},
		{name: "domain with newline", mutate: func(in *workflows.ChangeMediumInput) { in.Domain = "web\n1" }, wantField: "domain", wantText: `control character '\n'`},
		{name: "domain with RLO", mutate: func(in *workflows.ChangeMediumInput) { in.Domain = "web\u202e1" }, wantField: "domain", wantText: `'\u202e'`},
		{name: "vdev with a dot dot slash", mutate: func(in *workflows.ChangeMediumInput) { in.Vdev = "../hdc" }, wantField: "vdev"},
		{name: "long vdev", mutate: func(in *workflows.ChangeMediumInput) { in.Vdev = long(17) }, wantField: "vdev", wantText: "at most 16"},
		{name: "medium over PATH_MAX", mutate: func(in *workflows.ChangeMediumInput) { in.Medium = "/" + long(workflows.MaxMedium) }, wantField: "medium", wantText: "is 4096 bytes long: at most 4095"},
		{name: "medium not UTF-8", mutate: func(in *workflows.ChangeMediumInput) { in.Medium = "/isos/\xff.iso" }, wantField: "medium", wantText: `"/isos/\xff.iso" is not valid UTF-8`},
		{name: "medium with U+FFFD", mutate: func(in *workflows.ChangeMediumInput) { in.Medium = "/isos/\ufffd.iso" }, wantField: "medium", wantText: "replacement for bytes that were not UTF-8"},
		{name: "medium with NUL", mutate: func(in *workflows.ChangeMediumInput) { in.Medium = "/isos/a\x00.iso" }, wantField: "medium", wantText: `'\x00'`},
		{name: "medium with C1", mutate: func(in *workflows.ChangeMediumInput) { in.Medium = "/isos/a\u009b.iso" }, wantField: "medium", wantText: `'\u009b'`},
		{name: "relative medium", mutate: func(in *workflows.ChangeMediumInput) { in.Medium = "isos/a.iso" }, wantField: "medium", wantText: "not an absolute path"},
		{name: "format with a comma", mutate: func(in *workflows.ChangeMediumInput) { in.Format = "raw,file.locking=off" }, wantField: "format"},
		{name: "long ticket", mutate: func(in *workflows.ChangeMediumInput) { in.Ticket = long(129) }, wantField: "ticket", wantText: "is 129 bytes long: at most 128"},
		{name: "ticket with escapes", mutate: func(in *workflows.ChangeMediumInput) { in.Ticket = "x\x1b[2J" }, wantField: "ticket", wantText: `'\x1b'`},
		{name: "long reason", mutate: func(in *workflows.ChangeMediumInput) { in.Reason = long(1025) }, wantField: "reason", wantText: "at most 1024"},
		{name: "reason with BEL", mutate: func(in *workflows.ChangeMediumInput) { in.Reason = "ok\a" }, wantField: "reason", wantText: `'\a'`},
		{name: "reason not UTF-8", mutate: func(in *workflows.ChangeMediumInput) { in.Reason = "\xc3" }, wantField: "reason", wantText: "not valid UTF-8"},
		{name: "long requester", mutate: func(in *workflows.ChangeMediumInput) { in.Requester = long(257) }, wantField: "requester", wantText: "at most 256"},
		{name: "requester with CSI", mutate: func(in *workflows.ChangeMediumInput) { in.Requester = "bob\u009b" }, wantField: "requester"},
		{name: "long batch", mutate: func(in *workflows.ChangeMediumInput) { in.BatchID = long(201) }, wantField: "batch", wantText: "at most 200"},
		{name: "batch with escapes", mutate: func(in *workflows.ChangeMediumInput) { in.BatchID = "b\x1b]0;x\a" }, wantField: "batch"},
		{name: "requester source with space", mutate: func(in *workflows.ChangeMediumInput) { in.RequesterSource = "m tls" }, wantField: "requester-source"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := testInput()
			in.Requester, in.Reason, in.Ticket = "alice", "reinstall", "OPS-1"
			if tt.mutate != nil {
				tt.mutate(&in)
			}
			err := workflows.Validate(in)
			if tt.wantField == "" {
				assert.NoError(t, err, "Validate(%+v)", in)
				return
			}
			var ie *workflows.InputError
			require.True(t, errors.As(err, &ie), "Validate(%q) = %v, want an *InputError", in, err)
			assert.Equal(t, tt.wantField, ie.Field, "Validate(%q) = %v", in, err)
			assert.Contains(t, ie.Error(), tt.wantText)
			assert.True(t, utf8.ValidString(ie.Error()), "the message quotes the value in ASCII: %q", ie.Error())
			for _, r := range ie.Error() {
				assert.False(t, termtext.IsUnsafe(r), "the message %q holds %q raw", ie.Error(), r)
			}
		})
	}
}

func TestKeywordMedium(t *testing.T) {
	short := "/isos/a.iso"
	assert.Equal(t, short, workflows.KeywordMedium(short))
	exact := "/" + strings.Repeat("a", workflows.MaxKeyword-3) // and the quotes
	assert.Equal(t, exact, workflows.KeywordMedium(exact))
	// 'é' is 2 bytes: the cut must not split it.
	long := "/" + strings.Repeat("é", workflows.MaxMedium/2-1)
	got := workflows.KeywordMedium(long)
	encoded, err := json.Marshal(got)
	require.NoError(t, err)
	assert.LessOrEqual(t, len(encoded), workflows.MaxKeyword, "KeywordMedium(%d bytes) is %d bytes in JSON", len(long), len(encoded))
	assert.True(t, utf8.ValidString(got), "KeywordMedium cut a character")
	assert.True(t, strings.HasSuffix(got, "…"), "a cut path ends in …")
	assert.True(t, strings.HasPrefix(long, strings.TrimSuffix(got, "…")))
	assert.Greater(t, len(encoded), workflows.MaxKeyword-2, "keeps what fits")
	// '<' is 6 bytes in JSON (\u003c): the cut counts the encoded size.
	lt, err := json.Marshal(workflows.KeywordMedium("/" + strings.Repeat("<", 1000)))
	require.NoError(t, err)
	assert.LessOrEqual(t, len(lt), workflows.MaxKeyword)

	in := testInput()
	in.Medium = long
	sa := workflows.StartAttributes(in)
	v, ok := sa.GetKeyword(workflows.CdswapMedium)
	require.True(t, ok)
	assert.Equal(t, got, v, "the search attribute holds what fits")
	assert.Equal(t, long, in.Medium, "the input keeps the whole path")
}

// TestChangeMediumRefusesBeyondLimits runs requests beyond the limits through the workflow,
// as a starter other than the CLI could send them: refused before any activity.
func TestChangeMediumRefusesBeyondLimits(t *testing.T) {
	for _, tt := range []struct {
		name   string
		mutate func(*workflows.ChangeMediumInput)
		want   string
	}{
		// Temporal's JSON turns the byte into U+FFFD before the run sees it.
		{"medium not UTF-8", func(in *workflows.ChangeMediumInput) { in.Medium = "/isos/\xff.iso" }, `"/isos/\ufffd.iso" holds U+FFFD`},
		{"long ticket", func(in *workflows.ChangeMediumInput) { in.Ticket = strings.Repeat("t", 200) }, "ticket is 200 bytes long"},
		{"host with a newline", func(in *workflows.ChangeMediumInput) { in.Host = "h1\n" }, "host"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newFakeHost(activities.KindStubdom)
			in := testInput()
			tt.mutate(&in)
			_, r := newEnv(t, h, in)
			r.execute(t, in)
			appErr := requireAppError(t, r.err, workflows.ErrRefused)
			assert.Equal(t, activities.ErrBadInput, workflows.CauseType(r.err))
			assert.Contains(t, appErr.Error(), tt.want)
			assert.Empty(t, h.Names(), "no step may run")
			assert.Equal(t, workflows.OutcomeRefused, r.res.Outcome)
		})
	}
}

// TestValidateLimitsGuard shows that GetVersion ChangeValidateLimits keeps runs started
// before the limits replaying: a recorded run (no marker) whose request is made to break a
// limit (a 2,000-byte ticket) replays with the code as it is, which skips the check for it,
// and fails with the guard removed (the check for every run), since the run would now be
// refused where the history shows Inspect.
func TestValidateLimitsGuard(t *testing.T) {
	h := readHistory(t, "ChangeMedium-dom0-insert-v1.json")
	require.Empty(t, testenv.VersionMarkers(t, h), "the history predates the limits")
	h = beyondLimits(t, h)

	require.NoError(t, replayHistory(h), "an old run beyond the limits must replay with the guard")
	err := replayHistory(h, &forcedVersion{changeID: workflows.ChangeValidateLimits, version: 1})
	require.Error(t, err, "the replay without the guard succeeded: the guard would not be needed")
	assert.Contains(t, err.Error(), "[TMPRL1100]", "replay error %v", err)
	// And the check is in force for new runs: the version is 1 when nothing was recorded.
	require.NoError(t, replayHistory(readHistory(t, "ChangeMedium-dom0-insert-v1.json"),
		&forcedVersion{changeID: workflows.ChangeValidateLimits, version: workflow.DefaultVersion}))
}

// beyondLimits returns a copy of the ChangeMedium run h whose request has a 2,000-byte
// ticket, beyond MaxTicket.
func beyondLimits(t *testing.T, h *historypb.History) *historypb.History {
	t.Helper()
	h = proto.Clone(h).(*historypb.History)
	started := h.GetEvents()[0].GetWorkflowExecutionStartedEventAttributes()
	require.NotNil(t, started)
	var in workflows.ChangeMediumInput
	dc := converter.GetDefaultDataConverter()
	require.NoError(t, dc.FromPayload(started.GetInput().GetPayloads()[0], &in))
	in.Ticket = strings.Repeat("T", 2000)
	require.Error(t, workflows.Validate(in), "the rewritten request must break a limit")
	p, err := dc.ToPayload(in)
	require.NoError(t, err)
	started.GetInput().GetPayloads()[0] = p
	return h
}

// TestImpliedLimits shows that version ImpliedLimitsVersion of local-short-steps checks the
// limits without validate-input-limits: a recorded run of it (no validate-input-limits
// marker) whose request is made to break a limit no longer replays, since the code refuses
// it where the history shows Inspect; with local-short-steps answered 3 instead, the code
// asks validate-input-limits, which the run did not record, skips the limits and replays.
// The same run as it was replays either way: version 4 changes no step.
func TestImpliedLimits(t *testing.T) {
	h := readHistory(t, "ChangeMedium-dom0-insert-v6.json")
	require.Equal(t, map[string]workflow.Version{workflows.ChangeLocalSteps: workflows.ImpliedLimitsVersion},
		testenv.VersionMarkers(t, h), "a run of version 4 records local-short-steps alone")
	asV3 := &forcedVersion{changeID: workflows.ChangeLocalSteps, version: workflows.LocalEjectVersion}
	require.NoError(t, replayHistory(h))
	require.NoError(t, replayHistory(h, asV3), "version 4 changes no step of a valid request")

	beyond := beyondLimits(t, h)
	err := replayHistory(beyond)
	require.Error(t, err, "a run of version 4 beyond the limits replayed: the limits are not implied")
	assert.Contains(t, err.Error(), "[TMPRL1100]", "replay error %v", err)
	require.NoError(t, replayHistory(beyond, asV3), "version 3 without a validate-input-limits marker skips the limits")
}
