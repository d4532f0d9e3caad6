package cli

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"

	"github.com/cdswap/cdswap/workflows"
)

// driveFlags name a drive instead of a workflow id: status and history take either.
type driveFlags struct {
	host, domain, vdev string
}

func (d *driveFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&d.host, "host", "", "dom0 host (with --domain and --vdev, instead of an ID)")
	cmd.Flags().StringVar(&d.domain, "domain", "", "guest name or domid")
	cmd.Flags().StringVar(&d.vdev, "vdev", "", "CD-ROM drive (hdc, xvdc...)")
}

func (d *driveFlags) given() bool { return d.host != "" || d.domain != "" || d.vdev != "" }

// target checks that exactly one of an ID argument and the drive flags names the swap.
func (d *driveFlags) target(args []string) error {
	switch {
	case len(args) > 1:
		return usagef("expected one swap ID, got %d arguments", len(args))
	case len(args) == 1 && d.given():
		return usagef("give a swap ID or --host/--domain/--vdev, not both")
	case len(args) == 0 && !d.given():
		return usagef("give a swap ID, or --host, --domain and --vdev")
	case len(args) == 0 && (d.host == "" || d.domain == "" || d.vdev == ""):
		return usagef("--host, --domain and --vdev go together")
	case len(args) == 1:
		return checkID(args[0])
	}
	return checkDrive(d.host, d.domain, d.vdev)
}

// findSwap returns the id of the latest swap of a drive: by domid the id is known; by name
// it is looked up in visibility, through the search attributes every swap carries.
func (a *App) findSwap(ctx context.Context, c client.Client, d driveFlags) (string, error) {
	if domid, err := strconv.ParseUint(d.domain, 10, 32); err == nil {
		return workflows.WorkflowID(d.host, uint32(domid), d.vdev), nil
	}
	q := fmt.Sprintf("WorkflowType = %s AND CdswapHost = %s AND CdswapDomain = %s AND CdswapVdev = %s",
		quote(workflows.ChangeMediumName), quote(d.host), quote(d.domain), quote(d.vdev))
	resp, err := c.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{Namespace: a.cfg.NamespaceName(), Query: q, PageSize: 100})
	if err != nil {
		return "", fmt.Errorf("look up the swaps of drive %s of %s on host %s: %w", d.vdev, d.domain, d.host, err)
	}
	var id string
	var latest time.Time
	for _, info := range resp.GetExecutions() {
		if t := info.GetStartTime().AsTime(); id == "" || t.After(latest) {
			id, latest = info.GetExecution().GetWorkflowId(), t
		}
	}
	if id == "" {
		return "", &userError{msg: fmt.Sprintf("no swap of drive %s of %s on host %s is on record in namespace %s: check the names (cdswap list --host %s), or give the domid",
			d.vdev, d.domain, d.host, a.cfg.NamespaceName(), d.host)}
	}
	return id, nil
}

// swapHistory fetches the history of the swap that status and history name: the ID in args,
// or else the latest swap of the drive d names; runID, when set, picks an earlier run.
func (a *App) swapHistory(ctx context.Context, d driveFlags, args []string, runID string) (*History, error) {
	if err := d.target(args); err != nil {
		return nil, err
	}
	c, err := a.dial(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	id := ""
	if len(args) == 1 {
		id = args[0]
	} else if id, err = a.findSwap(ctx, c, d); err != nil {
		return nil, err
	}
	h, err := FetchHistory(ctx, c, id, runID)
	if err != nil {
		return nil, notFound(a.cfg, id, err)
	}
	return h, nil
}

// quote makes s a string literal of Temporal's visibility query language.
func quote(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

// notFound explains an id with no run.
func notFound(cfg ClientConfig, id string, err error) error {
	var nf *serviceerror.NotFound
	if !errors.As(err, &nf) {
		return err
	}
	return &userError{msg: fmt.Sprintf("no swap %s in namespace %s (or its history is past the namespace's retention): cdswap list shows recent ones",
		strconv.Quote(id), cfg.NamespaceName()), cause: err}
}
