package testenv

import (
	"testing"

	enumspb "go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/workflow"
)

// VersionMarkers returns the workflow.GetVersion markers recorded in h, change id to
// version, so a test can tell which side of a versioned change a history took.
func VersionMarkers(tb testing.TB, h *historypb.History) map[string]workflow.Version {
	tb.Helper()
	dc := converter.GetDefaultDataConverter()
	out := map[string]workflow.Version{}
	for _, e := range h.GetEvents() {
		m := e.GetMarkerRecordedEventAttributes()
		if e.GetEventType() != enumspb.EVENT_TYPE_MARKER_RECORDED || m.GetMarkerName() != "Version" {
			continue
		}
		var id string
		var v workflow.Version
		if err := dc.FromPayloads(m.GetDetails()["change-id"], &id); err != nil {
			tb.Fatalf("change id of marker event %d: %v", e.GetEventId(), err)
		}
		if err := dc.FromPayloads(m.GetDetails()["version"], &v); err != nil {
			tb.Fatalf("version of marker event %d: %v", e.GetEventId(), err)
		}
		out[id] = v
	}
	return out
}
