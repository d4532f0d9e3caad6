package xenstored

import (
	"testing"

	"github.com/cdswap/cdswap/internal/xs"
)

// BenchmarkWriteRead measures one WRITE and one READ round trip over the unix socket.
func BenchmarkWriteRead(b *testing.B) {
	_, path := start(b, Config{})
	r := dialRaw(b, path)
	b.ReportAllocs()
	for b.Loop() {
		r.ok(xs.OpWrite, 0, []byte("/bench/x\x00value"))
		r.ok(xs.OpRead, 0, z("/bench/x"))
	}
}

// BenchmarkTransaction measures a transaction of the libxl shape: start, read a check node,
// write two keys, commit.
func BenchmarkTransaction(b *testing.B) {
	s, path := start(b, Config{})
	if err := s.Write("/bench/frontend", "f"); err != nil {
		b.Fatal(err)
	}
	r := dialRaw(b, path)
	b.ReportAllocs()
	for b.Loop() {
		tx := r.begin()
		r.ok(xs.OpRead, tx, z("/bench/frontend"))
		r.ok(xs.OpWrite, tx, []byte("/bench/type\x00phy"))
		r.ok(xs.OpWrite, tx, []byte("/bench/params\x00/isos/x.iso"))
		if got := r.end(tx, true); got != "OK" {
			b.Fatalf("commit = %s, want OK", got)
		}
	}
}
