package qmp

import "fmt"

// Version is a QEMU version, from the greeting or query-version (qapi/control.json VersionInfo).
type Version struct {
	Major, Minor, Micro int
	// Package is the distribution's build string, e.g. "Debian 1:7.2+dfsg-7+deb12u18+b3".
	Package string
}

// AtLeast reports whether v is major.minor.micro or newer, comparing major, then minor, then
// micro, like libxl's libxl__qmp_ev_qemu_compare_version.
func (v Version) AtLeast(major, minor, micro int) bool {
	if v.Major != major {
		return v.Major > major
	}
	if v.Minor != minor {
		return v.Minor > minor
	}
	return v.Micro >= micro
}

// String returns "major.minor.micro", followed by the package in parentheses when there is one.
func (v Version) String() string {
	s := fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Micro)
	if v.Package != "" {
		s += " (" + v.Package + ")"
	}
	return s
}
