package plan

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"

	"github.com/cdswap/cdswap/workflows"
)

// A checked plan is stored in Temporal itself, as the inputs of FleetPlanPage runs (one per
// page), so that it lives as long as the batch and as durably as its history, with no
// store of its own to run. A page is bounded both ways: Temporal refuses a payload over
// 2 MB and warns over 512 KB, and a page is read into one FleetSwap run's history.
const (
	// PageRows is the most drives a page holds.
	PageRows = 500
	// PageBytes is the most JSON a page's drives take.
	PageBytes = 256 << 10
)

// Paginate cuts drives into pages of at most maxRows drives and maxBytes of JSON each
// (PageRows and PageBytes when 0). A drive larger than maxBytes alone gets a page of its
// own (a drive is at most a few KB: workflows.Validate bounds its fields).
func Paginate(drives []workflows.FleetDrive, maxRows, maxBytes int) [][]workflows.FleetDrive {
	if maxRows <= 0 {
		maxRows = PageRows
	}
	if maxBytes <= 0 {
		maxBytes = PageBytes
	}
	var pages [][]workflows.FleetDrive
	start, size := 0, 0
	for i, d := range drives {
		b, _ := json.Marshal(d) // a FleetDrive always encodes
		n := len(b) + 1
		if i > start && (i-start >= maxRows || size+n > maxBytes) {
			pages = append(pages, drives[start:i])
			start, size = i, 0
		}
		size += n
	}
	if start < len(drives) {
		pages = append(pages, drives[start:])
	}
	return pages
}

// SavePages starts the holder of each page of batch. A holder that exists already (a
// retried start) is an error: a batch id is used once.
func SavePages(ctx context.Context, c client.Client, batch string, pages [][]workflows.FleetDrive) error {
	for i, p := range pages {
		_, err := c.ExecuteWorkflow(ctx, workflows.PlanPageStartOptions(batch, i), workflows.FleetPlanPageName,
			workflows.PlanPage{Batch: batch, Index: i, Drives: p})
		if err != nil {
			return fmt.Errorf("store page %d of %d of the plan of batch %s: %w", i+1, len(pages), batch, err)
		}
	}
	return nil
}

// ReleasePages ends the holders of a batch that never started (its start failed).
func ReleasePages(ctx context.Context, c client.Client, batch string, pages int) {
	for i := range pages {
		_ = c.SignalWorkflow(ctx, workflows.PlanPageID(batch, i), "", workflows.FleetReleaseSignal, nil)
	}
}

// ReadPage reads page of batch back from the first event of its holder's history. A
// holder that is gone is an application error of type workflows.ErrPlanPageMissing.
func ReadPage(ctx context.Context, c client.Client, batch string, page int) ([]workflows.FleetDrive, error) {
	id := workflows.PlanPageID(batch, page)
	it := c.GetWorkflowHistory(ctx, id, "", false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	if !it.HasNext() {
		return nil, missing(id, errors.New("empty history"))
	}
	ev, err := it.Next()
	if err != nil {
		var nf *serviceerror.NotFound
		if errors.As(err, &nf) {
			return nil, missing(id, err)
		}
		return nil, fmt.Errorf("read plan page %s: %w", id, err)
	}
	attrs := ev.GetWorkflowExecutionStartedEventAttributes()
	if attrs == nil {
		return nil, missing(id, fmt.Errorf("its first event is %s", ev.GetEventType()))
	}
	var p workflows.PlanPage
	if err := converter.GetDefaultDataConverter().FromPayloads(attrs.GetInput(), &p); err != nil {
		return nil, missing(id, fmt.Errorf("decode its input: %w", err))
	}
	if p.Batch != batch || p.Index != page {
		return nil, missing(id, fmt.Errorf("it holds page %d of batch %s", p.Index, p.Batch))
	}
	return p.Drives, nil
}

func missing(id string, err error) error {
	return temporal.NewNonRetryableApplicationError(fmt.Sprintf(
		"plan page %s cannot be read (%v): it was deleted, or is past the namespace's retention; start the batch again for the drives not done",
		id, err), workflows.ErrPlanPageMissing, err)
}

// PageReader is the activity that reads plan pages for FleetSwap; a worker of
// workflows.BatchTaskQueue registers it. It is safe for concurrent use.
type PageReader struct {
	// Client reads the holders' histories.
	Client client.Client
}

// ReadPlanPage reads one page of a batch's plan (see ReadPage).
func (r *PageReader) ReadPlanPage(ctx context.Context, in workflows.ReadPlanPageInput) (workflows.ReadPlanPageResult, error) {
	drives, err := ReadPage(ctx, r.Client, in.Batch, in.Page)
	return workflows.ReadPlanPageResult{Drives: drives}, err
}
