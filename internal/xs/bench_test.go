package xs_test

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/cdswap/cdswap/internal/testenv"
	"github.com/cdswap/cdswap/internal/xs"
)

const benchNode = "/local/domain/0/backend/vbd/5/5632/params"

// benchServer starts a server with benchNode set and returns its socket path.
func benchServer(b *testing.B) string {
	b.Helper()
	srv, path := startServer(b)
	if err := srv.Write(benchNode, "/srv/iso/debian-12.iso"); err != nil {
		b.Fatal(err)
	}
	return path
}

func benchClient(b *testing.B, path string) *xs.Client {
	b.Helper()
	c, err := xs.Dial(context.Background(), path)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return c
}

// BenchmarkReadRoundTrip is one READ at a time over one connection.
func BenchmarkReadRoundTrip(b *testing.B) {
	c := benchClient(b, benchServer(b))
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Read(ctx, benchNode); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWriteRoundTrip is one WRITE at a time over one connection.
func BenchmarkWriteRoundTrip(b *testing.B) {
	c := benchClient(b, benchServer(b))
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := c.Write(ctx, benchNode, "/srv/iso/debian-12.iso"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReadParallel shares one connection between GOMAXPROCS goroutines, so requests
// are pipelined and replies routed by req_id.
func BenchmarkReadParallel(b *testing.B) {
	c := benchClient(b, benchServer(b))
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.Read(ctx, benchNode); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkReadOneShotClient connects, reads once and disconnects per iteration: the Go
// side of the comparison with BenchmarkReadXenstoreReadCmd (minus the process start).
func BenchmarkReadOneShotClient(b *testing.B) {
	path := benchServer(b)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		c, err := xs.Dial(ctx, path)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.Read(ctx, benchNode); err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}

// BenchmarkReadXenstoreReadCmd runs Debian's xenstore-read (C libxenstore) against the same
// server, one process per read: what a shell script driving xenstore-utils pays.
func BenchmarkReadXenstoreReadCmd(b *testing.B) {
	read := testenv.RequireCommand(b, "xenstore-read", "xenstore-utils")
	path := benchServer(b)
	env := append(os.Environ(), "XENSTORED_PATH="+path)
	for b.Loop() {
		cmd := exec.Command(read, benchNode)
		cmd.Env = env
		out, err := cmd.Output()
		if err != nil {
			b.Fatal(err)
		}
		if strings.TrimSpace(string(out)) != "/srv/iso/debian-12.iso" {
			b.Fatalf("xenstore-read %s = %q", benchNode, out)
		}
	}
}
