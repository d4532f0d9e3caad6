package qmp_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cdswap/cdswap/internal/qmp"
)

// benchClient dials the peer that start starts; the context bounds the whole benchmark.
func benchClient(b *testing.B, start peerStarter) (context.Context, *qmp.Client) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	b.Cleanup(cancel)
	c, err := qmp.Dial(ctx, start(b))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return ctx, c
}

func benchQueryVersion(b *testing.B, start peerStarter) {
	ctx, c := benchClient(b, start)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.QueryVersion(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkQueryVersionQEMU is one command round trip to a real QEMU 7.2.
func BenchmarkQueryVersionQEMU(b *testing.B) { benchQueryVersion(b, startQEMU) }

// BenchmarkQueryVersionFake is one command round trip to qmptest's fake.
func BenchmarkQueryVersionFake(b *testing.B) { benchQueryVersion(b, startFake) }

// BenchmarkQueryVersionQEMUParallel measures concurrent calls sharing one connection.
func BenchmarkQueryVersionQEMUParallel(b *testing.B) {
	ctx, c := benchClient(b, startQEMU)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.QueryVersion(ctx); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func benchAddFD(b *testing.B, start peerStarter) {
	ctx, c := benchClient(b, start)
	image := filepath.Join(b.TempDir(), "medium.raw")
	if err := os.WriteFile(image, make([]byte, 4096), 0o644); err != nil {
		b.Fatal(err)
	}
	f, err := os.Open(image)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	b.ReportAllocs()
	for b.Loop() {
		info, err := c.AddFD(ctx, f, nil, "raw:"+image)
		if err != nil {
			b.Fatal(err)
		}
		// The VM runs and nothing uses the fd, so QEMU closes it and drops the set.
		if err := c.RemoveFD(ctx, info.FdsetID, nil); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if sets, err := c.QueryFdsets(ctx); err != nil || len(sets) != 0 {
		b.Errorf("QueryFdsets() after the loop = %v, %v, want no sets left", sets, err)
	}
}

// BenchmarkAddFD is add-fd (SCM_RIGHTS) plus remove-fd against a real QEMU.
func BenchmarkAddFD(b *testing.B) { benchAddFD(b, startQEMU) }

// BenchmarkAddFDFake is add-fd plus remove-fd against qmptest's fake.
func BenchmarkAddFDFake(b *testing.B) { benchAddFD(b, startFake) }
