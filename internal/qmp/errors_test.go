package qmp_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/cdswap/cdswap/internal/qmp"
	"github.com/stretchr/testify/assert"
)

// TestPredicatesNeedTheReply checks what the conformance test cannot: a predicate holds only
// for a GenericError reply, found through wrapping, and never for a look-alike text.
func TestPredicatesNeedTheReply(t *testing.T) {
	locked := &qmp.Error{Class: "GenericError", Desc: "Device 'ide-5632' is locked and force was not specified, wait for tray to open and try again"}
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{name: "reply", err: locked, want: true},
		{name: "wrapped reply", err: fmt.Errorf("eject ide-5632: %w", locked), want: true},
		{name: "nil", err: nil, want: false},
		{name: "other class", err: &qmp.Error{Class: "DeviceNotFound", Desc: locked.Desc}, want: false},
		{name: "same text, not a reply", err: errors.New(locked.Desc), want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, qmp.IsTrayLocked(tt.err), "IsTrayLocked(%v)", tt.err)
		})
	}
	assert.False(t, qmp.IsFdsetNotFound(&qmp.Error{Class: "DeviceNotFound", Desc: "Device 'nope' not found"}),
		"IsFdsetNotFound(a missing device)")
}
