package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cdswap/cdswap/internal/qmp"
	"github.com/cdswap/cdswap/internal/testenv"
	"github.com/cdswap/cdswap/internal/xensim"
)

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
	buildDir  string
)

// TestMain removes the folder buildBinary builds into.
func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// buildBinary builds xensim as a user would (go build), once for all tests.
func buildBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "xsbin")
		if buildErr != nil {
			return
		}
		builtBin = filepath.Join(buildDir, "xensim")
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, "go", "build", "-o", builtBin, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %w: %s", err, out)
		}
	})
	require.NoError(t, buildErr)
	return builtBin
}

// started is a running xensim binary.
type started struct {
	cmd    *exec.Cmd
	lines  []string // stdout up to the "running:" line
	stdout io.Reader
	stderr *testenv.Buffer
}

// startBinary runs bin with args and returns once it printed until stop matches a line (or
// its first JSON value, when stop is "").
func startBinary(t *testing.T, bin string, args ...string) *started {
	t.Helper()
	cmd := exec.Command(bin, args...)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	s := &started{cmd: cmd, stdout: out, stderr: &testenv.Buffer{}}
	cmd.Stderr = s.stderr
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return s
}

// readUntil reads stdout lines until one starts with prefix.
func (s *started) readUntil(t *testing.T, prefix string) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(s.stdout)
		for sc.Scan() {
			s.lines = append(s.lines, sc.Text())
			if strings.HasPrefix(sc.Text(), prefix) {
				done <- nil
				return
			}
		}
		done <- io.ErrUnexpectedEOF
	}()
	select {
	case err := <-done:
		require.NoError(t, err, "xensim stopped before printing %q; stdout %q, stderr:\n%s", prefix, s.lines, s.stderr.String())
	case <-time.After(2 * time.Minute):
		t.Fatalf("xensim printed no %q line; stderr:\n%s", prefix, s.stderr.String())
	}
}

func (s *started) line(t *testing.T, prefix string) string {
	t.Helper()
	for _, l := range s.lines {
		if strings.HasPrefix(l, prefix) {
			return strings.TrimPrefix(l, prefix)
		}
	}
	t.Fatalf("no line %q in %q", prefix, s.lines)
	return ""
}

// stop sends sig and waits for a clean exit.
func (s *started) stop(t *testing.T, sig os.Signal) {
	t.Helper()
	require.NoError(t, s.cmd.Process.Signal(sig))
	done := make(chan error, 1)
	go func() { done <- s.cmd.Wait() }()
	select {
	case err := <-done:
		require.NoError(t, err, "xensim exit after %v; stderr:\n%s", sig, s.stderr.String())
	case <-time.After(time.Minute):
		t.Fatalf("xensim did not stop after %v", sig)
	}
	assert.Contains(t, s.stderr.String(), "xensim: stopped")
}

// TestBinaryAsUser starts xensim as a new user would, points Debian's xenstore-ls at it
// with the printed XENSTORED_PATH, sets a knob with xensim ctl, and interrupts it.
func TestBinaryAsUser(t *testing.T) {
	testenv.RequireCommand(t, "xenstore-ls", "xenstore-utils")
	bin := buildBinary(t)
	dir := filepath.Join(testenv.SocketDir(t), "host")
	s := startBinary(t, bin, "--dir", dir, "--host", "lab1", "--domains", "3", "--trad", "1")
	s.readUntil(t, "running:")

	env := s.line(t, "export ")
	require.Equal(t, "XENSTORED_PATH="+filepath.Join(dir, "xenstored.sock"), env)
	flags := s.line(t, "worker flags: ")
	assert.Contains(t, flags, "--host lab1 --xenstore "+filepath.Join(dir, "xenstored.sock"))
	assert.Contains(t, flags, "--qmp-dir "+filepath.Join(dir, "run"))

	ls := exec.Command("xenstore-ls", "-f")
	ls.Env = append(os.Environ(), env)
	out, err := ls.CombinedOutput()
	require.NoError(t, err, "xenstore-ls: %s", out)
	for _, want := range []string{
		`/local/domain/0/name = "Domain-0"`,
		`/local/domain/1/name = "stubdom-1"`,
		`/local/domain/1/image/device-model-domid = "2"`,
		`/local/domain/2/name = "stubdom-1-dm"`,
		`/local/domain/2/target = "1"`,
		`/local/domain/0/backend/vbd/2/5632/state = "4"`,
		`/libxl/2/device/vbd/5632/backend = "/local/domain/0/backend/vbd/2/5632"`,
		`/local/domain/3/name = "dom0-1"`,
		`/libxl/3/dm-version = "qemu_xen"`,
		`/local/domain/4/name = "traditional-1"`,
		`/libxl/4/dm-version = "qemu_xen_traditional"`,
	} {
		assertLine(t, string(out), want)
	}
	_, err = os.Stat(filepath.Join(dir, "run", "qmp-libxl-1"))
	assert.NoError(t, err, "libxl's QMP socket of the stubdom guest")

	ctl := exec.Command(bin, "ctl", "--dir", dir, "set", "never-add-fd=true", "--domain", "stubdom-1")
	out, err = ctl.CombinedOutput()
	require.NoError(t, err, "xensim ctl set: %s", out)
	assert.Contains(t, string(out), "guest stubdom-1: never-add-fd=true")
	out, err = exec.Command(bin, "ctl", "--dir", dir, "show", "--json").CombinedOutput()
	require.NoError(t, err, "xensim ctl show: %s", out)
	var f xensim.Faults
	require.NoError(t, json.Unmarshal(out, &f))
	assert.True(t, f.For("stubdom-1").NeverAddFD)

	s.stop(t, os.Interrupt)
	for _, p := range []string{"xenstored.sock", "control.sock", "run/qmp-libxl-1"} {
		_, err := os.Stat(filepath.Join(dir, p))
		assert.ErrorIs(t, err, os.ErrNotExist, "%s after the stop", p)
	}
}

// TestBinaryJSON: --json prints the summary for scripts; SIGTERM stops the host.
func TestBinaryJSON(t *testing.T) {
	bin := buildBinary(t)
	dir := filepath.Join(testenv.SocketDir(t), "h")
	s := startBinary(t, bin, "--dir", dir, "--json", "--qemu", "fake", "--stubdom", "2", "--fault", "stubdom-2:never-close=true")
	var sum xensim.Summary
	dec := json.NewDecoder(s.stdout)
	errc := make(chan error, 1)
	go func() { errc <- dec.Decode(&sum) }()
	select {
	case err := <-errc:
		require.NoError(t, err, "stderr:\n%s", s.stderr.String())
	case <-time.After(time.Minute):
		t.Fatalf("no JSON summary; stderr:\n%s", s.stderr.String())
	}
	assert.Equal(t, "sim0", sum.Host)
	assert.Equal(t, s.cmd.Process.Pid, sum.PID)
	require.Len(t, sum.Domains, 2)
	assert.Equal(t, "stubdom-2", sum.Domains[1].Name)
	assert.Equal(t, uint32(3), sum.Domains[1].DomID)
	assert.Equal(t, uint32(4), sum.Domains[1].StubDomID)
	assert.Equal(t, "fake", sum.Domains[1].QEMU)

	c := xensim.NewControl(dir)
	f, err := c.Faults(context.Background())
	require.NoError(t, err)
	assert.True(t, f.For("stubdom-2").NeverClose, "--fault is in force from the start")
	assert.False(t, f.For("stubdom-1").NeverClose)
	s.stop(t, syscall.SIGTERM)
}

// TestBadInput: each kind of bad input gets a clear message and exit status 2.
func TestBadInput(t *testing.T) {
	busy := testenv.SocketDir(t)
	h, err := xensim.Start(context.Background(), xensim.Config{Dir: busy, QEMU: xensim.QEMUFake, StubdomGuests: 1})
	require.NoError(t, err)
	defer h.Close()
	file := filepath.Join(testenv.SocketDir(t), "file")
	require.NoError(t, os.WriteFile(file, nil, 0o644))

	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown flag value", []string{"--qemu", "bogus"}, `--qemu "bogus": want real, fake or auto`},
		{"unknown flag", []string{"--frobnicate"}, "unknown flag: --frobnicate"},
		{"not a number", []string{"--domains", "many"}, `invalid argument "many"`},
		{"unwritable folder", []string{"--dir", filepath.Join(file, "h")}, "cannot be made"},
		{"too many guests", []string{"--domains", "5000"}, "5000 guests do not fit"},
		{"too few for the kinds", []string{"--domains", "1", "--stubdom", "2"}, "--domains 1 is fewer than --stubdom 2"},
		{"negative count", []string{"--trad", "-1"}, "--trad -1: cannot be negative"},
		{"bad fault", []string{"--fault", "explode=1"}, `unknown fault knob "explode"`},
		{"bad fault value", []string{"--fault", "again-ratio=2"}, "want a share between 0 and 1"},
		{"second xensim on the folder", []string{"--dir", busy, "--qemu", "fake"}, "another xensim (pid"},
		{"ctl unknown knob", []string{"ctl", "--dir", busy, "set", "explode=1"}, `unknown fault knob "explode"`},
		{"ctl unknown domain", []string{"ctl", "--dir", busy, "set", "paused=1", "--domain", "nosuch"}, `domain "nosuch"`},
		{"bench bad counts", []string{"bench", "--guests", "x"}, `--guests "x"`},
		{"bench unknown flag", []string{"bench", "--frobnicate"}, "unknown flag: --frobnicate"},
		{"an argument", []string{"extra"}, `unknown command "extra" for "xensim"`},
		{"ctl set without a knob", []string{"ctl", "--dir", busy, "set"}, "requires at least 1 arg(s)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			args := tt.args
			if args[0] != "ctl" && args[0] != "bench" && !contains(args, "--dir") {
				args = append(args, "--dir", filepath.Join(testenv.SocketDir(t), "h"))
			}
			code := run(args, &stdout, &stderr)
			assert.Equal(t, 2, code, "run(%q) exit status; stderr %s", args, stderr.String())
			assert.Contains(t, stderr.String(), tt.want)
			assert.NotContains(t, stderr.String(), "panic")
		})
	}
	assert.Equal(t, "Domain-0", mustRead(t, h), "the running host is unharmed")
}

// assertLine checks that text has line, without printing all of text when it has not.
func assertLine(t *testing.T, text, line string) {
	t.Helper()
	for _, l := range strings.Split(text, "\n") {
		if l == line {
			return
		}
	}
	t.Errorf("xenstore-ls has no line %s (%d lines)", line, strings.Count(text, "\n"))
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

func mustRead(t *testing.T, h *xensim.Host) string {
	v, err := h.XS().Read("/local/domain/0/name")
	require.NoError(t, err)
	return v
}

// TestCtlNoHost: ctl against a folder where nothing runs says so (exit status 1).
func TestCtlNoHost(t *testing.T) {
	var stdout, stderr bytes.Buffer
	dir := testenv.SocketDir(t)
	code := run([]string{"ctl", "--dir", dir, "show"}, &stdout, &stderr)
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr.String(), "is it running with --dir "+dir)
}

// TestCtlInProcess sets and shows knobs of a host started by the library.
func TestCtlInProcess(t *testing.T) {
	dir := testenv.SocketDir(t)
	h, err := xensim.Start(context.Background(), xensim.Config{Dir: dir, QEMU: xensim.QEMUFake, StubdomGuests: 1, Dom0Guests: 1})
	require.NoError(t, err)
	defer h.Close()
	var stdout, stderr bytes.Buffer
	code := run([]string{"ctl", "--dir", dir, "set", "add-fd-delay=45s", "again-ratio=0.25", "dom0-1:paused=true"}, &stdout, &stderr)
	require.Equal(t, 0, code, "stderr: %s", stderr.String())
	assert.Contains(t, stdout.String(), "again-ratio=0.25\n")
	assert.Contains(t, stdout.String(), "all guests: add-fd-delay=45s\n")
	assert.Contains(t, stdout.String(), "guest dom0-1: add-fd-delay=45s paused=true\n")
	assert.True(t, h.Faults().For("dom0-1").Paused)

	stdout.Reset()
	code = run([]string{"ctl", "--dir", dir, "show"}, &stdout, &stderr)
	require.Equal(t, 0, code, "stderr: %s", stderr.String())
	assert.Contains(t, stdout.String(), "guest dom0-1: add-fd-delay=45s paused=true\n")
	assert.Contains(t, stdout.String(), "media: 0 changes, 0 ejects; drives out now 0, at most 0\n")
	assert.Contains(t, stdout.String(), "  dom0-1 (3) hdc: changes=0 ejects=0\n")

	// An eject on the stubdom guest's monitor: its drive is out.
	stub := h.Domains()[0]
	q, err := qmp.Dial(context.Background(), stub.QMPSocket)
	require.NoError(t, err)
	defer q.Close()
	require.NoError(t, q.Eject(context.Background(), stub.DevID.QEMUID(), false))
	stdout.Reset()
	code = run([]string{"ctl", "--dir", dir, "show", "--json"}, &stdout, &stderr)
	require.Equal(t, 0, code, "stderr: %s", stderr.String())
	var shown struct {
		xensim.Faults
		Media xensim.MediaCounts `json:"media"`
	}
	require.NoError(t, json.Unmarshal(stdout.Bytes(), &shown))
	assert.True(t, shown.For("dom0-1").Paused, "the knobs stay at the top level")
	assert.Equal(t, 1, shown.Media.Out)
	assert.Equal(t, 1, shown.Media.Drives[0].Ejects)

	stdout.Reset()
	code = run([]string{"ctl", "--dir", dir, "reset-media"}, &stdout, &stderr)
	require.Equal(t, 0, code, "stderr: %s", stderr.String())
	assert.Contains(t, stdout.String(), "  stubdom-1 (1) hdc: changes=0 ejects=1 out\n", "the counts before the reset")
	assert.Equal(t, 0, h.Media().Ejects)
}

// TestBench runs `xensim bench` on the smallest cases. It checks the table's shape only:
// the figures are for people, not assertions.
func TestBench(t *testing.T) {
	bin := buildBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "bench", "--qemu", "fake", "--guests", "1,2", "--settle", "10ms").CombinedOutput()
	require.NoError(t, err, "xensim bench: %s", out)
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	require.Len(t, lines, 3, "a header and one row per case: %s", out)
	assert.True(t, strings.HasPrefix(lines[0], "QEMU  GUESTS"), "header %q", lines[0])
	for i, n := range []string{"1", "2"} {
		f := strings.Fields(lines[i+1])
		require.GreaterOrEqual(t, len(f), 3, "row %q", lines[i+1])
		assert.Equal(t, []string{"fake", n}, f[:2], "row %q", lines[i+1])
		_, err := time.ParseDuration(f[2])
		assert.NoError(t, err, "start time in row %q", lines[i+1])
	}
}

// TestSharedISOs starts three xensim processes at once on one --isos library: each serves
// media from it, and it holds each image once, whole, with no temporary file left.
func TestSharedISOs(t *testing.T) {
	bin := buildBinary(t)
	base := testenv.SocketDir(t)
	isos := filepath.Join(base, "isos")
	var hosts []*started
	for i := range 3 {
		hosts = append(hosts, startBinary(t, bin, "--dir", filepath.Join(base, fmt.Sprint("h", i)), "--host", fmt.Sprint("sim", i),
			"--isos", isos, "--json", "--qemu", "fake", "--stubdom", "1"))
	}
	for i, s := range hosts {
		var sum xensim.Summary
		require.NoError(t, json.NewDecoder(s.stdout).Decode(&sum), "host %d; stderr:\n%s", i, s.stderr.String())
		assert.Equal(t, isos, sum.ISODir)
		assert.Contains(t, strings.Join(sum.WorkerFlags, " "), "--iso-root "+isos)
		for _, p := range sum.ISOs {
			assert.Equal(t, isos, filepath.Dir(p))
		}
		assert.Equal(t, filepath.Join(isos, xensim.DefaultMedium), sum.Domains[0].Medium, "the guest starts with the shared image")
	}
	entries, err := os.ReadDir(isos)
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	assert.ElementsMatch(t, []string{xensim.ISODebian, xensim.ISOTools, xensim.ISORescue, xensim.QCOW2Image}, names, "no temporary file left")
	for _, s := range hosts {
		s.stop(t, syscall.SIGTERM)
	}
	_, err = os.Stat(filepath.Join(isos, xensim.ISOTools))
	assert.NoError(t, err, "no host removes the shared library")
}
