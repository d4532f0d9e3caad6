package xen

import (
	"fmt"
	"strconv"
)

// XenbusState is the state of one end of a PV device, the value of its "state" node
// (enum xenbus_state in xen/include/public/io/xenbus.h).
type XenbusState int

// The states, numbered as in xenbus.h.
const (
	StateUnknown       XenbusState = 0
	StateInitialising  XenbusState = 1 // written by the toolstack when it creates the device
	StateInitWait      XenbusState = 2 // backend ready for the hotplug script
	StateInitialised   XenbusState = 3
	StateConnected     XenbusState = 4
	StateClosing       XenbusState = 5 // written by the toolstack to ask for removal
	StateClosed        XenbusState = 6
	StateReconfiguring XenbusState = 7
	StateReconfigured  XenbusState = 8
)

var stateNames = [...]string{
	"Unknown", "Initialising", "InitWait", "Initialised", "Connected",
	"Closing", "Closed", "Reconfiguring", "Reconfigured",
}

// String is the name of xenbus.h without the XenbusState prefix ("Closed").
func (s XenbusState) String() string {
	if s >= 0 && int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("XenbusState(%d)", int(s))
}

// ParseXenbusState reads the value of a "state" node ("6").
func ParseXenbusState(v string) (XenbusState, error) {
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || n >= len(stateNames) {
		return StateUnknown, fmt.Errorf("xenbus state %q is not a number from 0 to %d", v, len(stateNames)-1)
	}
	return XenbusState(n), nil
}
