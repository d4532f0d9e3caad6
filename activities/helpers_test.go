package activities

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	tlog "go.temporal.io/sdk/log"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/cdswap/cdswap/internal/qmp"
	"github.com/cdswap/cdswap/internal/testenv"
	"github.com/cdswap/cdswap/internal/xen"
	"github.com/cdswap/cdswap/internal/xensim"
	"github.com/cdswap/cdswap/internal/xensim/loopdev"
	"github.com/cdswap/cdswap/internal/xs"
)

// testLogger writes to the test's log when -v is given, else nowhere.
func testLogger(t testing.TB) *slog.Logger {
	if !testing.Verbose() {
		return slog.New(slog.DiscardHandler)
	}
	return testenv.Logger(t)
}

// needRealQEMU ends a test that needs a real QEMU with a stubdom guest's loop device when
// this machine lacks either (a failure under CI).
func needRealQEMU(t testing.TB) {
	t.Helper()
	testenv.RequireQEMU(t)
	testenv.Require(t, "read-only loop devices", loopdev.Available())
}

// sim is a simulated host with the activities of a worker pointed at it.
type sim struct {
	t   testing.TB
	h   *xensim.Host
	a   *Activities
	env *testsuite.TestActivityEnvironment
	x   *xs.Client // the test's own xenstore connection
}

// startSim starts a simulated host (fake QEMU unless cfg says otherwise, one guest of each
// kind unless cfg says otherwise) and the activities of a worker for it.
func startSim(t testing.TB, cfg xensim.Config) *sim {
	t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = testenv.SocketDir(t)
	}
	if cfg.QEMU == "" {
		cfg.QEMU = xensim.QEMUFake
	}
	if cfg.AgentDelay == 0 {
		cfg.AgentDelay = 10 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	h, err := xensim.Start(testenv.Context(t, 2*time.Minute), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, h.Close()) })
	s := &sim{t: t, h: h}
	s.a = s.newActivities(nil)
	s.env = newEnv(t, s.a)
	x, err := xs.Dial(testenv.Context(t, 10*time.Second), h.XenstoredPath())
	require.NoError(t, err)
	t.Cleanup(func() { x.Close() })
	s.x = x
	return s
}

// newActivities makes another worker's activities for the host (closed at cleanup).
func (s *sim) newActivities(mod func(*Config)) *Activities {
	s.t.Helper()
	cfg := Config{
		Host: s.h.Name(), XenstorePath: s.h.XenstoredPath(), QMPDir: s.h.RunDir(), LibxlDir: s.h.LibDir(),
		ISORoots: []string{s.h.ISODir()}, Logger: testLogger(s.t), VBDTimeout: 2 * time.Second, LockWait: 200 * time.Millisecond,
	}
	if mod != nil {
		mod(&cfg)
	}
	a, err := New(testenv.Context(s.t, 10*time.Second), cfg)
	require.NoError(s.t, err)
	closed := false
	s.t.Cleanup(func() {
		if !closed {
			Close(a)
		}
	})
	return a
}

func newEnv(t testing.TB, a *Activities) *testsuite.TestActivityEnvironment {
	var suite testsuite.WorkflowTestSuite
	suite.SetLogger(tlog.NewStructuredLogger(testLogger(t)))
	env := suite.NewTestActivityEnvironment()
	env.RegisterActivity(a)
	env.SetTestTimeout(time.Minute)
	return env
}

// run executes one activity in env and decodes its result.
func run[I, O any](t testing.TB, env *testsuite.TestActivityEnvironment, fn func(context.Context, I) (O, error), in I) (O, error) {
	t.Helper()
	var out O
	v, err := env.ExecuteActivity(fn, in)
	if err != nil {
		return out, err
	}
	require.NoError(t, v.Get(&out))
	return out, nil
}

// must is run that fails the test on an error.
func must[I, O any](t testing.TB, env *testsuite.TestActivityEnvironment, fn func(context.Context, I) (O, error), in I) O {
	t.Helper()
	out, err := run(t, env, fn, in)
	require.NoError(t, err)
	return out
}

// requireType checks that err is an application error of type typ, retryable or not as
// said, whose message contains each of msgs; it returns the message.
func requireType(t testing.TB, err error, typ string, retryable bool, msgs ...string) string {
	t.Helper()
	require.Error(t, err)
	var appErr *temporal.ApplicationError
	require.True(t, errors.As(err, &appErr), "error %v (%T) is not an application error", err, err)
	assert.Equal(t, typ, appErr.Type(), "error type of %v", err)
	assert.Equal(t, !retryable, appErr.NonRetryable(), "non-retryable of %v", err)
	for _, m := range msgs {
		assert.Contains(t, appErr.Message(), m)
	}
	return appErr.Message()
}

// domain returns the host's guest of kind k.
func (s *sim) domain(k xensim.Kind) xensim.DomainInfo {
	s.t.Helper()
	for _, d := range s.h.Domains() {
		if d.Kind == k {
			return d
		}
	}
	s.t.Fatalf("the host has no %s guest", k)
	return xensim.DomainInfo{}
}

func (s *sim) iso(name string) string { return filepath.Join(s.h.ISODir(), name) }

// inspect runs Inspect for dom with medium ("" = eject).
func (s *sim) inspect(dom xensim.DomainInfo, medium string) InspectResult {
	s.t.Helper()
	return must(s.t, s.env, s.a.Inspect, InspectInput{Host: s.h.Name(), DomID: dom.DomID, Vdev: dom.Vdev, Medium: medium})
}

// block returns the drive's query-block entry, asked through the activities' own QMP
// connection (only one client may talk to a monitor at a time).
func (s *sim) block(a *Activities, dom xensim.DomainInfo) qmp.BlockInfo {
	s.t.Helper()
	ctx := testenv.Context(s.t, 10*time.Second)
	info, err := xen.ReadDomainInfo(ctx, s.x, dom.DomID)
	require.NoError(s.t, err)
	var b *qmp.BlockInfo
	require.NoError(s.t, a.withQMP(ctx, info, func(c *qmp.Client) error {
		blocks, err := c.QueryBlock(ctx)
		b = findBlock(blocks, dom.DevID.QEMUID())
		return err
	}))
	require.NotNil(s.t, b, "no drive %s", dom.DevID.QEMUID())
	return *b
}

// fdsets returns QEMU's fdsets through the activities' QMP connection.
func (s *sim) fdsets(a *Activities, dom xensim.DomainInfo) []qmp.FdsetInfo {
	s.t.Helper()
	ctx := testenv.Context(s.t, 10*time.Second)
	info, err := xen.ReadDomainInfo(ctx, s.x, dom.DomID)
	require.NoError(s.t, err)
	var sets []qmp.FdsetInfo
	require.NoError(s.t, a.withQMP(ctx, info, func(c *qmp.Client) error {
		var err error
		sets, err = c.QueryFdsets(ctx)
		return err
	}))
	return sets
}

func (s *sim) read(p string) string {
	s.t.Helper()
	v, err := s.x.Read(testenv.Context(s.t, 5*time.Second), p)
	require.NoError(s.t, err, "read %s", p)
	return v
}

// vbdDevids lists the devids of the vbds under /libxl/<dom>/device/vbd.
func (s *sim) vbdDevids(dom uint32) []string {
	s.t.Helper()
	ids, err := s.x.Directory(testenv.Context(s.t, 5*time.Second), xen.LibxlDomainPath(dom)+"/device/vbd")
	if errors.Is(err, xs.ErrNotFound) {
		return nil
	}
	require.NoError(s.t, err)
	slices.Sort(ids)
	return ids
}

// configDisk returns the cdrom entry of the guest's libxl JSON config: pdev_path and format.
func (s *sim) configDisk(dom xensim.DomainInfo) (pdev, format string) {
	s.t.Helper()
	raw, err := os.ReadFile(dom.ConfigPath)
	require.NoError(s.t, err)
	var cfg object
	require.NoError(s.t, cfg.UnmarshalJSON(raw))
	disks, ok := cfg.get("disks")
	require.True(s.t, ok)
	var list []map[string]any
	require.NoError(s.t, json.Unmarshal(disks, &list))
	for _, d := range list {
		if d["vdev"] == dom.Vdev {
			p, _ := d["pdev_path"].(string)
			f, _ := d["format"].(string)
			return p, f
		}
	}
	s.t.Fatalf("no disk %s in %s", dom.Vdev, dom.ConfigPath)
	return "", ""
}

// swapResult is what a swap run step by step returned.
type swapResult struct {
	insp    InspectResult
	fdset   int64
	file    string
	skipped bool // Inspect said InPlace
}

// swap runs a change of dom's medium ("" = eject) step by step with a's activities, as
// workflows.ChangeMedium does, and checks every step's result.
func (s *sim) swap(a *Activities, env *testsuite.TestActivityEnvironment, dom xensim.DomainInfo, medium, key string) swapResult {
	t := s.t
	t.Helper()
	insp := must(t, env, a.Inspect, InspectInput{Host: s.h.Name(), DomID: dom.DomID, Vdev: dom.Vdev, Medium: medium})
	res := swapResult{insp: insp, fdset: -1}
	if insp.InPlace {
		res.skipped = true
		return res
	}
	d := insp.Drive
	must(t, env, a.Lock, LockInput{DomID: dom.DomID, Key: key})
	must(t, env, a.Eject, EjectInput{Drive: d, Key: key})
	known := slices.Clone(insp.Fdsets)
	if d.Kind == KindStubdom {
		rel := must(t, env, a.ReleaseFdset, ReleaseFdsetInput{Drive: d, Key: key})
		known = append(known, rel.FdsetIDs...)
		slices.Sort(known)
		known = slices.Compact(known)
		must(t, env, a.DetachVBD, DetachVBDInput{Drive: d, Key: key})
		must(t, env, a.AttachVBD, AttachVBDInput{Drive: d, Key: key, Params: insp.NewParams})
		w := must(t, env, a.WaitFdset, WaitFdsetInput{Drive: d, KnownFdsets: known, Timeout: 10 * time.Second})
		res.fdset = w.FdsetID
		if insp.Medium != "" {
			cm := must(t, env, a.ChangeMedium, ChangeMediumInput{Drive: d, Key: key, FdsetID: w.FdsetID, Format: FormatHostDevice})
			res.file = cm.Filename
		}
	} else if insp.Medium != "" {
		add := must(t, env, a.AddFD, AddFDInput{Drive: d, Key: key, Medium: insp.Medium, Format: insp.Format})
		res.fdset = add.FdsetID
		cm := must(t, env, a.ChangeMedium, ChangeMediumInput{Drive: d, Key: key, FdsetID: add.FdsetID, Format: insp.Format})
		res.file = cm.Filename
	}
	must(t, env, a.Record, RecordInput{Drive: d, Key: key, Medium: insp.Medium, Format: insp.Format, Params: insp.NewParams})
	v := must(t, env, a.Verify, VerifyInput{Drive: d, Filename: res.file})
	assert.Equal(t, res.file, v.File)
	must(t, env, a.Unlock, UnlockInput{DomID: dom.DomID, Key: key})
	return res
}

// checkState checks that dom's drive holds medium ("" = empty) in QEMU and in libxl's
// records, with one vbd for the drive and no fdset left for an older medium.
func (s *sim) checkState(a *Activities, dom xensim.DomainInfo, medium string, r swapResult) {
	t := s.t
	t.Helper()
	b := s.block(a, dom)
	pdev, format := s.configDisk(dom)
	sets := s.fdsets(a, dom)
	if medium == "" {
		assert.Nil(t, b.Inserted, "QEMU's drive after an eject")
		assert.Equal(t, "", pdev)
		assert.Equal(t, "empty", format)
	} else {
		require.NotNil(t, b.Inserted, "QEMU's drive after an insert")
		assert.Equal(t, FdsetFilename(r.fdset), b.Inserted.File)
		assert.True(t, b.Inserted.RO, "read-only medium")
		assert.False(t, trayOpen(&b), "tray closed")
		assert.Equal(t, medium, pdev)
		assert.Equal(t, "raw", format)
	}
	switch dom.Kind {
	case xensim.KindStubdom:
		params := medium
		if medium == "" {
			params = dom.EmptyCDROM
		}
		assert.Equal(t, params, s.read(dom.BackendPath+"/params"))
		assert.Equal(t, params, s.read(dom.LibxlPath+"/params"))
		assert.Equal(t, "phy", s.read(dom.LibxlPath+"/type"))
		assert.Equal(t, []string{dom.DevID.String()}, s.vbdDevids(dom.StubDomID), "exactly one vbd for the drive")
		if medium != "" {
			assert.Equal(t, "host_device", b.Inserted.Drv)
			assert.Equal(t, []int64{r.fdset}, stubSets(sets, dom.DevID), "only the new stub-devid fdset is left")
		} else {
			// The empty-cdrom's set is used by no medium: QEMU closes it once no QMP client
			// is connected (before 9.1), or keeps it.
			assert.Subset(t, []int64{r.fdset}, stubSets(sets, dom.DevID), "only the new stub-devid fdset may be left")
		}
	case xensim.KindDom0:
		params := ""
		if medium != "" {
			params = "aio:" + medium
			assert.Equal(t, "raw", b.Inserted.Drv)
		}
		assert.Equal(t, params, s.read(dom.BackendPath+"/params"))
		assert.Equal(t, params, s.read(dom.LibxlPath+"/params"))
		assert.Equal(t, "qdisk", s.read(dom.LibxlPath+"/type"))
		for _, set := range sets {
			for _, fd := range set.FDs {
				assert.False(t, isMediumOpaque(fd.Opaque), "fdset %d still holds medium fd %+v", set.FdsetID, fd)
			}
		}
	}
}
