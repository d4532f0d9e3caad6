package mediaformat

import "strings"

// Names are the names one image format cdswap can insert goes by.
type Names struct {
	// QEMU is the QEMU block driver name, passed as "format" (libxl__qemu_disk_format_string).
	QEMU string
	// Params is the prefix of a qdisk backend's "params" in xenstore, "<prefix>:<path>"
	// (libxl__device_disk_string_of_format): "aio" for raw.
	Params string
	// JSON is the name in libxl's JSON configuration and in the opaque of the add-fd that
	// passes a dom0 medium, "<name>:<path>" (libxl_disk_format_to_string): "vhd" for vpc.
	JSON string
}

// insertable lists the formats a dom0 QEMU takes from libxl for a cdrom.
var insertable = []Names{
	{QEMU: Raw, Params: "aio", JSON: "raw"},
	{QEMU: QCOW, Params: "qcow", JSON: "qcow"},
	{QEMU: QCOW2, Params: "qcow2", JSON: "qcow2"},
	{QEMU: VPC, Params: "vhd", JSON: "vhd"},
	{QEMU: QED, Params: "qed", JSON: "qed"},
}

// Insertable lists the formats cdswap can insert, for messages.
const Insertable = "raw, qcow2, qcow, vpc or qed"

// JSONEmpty is libxl_disk_format's name of an empty cdrom.
const JSONEmpty = "empty"

// All returns the names of every format cdswap can insert.
func All() []Names {
	return append([]Names(nil), insertable...)
}

// Lookup returns the names of the format QEMU calls format, or ok false for a format cdswap
// cannot insert.
func Lookup(format string) (Names, bool) {
	return find(func(n Names) bool { return n.QEMU == format })
}

// ByParams returns the format of a qdisk "params" prefix ("aio" is raw).
func ByParams(prefix string) (Names, bool) {
	return find(func(n Names) bool { return n.Params == prefix })
}

// ByJSON returns the format of a name in libxl's JSON or an add-fd opaque ("vhd" is vpc).
func ByJSON(name string) (Names, bool) {
	return find(func(n Names) bool { return n.JSON == name })
}

func find(match func(Names) bool) (Names, bool) {
	for _, n := range insertable {
		if match(n) {
			return n, true
		}
	}
	return Names{}, false
}

// Normalize returns the QEMU driver name of a requested format, ignoring case and spaces (""
// is raw; "vhd" is QEMU's "vpc"), or ok false for a format cdswap cannot insert.
func Normalize(requested string) (string, bool) {
	f := strings.ToLower(strings.TrimSpace(requested))
	switch f {
	case "":
		return Raw, true
	case "vhd":
		return VPC, true
	}
	_, ok := Lookup(f)
	return f, ok
}
