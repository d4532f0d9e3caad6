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
	// gen is the global generation counter: every change takes the next value, so a node's
	// generation changes whenever the node is written, created, removed (it is then absent,
	// generation 0) or has its permissions set, and never comes back to an earlier value.
	gen uint64
}

func newStore() *store {
	st := &store{nodes: make(map[string]*node)}
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

func (d *direct) del(p string) {
	if _, ok := d.st.nodes[p]; ok {
		delete(d.st.nodes, p)
		d.st.next()
	}
}

func (d *direct) changed(ev event) { d.events = append(d.events, ev) }

// tx is an open transaction, kept as cxenstored keeps one since Xen 4.9
// (tools/xenstore/xenstored_transaction.c, now tools/xenstored/transaction.c): the first
// time the transaction looks at a node, whether to read, list, get permissions, change or
// remove it, and whether the node exists or not, it takes its own copy of the node and
// notes the node's generation. From then on it sees only its copy, its own changes included,
// whatever other connections do; nothing is shared with them until the commit. The commit
// fails with EAGAIN if any node it looked at has another generation by then (written,
// created, removed or given new permissions outside; a node it found absent and that is
// absent again compares equal, but finding it missing also read its parents, see lookup).
// What happened before the first look does not matter: the copy is taken from the tree as
// it is then. It is guarded by Server.mu.
type tx struct {
	id uint32
	st *store
	// nodes is the transaction's copy of every node it looked at: the committed node as it
	// was at the first look (shared: nodes are never changed in place) or what the
	// transaction made of it since; nil means absent.
	nodes map[string]*node
	// gens is the committed generation of every node in nodes at the first look (0: absent),
	// which the commit checks.
	gens map[string]uint64
	// dirty is the set of nodes the transaction wrote or removed, which the commit applies.
	dirty   map[string]struct{}
	events  []event
	eventAt map[string]int
}

func (st *store) begin(id uint32) *tx {
	return &tx{
		id:      id,
		st:      st,
		nodes:   make(map[string]*node),
		gens:    make(map[string]uint64),
		dirty:   make(map[string]struct{}),
		eventAt: make(map[string]int),
	}
}

// get returns the transaction's copy of p, taking it from the committed tree at the first
// look (access_node with NODE_ACCESS_READ in cxenstored).
func (t *tx) get(p string) *node {
	if n, seen := t.nodes[p]; seen {
		return n
	}
	n := t.st.nodes[p]
	var g uint64
	if n != nil {
		g = n.gen
	}
	t.nodes[p], t.gens[p] = n, g
	return n
}

func (t *tx) put(p string, n *node) {
	t.get(p)
	// A fresh generation, as cxenstored gives a node the transaction writes: DIRECTORY_PART
	// inside the transaction then sees its own change of a child list as a change.
	n.gen = t.st.next()
	t.nodes[p] = n
	t.dirty[p] = struct{}{}
}

func (t *tx) del(p string) {
	t.get(p)
	t.nodes[p] = nil
	t.dirty[p] = struct{}{}
}

func (t *tx) changed(ev event) {
	if i, ok := t.eventAt[ev.path]; ok {
		t.events[i].rm = t.events[i].rm || ev.rm
		return
	}
	t.eventAt[ev.path] = len(t.events)
	t.events = append(t.events, ev)
}

// conflict reports whether a node the transaction looked at changed outside it since
// (finalize_transaction's generation check in cxenstored).
func (t *tx) conflict() bool {
	for p, g := range t.gens {
		var cur uint64
		if n := t.st.nodes[p]; n != nil {
			cur = n.gen
		}
		if cur != g {
			return true
		}
	}
	return false
}

// apply makes t's changes visible and returns its events. The caller has checked conflict.
func (t *tx) apply() []event {
	d := &direct{st: t.st}
	for p := range t.dirty {
		if n := t.nodes[p]; n != nil {
			d.put(p, n)
		} else {
			d.del(p)
		}
	}
	return t.events
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

// lookup is cxenstored's get_node: when p is missing it goes on to read p's parents up to the
// first that exists (errno_from_parents, which decides whether the caller may learn that p
// is missing), so a transaction that finds a node missing has also looked at those parents.
func lookup(v view, p string) *node {
	n := v.get(p)
	for at := p; n == nil && at != "/"; {
		at = parent(at)
		if v.get(at) != nil {
			break
		}
	}
	return n
}

func read(v view, p string) ([]byte, error) {
	n := lookup(v, p)
	if n == nil {
		return nil, xs.ErrNotFound
	}
	return n.value, nil
}

func write(v view, p string, value []byte) {
	if n := lookup(v, p); n != nil {
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
	if lookup(v, p) != nil {
		return
	}
	create(v, p, nil)
	v.changed(event{path: p})
}

func rm(v view, p string) error {
	n := lookup(v, p)
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
	n := lookup(v, p)
	if n == nil {
		return nil, xs.ErrNotFound
	}
	return slices.Clone(n.children), nil
}

func getPerms(v view, p string) ([]xs.Perm, error) {
	n := lookup(v, p)
	if n == nil {
		return nil, xs.ErrNotFound
	}
	return slices.Clone(n.perms), nil
}

func setPerms(v view, p string, perms []xs.Perm) error {
	n := lookup(v, p)
	if n == nil {
		return xs.ErrNotFound
	}
	m := n.clone()
	m.perms = slices.Clone(perms)
	v.put(p, m)
	v.changed(event{path: p})
	return nil
}
