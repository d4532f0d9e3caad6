package cli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	taskqueuepb "go.temporal.io/api/taskqueue/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"

	"github.com/cdswap/cdswap/activities"
	"github.com/cdswap/cdswap/internal/plan"
	"github.com/cdswap/cdswap/workflows"
)

// selectors pick drives on the hosts themselves, through their inventories.
type selectors struct {
	hosts   []string // --hosts; "all" = every host whose worker polls
	holding string   // --holding: the drive holds this medium now
	domain  string   // --domain: a glob on the guest's name
	vdev    string   // --vdev
	medium  string   // --medium: the new medium
	format  string   // --format
	eject   bool     // --eject
}

// inventoryParallel bounds the Inventory runs in flight.
const inventoryParallel = 8

// refusal is a drive, or a row of a plan, that no batch may start with.
type refusal struct {
	Line   int    `json:"line,omitempty"`
	Host   string `json:"host"`
	Domain string `json:"domain,omitempty"`
	Vdev   string `json:"vdev,omitempty"`
	Reason string `json:"reason"`
}

func (r refusal) String() string {
	what := "host " + esc(r.Host)
	if r.Domain != "" {
		what = fmt.Sprintf("drive %s of %s on host %s", esc(r.Vdev), esc(r.Domain), esc(r.Host))
	}
	if r.Line > 0 {
		return fmt.Sprintf("line %d: %s: %s", r.Line, what, clean(r.Reason))
	}
	return what + ": " + clean(r.Reason)
}

// inventories runs Inventory on every host at once (at most inventoryParallel), each
// checking media; a host without a worker is a refusal.
func (a *App) inventories(ctx context.Context, c client.Client, media map[string][]activities.MediumSpec) (map[string]activities.InventoryResult, map[string]string, error) {
	hosts := slices.Sorted(func(yield func(string) bool) {
		for h := range media {
			if !yield(h) {
				return
			}
		}
	})
	var mu sync.Mutex
	out := map[string]activities.InventoryResult{}
	bad := map[string]string{}
	var firstErr error
	sem := make(chan struct{}, inventoryParallel)
	var wg sync.WaitGroup
	nonce := newNonce()
	for _, h := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			res, why, err := a.inventory(ctx, c, h, media[h], nonce)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil && firstErr == nil:
				firstErr = err
			case why != "":
				bad[h] = why
			default:
				out[h] = res
			}
		}()
	}
	wg.Wait()
	return out, bad, firstErr
}

// inventory runs one host's Inventory; why says why the host cannot take part.
func (a *App) inventory(ctx context.Context, c client.Client, host string, media []activities.MediumSpec, nonce string) (activities.InventoryResult, string, error) {
	if err := a.checkPollers(ctx, c, host); err != nil {
		var ue *userError
		if errors.As(err, &ue) {
			return activities.InventoryResult{}, fmt.Sprintf("no cdswap-worker polls host %s: check the name, or start cdswap-worker --host %s there", host, host), nil
		}
		return activities.InventoryResult{}, "", err
	}
	var res activities.InventoryResult
	run, err := c.ExecuteWorkflow(ctx, workflows.InventoryStartOptions(host, nonce), workflows.InventoryName,
		activities.InventoryInput{Host: host, Media: media})
	if err == nil {
		err = run.Get(ctx, &res)
	}
	switch {
	case err == nil:
		return res, "", nil
	case ctx.Err() != nil:
		return res, "", ctx.Err()
	case workflows.IsNoWorker(err):
		return res, fmt.Sprintf("no cdswap-worker answered for host %s: start cdswap-worker --host %s there", host, host), nil
	}
	return res, "", &userError{msg: fmt.Sprintf("inventory of host %s: %s", esc(host), workflowMessage(err)), cause: err}
}

// newNonce is a short random id part.
func newNonce() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// newBatchID is a fresh batch id: readable, sortable by time, unique.
func newBatchID(now time.Time) string {
	return "cdswap-batch-" + now.UTC().Format("20060102-150405") + "-" + newNonce()
}

// pollingHosts lists the hosts whose workers poll now: every cdswap-worker polls the
// batch queue as "cdswap-worker@<host>:<pid>".
func (a *App) pollingHosts(ctx context.Context, c client.Client) ([]string, error) {
	resp, err := c.WorkflowService().DescribeTaskQueue(ctx, &workflowservice.DescribeTaskQueueRequest{
		Namespace: a.cfg.NamespaceName(),
		TaskQueue: &taskqueuepb.TaskQueue{Name: workflows.BatchTaskQueue, Kind: enumspb.TASK_QUEUE_KIND_NORMAL},
	})
	if err != nil {
		return nil, fmt.Errorf("list the hosts whose workers poll (task queue %s): %w", workflows.BatchTaskQueue, err)
	}
	seen := map[string]bool{}
	var hosts []string
	for _, p := range resp.GetPollers() {
		id, ok := strings.CutPrefix(p.GetIdentity(), "cdswap-worker@")
		if !ok {
			continue
		}
		if i := strings.LastIndexByte(id, ':'); i > 0 {
			id = id[:i]
		}
		if workflows.ValidateHost(id) == nil && !seen[id] {
			seen[id] = true
			hosts = append(hosts, id)
		}
	}
	slices.Sort(hosts)
	if len(hosts) == 0 {
		return nil, &userError{msg: "no cdswap-worker polls any host: start cdswap-worker on the hosts, or name them with --hosts"}
	}
	return hosts, nil
}

// mediumCheck finds the check of (medium, format) for a drive of kind k.
func mediumCheck(inv activities.InventoryResult, medium, format string, k activities.Kind) (activities.MediumCheck, bool) {
	if format == "" {
		format = activities.FormatRaw
	}
	for _, m := range inv.Media {
		if m.Medium == medium && m.Format == format && m.Kind == k {
			return m, true
		}
	}
	return activities.MediumCheck{}, false
}

// refuseDrive says why drive d of inv cannot take medium ("" = eject), "" if it can.
func refuseDrive(inv activities.InventoryResult, d activities.InventoryDrive, medium, format string) string {
	if d.Refusal != "" {
		return d.Refusal
	}
	if medium == "" {
		return ""
	}
	mc, ok := mediumCheck(inv, medium, format, d.Kind)
	if !ok {
		return "the host did not check the medium (a cdswap-worker of another version?)"
	}
	return mc.Error
}

// resolvePlan checks a plan's rows against the hosts' inventories: it returns the drives
// of the batch, or the refusals (every row at fault, by line).
func (a *App) resolvePlan(ctx context.Context, c client.Client, rows []plan.Row) ([]workflows.FleetDrive, []refusal, error) {
	media := map[string][]activities.MediumSpec{}
	for _, r := range rows {
		specs := media[r.Host]
		if r.Medium != "" {
			spec := activities.MediumSpec{Medium: r.Medium, Format: r.Format}
			if !slices.Contains(specs, spec) {
				specs = append(specs, spec)
			}
		}
		media[r.Host] = specs
	}
	invs, badHosts, err := a.inventories(ctx, c, media)
	if err != nil {
		return nil, nil, err
	}
	var drives []workflows.FleetDrive
	var refused []refusal
	first := map[string]int{}
	for _, r := range rows {
		ref := refusal{Line: r.Line, Host: r.Host, Domain: r.Domain, Vdev: r.Vdev}
		if why, bad := badHosts[r.Host]; bad {
			ref.Domain, ref.Reason = "", why
			refused = append(refused, ref)
			continue
		}
		inv := invs[r.Host]
		d, why := findDrive(inv, r.Domain, r.Vdev)
		if why == "" {
			why = refuseDrive(inv, d, r.Medium, r.Format)
		}
		if why != "" {
			ref.Reason = why
			refused = append(refused, ref)
			continue
		}
		key := workflows.WorkflowID(r.Host, d.DomID, d.Vdev)
		if line, dup := first[key]; dup {
			ref.Reason = fmt.Sprintf("the same drive as line %d (domain %s is domid %d): a drive can change once per batch; remove one of the lines", line, d.Name, d.DomID)
			refused = append(refused, ref)
			continue
		}
		first[key] = r.Line
		drives = append(drives, workflows.FleetDrive{Line: r.Line, Host: r.Host, Domain: orName(d), DomID: d.DomID, Vdev: d.Vdev,
			Medium: r.Medium, Format: r.Format, Old: d.Medium})
	}
	return drives, refused, nil
}

func orName(d activities.InventoryDrive) string {
	if d.Name != "" {
		return d.Name
	}
	return strconv.FormatUint(uint64(d.DomID), 10)
}

// findDrive finds the drive of a plan row in a host's inventory.
func findDrive(inv activities.InventoryResult, domain, vdev string) (activities.InventoryDrive, string) {
	var cdroms []string
	found := false
	for _, d := range inv.Drives {
		if d.Name != domain && strconv.FormatUint(uint64(d.DomID), 10) != domain {
			continue
		}
		found = true
		if d.Vdev == vdev {
			return d, ""
		}
		cdroms = append(cdroms, d.Vdev)
	}
	if !found {
		return activities.InventoryDrive{}, fmt.Sprintf("host %s has no guest %s (by name or domid): check `xl list` on %s", inv.Host, domain, inv.Host)
	}
	return activities.InventoryDrive{}, fmt.Sprintf("guest %s has no CD-ROM drive %s: its CD-ROM drives are %s", domain, vdev, strings.Join(cdroms, ", "))
}

// resolveSelectors picks the drives the selectors name on the hosts; refusals are the
// drives selected that the hosts would refuse.
func (a *App) resolveSelectors(ctx context.Context, c client.Client, s selectors) ([]workflows.FleetDrive, []refusal, error) {
	hosts := s.hosts
	if len(hosts) == 1 && hosts[0] == "all" {
		var err error
		if hosts, err = a.pollingHosts(ctx, c); err != nil {
			return nil, nil, err
		}
	}
	media := map[string][]activities.MediumSpec{}
	for _, h := range hosts {
		media[h] = nil
		if !s.eject {
			media[h] = []activities.MediumSpec{{Medium: s.medium, Format: s.format}}
		}
	}
	invs, badHosts, err := a.inventories(ctx, c, media)
	if err != nil {
		return nil, nil, err
	}
	var drives []workflows.FleetDrive
	var refused []refusal
	for _, h := range hosts {
		if why, bad := badHosts[h]; bad {
			refused = append(refused, refusal{Host: h, Reason: why})
			continue
		}
		inv := invs[h]
		for _, d := range inv.Drives {
			if !s.selects(d) {
				continue
			}
			medium := s.medium
			if s.eject {
				medium = ""
			}
			if why := refuseDrive(inv, d, medium, s.format); why != "" {
				refused = append(refused, refusal{Host: h, Domain: orName(d), Vdev: d.Vdev, Reason: why})
				continue
			}
			drives = append(drives, workflows.FleetDrive{Host: h, Domain: orName(d), DomID: d.DomID, Vdev: d.Vdev,
				Medium: medium, Format: s.format, Old: d.Medium})
		}
	}
	return drives, refused, nil
}

// selects reports whether the selectors pick drive d.
func (s selectors) selects(d activities.InventoryDrive) bool {
	if s.vdev != "" && d.Vdev != s.vdev {
		return false
	}
	if s.domain != "" {
		if ok, _ := path.Match(s.domain, d.Name); !ok {
			return false
		}
	}
	if s.holding != "" && d.Medium != s.holding {
		return false
	}
	return true
}
