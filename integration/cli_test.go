package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cdswap/cdswap/internal/testenv"
	"github.com/cdswap/cdswap/internal/xensim"
	"github.com/cdswap/cdswap/internal/xensim/isofs"
	"github.com/cdswap/cdswap/workflows"
)

// cliResult is what a cdswap command printed and its exit code.
type cliResult struct {
	stdout, stderr string
	code           int
	cpu            time.Duration // the process's user and system time
}

// runCLI runs the built cdswap binary against the dev server, for at most 2 minutes.
func runCLI(t testing.TB, args ...string) cliResult {
	t.Helper()
	return runCLIFor(t, 2*time.Minute, args...)
}

// runCLIFor is runCLI for at most d.
func runCLIFor(t testing.TB, d time.Duration, args ...string) cliResult {
	t.Helper()
	s := need(t)
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	full := append([]string{"--address", s.address, "--namespace", namespace}, args...)
	cmd := exec.CommandContext(ctx, s.cliBin, full...)
	cmd.Env = append(os.Environ(), "USER=integration-test")
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	r := cliResult{stdout: out.String(), stderr: errOut.String()}
	if ps := cmd.ProcessState; ps != nil {
		r.cpu = ps.UserTime() + ps.SystemTime()
	}
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		r.code = exit.ExitCode()
	case err != nil:
		t.Fatalf("run cdswap %s: %v", strings.Join(args, " "), err)
	}
	t.Logf("$ cdswap %s  (exit %d)\n%s%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	return r
}

// checkHistoryText runs `cdswap history ID` and checks that it mentions each of want.
func checkHistoryText(t testing.TB, id string, want ...string) {
	t.Helper()
	r := runCLI(t, "history", id)
	require.Equal(t, 0, r.code, "cdswap history %s: %s", id, r.stderr)
	for _, w := range want {
		assert.Contains(t, strings.ToLower(r.stdout), strings.ToLower(w), "cdswap history %s does not say %q", id, w)
	}
}

// TestCLI runs the operator's commands end to end: insert and eject with --wait, by name and
// by domid, then history (text and --json) with who asked and why.
func TestCLI(t *testing.T) {
	need(t)
	t.Parallel()
	h := startHost(t, xensim.Config{HostName: hostName("cli"), StubdomGuests: 1, Dom0Guests: 1, QEMU: xensim.QEMUFake})
	startWorker(t, h, workerOpts{})
	stub, dom0 := domainOf(t, h, xensim.KindStubdom), domainOf(t, h, xensim.KindDom0)
	tools := iso(h, xensim.ISOTools)

	r := runCLI(t, "insert", "--host", h.Name(), "--domain", stub.Name, "--vdev", "hdc", "--medium", tools,
		"--wait", "--requester", "alice", "--reason", "install guest tools", "--ticket", "OPS-42")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stdout, "WaitFdset", "--wait prints the steps")
	checkDrive(t, h, stub, tools, stub.Medium)

	r = runCLI(t, "eject", "--host", h.Name(), "--domain", itoa(dom0.DomID), "--vdev", "hdc", "--wait")
	require.Equal(t, 0, r.code, r.stderr)
	checkDrive(t, h, dom0, "", dom0.Medium)

	id := workflows.WorkflowID(h.Name(), stub.DomID, "hdc")
	checkHistoryText(t, id, "alice", "install guest tools", "OPS-42", "Inspect", "WaitFdset", "Verify", "changed")
	r = runCLI(t, "history", "--json", id)
	require.Equal(t, 0, r.code, r.stderr)
	assert.True(t, json.Valid([]byte(r.stdout)), "history --json is not JSON: %s", r.stdout)
}

// TestCLIErrors runs each mistake an operator can make through the cdswap binary: it must
// fail (exit 1) and say what was wrong, with the value, and what to do.
func TestCLIErrors(t *testing.T) {
	need(t)
	t.Parallel()
	h := startHost(t, xensim.Config{HostName: hostName("clierr"), StubdomGuests: 1, Dom0Guests: 1, TradGuests: 1, QEMU: xensim.QEMUFake})
	startWorker(t, h, workerOpts{})
	stub, dom0, trad := domainOf(t, h, xensim.KindStubdom), domainOf(t, h, xensim.KindDom0), domainOf(t, h, xensim.KindTraditional)
	addDisk(t, h, dom0)
	outside := filepath.Join(testenv.SocketDir(t), "outside.iso")
	require.NoError(t, isofs.Write(outside, "OUTSIDE", map[string][]byte{"A.TXT": []byte("a\n")}))
	folder := filepath.Join(h.ISODir(), "folder.iso")
	require.NoError(t, os.Mkdir(folder, 0o755))
	tools := iso(h, xensim.ISOTools)
	nobody := hostName("nobody")

	insert := func(host, domain, vdev, medium string, extra ...string) []string {
		return append([]string{"insert", "--host", host, "--domain", domain, "--vdev", vdev, "--medium", medium, "--wait"}, extra...)
	}
	cases := []struct {
		name string
		args []string
		want []string // in stderr, case-insensitive
	}{
		{"unknown host", insert(nobody, stub.Name, "hdc", tools), []string{"no cdswap-worker", nobody, "start cdswap-worker"}},
		{"unknown domain", insert(h.Name(), "no-such-guest", "hdc", tools), []string{"no-such-guest"}},
		{"vdev not a cdrom", insert(h.Name(), dom0.Name, "hda", tools), []string{"hda", "cdrom"}},
		{"medium outside the roots", insert(h.Name(), dom0.Name, "hdc", outside), []string{outside, h.ISODir()}},
		{"missing medium", insert(h.Name(), dom0.Name, "hdc", iso(h, "missing.iso")), []string{"missing.iso"}},
		{"medium is a folder", insert(h.Name(), dom0.Name, "hdc", folder), []string{folder}},
		{"format mismatch", insert(h.Name(), dom0.Name, "hdc", iso(h, xensim.QCOW2Image), "--format", "raw"), []string{xensim.QCOW2Image, "qcow2"}},
		{"unsupported device model", insert(h.Name(), trad.Name, "hdc", tools), []string{trad.Name, "traditional"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := runCLI(t, c.args...)
			assert.Equal(t, 1, r.code, "exit code")
			for _, w := range c.want {
				assert.Contains(t, strings.ToLower(r.stderr), strings.ToLower(w), "the error does not say %q", w)
			}
		})
	}

	t.Run("drive already being changed", func(t *testing.T) {
		// The first swap is slow to eject, so that it is running when the second comes.
		h.QEMU(dom0.DomID).Fake().Delay("eject", 3*time.Second)
		defer h.QEMU(dom0.DomID).Fake().Delay("eject", 0)
		first := runCLI(t, "insert", "--host", h.Name(), "--domain", dom0.Name, "--vdev", "hdc", "--medium", tools, "--requester", "bob")
		require.Equal(t, 0, first.code, first.stderr)
		id := workflows.WorkflowID(h.Name(), dom0.DomID, "hdc")
		require.Contains(t, first.stdout, id)
		second := runCLI(t, insert(h.Name(), dom0.Name, "hdc", iso(h, xensim.ISORescue))...)
		assert.Equal(t, 1, second.code, "exit code")
		assert.Contains(t, second.stderr, id, "the refusal names the running swap")
		assert.Contains(t, second.stderr, "bob", "the refusal says who started it")
		ctx := testenv.Context(t, time.Minute)
		res, err := waitSwap(ctx, the.client.GetWorkflow(ctx, id, ""))
		require.NoError(t, err)
		assert.Equal(t, workflows.OutcomeChanged, res.Outcome)
	})
}
