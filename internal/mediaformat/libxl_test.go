package mediaformat

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestNormalize(t *testing.T) {
	tests := []struct {
		name, in, want string
		ok             bool
	}{
		{name: "empty is raw", in: "", want: Raw, ok: true},
		{name: "raw", in: "raw", want: Raw, ok: true},
		{name: "case and spaces", in: " QCOW2 ", want: QCOW2, ok: true},
		{name: "vhd is vpc", in: "vhd", want: VPC, ok: true},
		{name: "vpc", in: "vpc", want: VPC, ok: true},
		{name: "qcow", in: "qcow", want: QCOW, ok: true},
		{name: "qed", in: "qed", want: QED, ok: true},
		{name: "detected but not insertable", in: "vmdk", want: VMDK, ok: false},
		{name: "host_device", in: "host_device", want: "host_device", ok: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := Normalize(tt.in)
			assert.Equal(t, tt.want, got, "Normalize(%q)", tt.in)
			assert.Equal(t, tt.ok, ok, "Normalize(%q) ok", tt.in)
		})
	}
}

func TestNames(t *testing.T) {
	tests := []struct {
		name               string
		qemu, params, json string
	}{
		{name: "raw", qemu: "raw", params: "aio", json: "raw"},
		{name: "qcow", qemu: "qcow", params: "qcow", json: "qcow"},
		{name: "qcow2", qemu: "qcow2", params: "qcow2", json: "qcow2"},
		{name: "vpc", qemu: "vpc", params: "vhd", json: "vhd"},
		{name: "qed", qemu: "qed", params: "qed", json: "qed"},
	}
	want := make([]Names, 0, len(tests))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := Names{QEMU: tt.qemu, Params: tt.params, JSON: tt.json}
			got, ok := Lookup(tt.qemu)
			assert.True(t, ok, "Lookup(%q) ok", tt.qemu)
			assert.Equal(t, n, got, "Lookup(%q)", tt.qemu)
			got, ok = ByParams(tt.params)
			assert.True(t, ok, "ByParams(%q) ok", tt.params)
			assert.Equal(t, n, got, "ByParams(%q)", tt.params)
			got, ok = ByJSON(tt.json)
			assert.True(t, ok, "ByJSON(%q) ok", tt.json)
			assert.Equal(t, n, got, "ByJSON(%q)", tt.json)
		})
		want = append(want, Names{QEMU: tt.qemu, Params: tt.params, JSON: tt.json})
	}
	assert.ElementsMatch(t, want, All(), "All()")
	for _, unknown := range []string{"", "vhd", "vmdk", "empty", "phy"} {
		_, ok := Lookup(unknown)
		assert.False(t, ok, "Lookup(%q) ok", unknown)
	}
	for _, unknown := range []string{"", "raw", "phy", "vpc"} {
		_, ok := ByParams(unknown)
		assert.False(t, ok, "ByParams(%q) ok", unknown)
	}
	for _, unknown := range []string{"", "vpc", "aio", JSONEmpty} {
		_, ok := ByJSON(unknown)
		assert.False(t, ok, "ByJSON(%q) ok", unknown)
	}
}
