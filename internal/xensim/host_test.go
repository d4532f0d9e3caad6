package xensim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cdswap/cdswap/internal/mediaformat"
	"github.com/cdswap/cdswap/internal/testenv"
	"github.com/cdswap/cdswap/internal/xen"
	"github.com/cdswap/cdswap/internal/xensim/loopdev"
)

func TestStartBadConfig(t *testing.T) {
	long := "/tmp/" + strings.Repeat("x", 90)
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"unknown kind", Config{Domains: []DomainSpec{{Kind: "hvm"}}}, `guest kind "hvm"`},
		{"negative count", Config{StubdomGuests: -1}, "cannot be negative"},
		{"too many guests", Config{Dom0Guests: MaxGuests + 1}, "at most 4096"},
		{"bad host name", Config{HostName: "a b"}, `host name "a b"`},
		{"bad domain name", Config{Domains: []DomainSpec{{Name: "x/y"}}}, `domain name "x/y"`},
		{"duplicate name", Config{Domains: []DomainSpec{{Name: "a"}, {Name: "a", Kind: KindDom0}}}, "used twice"},
		{"name clash with a stub domain", Config{Domains: []DomainSpec{{Name: "a"}, {Name: "a-dm", Kind: KindDom0}}}, "used twice"},
		{"unknown QEMU mode", Config{QEMU: "kvm"}, `QEMU mode "kvm"`},
		{"unknown domain QEMU mode", Config{Domains: []DomainSpec{{QEMU: "kvm"}}}, `QEMU mode "kvm"`},
		{"folder too long for sockets", Config{Dir: long}, "too long for unix sockets"},
		{"again ratio out of range", Config{Faults: Faults{AgainRatio: 2}}, "again-ratio 2"},
		{"negative add-fd delay", Config{Faults: Faults{All: DomainFaults{AddFDDelay: -1}}}, "cannot be negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Start(context.Background(), tt.cfg)
			require.Error(t, err)
			assert.ErrorIs(t, err, ErrBadConfig)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
	_, err := os.Stat(long)
	assert.ErrorIs(t, err, os.ErrNotExist, "a refused config must not make its folder")
}

func TestStartUnwritableDir(t *testing.T) {
	file := filepath.Join(testenv.SocketDir(t), "file")
	require.NoError(t, os.WriteFile(file, nil, 0o644))
	_, err := Start(context.Background(), Config{Dir: filepath.Join(file, "host"), QEMU: QEMUFake})
	require.ErrorIs(t, err, ErrBadConfig)
	assert.Contains(t, err.Error(), "cannot be made")
}

func TestStartMissingMedium(t *testing.T) {
	_, err := Start(context.Background(), Config{Dir: testenv.SocketDir(t), QEMU: QEMUFake,
		Domains: []DomainSpec{{Name: "a", InitialMedium: "nosuch.iso"}}})
	require.ErrorIs(t, err, ErrBadConfig)
	assert.Contains(t, err.Error(), `initial medium "nosuch.iso" of domain a`)
}

// TestZeroConfig starts the zero Config: a host in a folder of its own, one guest of each
// kind, which Close removes.
func TestZeroConfig(t *testing.T) {
	h, err := Start(testCtx(t), Config{})
	require.NoError(t, err)
	kinds := map[Kind]int{}
	for _, d := range h.Domains() {
		kinds[d.Kind]++
	}
	assert.Equal(t, map[Kind]int{KindStubdom: 1, KindDom0: 1, KindTraditional: 1}, kinds)
	assert.Equal(t, DefaultHostName, h.Name())
	dir := h.Dir()
	require.NoError(t, h.Close())
	require.NoError(t, h.Close(), "a second Close")
	_, err = os.Stat(dir)
	assert.ErrorIs(t, err, os.ErrNotExist, "Close must remove the folder Start made")
}

// TestLayout checks what a worker finds: xenstore as libxl writes it, the sockets, the
// userdata files, the ISOs and the summary.
func TestLayout(t *testing.T) {
	h := startHost(t, Config{QEMU: QEMUFake, HostName: "h1", AgentDelay: 5 * time.Millisecond})
	x := dialXS(t, h)
	stub, dom0, trad := domainByKind(t, h, KindStubdom), domainByKind(t, h, KindDom0), domainByKind(t, h, KindTraditional)

	// The boot vbd is cold-plugged: QEMU opened it from its command line, and the stub
	// domain adds no fd for it (the first cd-insert finds no fdset to remove).
	time.Sleep(5 * (5*time.Millisecond + connectAfter))
	assert.Empty(t, h.QEMU(stub.DomID).Fake().Fdsets(), "fdsets after boot")

	assert.Equal(t, uint32(1), stub.DomID)
	assert.Equal(t, uint32(2), stub.StubDomID)
	assert.Equal(t, uint32(3), dom0.DomID)
	assert.Equal(t, uint32(4), trad.DomID)

	tests := []struct{ path, want string }{
		{"/local/domain/0/name", "Domain-0"},
		{"/local/domain/1/name", "stubdom-1"},
		{"/local/domain/1/domid", "1"},
		{"/local/domain/1/vm", "/vm/" + stub.UUID},
		{"/vm/" + stub.UUID + "/uuid", stub.UUID},
		{"/libxl/1/dm-version", "qemu_xen"},
		{"/local/domain/1/image/device-model-domid", "2"},
		{"/local/domain/2/name", "stubdom-1-dm"},
		{"/local/domain/2/target", "1"},
		{"/local/domain/2/device-model/1/state", "running"},
		{"/local/domain/0/backend/vbd/2/5632/state", "4"},
		{"/local/domain/0/backend/vbd/2/5632/hotplug-status", "connected"},
		{"/local/domain/0/backend/vbd/2/5632/params", filepath.Join(h.ISODir(), ISODebian)},
		{"/local/domain/0/backend/vbd/2/5632/type", "phy"},
		{"/local/domain/2/device/vbd/5632/state", "4"},
		{"/libxl/2/device/vbd/5632/backend", "/local/domain/0/backend/vbd/2/5632"},
		{"/libxl/2/device/vbd/5632/frontend", "/local/domain/2/device/vbd/5632"},
		{"/local/domain/0/backend/vbd/1/5632/state", "2"}, // the guest's own vbd: an HVM frontend never connects
		{"/libxl/3/dm-version", "qemu_xen"},
		{"/local/domain/0/device-model/3/state", "running"},
		{"/local/domain/0/backend/qdisk/3/5632/params", "aio:" + filepath.Join(h.ISODir(), ISODebian)},
		{"/local/domain/0/backend/qdisk/3/5632/type", "qdisk"},
		{"/libxl/3/device/vbd/5632/backend", "/local/domain/0/backend/qdisk/3/5632"},
		{"/libxl/4/dm-version", "qemu_xen_traditional"},
		{"/local/domain/0/backend/vbd/4/5632/state", "2"},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, read(t, x, tt.path), "Read(%s)", tt.path)
	}
	for _, p := range []string{xen.DeviceModelDomIDPath(3), xen.DeviceModelDomIDPath(4)} {
		ok, err := x.Exists(testCtx(t), p)
		require.NoError(t, err)
		assert.False(t, ok, "%s exists for a guest without a stub domain", p)
	}
	// The job finds the cdroms as libxl does: a stubdom guest's in its stub domain's vbds.
	found, err := xen.FindCDROM(testCtx(t), x, stub.StubDomID, "hdc")
	require.NoError(t, err)
	assert.Equal(t, stub.BackendPath, found.BackendPath())
	found, err = xen.FindCDROM(testCtx(t), x, dom0.DomID, "hdc")
	require.NoError(t, err)
	assert.Equal(t, dom0.BackendPath, found.BackendPath())

	// Sockets: libxl's QMP socket for every qemu-xen guest, none for qemu-xen-traditional.
	for _, d := range []DomainInfo{stub, dom0} {
		assert.Equal(t, xen.QMPSocketPath(h.RunDir(), d.DomID), d.QMPSocket)
		fi, err := os.Stat(d.QMPSocket)
		require.NoError(t, err)
		assert.NotZero(t, fi.Mode()&os.ModeSocket, "%s is a socket", d.QMPSocket)
	}
	assert.Empty(t, trad.QMPSocket)
	_, err = os.Stat(xen.QMPSocketPath(h.RunDir(), trad.DomID))
	assert.ErrorIs(t, err, os.ErrNotExist, "a qemu-xen-traditional guest has no QMP socket")
	assert.Nil(t, h.QEMU(trad.DomID))
	assert.Equal(t, "none", trad.QEMU)

	// empty-cdrom.<domid>, created 0400 as libxl does.
	fi, err := os.Stat(xen.EmptyCDROMPath(h.RunDir(), stub.DomID))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o400), fi.Mode().Perm())
	assert.Zero(t, fi.Size())

	// Userdata: the JSON configuration and the lock files.
	for _, d := range []DomainInfo{stub, dom0, trad} {
		b, err := os.ReadFile(xen.ConfigPath(h.LibDir(), d.DomID, d.UUID))
		require.NoError(t, err)
		var cfg libxlConfig
		require.NoError(t, json.Unmarshal(b, &cfg))
		assert.Equal(t, d.Name, cfg.CInfo.Name)
		assert.Equal(t, d.UUID, cfg.CInfo.UUID)
		require.Len(t, cfg.Disks, 1)
		disk := cfg.Disks[0]
		assert.Equal(t, "hdc", disk.Vdev)
		assert.Equal(t, 1, disk.IsCDROM)
		assert.Equal(t, 1, disk.Removable)
		assert.Equal(t, "raw", disk.Format)
		assert.Equal(t, d.Medium, disk.PdevPath)
		assert.Equal(t, map[Kind]string{KindStubdom: "phy", KindDom0: "qdisk", KindTraditional: "phy"}[d.Kind], disk.Backend)
		assert.Equal(t, d.Kind.DMVersion(), cfg.BInfo.DeviceModelVersion)
		for _, p := range []string{
			xen.DeviceChangesLockPath(h.LibDir(), d.DomID, d.UUID),
			xen.UserdataLockPath(h.LibDir(), d.DomID, d.UUID),
		} {
			_, err := os.Stat(p)
			assert.NoError(t, err, "lock file")
		}
	}

	// ISOs: real ISO 9660 images, and a qcow2 file.
	require.Len(t, h.ISOs(), 4)
	for _, p := range h.ISOs() {
		f, err := os.Open(p)
		require.NoError(t, err)
		info, err := mediaformat.Detect(f)
		f.Close()
		require.NoError(t, err)
		want := mediaformat.Info{Format: mediaformat.Raw, ISO9660: true}
		if filepath.Base(p) == QCOW2Image {
			want = mediaformat.Info{Format: mediaformat.QCOW2}
		}
		assert.Equal(t, want, info, "Detect(%s)", p)
	}

	// The summary.
	b, err := os.ReadFile(filepath.Join(h.Dir(), "xensim.json"))
	require.NoError(t, err)
	var sum Summary
	require.NoError(t, json.Unmarshal(b, &sum))
	assert.Equal(t, "h1", sum.Host)
	assert.Equal(t, os.Getpid(), sum.PID)
	assert.Equal(t, h.XenstoredPath(), sum.XenstoredPath)
	assert.Len(t, sum.Domains, 3)
	assert.Equal(t, []string{"XENSTORED_PATH=" + h.XenstoredPath()}, h.Env())
	assert.Equal(t, []string{"--host", "h1", "--xenstore", h.XenstoredPath(), "--qmp-dir", h.RunDir(),
		"--libxl-dir", h.LibDir(), "--iso-root", h.ISODir()}, h.WorkerFlags())
}

func TestDomainLookup(t *testing.T) {
	h := startHost(t, Config{QEMU: QEMUFake, Domains: []DomainSpec{{Name: "web"}, {Name: "db", Kind: KindDom0, InitialMedium: EmptyMedium}}})
	tests := []struct {
		in   string
		want string
	}{
		{"web", "web"}, {"1", "web"}, {"2", "web"}, {"web-dm", "web"}, {"db", "db"}, {"3", "db"},
	}
	for _, tt := range tests {
		d, err := h.Domain(tt.in)
		require.NoError(t, err, "Domain(%q)", tt.in)
		assert.Equal(t, tt.want, d.Name, "Domain(%q)", tt.in)
	}
	_, err := h.Domain("nosuch")
	require.ErrorIs(t, err, ErrNoSuchDomain)
	assert.Contains(t, err.Error(), "web (1)", "the error lists the guests")

	db, _ := h.Domain("db")
	assert.Empty(t, db.Medium)
	x := dialXS(t, h)
	assert.Equal(t, "", read(t, x, db.BackendPath+"/params"), "an empty qdisk cdrom has params \"\"")
	q := dialQMP(t, db.QMPSocket)
	assert.Nil(t, cdrom(t, q, db.DevID).Inserted)
}

// TestEmptyStubdomDrive: a stubdom guest that starts with an empty drive has its vbd on the
// empty-cdrom file.
func TestEmptyStubdomDrive(t *testing.T) {
	h := startHost(t, Config{QEMU: QEMUFake, Domains: []DomainSpec{{Name: "e", InitialMedium: EmptyMedium}}})
	d, err := h.Domain("e")
	require.NoError(t, err)
	x := dialXS(t, h)
	assert.Equal(t, d.EmptyCDROM, read(t, x, d.BackendPath+"/params"))
	assert.Equal(t, "4", read(t, x, d.BackendPath+"/state"))
	assert.Nil(t, cdrom(t, dialQMP(t, d.QMPSocket), d.DevID).Inserted)
}

func TestSecondHostOnSameDir(t *testing.T) {
	h := startHost(t, Config{QEMU: QEMUFake, StubdomGuests: 1})
	_, err := Start(testCtx(t), Config{Dir: h.Dir(), QEMU: QEMUFake})
	require.ErrorIs(t, err, ErrInUse)
	assert.Contains(t, err.Error(), "pid "+strconv.Itoa(os.Getpid()))
	assert.Contains(t, err.Error(), h.Dir())
	// The first host is unharmed.
	x := dialXS(t, h)
	assert.Equal(t, "Domain-0", read(t, x, "/local/domain/0/name"))
}

// TestDirReusable: Close leaves the folder so that a new host starts on it, and removes the
// sockets.
func TestDirReusable(t *testing.T) {
	dir := testenv.SocketDir(t)
	for i := 0; i < 2; i++ {
		h, err := Start(testCtx(t), Config{Dir: dir, QEMU: QEMUFake, Domains: []DomainSpec{{Name: fmt.Sprint("g", i)}}})
		require.NoError(t, err, "start %d", i)
		require.NoError(t, h.Close())
		for _, p := range []string{"xenstored.sock", "control.sock", "xensim.json", "run/qmp-libxl-1", "run/stubdom-cdrom.2.qmp"} {
			_, err := os.Stat(filepath.Join(dir, p))
			assert.ErrorIs(t, err, os.ErrNotExist, "%s after Close", p)
		}
	}
	ms, _ := filepath.Glob(filepath.Join(dir, "lib", "userdata-d.*"))
	assert.Len(t, ms, 1, "userdata of the earlier host is cleared: %v", ms)
}

// TestXenstoreLs points Debian's xenstore-ls at the host, as a user would.
func TestXenstoreLs(t *testing.T) {
	testenv.RequireCommand(t, "xenstore-ls", "xenstore-utils")
	h := startHost(t, Config{QEMU: QEMUFake})
	cmd := exec.CommandContext(testCtx(t), "xenstore-ls", "-f")
	cmd.Env = append(os.Environ(), h.Env()...)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "xenstore-ls: %s", out)
	iso := filepath.Join(h.ISODir(), ISODebian)
	for _, line := range []string{
		`/local/domain/0/name = "Domain-0"`,
		`/local/domain/1/name = "stubdom-1"`,
		`/local/domain/1/image/device-model-domid = "2"`,
		`/local/domain/2/name = "stubdom-1-dm"`,
		`/local/domain/2/target = "1"`,
		`/libxl/1/dm-version = "qemu_xen"`,
		`/libxl/3/dm-version = "qemu_xen"`,
		`/libxl/4/dm-version = "qemu_xen_traditional"`,
		`/local/domain/0/backend/vbd/2/5632/params = "` + iso + `"`,
		`/local/domain/0/backend/vbd/2/5632/state = "4"`,
		`/local/domain/0/backend/vbd/2/5632/hotplug-status = "connected"`,
		`/local/domain/2/device/vbd/5632/backend = "/local/domain/0/backend/vbd/2/5632"`,
		`/libxl/2/device/vbd/5632/dev = "hdc"`,
		`/local/domain/0/backend/qdisk/3/5632/params = "aio:` + iso + `"`,
	} {
		assert.True(t, hasLine(string(out), line), "xenstore-ls has no line %s", line)
	}
	cmd = exec.CommandContext(testCtx(t), "xenstore-read", "/libxl/2/device/vbd/5632/type")
	cmd.Env = append(os.Environ(), h.Env()...)
	out, err = cmd.CombinedOutput()
	require.NoError(t, err, "xenstore-read: %s", out)
	assert.Equal(t, "phy\n", string(out))
}

// TestRealQEMUBoot: with real QEMU, a stubdom guest's drive holds the stub domain's block
// device (a read-only loop device) as host_device, and a dom0 guest's the image as raw.
func TestRealQEMUBoot(t *testing.T) {
	testenv.RequireQEMU(t)
	testenv.Require(t, "read-only loop devices", loopdev.Available())
	h := startHost(t, Config{QEMU: QEMUReal, StubdomGuests: 1, Dom0Guests: 1})
	x := dialXS(t, h)
	stub := domainByKind(t, h, KindStubdom)
	require.Equal(t, "real", stub.QEMU)
	require.NotZero(t, stub.QEMUPID)
	dev := read(t, x, stub.BackendPath+"/physical-device-path")
	require.Regexp(t, `^/dev/loop[0-9]+$`, dev)
	b := cdrom(t, dialQMP(t, stub.QMPSocket), stub.DevID)
	require.NotNil(t, b.Inserted)
	assert.Equal(t, dev, b.Inserted.File)
	assert.Equal(t, "host_device", b.Inserted.Drv)

	dom0 := domainByKind(t, h, KindDom0)
	b = cdrom(t, dialQMP(t, dom0.QMPSocket), dom0.DevID)
	require.NotNil(t, b.Inserted)
	assert.Equal(t, dom0.Medium, b.Inserted.File)
	assert.Equal(t, "raw", b.Inserted.Drv)
	assert.Equal(t, strconv.Itoa(dom0.QEMUPID), read(t, x, "/local/domain/3/image/device-model-pid"))

	// Close detaches the loop device.
	require.NoError(t, h.Close())
	_, err := os.Stat(filepath.Join("/sys/block", filepath.Base(dev), "loop", "backing_file"))
	if err == nil {
		bf, _ := os.ReadFile(filepath.Join("/sys/block", filepath.Base(dev), "loop", "backing_file"))
		assert.False(t, strings.HasPrefix(string(bf), h.Dir()), "loop device %s still backs %s", dev, bf)
	} else {
		assert.True(t, errors.Is(err, os.ErrNotExist))
	}
}

// TestNoLoopDevicesFallBack: without loop devices a stubdom guest cannot have a real QEMU
// (the job's format=host_device needs a block device), so it gets the fake, and the host
// says why; a dom0 guest keeps its real QEMU.
func TestNoLoopDevicesFallBack(t *testing.T) {
	testenv.RequireQEMU(t)
	old := loopAvailable
	loopAvailable = func() error { return errors.New("not root (test)") }
	t.Cleanup(func() { loopAvailable = old })
	var logs testenv.Buffer
	h := startHost(t, Config{QEMU: QEMUReal, StubdomGuests: 1, Dom0Guests: 1,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	assert.Equal(t, "fake", domainByKind(t, h, KindStubdom).QEMU)
	assert.Equal(t, "real", domainByKind(t, h, KindDom0).QEMU)
	assert.Contains(t, logs.String(), "no loop devices (not root (test)): stubdom guest stubdom-1 uses the fake QEMU")
}
