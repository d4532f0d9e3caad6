package activities

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cdswap/cdswap/internal/xen"
	"github.com/cdswap/cdswap/internal/xs"
)

// Record updates libxl's xenstore records and JSON config of the drive (see RecordInput).
//
// A domain without a JSON config (one not created by libxl's xl) is logged and left alone:
// its xenstore records are all there is.
func (a *Activities) Record(ctx context.Context, in RecordInput) (RecordResult, error) {
	d := in.Drive
	log := a.driveLogger(ctx, NameRecord, d)
	if err := checkDrive(ctx, d, KindStubdom, KindDom0); err != nil {
		return RecordResult{}, err
	}
	format := ""
	if in.Medium != "" {
		f, ok := normalizeFormat(in.Format)
		if !ok {
			return RecordResult{}, NewError(ctx, ErrFormatMismatch, false, nil, "format %q is not one cdswap can insert: use %s", in.Format, formatNames)
		}
		format = f
	}
	if err := a.ensureLock(ctx, in.Key, d.DomID); err != nil {
		return RecordResult{}, err
	}
	info, err := a.domainInfo(ctx, d.DomID)
	if err != nil {
		return RecordResult{}, err
	}
	xsChanged, err := a.recordXenstore(ctx, d, in.Params)
	if err != nil {
		return RecordResult{}, err
	}
	cfgChanged, err := a.recordConfig(ctx, d, info, in.Medium, format)
	if err != nil {
		return RecordResult{}, err
	}
	log.Info("Recorded the medium in libxl's records", "params", in.Params, "medium", in.Medium, "format", format,
		"xenstore_changed", xsChanged, "config_changed", cfgChanged)
	return RecordResult{Meta: NewMeta(ctx), Changed: xsChanged || cfgChanged}, nil
}

// recordXenstore writes "type" and "params" of the drive's vbd on its backend and /libxl
// paths in one transaction, after checking <libxl path>/frontend (XSA-178: libxl trusts its
// own tree, never the backend's).
func (a *Activities) recordXenstore(ctx context.Context, d Drive, params string) (bool, error) {
	lp := xen.LibxlPath(d.diskDom(), d.DevID)
	changed := false
	err := a.withXS(ctx, func(c *xs.Client) error {
		return c.Update(ctx, func(tx *xs.Tx) error {
			changed = false
			if _, err := tx.Read(ctx, lp+"/frontend"); err != nil {
				if errors.Is(err, xs.ErrNotFound) {
					return NewError(ctx, ErrNoSuchDrive, false, err,
						"%s/frontend does not exist: the drive's vbd is gone from domain %d, so there is nothing to record; the drive needs attaching again (see `cdswap history`)", lp, d.diskDom())
				}
				return fmt.Errorf("read %s/frontend: %w", lp, err)
			}
			be, err := tx.Read(ctx, lp+"/backend")
			if err != nil {
				return fmt.Errorf("read %s/backend: %w", lp, err)
			}
			typ := d.BackendType
			if typ == "" {
				if typ, err = xen.ReadOptional(ctx, tx, lp+"/type"); err != nil {
					return err
				}
			}
			for _, dir := range []string{be, lp} {
				for _, kv := range [][2]string{{"type", typ}, {"params", params}} {
					p := dir + "/" + kv[0]
					cur, err := tx.Read(ctx, p)
					if err == nil && cur == kv[1] {
						continue
					}
					if err != nil && !errors.Is(err, xs.ErrNotFound) {
						return fmt.Errorf("read %s: %w", p, err)
					}
					if err := tx.Write(ctx, p, kv[1]); err != nil {
						return fmt.Errorf("write %s: %w", p, err)
					}
					changed = true
				}
			}
			return nil
		})
	})
	return changed, err
}

// recordConfig puts the medium into the drive's disk entry of the guest's libxl JSON config,
// under libxl's domain-userdata-lock, by writing a new file and renaming it into place.
func (a *Activities) recordConfig(ctx context.Context, d Drive, info xen.DomainInfo, medium, format string) (bool, error) {
	log := a.driveLogger(ctx, NameRecord, d)
	p := xen.ConfigPath(a.cfg.LibxlDir, d.DomID, info.UUID)
	if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
		log.Warn("The domain has no libxl JSON config (not created by xl?): only xenstore was updated", "config", p)
		return false, nil
	}
	lp := xen.UserdataLockPath(a.cfg.LibxlDir, d.DomID, info.UUID)
	lctx, cancel := context.WithTimeout(ctx, a.cfg.LockWait)
	l, err := xen.Lock(lctx, lp)
	cancel()
	if err != nil {
		if ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
			return false, NewError(ctx, ErrLockBusy, true, err,
				"libxl's domain-userdata-lock of domain %d (%s) is held by another process (xl, libvirt): retried", d.DomID, lp)
		}
		return false, err
	}
	defer func() { _ = l.Unlock() }() // the fd closes either way; the record's outcome is what counts

	raw, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		log.Warn("The domain's libxl JSON config vanished: only xenstore was updated", "config", p)
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read %s: %w", p, err)
	}
	out, changed, err := setCDROM(raw, d.Vdev, medium, format)
	if err != nil {
		return false, fmt.Errorf("update %s: %w", p, err)
	}
	if !changed {
		return false, nil
	}
	if err := writeFileAtomic(p, out); err != nil {
		return false, err
	}
	return true, nil
}

// setCDROM returns the libxl JSON config raw with the disk entry of vdev holding medium
// (pdev_path) of format (the QEMU name; "" for an empty drive), and whether that changed
// anything. The order and content of everything else is kept.
func setCDROM(raw []byte, vdev, medium, format string) ([]byte, bool, error) {
	var cfg object
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return nil, false, fmt.Errorf("parse: %w", err)
	}
	disksRaw, ok := cfg.get("disks")
	if !ok {
		return nil, false, fmt.Errorf("no \"disks\" in the config: no entry for %s", vdev)
	}
	var disks []object
	if err := json.Unmarshal(disksRaw, &disks); err != nil {
		return nil, false, fmt.Errorf("parse \"disks\": %w", err)
	}
	jsonFormat := jsonEmptyFormat
	if medium != "" {
		jsonFormat = formats[format].json
	}
	found, changed := false, false
	for i := range disks {
		var v string
		if r, ok := disks[i].get("vdev"); !ok || json.Unmarshal(r, &v) != nil || v != vdev {
			continue
		}
		found = true
		if medium == "" {
			changed = disks[i].del("pdev_path") || changed
		} else {
			changed = disks[i].set("pdev_path", medium) || changed
		}
		changed = disks[i].set("format", jsonFormat) || changed
	}
	if !found {
		return nil, false, fmt.Errorf("no disk entry with vdev %q", vdev)
	}
	if !changed {
		return raw, false, nil
	}
	b, err := json.Marshal(disks)
	if err != nil {
		return nil, false, err
	}
	cfg.setRaw("disks", b)
	flat, err := json.Marshal(cfg)
	if err != nil {
		return nil, false, err
	}
	var out bytes.Buffer
	if err := json.Indent(&out, flat, "", "    "); err != nil {
		return nil, false, err
	}
	out.WriteByte('\n')
	return out.Bytes(), true, nil
}

// writeFileAtomic replaces p with b: a new file in the same folder, synced, renamed over p,
// with p's permissions.
func writeFileAtomic(p string, b []byte) error {
	mode := os.FileMode(0o600)
	if fi, err := os.Stat(p); err == nil {
		mode = fi.Mode().Perm()
	}
	f, err := os.CreateTemp(filepath.Dir(p), filepath.Base(p)+".cdswap-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", p, err)
	}
	tmp := f.Name()
	fail := func(err error) error {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", p, err)
	}
	if _, err := f.Write(b); err != nil {
		return fail(err)
	}
	if err := f.Chmod(mode); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, p); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", p, err)
	}
	return nil
}

// trustedOld reports whether libxl's records say the guest already had medium p: the drive's
// disk entry in its JSON config, the /libxl record of the drive's vbd, or (stubdom) of the
// guest's own vbd, which libxl's stubdom path leaves alone. Such a medium may be put back by
// a restore even if it lies outside the ISO roots: the guest saw it before this change.
func (a *Activities) trustedOld(ctx context.Context, d Drive, info xen.DomainInfo, p string) bool {
	p = filepath.Clean(p)
	if raw, err := os.ReadFile(xen.ConfigPath(a.cfg.LibxlDir, d.DomID, info.UUID)); err == nil {
		disks, _ := xen.ConfigDisks(raw) // an unreadable config vouches for nothing
		for _, disk := range disks {
			if disk.Vdev == d.Vdev && disk.PdevPath != "" && filepath.Clean(disk.PdevPath) == p {
				return true
			}
		}
	}
	doms := []uint32{d.DomID}
	if d.Kind == KindStubdom {
		doms = append(doms, d.StubDomID)
	}
	for _, dom := range doms {
		var v xen.VBD
		err := a.withXS(ctx, func(c *xs.Client) error {
			var err error
			v, err = xen.ReadVBD(ctx, c, dom, d.DevID)
			return err
		})
		if err == nil && v.Path() != "" && filepath.Clean(v.Path()) == p {
			return true
		}
	}
	return false
}

// object is a JSON object that keeps its members' order, so that rewriting libxl's config
// changes only what cdswap changes.
type object []member

type member struct {
	key   string
	value json.RawMessage
}

func (o object) get(k string) (json.RawMessage, bool) {
	for _, m := range o {
		if m.key == k {
			return m.value, true
		}
	}
	return nil, false
}

// set sets member k to the JSON string v, appending it if absent; it reports a change.
func (o *object) set(k, v string) bool {
	b, _ := json.Marshal(v)
	if cur, ok := o.get(k); ok && bytes.Equal(bytes.TrimSpace(cur), b) {
		return false
	}
	o.setRaw(k, b)
	return true
}

func (o *object) setRaw(k string, b json.RawMessage) {
	for i := range *o {
		if (*o)[i].key == k {
			(*o)[i].value = b
			return
		}
	}
	*o = append(*o, member{k, b})
}

// del removes member k; it reports whether there was one.
func (o *object) del(k string) bool {
	for i := range *o {
		if (*o)[i].key == k {
			*o = append((*o)[:i], (*o)[i+1:]...)
			return true
		}
	}
	return false
}

// UnmarshalJSON reads an object member by member.
func (o *object) UnmarshalJSON(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	t, err := dec.Token()
	if err != nil {
		return err
	}
	if d, ok := t.(json.Delim); !ok || d != '{' {
		return fmt.Errorf("want a JSON object, got %v", t)
	}
	*o = nil
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return err
		}
		k, ok := t.(string)
		if !ok {
			return fmt.Errorf("want a member name, got %v", t)
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return err
		}
		*o = append(*o, member{k, v})
	}
	_, err = dec.Token()
	return err
}

// MarshalJSON writes the members in order.
func (o object) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, m := range o {
		if i > 0 {
			b.WriteByte(',')
		}
		k, err := json.Marshal(m.key)
		if err != nil {
			return nil, err
		}
		b.Write(k)
		b.WriteByte(':')
		b.Write(m.value)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}
