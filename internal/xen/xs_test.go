package xen

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cdswap/cdswap/internal/testenv"
	"github.com/cdswap/cdswap/internal/xs"
	"github.com/cdswap/cdswap/internal/xs/xenstored"
)

// testCtx is a context that ends the test if something hangs.
func testCtx(t *testing.T) context.Context { return testenv.Context(t, 20*time.Second) }

// startXenstored runs the in-memory xenstored on a unix socket and returns it, the
// socket path and a client connected to it.
func startXenstored(t *testing.T) (*xenstored.Server, string, *xs.Client) {
	t.Helper()
	sock := filepath.Join(testenv.SocketDir(t), "xenstored.sock")
	srv := xenstored.New(xenstored.Config{})
	ln, err := xenstored.Listen(sock)
	if err != nil {
		t.Fatalf("xenstored.Listen(%s) = %v", sock, err)
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-served
	})
	c, err := xs.Dial(testCtx(t), sock)
	if err != nil {
		t.Fatalf("xs.Dial(%s) = %v", sock, err)
	}
	t.Cleanup(func() { c.Close() })
	return srv, sock, c
}

// mustWrite writes nodes given as path, value pairs.
func mustWrite(t *testing.T, c *xs.Client, kv ...string) {
	t.Helper()
	for i := 0; i+1 < len(kv); i += 2 {
		if err := c.Write(testCtx(t), kv[i], kv[i+1]); err != nil {
			t.Fatalf("Write(%s) = %v", kv[i], err)
		}
	}
}

// mustRead reads a node that must exist.
func mustRead(t *testing.T, c *xs.Client, p string) string {
	t.Helper()
	v, err := c.Read(testCtx(t), p)
	if err != nil {
		t.Fatalf("Read(%s) = %v", p, err)
	}
	return v
}

// exists says whether p exists.
func exists(t *testing.T, c *xs.Client, p string) bool {
	t.Helper()
	ok, err := c.Exists(testCtx(t), p)
	if err != nil {
		t.Fatalf("Exists(%s) = %v", p, err)
	}
	return ok
}

// node is one line of a tree dump.
type node struct{ path, value, perms string }

// dumpTree lists p and everything below it, children sorted by name.
func dumpTree(t *testing.T, ops xs.Ops, p string) []node {
	t.Helper()
	ctx := testCtx(t)
	v, err := ops.Read(ctx, p)
	if err != nil {
		t.Fatalf("Read(%s) = %v", p, err)
	}
	perms, err := ops.GetPerms(ctx, p)
	if err != nil {
		t.Fatalf("GetPerms(%s) = %v", p, err)
	}
	var ps []string
	for _, pm := range perms {
		ps = append(ps, pm.String())
	}
	out := []node{{p, v, strings.Join(ps, ",")}}
	kids, err := ops.Directory(ctx, p)
	if err != nil {
		t.Fatalf("Directory(%s) = %v", p, err)
	}
	slices.Sort(kids)
	for _, k := range kids {
		out = append(out, dumpTree(t, ops, p+"/"+k)...)
	}
	return out
}

func formatTree(nodes []node) string {
	var b strings.Builder
	for _, n := range nodes {
		b.WriteString(n.path + " = \"" + n.value + "\" (" + n.perms + ")\n")
	}
	return b.String()
}
