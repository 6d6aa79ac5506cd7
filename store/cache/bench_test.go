package cache

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"runtime"
	"testing"

	"github.com/opencontainers/go-digest"
)

const benchValueSize = 1 << 20

// benchImpls are the implementations under benchmark; memory is the baseline.
var benchImpls = []struct {
	name string
	open func(b *testing.B, opts ...Option) Cache
}{
	{"memory", func(b *testing.B, opts ...Option) Cache { return NewMemory(opts...) }},
	{"directory", func(b *testing.B, opts ...Option) Cache {
		c, err := NewDirectory(b.TempDir(), opts...)
		if err != nil {
			b.Fatal(err)
		}
		return c
	}},
	{"directory-nosync", func(b *testing.B, opts ...Option) Cache {
		c, err := NewDirectory(b.TempDir(), append(opts, WithSync(false))...)
		if err != nil {
			b.Fatal(err)
		}
		return c
	}},
}

// BenchmarkGetHit gets a 1 MiB value and reads it whole.
func BenchmarkGetHit(b *testing.B) {
	ctx := context.Background()
	value := make([]byte, benchValueSize)
	rand.Read(value)
	for _, im := range benchImpls[:2] {
		b.Run(im.name, func(b *testing.B) {
			c := im.open(b)
			defer c.Close()
			const keys = 16
			for i := range keys {
				put(b, c, fmt.Sprint(i), value)
			}
			buf := make([]byte, benchValueSize)
			b.SetBytes(benchValueSize)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				r, err := c.Get(ctx, fmt.Sprint(i%keys))
				if err != nil {
					b.Fatal(err)
				}
				if _, err := r.ReadAt(buf, 0); err != nil {
					b.Fatal(err)
				}
				r.Close()
				i++
			}
		})
	}
}

// BenchmarkGetHitOpen is BenchmarkGetHit without reading: the per-hit cost.
func BenchmarkGetHitOpen(b *testing.B) {
	ctx := context.Background()
	for _, im := range benchImpls[:2] {
		b.Run(im.name, func(b *testing.B) {
			c := im.open(b)
			defer c.Close()
			put(b, c, "k", make([]byte, benchValueSize))
			b.ReportAllocs()
			for b.Loop() {
				r, err := c.Get(ctx, "k")
				if err != nil {
					b.Fatal(err)
				}
				r.Close()
			}
		})
	}
}

// BenchmarkAddCommit writes and commits 1 MiB values under distinct keys, in
// a cache bounded at 64 MiB so that evictions run as in steady state. The
// -verify variants check each value's SHA-256 with VerifyDigest.
func BenchmarkAddCommit(b *testing.B) {
	ctx := context.Background()
	value := make([]byte, benchValueSize)
	rand.Read(value)
	valueDigest := digest.FromBytes(value).String()
	for _, verify := range []bool{false, true} {
		for _, im := range benchImpls {
			name := im.name
			opts := []Option{WithMaxBytes(64 << 20)}
			if verify {
				name += "-verify"
				opts = append(opts, WithVerify(func(_ string, data io.Reader) error {
					return VerifyDigest(valueDigest, data)
				}))
			}
			b.Run(name, func(b *testing.B) {
				c := im.open(b, opts...)
				defer c.Close()
				b.SetBytes(benchValueSize)
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					w, err := c.Add(ctx, fmt.Sprint(i))
					if err != nil {
						b.Fatal(err)
					}
					if _, err := w.Write(value); err != nil {
						b.Fatal(err)
					}
					if err := w.Commit(); err != nil {
						b.Fatal(err)
					}
					i++
				}
			})
		}
	}
}

// BenchmarkIndexMemory reports the heap used per index entry.
func BenchmarkIndexMemory(b *testing.B) {
	const n = 100_000
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		c := newCache(&memStorage{values: map[keyHash][]byte{}}, makeOptions(1<<62, 1<<30, nil))
		for i := range n {
			c.insert(&entry{h: hashKey(fmt.Sprint(i)), size: 1})
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "B/entry")
		runtime.KeepAlive(c)
	}
}
