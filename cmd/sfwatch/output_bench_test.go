package main

// The cost of the bounded writer that every output goes through.

import (
	"io"
	"os"
	"testing"
)

// BenchmarkBoundedWriter: the cost of a 64 KiB flush (the stream's buffer)
// through the writer's goroutine, against writing directly.
func BenchmarkBoundedWriter(b *testing.B) {
	f, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	p := make([]byte, 64<<10)
	for _, c := range []struct {
		name string
		w    io.Writer
	}{{"direct", f}, {"bounded", newBoundedWriter(f, "null")}} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(p)))
			for b.Loop() {
				c.w.Write(p)
			}
		})
	}
}
