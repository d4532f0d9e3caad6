package xen

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// libxlJSON is a libxl-json configuration as xl writes it for an HVM guest with a cdrom
// (trimmed), including fields Disk does not list.
const libxlJSON = `{
    "c_info": {"type": "hvm", "name": "win10"},
    "disks": [
        {
            "backend_domid": 0,
            "pdev_path": "/srv/vm.qcow2",
            "vdev": "xvda",
            "backend": "qdisk",
            "format": "qcow2",
            "readwrite": 1,
            "direct_io_safe": false
        },
        {
            "backend_domid": 0,
            "vdev": "hdc",
            "backend": "phy",
            "format": "empty",
            "removable": 1,
            "is_cdrom": 1
        }
    ],
    "on_reboot": "restart"
}`

func TestConfigDisks(t *testing.T) {
	got, err := ConfigDisks([]byte(libxlJSON))
	want := []Disk{
		{PdevPath: "/srv/vm.qcow2", Vdev: "xvda", Backend: "qdisk", Format: "qcow2", Readwrite: 1},
		{Vdev: "hdc", Backend: "phy", Format: DiskFormatEmpty, Removable: 1, IsCDROM: 1},
	}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("ConfigDisks() = %+v, %v, want %+v", got, err, want)
	}
	if _, err := ConfigDisks([]byte(`{"disks": {}}`)); err == nil || !strings.Contains(err.Error(), "libxl JSON") {
		t.Errorf(`ConfigDisks({"disks": {}}) = %v, want an error about the libxl JSON configuration`, err)
	}
}

// TestDiskJSON checks that a Disk encodes as libxl writes an entry: an empty cdrom without
// pdev_path, integers for the flags.
func TestDiskJSON(t *testing.T) {
	b, err := json.Marshal(Disk{Vdev: "hdc", Backend: "phy", Format: DiskFormatEmpty, Removable: 1, IsCDROM: 1})
	want := `{"backend_domid":0,"vdev":"hdc","backend":"phy","format":"empty","removable":1,"readwrite":0,"is_cdrom":1}`
	if err != nil || string(b) != want {
		t.Errorf("json.Marshal(Disk) = %s, %v, want %s", b, err, want)
	}
}
