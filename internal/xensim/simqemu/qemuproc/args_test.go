package qemuproc

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cdswap/cdswap/internal/xen"
)

func TestIDEDisk(t *testing.T) {
	tests := []struct {
		vdev    string
		want    int
		wantErr bool
	}{
		{vdev: "hda", want: 0},
		{vdev: "hdb", want: 1},
		{vdev: "hdc", want: 2},
		{vdev: "hdd", want: 3},
		{vdev: "xvda", want: 0},
		{vdev: "xvdc", want: 2},
		{vdev: "xvdd", want: 3},
		{vdev: "sdc", want: 2},
		{vdev: "xvde", wantErr: true},
		{vdev: "sde", wantErr: true},
		{vdev: "xvdq", wantErr: true}, // extended numbering
		{vdev: "12345", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.vdev, func(t *testing.T) {
			d, err := xen.ParseVdev(tt.vdev)
			require.NoError(t, err)
			got, err := IDEDisk(d)
			if tt.wantErr {
				assert.ErrorIs(t, err, ErrBadConfig, "IDEDisk(%s=%d)", tt.vdev, d)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got, "IDEDisk(%s=%d)", tt.vdev, d)
		})
	}
	_, err := IDEDisk(-1)
	assert.ErrorIs(t, err, ErrBadConfig, "IDEDisk(-1)")
}

func TestQEMUArgs(t *testing.T) {
	base := "-machine pc -nodefaults -display none -accel tcg -m 32 -no-user-config"
	mon0 := "-chardev socket,id=libxl-cmd,path=/p/mon0,server=on,wait=off -mon chardev=libxl-cmd,mode=control"
	mon1 := "-chardev socket,id=m-cdrom,path=/p/mon1,server=on,wait=off -mon chardev=m-cdrom,mode=control"
	ctl := "-chardev socket,id=qemuproc-ctl,path=/p/ctl,server=on,wait=off -mon chardev=qemuproc-ctl,mode=control"
	fw := " -chardev file,id=firmware,path=/p/fw,,1 -device isa-debugcon,iobase=0x402,chardev=firmware"
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{
			name: "empty hdc, dom0 qemu",
			cfg:  Config{Name: "web1", CDROMs: []xen.DevID{5632}, Monitors: []string{"/p/mon0"}},
			want: base + " -name web1 -pidfile /p/pid" + fw + " " + mon0 + " " + ctl +
				" -drive if=none,readonly=on,id=ide-5632" +
				" -device ide-cd,id=ide-5632,drive=ide-5632,bus=ide.1,unit=0",
		},
		{
			name: "paused with media on hda and hdd, two monitors",
			cfg: Config{Name: "a,b", Paused: true, CDROMs: []xen.DevID{768, 5696},
				InitialMedium: map[xen.DevID]Medium{
					768:  {Path: "/isos/x,y.iso"},
					5696: {Path: "/dev/loop3", Format: "host_device"},
				},
				Monitors: []string{"/p/mon0", "/p/mon1"}},
			want: base + " -name a,,b -pidfile /p/pid" + fw + " -S " + mon0 + " " + mon1 + " " + ctl +
				" -drive if=none,readonly=on,id=ide-768,file=/isos/x,,y.iso,format=raw" +
				" -device ide-cd,id=ide-768,drive=ide-768,bus=ide.0,unit=0" +
				" -drive if=none,readonly=on,id=ide-5696,file=/dev/loop3,format=host_device" +
				" -device ide-cd,id=ide-5696,drive=ide-5696,bus=ide.1,unit=1",
		},
		{
			name: "stubdom-style xvdc, no monitor",
			cfg:  Config{Name: "s", CDROMs: []xen.DevID{51744}},
			want: base + " -name s -pidfile /p/pid" + fw + " " + ctl +
				" -drive if=none,readonly=on,id=ide-51744" +
				" -device ide-cd,id=ide-51744,drive=ide-51744,bus=ide.1,unit=0",
		},
		{
			name: "a guest that boots from hda",
			cfg:  Config{Name: "lock", CDROMs: []xen.DevID{5632}, BootDisk: "/d/a,b.img", Monitors: []string{"/p/mon0"}},
			want: base + " -name lock -pidfile /p/pid" + fw + " " + mon0 + " " + ctl +
				" -drive if=none,file=/d/a,,b.img,format=raw,id=hd0 -device ide-hd,drive=hd0,bus=ide.0,unit=0" +
				" -drive if=none,readonly=on,id=ide-5632" +
				" -device ide-cd,id=ide-5632,drive=ide-5632,bus=ide.1,unit=0",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := commandLine(tt.cfg, "/p/ctl", "/p/pid", "/p/fw,1")
			require.NoError(t, err)
			assert.Equal(t, tt.want, strings.Join(got, " "), "commandLine(%+v)", tt.cfg)
		})
	}
	_, err := commandLine(Config{CDROMs: []xen.DevID{768}, BootDisk: "/d/a.img"}, "/p/ctl", "/p/pid", "/p/fw")
	assert.ErrorIs(t, err, ErrBadConfig, "commandLine with a cdrom on hda and a boot disk")
}
