package xensim

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cdswap/cdswap/internal/xen"
	"github.com/cdswap/cdswap/internal/xensim/isofs"
	"github.com/cdswap/cdswap/internal/xs"
)

// ISO files Start makes in DIR/isos. QCOW2Image is not an ISO: it starts with the qcow2 magic,
// for tests of a format that does not match the file.
const (
	ISODebian  = "debian-netinst.iso"
	ISOTools   = "tools.iso"
	ISORescue  = "rescue.iso"
	QCOW2Image = "disguised-qcow2.iso"
)

// isoSpec is one image of DIR/isos.
type isoSpec struct {
	name, volumeID string
	files          map[string][]byte
}

var isoSpecs = []isoSpec{
	{ISODebian, "DEBIAN_NETINST", map[string][]byte{
		"README.TXT":  []byte("A stand-in for Debian's netinst image, made by xensim.\n"),
		"INSTALL.CFG": []byte("locale=en_US.UTF-8\n"),
	}},
	{ISOTools, "GUEST_TOOLS", map[string][]byte{
		"README.TXT": []byte("Guest tools, made by xensim.\n"),
		"SETUP.SH":   []byte("#!/bin/sh\necho installed\n"),
	}},
	{ISORescue, "RESCUE", map[string][]byte{
		"README.TXT": []byte("A rescue disc, made by xensim.\n"),
	}},
}

// writeISOs makes the images in dir (DIR/isos, or a library shared with other hosts when
// shared is set). Each is written to a file of its own and renamed into place, so that a loop
// device left on an old copy never sees its file change, and two hosts making the same image
// at once each rename a whole one. In a shared folder an image already there is kept: a guest
// of another host may hold it.
func writeISOs(dir string, shared bool) ([]string, error) {
	// A qcow2 version 3 header (QFI\xfb, version 3, cluster bits 16) padded to one sector:
	// enough for QEMU's probe and for mediaformat.Detect to call it qcow2.
	hdr := make([]byte, 512)
	copy(hdr, "QFI\xfb")
	hdr[7] = 3
	hdr[23] = 16
	type image struct {
		name  string
		write func(path string) error
	}
	images := make([]image, 0, len(isoSpecs)+1)
	for _, s := range isoSpecs {
		images = append(images, image{s.name, func(path string) error { return isofs.Write(path, s.volumeID, s.files) }})
	}
	images = append(images, image{QCOW2Image, func(path string) error { return os.WriteFile(path, hdr, 0o644) }})

	var paths []string
	for _, img := range images {
		p := filepath.Join(dir, img.name)
		paths = append(paths, p)
		if fi, err := os.Stat(p); shared && err == nil && fi.Mode().IsRegular() && fi.Size() > 0 {
			continue
		}
		tmp, err := os.CreateTemp(dir, "."+img.name+".*.tmp")
		if err != nil {
			return nil, fmt.Errorf("make %s: %w", p, err)
		}
		tmp.Close()
		if err := img.write(tmp.Name()); err != nil {
			os.Remove(tmp.Name())
			return nil, fmt.Errorf("make %s: %w", p, err)
		}
		if err := os.Chmod(tmp.Name(), 0o644); err != nil {
			os.Remove(tmp.Name())
			return nil, fmt.Errorf("make %s: %w", p, err)
		}
		if err := os.Rename(tmp.Name(), p); err != nil {
			os.Remove(tmp.Name())
			return nil, fmt.Errorf("make %s: %w", p, err)
		}
	}
	return paths, nil
}

// domainUUID derives a stable uuid from the host and domain names, so that a restarted host
// keeps its userdata file names. It has the shape of a version 4 uuid.
func domainUUID(host, name string) string {
	sum := sha256.Sum256([]byte("xensim/" + host + "/" + name))
	b := sum[:16]
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// dom0UUID is the uuid Xen gives dom0.
const dom0UUID = "00000000-0000-0000-0000-000000000000"

// memKB is every guest's memory as libxl records it (the real QEMU gets -m 16 whatever it
// says: no guest OS runs).
const memKB = 131072

// tree writes xenstore nodes in-process, remembering the first error.
type tree struct {
	h   *Host
	err error
}

func (t *tree) write(p, v string) {
	if t.err == nil {
		if err := t.h.srv.Write(p, v); err != nil {
			t.err = fmt.Errorf("write %s: %w", p, err)
		}
	}
}

func (t *tree) mkdir(p string) {
	if t.err == nil {
		if err := t.h.srv.Mkdir(p); err != nil {
			t.err = fmt.Errorf("mkdir %s: %w", p, err)
		}
	}
}

func (t *tree) perms(p string, ps ...xs.Perm) {
	if t.err == nil {
		if err := t.h.srv.SetPerms(p, ps); err != nil {
			t.err = fmt.Errorf("set permissions of %s: %w", p, err)
		}
	}
}

// layDom0 writes Domain-0's own nodes, as xencommons does at boot.
func (h *Host) layDom0() error {
	t := &tree{h: h}
	t.write("/local/domain/0/name", "Domain-0")
	t.write("/local/domain/0/domid", "0")
	t.write("/local/domain/0/vm", "/vm/"+dom0UUID)
	t.write("/vm/"+dom0UUID+"/uuid", dom0UUID)
	t.write("/vm/"+dom0UUID+"/name", "Domain-0")
	t.mkdir("/local/domain/0/backend/vbd")
	t.mkdir("/local/domain/0/backend/qdisk")
	t.mkdir("/local/domain/0/device-model")
	t.mkdir("/libxl")
	t.mkdir("/tool")
	t.write("/tool/xenstored", "")
	return t.err
}

// layDomain writes the nodes libxl__domain_make and libxl__build_pre/post write for a domain:
// its /vm/<uuid> and /local/domain/<domid> trees, owned by the domain itself.
func (h *Host) layDomain(t *tree, domid uint32, name, uuid, libxlType string) {
	dp := xen.DomainPath(domid)
	vm := "/vm/" + uuid
	t.mkdir(dp)
	t.perms(dp, xs.Perm{DomID: domid, Access: xs.AccessNone})
	t.mkdir(vm)
	t.perms(vm, xs.Perm{DomID: 0, Access: xs.AccessNone}, xs.Perm{DomID: domid, Access: xs.AccessRead})
	t.write(vm+"/uuid", uuid)
	t.write(vm+"/name", name)
	t.write(vm+"/image/ostype", map[string]string{"hvm": "hvm", "pv": "linux"}[libxlType])
	t.write(vm+"/start_time", "1764288000.00")
	t.write(dp+"/vm", vm)
	t.write(dp+"/name", name)
	t.write(dp+"/domid", strconv.FormatUint(uint64(domid), 10))
	t.write(dp+"/memory/static-max", strconv.Itoa(memKB))
	t.write(dp+"/memory/target", strconv.Itoa(memKB))
	t.write(dp+"/cpu/0/availability", "online")
	t.mkdir(dp + "/control")
	t.write(dp+"/control/shutdown", "")
	t.mkdir(dp + "/device")
	t.mkdir(dp + "/data")
	t.mkdir(dp + "/drivers")
	t.write(xen.LibxlDomainPath(domid)+"/type", libxlType)
	h.srv.IntroduceDomain(domid)
}

// layGuest writes a guest's trees, its stub domain's, and its userdata files, and creates
// its cdrom vbds (at Initialising; blkback takes them on from there).
func (h *Host) layGuest(ctx context.Context, d *domain) error {
	in := d.info
	t := &tree{h: h}
	h.layDomain(t, in.DomID, in.Name, in.UUID, "hvm")
	dp := xen.DomainPath(in.DomID)
	t.write(xen.DMVersionPath(in.DomID), in.Kind.DMVersion())
	t.write(dp+"/hvmloader/bios", "seabios")
	t.write(dp+"/platform/acpi", "1")
	switch in.Kind {
	case KindStubdom:
		sid := in.StubDomID
		h.layDomain(t, sid, in.StubName, in.StubUUID, "pv")
		t.write(xen.DeviceModelDomIDPath(in.DomID), strconv.FormatUint(uint64(sid), 10))
		t.write(xen.StubTargetPath(sid), strconv.FormatUint(uint64(in.DomID), 10))
		t.mkdir(fmt.Sprintf("/local/domain/%d/device-model/%d", sid, in.DomID))
		t.write(fmt.Sprintf("/local/domain/%d/device-model/%d/qmp-vchan", sid, in.DomID), "")
		t.write(xen.DeviceModelStatePath(sid, in.DomID), "running")
		t.write(fmt.Sprintf("/vm/%s/image/device-model-domid", in.UUID), strconv.FormatUint(uint64(sid), 10))
	default:
		t.write(xen.DeviceModelStatePath(0, in.DomID), "running")
	}
	if t.err != nil {
		return fmt.Errorf("lay out domain %s: %w", in.Name, t.err)
	}

	for _, v := range d.vbds() {
		if err := xen.AddVBD(ctx, h.xs, v); err != nil {
			return fmt.Errorf("lay out domain %s: %w", in.Name, err)
		}
	}
	if err := h.writeUserdata(d); err != nil {
		return fmt.Errorf("lay out domain %s: %w", in.Name, err)
	}
	return nil
}

// vbds are the cdrom vbds libxl would have made for the guest at creation:
//
//   - stubdom: the stub domain's phy vbd, which the job detaches and re-attaches, and the
//     guest's own phy vbd of the same disk (its frontend is the HVM guest, which uses the
//     emulated drive and never connects; the stubdom cd-insert path leaves it alone, facts
//     §1.4);
//   - dom0: the guest's qdisk vbd, served by its QEMU in dom0 (params "aio:<path>", "" when
//     empty);
//   - traditional: the guest's phy vbd, whose params qemu-dm watches.
//
// A phy vbd with an empty drive points at the empty-cdrom file, as libxl's
// libxl__device_disk_setdefault does for PHY + EMPTY.
func (d *domain) vbds() []xen.VBD {
	in := d.info
	phyParams := d.medium
	if phyParams == "" {
		phyParams = d.emptyCDROM
	}
	switch in.Kind {
	case KindStubdom:
		return []xen.VBD{
			{BackendDom: 0, FrontendDom: in.StubDomID, DevID: in.DevID, Vdev: CDROMVdev, Type: xen.TypePhy, Params: phyParams},
			{BackendDom: 0, FrontendDom: in.DomID, DevID: in.DevID, Vdev: CDROMVdev, Type: xen.TypePhy, Params: phyParams},
		}
	case KindDom0:
		params := ""
		if d.medium != "" {
			params = "aio:" + d.medium
		}
		return []xen.VBD{{BackendDom: 0, FrontendDom: in.DomID, DevID: in.DevID, Vdev: CDROMVdev, Type: xen.TypeQdisk, Params: params}}
	default:
		return []xen.VBD{{BackendDom: 0, FrontendDom: in.DomID, DevID: in.DevID, Vdev: CDROMVdev, Type: xen.TypePhy, Params: phyParams}}
	}
}

// libxlConfig is the part of libxl_domain_config that xensim writes: enough for xl and the job
// to find the guest and its cdrom.
type libxlConfig struct {
	CInfo struct {
		Type              string `json:"type"`
		Name              string `json:"name"`
		UUID              string `json:"uuid"`
		RunHotplugScripts string `json:"run_hotplug_scripts"`
	} `json:"c_info"`
	BInfo struct {
		MaxVCPUs              int    `json:"max_vcpus"`
		MaxMemKB              int    `json:"max_memkb"`
		TargetMemKB           int    `json:"target_memkb"`
		DeviceModelVersion    string `json:"device_model_version"`
		DeviceModelStubdomain string `json:"device_model_stubdomain"`
		TypeHVM               struct {
			BIOS string `json:"bios"`
			Boot string `json:"boot"`
		} `json:"type.hvm"`
	} `json:"b_info"`
	Disks      []xen.Disk `json:"disks"`
	OnPoweroff string     `json:"on_poweroff"`
	OnReboot   string     `json:"on_reboot"`
	OnCrash    string     `json:"on_crash"`
}

// writeUserdata writes the guest's JSON configuration and creates its lock files, as they
// are after libxl created the domain.
func (h *Host) writeUserdata(d *domain) error {
	in := d.info
	var c libxlConfig
	c.CInfo.Type = "hvm"
	c.CInfo.Name = in.Name
	c.CInfo.UUID = in.UUID
	c.CInfo.RunHotplugScripts = "True"
	c.BInfo.MaxVCPUs = 1
	c.BInfo.MaxMemKB = memKB
	c.BInfo.TargetMemKB = memKB
	c.BInfo.DeviceModelVersion = in.Kind.DMVersion()
	c.BInfo.DeviceModelStubdomain = "False"
	if in.Kind == KindStubdom {
		c.BInfo.DeviceModelStubdomain = "True"
	}
	c.BInfo.TypeHVM.BIOS = "seabios"
	c.BInfo.TypeHVM.Boot = "dc"
	disk := xen.Disk{Vdev: CDROMVdev, Removable: 1, IsCDROM: 1, PdevPath: d.medium, Format: xen.DiskFormatRaw}
	if d.medium == "" {
		disk.Format = xen.DiskFormatEmpty
	}
	switch in.Kind {
	case KindDom0:
		disk.Backend = xen.TypeQdisk
	default:
		disk.Backend = xen.TypePhy
	}
	c.Disks = []xen.Disk{disk}
	c.OnPoweroff, c.OnReboot, c.OnCrash = "destroy", "restart", "destroy"
	b, err := json.MarshalIndent(c, "", "    ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", in.ConfigPath, err)
	}
	if err := os.WriteFile(in.ConfigPath, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("write domain configuration: %w", err)
	}
	for _, p := range []string{
		xen.DeviceChangesLockPath(h.libDir(), in.DomID, in.UUID),
		xen.UserdataLockPath(h.libDir(), in.DomID, in.UUID),
		xen.QMPSocketLockPath(h.libDir(), in.DomID, in.UUID),
	} {
		f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o666)
		if err != nil {
			return fmt.Errorf("create lock file: %w", err)
		}
		f.Close()
	}
	return nil
}

// makeEmptyCDROM creates <run>/empty-cdrom.<domid> as libxl does: creat(path, 0400), an
// empty file.
func makeEmptyCDROM(p string) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o400)
	if err != nil {
		return fmt.Errorf("create empty cdrom file: %w", err)
	}
	return f.Close()
}

// clearStale removes what an earlier host on DIR left: sockets, empty-cdrom files, QEMU work
// folders, userdata files and the old summary. Loop devices are handled by
// detachStaleLoops.
func clearStale(dir string) error {
	var errs []error
	globs := []string{
		"xenstored.sock", "control.sock", "xensim.json",
		"run/qmp-libxl-*", "run/stubdom-cdrom.*", "run/empty-cdrom.*", "run/qemu.*",
		"lib/userdata-*",
	}
	for _, g := range globs {
		ms, _ := filepath.Glob(filepath.Join(dir, g))
		for _, m := range ms {
			if err := os.RemoveAll(m); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("clear what an earlier xensim left in %s: %w", dir, err)
	}
	return nil
}

// staleLoops lists loop devices whose backing file is under dir (left by an earlier host
// that was killed).
func staleLoops(dir string) []string {
	ms, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	var devs []string
	for _, m := range ms {
		b, err := os.ReadFile(m)
		if err != nil {
			continue
		}
		f := strings.TrimSpace(string(b))
		if strings.HasPrefix(f, dir+"/") {
			devs = append(devs, "/dev/"+filepath.Base(filepath.Dir(filepath.Dir(m))))
		}
	}
	return devs
}
