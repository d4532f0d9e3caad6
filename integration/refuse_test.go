package integration

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/temporal"

	"github.com/cdswap/cdswap/activities"
	"github.com/cdswap/cdswap/internal/testenv"
	"github.com/cdswap/cdswap/internal/xen"
	"github.com/cdswap/cdswap/internal/xensim"
	"github.com/cdswap/cdswap/internal/xensim/isofs"
	"github.com/cdswap/cdswap/internal/xs"
	"github.com/cdswap/cdswap/workflows"
)

// mutatingQMP are the commands that change a drive or its fdsets.
var mutatingQMP = []string{"eject", "blockdev-change-medium", "add-fd", "remove-fd"}

// requireUntouched checks that nothing was sent to the guest's (fake) QEMU that changes the
// drive.
func requireUntouched(t testing.TB, h *xensim.Host, dom xensim.DomainInfo) {
	t.Helper()
	q := h.QEMU(dom.DomID)
	if q == nil || q.Fake() == nil {
		return // a traditional guest has no QEMU to touch
	}
	for _, c := range q.Fake().Commands() {
		assert.NotContains(t, mutatingQMP, c, "a refused change sent %s to the QEMU of %s", c, dom.Name)
	}
}

// TestRefused runs the changes a user can get wrong through the workflow, and checks that
// each is refused before the drive is touched, with the error type the CLI switches on and
// a message that names the problem.
func TestRefused(t *testing.T) {
	need(t)
	t.Parallel()
	h := startHost(t, xensim.Config{
		HostName: hostName("refuse"),
		Domains:  []xensim.DomainSpec{{Kind: xensim.KindStubdom}, {Kind: xensim.KindDom0}, {Kind: xensim.KindTraditional}},
		QEMU:     xensim.QEMUFake,
	})
	stub, dom0, trad := domainOf(t, h, xensim.KindStubdom), domainOf(t, h, xensim.KindDom0), domainOf(t, h, xensim.KindTraditional)

	// A medium outside the ISO roots, a folder inside them, and a disk (not a cdrom) on the
	// dom0 guest.
	outside := filepath.Join(testenv.SocketDir(t), "outside.iso")
	require.NoError(t, isofs.Write(outside, "OUTSIDE", map[string][]byte{"A.TXT": []byte("a\n")}))
	folder := filepath.Join(h.ISODir(), "folder.iso")
	require.NoError(t, os.Mkdir(folder, 0o755))
	addDisk(t, h, dom0)
	// A hard link inside the root to a file that is no CD image.
	passwd := filepath.Join(testenv.SocketDir(t), "passwd")
	require.NoError(t, os.WriteFile(passwd, []byte("root:x:0:0:root:/root:/bin/sh\n"), 0o644))
	require.NoError(t, os.Link(passwd, iso(h, "passwd.iso")))

	startWorker(t, h, workerOpts{})
	cases := []struct {
		name     string
		dom      xensim.DomainInfo
		vdev     string
		medium   string
		format   string
		wantType string
		wantText string // in the run's error message
	}{
		{"traditional guest", trad, "", iso(h, xensim.ISOTools), "", activities.ErrUnsupportedDeviceModel, "traditional"},
		{"medium outside the roots", dom0, "", outside, "", activities.ErrMediumOutsideRoots, outside},
		{"missing medium", stub, "", iso(h, "missing.iso"), "", activities.ErrMediumNotFound, "missing.iso"},
		{"medium is a folder", dom0, "", folder, "", activities.ErrMediumNotRegular, folder},
		{"qcow2 file said to be raw", dom0, "", iso(h, xensim.QCOW2Image), "raw", activities.ErrFormatMismatch, "qcow2"},
		{"qcow2 for a stubdom guest", stub, "", iso(h, xensim.QCOW2Image), "qcow2", activities.ErrFormatMismatch, "raw"},
		{"hard link to no CD image, dom0", dom0, "", iso(h, "passwd.iso"), "", activities.ErrFormatMismatch, "passwd.iso is not a CD image"},
		{"hard link to no CD image, stubdom", stub, "", iso(h, "passwd.iso"), "", activities.ErrFormatMismatch, "passwd.iso is not a CD image"},
		{"vdev is a disk", dom0, "hda", iso(h, xensim.ISOTools), "", activities.ErrNotCDROM, "hda"},
		{"no such vdev", dom0, "hdd", iso(h, xensim.ISOTools), "", activities.ErrNoSuchDrive, "hdd"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx := testenv.Context(t, time.Minute)
			in := swapInput(h, c.dom, c.medium, c.format)
			if c.vdev != "" {
				in.Vdev = c.vdev
			}
			run := startSwap(t, ctx, in)
			res, err := waitSwap(ctx, run)
			require.Error(t, err, "result %+v", res)
			var appErr *temporal.ApplicationError
			require.True(t, errors.As(err, &appErr), "error %v", err)
			assert.Equal(t, workflows.ErrRefused, appErr.Type(), "run error type; error %v", err)
			assert.Equal(t, c.wantType, workflows.CauseType(err), "cause type; error %v", err)
			assert.Equal(t, workflows.OutcomeRefused, res.Outcome, "result %+v", res)
			assert.Contains(t, err.Error(), c.wantText, "the message should name the problem")
			requireUntouched(t, h, c.dom)
			requireReplays(t, run)
		})
	}
}

// dialXS connects to the host's xenstored, as a toolstack would.
func dialXS(ctx context.Context, h *xensim.Host) (*xs.Client, error) {
	return xs.Dial(ctx, h.XenstoredPath())
}

// addDisk gives dom a second vbd, a disk hda (devid 768), as a guest's system disk would be.
func addDisk(t testing.TB, h *xensim.Host, dom xensim.DomainInfo) {
	t.Helper()
	ctx := testenv.Context(t, 10*time.Second)
	c, err := dialXS(ctx, h)
	require.NoError(t, err)
	defer c.Close()
	disk := filepath.Join(testenv.SocketDir(t), "disk.img")
	require.NoError(t, os.WriteFile(disk, make([]byte, 1<<20), 0o600))
	require.NoError(t, xen.AddVBD(ctx, c, xen.VBD{
		BackendDom: 0, FrontendDom: dom.DomID, Vdev: "hda", Type: xen.TypeQdisk,
		Params: "aio:" + disk, Mode: "w", DeviceType: "disk",
	}))
}

// TestRefusedBusyDrive starts two changes of one drive at once: the second is refused
// (Temporal refuses a second running workflow with the drive's id) and the first finishes.
func TestRefusedBusyDrive(t *testing.T) {
	need(t)
	t.Parallel()
	h := startHost(t, xensim.Config{HostName: hostName("busy"), Domains: []xensim.DomainSpec{{Kind: xensim.KindDom0}}, QEMU: xensim.QEMUFake})
	dom := domainOf(t, h, xensim.KindDom0)
	startWorker(t, h, workerOpts{})
	// The first change is slow to eject, so that it is surely running when the second comes.
	h.QEMU(dom.DomID).Fake().Delay("eject", 2*time.Second)

	ctx := testenv.Context(t, time.Minute)
	first := startSwap(t, ctx, swapInput(h, dom, iso(h, xensim.ISOTools), ""))
	in := swapInput(h, dom, iso(h, xensim.ISORescue), "")
	opts := workflows.StartOptions(in)
	opts.WorkflowExecutionErrorWhenAlreadyStarted = true // else the SDK hands back the running run
	_, err := the.client.ExecuteWorkflow(ctx, opts, workflows.ChangeMediumName, in)
	var started *serviceerror.WorkflowExecutionAlreadyStarted
	require.True(t, errors.As(err, &started), "second start: %v, want WorkflowExecutionAlreadyStarted", err)
	assert.Equal(t, first.GetRunID(), started.RunId, "the refusal names another run than the one running")

	res, err := waitSwap(ctx, first)
	require.NoError(t, err)
	assert.Equal(t, workflows.OutcomeChanged, res.Outcome)
	checkDrive(t, h, dom, iso(h, xensim.ISOTools), dom.Medium)
}

// TestRefusedNoWorker resolves a drive on a host no worker polls: ResolveDrive must end
// with IsNoWorker, which the CLI turns into "start cdswap-worker on <host>".
func TestRefusedNoWorker(t *testing.T) {
	need(t)
	t.Parallel()
	ctx := testenv.Context(t, time.Minute)
	in := activities.ResolveDriveInput{Host: hostName("nobody"), Domain: "guest", Vdev: "hdc"}
	run, err := the.client.ExecuteWorkflow(ctx, workflows.ResolveDriveStartOptions(in), workflows.ResolveDriveName, in)
	require.NoError(t, err)
	var out activities.ResolveDriveResult
	err = run.Get(ctx, &out)
	require.Error(t, err)
	assert.True(t, workflows.IsNoWorker(err), "ResolveDrive on a host without a worker: %v, want IsNoWorker", err)
}

// TestResolveDrive resolves drives by name and by domid, and refuses an unknown domain.
func TestResolveDrive(t *testing.T) {
	need(t)
	t.Parallel()
	h := startHost(t, xensim.Config{HostName: hostName("resolve"), StubdomGuests: 1, Dom0Guests: 1, QEMU: xensim.QEMUFake})
	startWorker(t, h, workerOpts{})
	stub := domainOf(t, h, xensim.KindStubdom)
	for _, c := range []struct {
		name, domain, wantType string
		want                   activities.ResolveDriveResult
	}{
		{"by name", stub.Name, "", activities.ResolveDriveResult{DomID: stub.DomID, Name: stub.Name, DevID: stub.DevID, Kind: activities.KindStubdom}},
		{"by domid", itoa(stub.DomID), "", activities.ResolveDriveResult{DomID: stub.DomID, Name: stub.Name, DevID: stub.DevID, Kind: activities.KindStubdom}},
		{"unknown domain", "no-such-guest", activities.ErrNoSuchDomain, activities.ResolveDriveResult{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx := testenv.Context(t, 30*time.Second)
			in := activities.ResolveDriveInput{Host: h.Name(), Domain: c.domain, Vdev: "hdc"}
			run, err := the.client.ExecuteWorkflow(ctx, workflows.ResolveDriveStartOptions(in), workflows.ResolveDriveName, in)
			require.NoError(t, err)
			var out activities.ResolveDriveResult
			err = run.Get(ctx, &out)
			if c.wantType != "" {
				require.Error(t, err)
				assert.Equal(t, c.wantType, workflows.CauseType(err), "error %v", err)
				assert.Contains(t, err.Error(), c.domain)
				return
			}
			require.NoError(t, err)
			out.Meta = activities.Meta{} // the activity's attempt
			assert.Equal(t, c.want, out)
		})
	}
}
