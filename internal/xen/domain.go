package xen

import (
	"context"
	"errors"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/cdswap/cdswap/internal/xs"
)

// ErrNoSuchDomain is returned when no domain has the asked name or domid.
var ErrNoSuchDomain = errors.New("no such domain")

// DomainInfo is what cdswap needs to know about a domain, read from xenstore.
type DomainInfo struct {
	DomID uint32
	// Name is /local/domain/<domid>/name; "" if absent.
	Name string
	// UUID is the domain's uuid in libxl's lower-case form, from /vm/<uuid>/uuid or else
	// the last part of the /vm/<uuid> path in /local/domain/<domid>/vm; "" if neither is
	// there. It names the domain's userdata files (UserdataPath).
	UUID string
	// DMVersion is /libxl/<domid>/dm-version: DMQemuXen, DMQemuXenTraditional, or "" when
	// the node is absent (PV guests, dom0; libxl would assume qemu_xen_traditional).
	DMVersion string
	// StubDomID is the domid of the stubdom running the domain's device model
	// (/local/domain/<domid>/image/device-model-domid), 0 when QEMU runs in dom0 or there
	// is none.
	StubDomID uint32
	// Target is the guest this domain serves when it is a stubdom
	// (/local/domain/<domid>/target), else 0.
	Target uint32
}

// ReadDomainInfo reads the DomainInfo of domid. It fails with ErrNoSuchDomain when
// /local/domain/<domid> does not exist.
func ReadDomainInfo(ctx context.Context, ops xs.Ops, domid uint32) (DomainInfo, error) {
	info := DomainInfo{DomID: domid}
	ok, err := ops.Exists(ctx, DomainPath(domid))
	if err != nil {
		return info, fmt.Errorf("read domain %d: %w", domid, err)
	}
	if !ok {
		return info, fmt.Errorf("read domain %d: %s is absent: %w", domid, DomainPath(domid), ErrNoSuchDomain)
	}
	if info.Name, err = ReadOptional(ctx, ops, NamePath(domid)); err != nil {
		return info, err
	}
	if info.UUID, err = readUUID(ctx, ops, domid); err != nil {
		return info, err
	}
	if info.DMVersion, err = ReadOptional(ctx, ops, DMVersionPath(domid)); err != nil {
		return info, err
	}
	if info.StubDomID, err = readDomID(ctx, ops, DeviceModelDomIDPath(domid)); err != nil {
		return info, err
	}
	if info.Target, err = readDomID(ctx, ops, StubTargetPath(domid)); err != nil {
		return info, err
	}
	return info, nil
}

// ReadOptional reads the optional node p, as libxl__xs_read_checked does: "" for an absent
// node; any other failure is an error naming p. ops may be a *xs.Tx.
func ReadOptional(ctx context.Context, ops xs.Ops, p string) (string, error) {
	v, err := ops.Read(ctx, p)
	if errors.Is(err, xs.ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read %s: %w", p, err)
	}
	return v, nil
}

// readDomID reads a domid node, with 0 for an absent or empty one.
func readDomID(ctx context.Context, ops xs.Ops, p string) (uint32, error) {
	v, err := ReadOptional(ctx, ops, p)
	if err != nil || v == "" {
		return 0, err
	}
	n, err := strconv.ParseUint(v, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("read %s: %q is not a domid", p, v)
	}
	return uint32(n), nil
}

func readUUID(ctx context.Context, ops xs.Ops, domid uint32) (string, error) {
	vm, err := ReadOptional(ctx, ops, VMPath(domid))
	if err != nil || vm == "" {
		return "", err
	}
	if xs.ValidatePath(vm) == nil && strings.HasPrefix(vm, "/") {
		u, err := ReadOptional(ctx, ops, vm+"/uuid")
		if err != nil {
			return "", err
		}
		if u != "" {
			return strings.ToLower(u), nil
		}
	}
	return strings.ToLower(path.Base(vm)), nil
}

// knownShown bounds how many domains an ErrNoSuchDomain message lists.
const knownShown = 8

// FindDomain finds a domain as xl does: a decimal number is a domid, anything else a
// name. It fails with ErrNoSuchDomain, naming what was asked and a few known domains, when
// nothing matches, and with an error listing the domids when a name is not unique.
func FindDomain(ctx context.Context, ops xs.Ops, nameOrID string) (DomainInfo, error) {
	if nameOrID == "" {
		return DomainInfo{}, fmt.Errorf("find domain: empty name: %w", ErrNoSuchDomain)
	}
	ids, err := listDomIDs(ctx, ops)
	if err != nil {
		return DomainInfo{}, fmt.Errorf("find domain %q: %w", nameOrID, err)
	}
	if n, err := strconv.ParseUint(nameOrID, 10, 32); err == nil {
		if slices.Contains(ids, uint32(n)) {
			return ReadDomainInfo(ctx, ops, uint32(n))
		}
		return DomainInfo{}, notFound(ctx, ops, nameOrID, ids)
	}
	var matches []DomainInfo
	for _, id := range ids {
		name, err := ReadOptional(ctx, ops, NamePath(id))
		if err != nil {
			return DomainInfo{}, fmt.Errorf("find domain %q: %w", nameOrID, err)
		}
		if name == nameOrID {
			info, err := ReadDomainInfo(ctx, ops, id)
			if errors.Is(err, ErrNoSuchDomain) {
				continue // destroyed while we looked
			}
			if err != nil {
				return DomainInfo{}, fmt.Errorf("find domain %q: %w", nameOrID, err)
			}
			matches = append(matches, info)
		}
	}
	switch len(matches) {
	case 0:
		return DomainInfo{}, notFound(ctx, ops, nameOrID, ids)
	case 1:
		return matches[0], nil
	}
	var s []string
	for _, m := range matches {
		s = append(s, strconv.FormatUint(uint64(m.DomID), 10))
	}
	return DomainInfo{}, fmt.Errorf("find domain %q: the name is used by domids %s; give a domid", nameOrID, strings.Join(s, ", "))
}

// listDomIDs lists /local/domain, ignoring entries that are not domids, in domid order.
func listDomIDs(ctx context.Context, ops xs.Ops) ([]uint32, error) {
	names, err := ops.Directory(ctx, "/local/domain")
	if errors.Is(err, xs.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list /local/domain: %w", err)
	}
	var ids []uint32
	for _, n := range names {
		if id, err := strconv.ParseUint(n, 10, 32); err == nil {
			ids = append(ids, uint32(id))
		}
	}
	slices.Sort(ids)
	return ids, nil
}

// notFound builds the ErrNoSuchDomain error, listing up to knownShown domains as
// "name (domid)" so the user sees what to type.
func notFound(ctx context.Context, ops xs.Ops, asked string, ids []uint32) error {
	var known []string
	for i, id := range ids {
		if i == knownShown {
			known = append(known, fmt.Sprintf("and %d more", len(ids)-knownShown))
			break
		}
		name, err := ReadOptional(ctx, ops, NamePath(id))
		if err != nil || name == "" {
			name = "?"
		}
		known = append(known, fmt.Sprintf("%s (%d)", name, id))
	}
	if len(known) == 0 {
		return fmt.Errorf("find domain %q: /local/domain lists no domain: %w", asked, ErrNoSuchDomain)
	}
	return fmt.Errorf("find domain %q (known: %s): %w", asked, strings.Join(known, ", "), ErrNoSuchDomain)
}
