package xenstored

import (
	"fmt"
	"slices"
	"strings"

	"github.com/cdswap/cdswap/internal/xs"
)

// dom0Path is the base of relative paths for a dom0 connection (every socket connection).
const dom0Path = "/local/domain/0"

// Special watch paths invented by xenstored (docs/misc/xenstore.txt, "Watches"). They also
// exist as nodes that only GET_PERMS and SET_PERMS can reach, as in cxenstored.
const (
	specialIntroduce = "@introduceDomain"
	specialRelease   = "@releaseDomain"
)

// node is one xenstore node. A node reachable from the store or a transaction is never
// changed in place: an operation clones it, changes the clone and puts the clone back, so
// the store and open transactions can share unchanged nodes.
type node struct {
	value    []byte
	perms    []xs.Perm
	children []string // leaf names, in creation order, as cxenstored keeps them
	gen      uint64   // generation: a fresh value from store.gen at every change
}

func (n *node) clone() *node {
	return &node{
		value:    slices.Clone(n.value),
		perms:    slices.Clone(n.perms),
		children: slices.Clone(n.children),
		gen:      n.gen,
	}
}

// childBytes is the child list as cxenstored stores it and DIRECTORY sends it: each leaf
// name followed by a NUL.
func (n *node) childBytes() []byte {
	var b []byte
	for _, c := range n.children {
		b = append(b, c...)
		b = append(b, 0)
	}
	return b
}

// store is the committed tree. It is guarded by Server.mu.
type store struct {
	nodes map[string]*node
	// gen is the global generation counter: every change and every transaction start takes
	// the next value, so a node whose generation is above a transaction's start generation
	// changed after that transaction started.
	gen uint64
	// tombs remembers when a path was removed, while a transaction that started earlier is
	// still open, so that transaction can tell "absent all along" from "removed since I
	// started". Pruned when transactions end.
	tombs map[string]uint64
	// open is the set of open transactions of every connection.
	open map[*tx]struct{}
}

func newStore() *store {
	st := &store{
		nodes: make(map[string]*node),
		tombs: make(map[string]uint64),
		open:  make(map[*tx]struct{}),
	}
	root := []xs.Perm{{DomID: 0, Access: xs.AccessNone}}
	// Generation 0 means "absent" to a transaction, so even the first nodes take a fresh one.
	st.nodes["/"] = &node{perms: root, gen: st.next()}
	for _, p := range []string{specialIntroduce, specialRelease} {
		st.nodes[p] = &node{perms: slices.Clone(root), gen: st.next()}
	}
	v := &direct{st: st}
	// What cxenstored creates at start, then what xen-init-dom0 writes on a booted host.
	create(v, "/tool/xenstored", nil)
	create(v, dom0Path+"/domid", []byte("0"))
	create(v, dom0Path+"/name", []byte("Domain-0"))
	return st
}

func (st *store) next() uint64 {
	st.gen++
	return st.gen
}

// remove deletes one node (not its children) from the committed tree.
func (st *store) remove(p string) {
	if _, ok := st.nodes[p]; !ok {
		return
	}
	delete(st.nodes, p)
	g := st.next()
	if len(st.open) > 0 {
		st.tombs[p] = g
	}
}

// pruneTombs drops the removal records no open transaction can need any more.
func (st *store) pruneTombs() {
	if len(st.open) == 0 {
		clear(st.tombs)
		return
	}
	oldest := st.gen
	for t := range st.open {
		oldest = min(oldest, t.startGen)
	}
	for p, g := range st.tombs {
		if g <= oldest {
			delete(st.tombs, p)
		}
	}
}

// event is a change for the watches: a node was written, created, had its permissions set,
// or (rm) was removed with everything below it.
type event struct {
	path string
	rm   bool
}

// view is what the node operations work on: the committed tree directly, or a transaction.
// get's result must not be changed; put takes ownership of n.
type view interface {
	get(p string) *node
	put(p string, n *node)
	del(p string)
	changed(ev event)
}

// direct is the committed tree, changed in place; events are collected for firing after the
// operation.
type direct struct {
	st     *store
	events []event
}

func (d *direct) get(p string) *node { return d.st.nodes[p] }

func (d *direct) put(p string, n *node) {
	n.gen = d.st.next()
	d.st.nodes[p] = n
}

func (d *direct) del(p string) { d.st.remove(p) }

func (d *direct) changed(ev event) { d.events = append(d.events, ev) }

// tx is an open transaction. It is guarded by Server.mu.
type tx struct {
	id       uint32
	st       *store
	startGen uint64
	// overlay holds the nodes this transaction changed; a nil value means removed.
	overlay map[string]*node
	// accessed is the generation of every committed node this transaction read or wrote,
	// taken when it first looked at it (0: absent then). Commit checks them all.
	accessed map[string]uint64
	// stale is set when the transaction first looked at a node that had already changed
	// since the transaction started: it cannot commit.
	stale   bool
	events  []event
	eventAt map[string]int
}

func (st *store) begin(id uint32) *tx {
	t := &tx{
		id:       id,
		st:       st,
		startGen: st.next(),
		overlay:  make(map[string]*node),
		accessed: make(map[string]uint64),
		eventAt:  make(map[string]int),
	}
	st.open[t] = struct{}{}
	return t
}

// touch records the committed state of p the first time the transaction looks at it.
func (t *tx) touch(p string) *node {
	n := t.st.nodes[p]
	if _, seen := t.accessed[p]; seen {
		return n
	}
	var g uint64
	if n != nil {
		g = n.gen
		if g > t.startGen {
			t.stale = true
		}
	} else if t.st.tombs[p] > t.startGen {
		t.stale = true
	}
	t.accessed[p] = g
	return n
}

func (t *tx) get(p string) *node {
	if n, ok := t.overlay[p]; ok {
		return n
	}
	return t.touch(p)
}

func (t *tx) put(p string, n *node) {
	t.touch(p)
	n.gen = t.st.next()
	t.overlay[p] = n
}

func (t *tx) del(p string) {
	t.touch(p)
	t.overlay[p] = nil
}

func (t *tx) changed(ev event) {
	if i, ok := t.eventAt[ev.path]; ok {
		t.events[i].rm = t.events[i].rm || ev.rm
		return
	}
	t.eventAt[ev.path] = len(t.events)
	t.events = append(t.events, ev)
}

// conflict reports whether committing t now would lose another writer's change.
func (t *tx) conflict() bool {
	if t.stale {
		return true
	}
	for p, g := range t.accessed {
		var cur uint64
		if n := t.st.nodes[p]; n != nil {
			cur = n.gen
		}
		if cur != g {
			return true
		}
		if g == 0 && t.st.tombs[p] > t.startGen {
			return true // created and removed again by someone else meanwhile
		}
	}
	return false
}

// apply makes t's changes visible and returns its events. The caller has checked conflict.
func (t *tx) apply() []event {
	for p, n := range t.overlay {
		if n == nil {
			t.st.remove(p)
			continue
		}
		n.gen = t.st.next()
		t.st.nodes[p] = n
	}
	return t.events
}

// end closes t, committed or not.
func (t *tx) end() {
	delete(t.st.open, t)
	t.st.pruneTombs()
}

// parent returns the parent path of an absolute, non-root path.
func parent(p string) string {
	i := strings.LastIndexByte(p, '/')
	if i <= 0 {
		return "/"
	}
	return p[:i]
}

func base(p string) string { return p[strings.LastIndexByte(p, '/')+1:] }

func join(dir, leaf string) string {
	if dir == "/" {
		return "/" + leaf
	}
	return dir + "/" + leaf
}

// canonical turns a request path into the absolute path the store uses: relative paths are
// below /local/domain/0, as for any dom0 connection. special allows the '@' watch names.
func canonical(p string, special bool) (string, error) {
	if err := xs.ValidatePath(p); err != nil {
		return "", fmt.Errorf("%w (%w)", xs.ErrInvalid, err)
	}
	switch {
	case p[0] == '@':
		if !special {
			return "", fmt.Errorf("%w: %q names a special watch, not a node", xs.ErrInvalid, p)
		}
		return p, nil
	case p[0] != '/':
		p = dom0Path + "/" + p
		if len(p) > xs.AbsPathMax {
			return "", fmt.Errorf("%w: path of %d bytes is over %d", xs.ErrInvalid, len(p), xs.AbsPathMax)
		}
	}
	return p, nil
}

// Node operations, shared by the wire handlers and the in-process helpers. Paths are
// canonical. They check everything before they change anything, so a failed operation
// leaves the view as it was.

func read(v view, p string) ([]byte, error) {
	n := v.get(p)
	if n == nil {
		return nil, xs.ErrNotFound
	}
	return n.value, nil
}

func write(v view, p string, value []byte) {
	if n := v.get(p); n != nil {
		m := n.clone()
		m.value = value
		v.put(p, m)
	} else {
		create(v, p, value)
	}
	v.changed(event{path: p})
}

// create makes p and its missing parents; each new node inherits its parent's permissions.
func create(v view, p string, value []byte) {
	missing := []string{p}
	at := parent(p)
	var pn *node
	for {
		if pn = v.get(at); pn != nil || at == "/" {
			break
		}
		missing = append(missing, at)
		at = parent(at)
	}
	if pn == nil {
		pn = &node{perms: []xs.Perm{{Access: xs.AccessNone}}} // "/" is never removed
	}
	pn = pn.clone()
	for i := len(missing) - 1; i >= 0; i-- {
		pn.children = append(pn.children, base(missing[i]))
		v.put(at, pn)
		at, pn = missing[i], &node{perms: slices.Clone(pn.perms)}
	}
	pn.value = value
	v.put(at, pn)
}

func mkdir(v view, p string) {
	if v.get(p) != nil {
		return
	}
	create(v, p, nil)
	v.changed(event{path: p})
}

func rm(v view, p string) error {
	n := v.get(p)
	if n == nil {
		if p != "/" && v.get(parent(p)) != nil {
			return nil
		}
		return xs.ErrNotFound
	}
	if p == "/" {
		return fmt.Errorf("%w: the root cannot be removed", xs.ErrInvalid)
	}
	removeTree(v, p, n)
	if pn := v.get(parent(p)); pn != nil {
		m := pn.clone()
		m.children = slices.DeleteFunc(m.children, func(c string) bool { return c == base(p) })
		v.put(parent(p), m)
	}
	v.changed(event{path: p, rm: true})
	return nil
}

func removeTree(v view, p string, n *node) {
	for _, c := range n.children {
		cp := join(p, c)
		if cn := v.get(cp); cn != nil {
			removeTree(v, cp, cn)
		}
	}
	v.del(p)
}

func directory(v view, p string) ([]string, error) {
	n := v.get(p)
	if n == nil {
		return nil, xs.ErrNotFound
	}
	return slices.Clone(n.children), nil
}

func getPerms(v view, p string) ([]xs.Perm, error) {
	n := v.get(p)
	if n == nil {
		return nil, xs.ErrNotFound
	}
	return slices.Clone(n.perms), nil
}

func setPerms(v view, p string, perms []xs.Perm) error {
	n := v.get(p)
	if n == nil {
		return xs.ErrNotFound
	}
	m := n.clone()
	m.perms = slices.Clone(perms)
	v.put(p, m)
	v.changed(event{path: p})
	return nil
}
