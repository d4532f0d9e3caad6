package simqemu

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cdswap/cdswap/internal/qmp"
	"github.com/cdswap/cdswap/internal/testenv"
	"github.com/cdswap/cdswap/internal/xen"
	"github.com/cdswap/cdswap/internal/xensim/isofs"
	"github.com/cdswap/cdswap/internal/xensim/loopdev"
)

// forModes runs f as a subtest for a real QEMU and for the fake, which must behave alike.
func forModes(t *testing.T, f func(t *testing.T, mode Mode)) {
	for _, mode := range []Mode{ModeReal, ModeFake} {
		t.Run(string(mode), func(t *testing.T) {
			if mode == ModeReal {
				testenv.RequireQEMU(t)
			}
			f(t, mode)
		})
	}
}

// startQEMU starts a QEMU with cfg and stops it when the test ends.
func startQEMU(ctx context.Context, t testing.TB, cfg Config) *QEMU {
	t.Helper()
	q, err := Start(ctx, cfg)
	require.NoError(t, err, "Start")
	t.Cleanup(func() {
		if err := q.Stop(); err != nil {
			t.Errorf("Stop() = %v", err)
		}
	})
	return q
}

// dial connects a QMP client and closes it when the test ends.
func dial(ctx context.Context, t testing.TB, path string) *qmp.Client {
	t.Helper()
	c, err := qmp.Dial(ctx, path)
	require.NoError(t, err, "qmp.Dial(%s)", path)
	t.Cleanup(func() { c.Close() })
	return c
}

func findBlock(t *testing.T, blocks []qmp.BlockInfo, device string) qmp.BlockInfo {
	t.Helper()
	for _, b := range blocks {
		if b.Device == device {
			return b
		}
	}
	require.Failf(t, "drive missing", "query-block has no %s: %+v", device, blocks)
	return qmp.BlockInfo{}
}

func writeISO(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "medium.iso")
	require.NoError(t, isofs.Write(p, "SIMQEMU", map[string][]byte{"README.TXT": []byte("hi\n")}))
	return p
}

func TestQueryBlock(t *testing.T) {
	forModes(t, testQueryBlock)
}

func testQueryBlock(t *testing.T, mode Mode) {
	iso := writeISO(t)
	tests := []struct {
		name     string
		medium   func(t *testing.T) Medium
		wantFile func(m Medium) string
		wantDrv  string
	}{
		{name: "empty drive", medium: func(*testing.T) Medium { return Medium{} }},
		{
			name:     "raw file, as a dom0 qemu has",
			medium:   func(*testing.T) Medium { return Medium{Path: iso, Format: "raw"} },
			wantFile: func(m Medium) string { return m.Path },
			wantDrv:  "raw",
		},
		{
			name: "host_device loop, as a stubdom's /dev/xvdc",
			medium: func(t *testing.T) Medium {
				testenv.Require(t, "read-only loop devices", loopdev.Available())
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				dev, err := loopdev.AttachReadOnly(ctx, iso)
				require.NoError(t, err)
				t.Cleanup(func() {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					if err := loopdev.Detach(ctx, dev); err != nil {
						t.Errorf("Detach(%s) = %v", dev, err)
					}
				})
				return Medium{Path: dev, Format: "host_device"}
			},
			wantFile: func(m Medium) string { return m.Path },
			wantDrv:  "host_device",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			m := tt.medium(t)
			mon := filepath.Join(testenv.SocketDir(t), "qmp-libxl-7")
			cfg := Config{Mode: mode, DomID: 7, CDROMs: []xen.DevID{5632}, Monitors: []string{mon}}
			if m.Path != "" {
				cfg.InitialMedium = map[xen.DevID]Medium{5632: m}
			}
			q := startQEMU(ctx, t, cfg)
			assert.Equal(t, mode == ModeReal, q.Real(), "Real()")
			assert.Equal(t, mode == ModeFake, q.Fake() != nil, "Fake() != nil")
			assert.Equal(t, mode == ModeReal, q.PID() > 0, "PID() = %d", q.PID())

			c := dial(ctx, t, mon)
			assert.Equal(t, 7, c.Version().Major, "QEMU major version")
			blocks, err := c.QueryBlock(ctx)
			require.NoError(t, err)
			b := findBlock(t, blocks, "ide-5632")
			assert.Equal(t, "ide-5632", b.QDev, "qdev")
			assert.True(t, b.Removable, "removable")
			require.NotNil(t, b.TrayOpen, "tray_open")
			assert.False(t, *b.TrayOpen, "tray_open")
			if tt.wantFile == nil {
				assert.Nil(t, b.Inserted, "inserted: %+v", b.Inserted)
				return
			}
			require.NotNil(t, b.Inserted, "inserted")
			assert.Equal(t, tt.wantFile(m), b.Inserted.File, "inserted.file")
			assert.Equal(t, tt.wantDrv, b.Inserted.Drv, "inserted.drv")
			assert.True(t, b.Inserted.RO, "inserted.ro")
		})
	}
}

func TestDropAfter(t *testing.T) {
	forModes(t, testDropAfter)
}

func testDropAfter(t *testing.T, mode Mode) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := testenv.SocketDir(t)
	libxlMon, agentMon := filepath.Join(dir, "qmp-libxl-3"), filepath.Join(dir, "qmp-agent-3")
	q := startQEMU(ctx, t, Config{Mode: mode, DomID: 3, Monitors: []string{libxlMon, agentMon}})

	victim := dial(ctx, t, libxlMon)
	bystander := dial(ctx, t, agentMon)
	q.DropAfter("query-version")

	_, err := victim.QueryStatus(ctx)
	require.NoError(t, err, "a command before the armed one")
	v, err := victim.QueryVersion(ctx)
	require.NoError(t, err, "the armed command gets its reply before the drop")
	assert.Equal(t, 7, v.Major, "query-version major")
	select {
	case <-victim.Done():
	case <-ctx.Done():
		t.Fatal("the connection was not dropped after the reply to query-version")
	}
	_, err = victim.QueryStatus(ctx)
	assert.ErrorIs(t, err, qmp.ErrClosed, "a command after the drop")

	_, err = bystander.QueryVersion(ctx)
	assert.NoError(t, err, "the other monitor's connection is untouched, and the drop was used up")
	again := dial(ctx, t, libxlMon)
	_, err = again.QueryVersion(ctx)
	assert.NoError(t, err, "a new connection to the dropped monitor works")
}

func TestAddFD(t *testing.T) {
	forModes(t, testAddFD)
}

func testAddFD(t *testing.T, mode Mode) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	iso := writeISO(t)
	mon := filepath.Join(testenv.SocketDir(t), "qmp-libxl-4")
	startQEMU(ctx, t, Config{Mode: mode, DomID: 4, Monitors: []string{mon}})
	c := dial(ctx, t, mon)

	f, err := os.Open(iso)
	require.NoError(t, err)
	defer f.Close()
	opaque := "raw:" + iso
	info, err := c.AddFD(ctx, f, nil, opaque)
	require.NoError(t, err, "add-fd through the proxy")
	sets, err := c.QueryFdsets(ctx)
	require.NoError(t, err)
	want := qmp.FdsetInfo{FdsetID: info.FdsetID, FDs: []qmp.FdsetFD{{FD: info.FD, Opaque: opaque}}}
	assert.Contains(t, sets, want, "query-fdsets")

	// QEMU dups the fd it got: the medium opens from the fdset.
	fdset := "/dev/fdset/" + strconv.FormatInt(info.FdsetID, 10)
	require.NoError(t, c.BlockdevChangeMedium(ctx, qmp.ChangeMediumArgs{ID: "ide-5632", Filename: fdset, Format: "raw"}))
	blocks, err := c.QueryBlock(ctx)
	require.NoError(t, err)
	b := findBlock(t, blocks, "ide-5632")
	require.NotNil(t, b.Inserted, "inserted after blockdev-change-medium")
	assert.Equal(t, fdset, b.Inserted.File, "inserted.file")

	var qerr *qmp.Error
	err = c.Execute(ctx, "add-fd", map[string]any{"opaque": "no fd"}, nil)
	if assert.ErrorAs(t, err, &qerr, "add-fd without an fd") {
		assert.Equal(t, "No file descriptor supplied via SCM_RIGHTS", qerr.Desc)
	}
}

func TestPaused(t *testing.T) {
	forModes(t, testPaused)
}

func testPaused(t *testing.T, mode Mode) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	mon := filepath.Join(testenv.SocketDir(t), "qmp")
	q := startQEMU(ctx, t, Config{Mode: mode, Paused: true, Monitors: []string{mon}})
	c := dial(ctx, t, mon)
	steps := []struct {
		name       string
		set        *bool
		wantStatus string
	}{
		{name: "started with -S", wantStatus: "prelaunch"},
		{name: "cont", set: ptr(false), wantStatus: "running"},
		{name: "stop", set: ptr(true), wantStatus: "paused"},
	}
	for _, s := range steps {
		if s.set != nil {
			require.NoError(t, q.SetPaused(ctx, *s.set), "SetPaused(%v)", *s.set)
		}
		st, err := c.QueryStatus(ctx)
		require.NoError(t, err)
		want := s.wantStatus
		if mode == ModeFake && want == "prelaunch" {
			want = "paused" // qmptest does not model QEMU's prelaunch state (yet)
		}
		assert.Equal(t, want, st.Status, "%s: query-status", s.name)
		assert.Equal(t, s.wantStatus == "running", st.Running, "%s: running", s.name)
	}
}

func ptr[T any](v T) *T { return &v }

func TestDropBeforeReply(t *testing.T) {
	forModes(t, testDropBeforeReply)
}

func testDropBeforeReply(t *testing.T, mode Mode) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	mon := filepath.Join(testenv.SocketDir(t), "qmp")
	q := startQEMU(ctx, t, Config{Mode: mode, Monitors: []string{mon}})
	victim := dial(ctx, t, mon)
	q.DropBeforeReply("stop")
	err := victim.Execute(ctx, "stop", nil, nil)
	assert.ErrorIs(t, err, qmp.ErrClosed, "stop with the reply dropped")

	c := dial(ctx, t, mon)
	st, err := c.QueryStatus(ctx)
	require.NoError(t, err)
	assert.False(t, st.Running, "the dropped stop took effect: query-status = %+v", st)
	assert.NoError(t, c.Execute(ctx, "cont", nil, nil), "cont")
	assert.NoError(t, c.Execute(ctx, "stop", nil, nil), "a second stop: the drop was used up")
}

func TestLockTray(t *testing.T) {
	forModes(t, func(t *testing.T, mode Mode) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		mon := filepath.Join(testenv.SocketDir(t), "qmp")
		q := startQEMU(ctx, t, Config{Mode: mode, Monitors: []string{mon},
			InitialMedium: map[xen.DevID]Medium{5632: {Path: writeISO(t)}}})
		err := q.LockTray(5632, true)
		if mode == ModeReal {
			assert.ErrorIs(t, err, ErrNeedsFake, "LockTray on a real QEMU")
			return
		}
		require.NoError(t, err)
		assert.ErrorIs(t, q.LockTray(768, true), ErrBadConfig, "LockTray of a drive that is not there")
		c := dial(ctx, t, mon)
		var qerr *qmp.Error
		if assert.ErrorAs(t, c.Eject(ctx, "ide-5632", false), &qerr, "eject of a locked tray") {
			assert.Equal(t, "Device 'ide-5632' is locked and force was not specified, wait for tray to open and try again", qerr.Desc)
		}
	})
}

func TestRealStop(t *testing.T) {
	testenv.RequireQEMU(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := testenv.SocketDir(t)
	mon := filepath.Join(dir, "qmp")
	work := filepath.Join(dir, "work")
	q, err := Start(ctx, Config{Mode: ModeReal, Name: "stopme", Monitors: []string{mon}, WorkDir: work})
	require.NoError(t, err)
	pid := q.PID()
	c := dial(ctx, t, mon)
	assert.FileExists(t, filepath.Join(work, "qemu-dm-stopme.pid"), "pidfile")

	require.NoError(t, q.Stop(), "Stop")
	select {
	case <-q.Done():
	default:
		t.Error("Done() not closed after Stop")
	}
	assert.ErrorIs(t, syscall.Kill(pid, 0), syscall.ESRCH, "QEMU process %d after Stop", pid)
	assert.NoFileExists(t, mon, "public monitor socket after Stop")
	assert.NoFileExists(t, filepath.Join(work, "qemu-dm-stopme.pid"), "pidfile after Stop")
	assert.FileExists(t, filepath.Join(work, "qemu-dm-stopme.log"), "the log stays for a post-mortem")
	_, err = c.QueryStatus(ctx)
	assert.ErrorIs(t, err, qmp.ErrClosed, "a client of a stopped QEMU")
	assert.NoError(t, q.Stop(), "second Stop")
}

func TestRealStartFails(t *testing.T) {
	testenv.RequireQEMU(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := testenv.SocketDir(t)
	missing := filepath.Join(dir, "missing.iso")
	_, err := Start(ctx, Config{Mode: ModeReal, Monitors: []string{filepath.Join(dir, "qmp")},
		InitialMedium: map[xen.DevID]Medium{5632: {Path: missing}}})
	require.Error(t, err, "Start with a missing medium")
	assert.Contains(t, err.Error(), "qemu exited before its monitors were ready")
	assert.Contains(t, err.Error(), missing, "the error quotes QEMU's complaint")
	assert.NoFileExists(t, filepath.Join(dir, "qmp"), "public socket left behind")

	_, err = Start(ctx, Config{Mode: ModeReal, Binary: "no-such-qemu-binary"})
	assert.ErrorIs(t, err, ErrNoQEMU, "Start with a missing binary")
}

func TestRealMonitorInUse(t *testing.T) {
	testenv.RequireQEMU(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	mon := filepath.Join(testenv.SocketDir(t), "qmp")
	startQEMU(ctx, t, Config{Mode: ModeReal, Monitors: []string{mon}})
	_, err := Start(ctx, Config{Mode: ModeReal, Monitors: []string{mon}})
	require.Error(t, err, "a second QEMU on the same monitor path")
	assert.Contains(t, err.Error(), "another process serves it")
	c := dial(ctx, t, mon)
	_, err = c.QueryStatus(ctx)
	assert.NoError(t, err, "the first QEMU's monitor still works")
}

func TestStartBadMode(t *testing.T) {
	_, err := Start(context.Background(), Config{Mode: "virtual"})
	assert.True(t, errors.Is(err, ErrBadConfig), "Start(mode virtual) = %v, want ErrBadConfig", err)
}

func TestStartAuto(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := exec.LookPath(DefaultBinary)
	q := startQEMU(ctx, t, Config{})
	assert.Equal(t, err == nil, q.Real(), "Start(zero Config).Real() with %s installed: %v", DefaultBinary, err == nil)
	require.NoError(t, q.Stop())
	select {
	case <-q.Done():
	default:
		t.Error("Done() not closed after Stop")
	}
}

// helperEnv makes the test binary run TestHelperStartAndWait as a helper process.
const helperEnv = "SIMQEMU_TEST_HELPER"

// TestHelperStartAndWait is not a test: run by TestQEMUDiesWithUs in a child process, it
// starts a real QEMU, prints its pid and waits to be killed.
func TestHelperStartAndWait(t *testing.T) {
	if os.Getenv(helperEnv) != "1" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	q, err := Start(ctx, Config{Mode: ModeReal})
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Printf("pid=%d\n", q.PID())
	<-ctx.Done() // killed long before
	os.Exit(2)
}

func TestQEMUDiesWithUs(t *testing.T) {
	testenv.RequireQEMU(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestHelperStartAndWait$")
	// The helper dies by SIGKILL, without cleaning up: give it a temporary directory of ours.
	cmd.Env = append(os.Environ(), helperEnv+"=1", "TMPDIR="+testenv.SocketDir(t))
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	require.NoError(t, err, "read the helper's output")
	pidStr, ok := strings.CutPrefix(strings.TrimSpace(line), "pid=")
	require.True(t, ok, "helper said %q, want pid=N", line)
	pid, err := strconv.Atoi(pidStr)
	require.NoError(t, err)
	require.NoError(t, syscall.Kill(pid, 0), "QEMU %d runs while the helper lives", pid)

	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	_ = cmd.Wait()
	for processAlive(pid) {
		select {
		case <-ctx.Done():
			_ = syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("QEMU %d outlived the process that started it", pid)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// processAlive reports whether pid exists and is not a zombie waiting to be reaped.
func processAlive(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(data)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(fields) > 0 && fields[0] != "Z"
}

// TestDropLosesFD checks what the durable workflow must survive: in QEMU before 9.1, an fd
// that add-fd put in a set and nothing uses yet is closed when the last monitor connection
// goes (here the other monitor has no client), so a connection dropped between add-fd and
// blockdev-change-medium loses it.
func TestDropLosesFD(t *testing.T) {
	forModes(t, func(t *testing.T, mode Mode) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		dir := testenv.SocketDir(t)
		mon := filepath.Join(dir, "qmp-libxl-5")
		q := startQEMU(ctx, t, Config{Mode: mode, DomID: 5, Monitors: []string{mon, filepath.Join(dir, "agent-5")}})
		f, err := os.Open(writeISO(t))
		require.NoError(t, err)
		defer f.Close()

		victim := dial(ctx, t, mon)
		q.DropAfter("add-fd")
		info, err := victim.AddFD(ctx, f, nil, "raw:medium.iso")
		require.NoError(t, err, "add-fd gets its reply before the drop")
		select {
		case <-victim.Done():
		case <-ctx.Done():
			t.Fatal("the connection was not dropped after add-fd")
		}

		c := dial(ctx, t, mon)
		sets, err := c.QueryFdsets(ctx)
		require.NoError(t, err)
		for _, s := range sets {
			assert.False(t, s.FdsetID == info.FdsetID && len(s.FDs) > 0,
				"query-fdsets after the drop = %+v, want set %d gone or empty", sets, info.FdsetID)
		}
	})
}

// TestOnCall: the real QEMU (through the proxy) and the fake report the same calls, with
// their drives and outcomes, each before its reply reaches the client.
func TestOnCall(t *testing.T) {
	forModes(t, testOnCall)
}

func testOnCall(t *testing.T, mode Mode) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	iso := writeISO(t)
	mon := filepath.Join(testenv.SocketDir(t), "qmp-libxl-4")
	var mu sync.Mutex // guards calls
	var calls []Call
	q := startQEMU(ctx, t, Config{Mode: mode, DomID: 4, Monitors: []string{mon},
		InitialMedium: map[xen.DevID]Medium{5632: {Path: iso, Format: "raw"}},
		OnCall: func(c Call) {
			mu.Lock()
			defer mu.Unlock()
			if c.Command != "qmp_capabilities" && c.Command != "query-version" {
				calls = append(calls, c)
			}
		}})
	require.Equal(t, mode == ModeReal, q.Real())
	seen := func() []Call {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(calls)
	}
	c := dial(ctx, t, mon)
	require.NoError(t, c.Eject(ctx, "ide-5632", false))
	assert.Equal(t, []Call{{Command: "eject", Drive: "ide-5632", OK: true}}, seen(), "known when the reply came")
	require.NoError(t, c.BlockdevChangeMedium(ctx, qmp.ChangeMediumArgs{ID: "ide-5632", Filename: iso, Format: "raw"}))
	err := c.BlockdevChangeMedium(ctx, qmp.ChangeMediumArgs{ID: "ide-9999", Filename: iso, Format: "raw"})
	require.ErrorIs(t, err, qmp.ErrDeviceNotFound)
	_, err = c.QueryStatus(ctx)
	require.NoError(t, err)
	assert.Equal(t, []Call{
		{Command: "eject", Drive: "ide-5632", OK: true},
		{Command: "blockdev-change-medium", Drive: "ide-5632", OK: true},
		{Command: "blockdev-change-medium", Drive: "ide-9999"},
		{Command: "query-status", OK: true},
	}, seen())
}
