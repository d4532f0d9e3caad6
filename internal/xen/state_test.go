package xen

import "testing"

func TestXenbusState(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want XenbusState
		str  string
	}{
		{"unknown", "0", StateUnknown, "Unknown"},
		{"initialising", "1", StateInitialising, "Initialising"},
		{"initwait", "2", StateInitWait, "InitWait"},
		{"initialised", "3", StateInitialised, "Initialised"},
		{"connected", "4", StateConnected, "Connected"},
		{"closing", "5", StateClosing, "Closing"},
		{"closed", "6", StateClosed, "Closed"},
		{"reconfiguring", "7", StateReconfiguring, "Reconfiguring"},
		{"reconfigured", "8", StateReconfigured, "Reconfigured"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseXenbusState(tt.in)
			if err != nil || got != tt.want {
				t.Fatalf("ParseXenbusState(%q) = %v, %v, want %v", tt.in, got, err, tt.want)
			}
			if s := got.String(); s != tt.str {
				t.Errorf("%d.String() = %q, want %q", int(got), s, tt.str)
			}
		})
	}
	for _, bad := range []string{"", "9", "-1", "closed", "4 "} {
		if got, err := ParseXenbusState(bad); err == nil {
			t.Errorf("ParseXenbusState(%q) = %v, nil, want an error", bad, got)
		}
	}
	if got, want := XenbusState(42).String(), "XenbusState(42)"; got != want {
		t.Errorf("XenbusState(42).String() = %q, want %q", got, want)
	}
}
