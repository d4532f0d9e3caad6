package cli

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
)

// fetchArchivedHistory reads a swap that has left the namespace's primary store (its
// retention ended, or it was deleted) from Temporal's archive, where a cluster that archives
// (scripts/cluster.sh, docker-compose.temporal.yml) keeps it. The frontend serves
// GetWorkflowExecutionHistory of such a run from the history archive, but only for a given
// run ID: with runID "" it is the latest run that the visibility archive lists for id.
// found is false when the archive has no run of id, or the namespace does not archive.
func fetchArchivedHistory(ctx context.Context, c client.Client, id, runID string) (h *History, found bool, err error) {
	if runID == "" {
		resp, err := c.ListArchivedWorkflow(ctx, &workflowservice.ListArchivedWorkflowExecutionsRequest{
			PageSize: 100,
			Query:    "WorkflowId = " + quote(id),
		})
		if err != nil {
			// No visibility archival on this namespace or server: the run is simply gone.
			return nil, false, nil
		}
		var latest time.Time
		for _, info := range resp.GetExecutions() {
			if t := info.GetCloseTime().AsTime(); runID == "" || t.After(latest) {
				runID, latest = info.GetExecution().GetRunId(), t
			}
		}
		if runID == "" {
			return nil, false, nil
		}
	}
	events, err := readEvents(ctx, c, id, runID)
	var nf *serviceerror.NotFound
	if errors.As(err, &nf) {
		return nil, false, nil // not archived (or the archive does not keep it any more)
	}
	if err != nil {
		return nil, true, fmt.Errorf("read the archived history of %s (run %s): %w", id, runID, err)
	}
	h, err = BuildHistory(events, HistoryExtras{WorkflowID: id, RunID: runID})
	if err != nil {
		return nil, true, fmt.Errorf("archived history of %s (run %s): %w", id, runID, err)
	}
	h.Archived = true
	return h, true, nil
}
