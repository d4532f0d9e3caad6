package xen

import (
	"errors"
	"strings"
	"testing"
)

const testUUID = "6f2c4b1e-0d7a-4c1e-9a53-2b8e5f1d3c77"

func TestReadDomainInfoAndFindDomain(t *testing.T) {
	_, _, c := startXenstored(t)
	mustWrite(t, c,
		"/local/domain/0/name", "Domain-0",
		"/local/domain/3/name", "win10",
		"/local/domain/3/vm", "/vm/"+testUUID,
		"/vm/"+testUUID+"/uuid", testUUID,
		"/libxl/3/dm-version", DMQemuXen,
		"/local/domain/3/image/device-model-domid", "4",
		"/local/domain/4/name", "win10-dm",
		"/local/domain/4/target", "3",
		"/local/domain/5/name", "pv",
		"/local/domain/6/name", "upper",
		"/local/domain/6/vm", "/vm/6F2C4B1E-0D7A-4C1E-9A53-2B8E5F1D3C77",
		"/local/domain/7/name", "twin",
		"/local/domain/8/name", "twin",
		"/local/domain/9/name", "badstub",
		"/local/domain/9/image/device-model-domid", "x",
	)
	ctx := testCtx(t)

	tests := []struct {
		name string
		ask  string
		want DomainInfo
	}{
		{"guest by name", "win10", DomainInfo{DomID: 3, Name: "win10", UUID: testUUID, DMVersion: DMQemuXen, StubDomID: 4}},
		{"guest by domid", "3", DomainInfo{DomID: 3, Name: "win10", UUID: testUUID, DMVersion: DMQemuXen, StubDomID: 4}},
		{"stubdom", "win10-dm", DomainInfo{DomID: 4, Name: "win10-dm", Target: 3}},
		{"dom0", "0", DomainInfo{DomID: 0, Name: "Domain-0"}},
		{"pv guest without vm node", "pv", DomainInfo{DomID: 5, Name: "pv"}},
		{"uuid from the vm path, lower-cased", "upper", DomainInfo{DomID: 6, Name: "upper", UUID: testUUID}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := FindDomain(ctx, c, tt.ask)
			if err != nil || got != tt.want {
				t.Errorf("FindDomain(%q) = %+v, %v, want %+v", tt.ask, got, err, tt.want)
			}
		})
	}

	for _, ask := range []string{"nope", "99", ""} {
		_, err := FindDomain(ctx, c, ask)
		if !errors.Is(err, ErrNoSuchDomain) {
			t.Errorf("FindDomain(%q) = %v, want ErrNoSuchDomain", ask, err)
			continue
		}
		if ask != "" && (!strings.Contains(err.Error(), `"`+ask+`"`) || !strings.Contains(err.Error(), "win10 (3)")) {
			t.Errorf("FindDomain(%q) error %q does not name the input and the known domains", ask, err)
		}
	}
	if _, err := FindDomain(ctx, c, "twin"); err == nil || !strings.Contains(err.Error(), "7, 8") {
		t.Errorf(`FindDomain("twin") = %v, want an error naming domids 7, 8`, err)
	}
	if _, err := FindDomain(ctx, c, "badstub"); err == nil || !strings.Contains(err.Error(), "device-model-domid") {
		t.Errorf(`FindDomain("badstub") = %v, want an error about device-model-domid`, err)
	}
	if _, err := ReadDomainInfo(ctx, c, 42); !errors.Is(err, ErrNoSuchDomain) {
		t.Errorf("ReadDomainInfo(42) = %v, want ErrNoSuchDomain", err)
	}
}

func TestFindDomainListsAFew(t *testing.T) {
	_, _, c := startXenstored(t)
	for i := range 12 {
		mustWrite(t, c, DomainPath(uint32(i))+"/name", "d"+string(rune('a'+i)))
	}
	_, err := FindDomain(testCtx(t), c, "zzz")
	if !errors.Is(err, ErrNoSuchDomain) || !strings.Contains(err.Error(), "and 4 more") {
		t.Fatalf(`FindDomain("zzz") = %v, want ErrNoSuchDomain listing 8 domains "and 4 more"`, err)
	}
}
