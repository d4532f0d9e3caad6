package xen

import "testing"

func TestPaths(t *testing.T) {
	const uuid = "6f2c4b1e-0d7a-4c1e-9a53-2b8e5f1d3c77"
	tests := []struct {
		name string
		got  string
		want string
	}{
		{"domain", DomainPath(3), "/local/domain/3"},
		{"name", NamePath(3), "/local/domain/3/name"},
		{"vm", VMPath(3), "/local/domain/3/vm"},
		{"backend phy of stubdom", BackendPath(0, 4, KindVBD, 5632), "/local/domain/0/backend/vbd/4/5632"},
		{"backend qdisk", BackendPath(0, 3, KindQdisk, 5632), "/local/domain/0/backend/qdisk/3/5632"},
		{"frontend", FrontendPath(4, 5632), "/local/domain/4/device/vbd/5632"},
		{"libxl", LibxlPath(4, 5632), "/libxl/4/device/vbd/5632"},
		{"dm-version", DMVersionPath(3), "/libxl/3/dm-version"},
		{"device-model-domid", DeviceModelDomIDPath(3), "/local/domain/3/image/device-model-domid"},
		{"stub target", StubTargetPath(4), "/local/domain/4/target"},
		{"dm state", DeviceModelStatePath(4, 3), "/local/domain/4/device-model/3/state"},
		{"qmp socket default", QMPSocketPath("", 3), "/var/run/xen/qmp-libxl-3"},
		{"qmp socket", QMPSocketPath("/tmp/run", 3), "/tmp/run/qmp-libxl-3"},
		{"empty cdrom default", EmptyCDROMPath("", 3), "/var/run/xen/empty-cdrom.3"},
		{"empty cdrom", EmptyCDROMPath("/tmp/run/", 3), "/tmp/run/empty-cdrom.3"},
		{"userdata", UserdataPath("/tmp/lib", 3, uuid, "d", "x"), "/tmp/lib/userdata-d.3." + uuid + ".x"},
		{"config", ConfigPath("", 3, uuid), "/var/lib/xen/userdata-d.3." + uuid + ".libxl-json"},
		{"device changes lock", DeviceChangesLockPath("", 3, uuid), "/var/lib/xen/userdata-l.3." + uuid + ".libxl-device-changes-lock"},
		{"userdata lock", UserdataLockPath("", 3, uuid), "/var/lib/xen/userdata-l.3." + uuid + ".domain-userdata-lock"},
		{"qmp lock", QMPSocketLockPath("", 3, uuid), "/var/lib/xen/userdata-l.3." + uuid + ".qmp-socket-lock"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Errorf("%s = %q, want %q", tt.name, tt.got, tt.want)
			}
		})
	}
}
