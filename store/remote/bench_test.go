package remote

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/archive"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/cache"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/zenodo/zenodotest"
)

// BenchmarkLayerReadCached reads 4 KiB at random offsets of a 2 MiB file
// whose members are cached: in the memory cache, in the on-disk cache only
// (each read decompresses its member), and, as the baseline, with
// os.File.ReadAt on a local copy of the file.
func BenchmarkLayerReadCached(b *testing.B) {
	ctx := context.Background()
	ta := buildArchive(b)
	const name = "usr/lib/big.bin"
	want := ta.files[0][name]
	offsets := make([]int64, 1024)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range offsets {
		offsets[i] = r.Int64N(int64(len(want)) - 4096)
	}

	b.Run("file", func(b *testing.B) {
		p := filepath.Join(b.TempDir(), "big.bin")
		require.NoError(b, os.WriteFile(p, want, 0o644))
		f, err := os.Open(p)
		require.NoError(b, err)
		defer f.Close()
		buf := make([]byte, 4096)
		b.SetBytes(int64(len(buf)))
		b.ResetTimer()
		for i := 0; b.Loop(); i++ {
			if _, err := f.ReadAt(buf, offsets[i%len(offsets)]); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, tc := range []struct {
		name string
		opts func(b *testing.B) []Option
	}{
		{"layer-memory", func(b *testing.B) []Option { return nil }},
		{"layer-disk", func(b *testing.B) []Option {
			c, err := cache.NewDirectory(b.TempDir(), cache.WithSync(false))
			require.NoError(b, err)
			b.Cleanup(func() { c.Close() })
			return []Option{WithCache(c), WithMemoryCacheSize(1)}
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			f := newFake(b, nil)
			op := newOpener(b, f.client(b), tc.opts(b)...)
			img, err := op.Open(ctx, f.ref(b))
			require.NoError(b, err)
			l, err := img.Layer(ctx, ta.layers[0])
			require.NoError(b, err)
			e := lookup(b, l, name)
			_, err = readFile(ctx, l, e, 128<<10)
			require.NoError(b, err)
			idle(l)
			f.reset()
			buf := make([]byte, 4096)
			b.SetBytes(int64(len(buf)))
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				if _, err := l.ReadAt(ctx, e, buf, offsets[i%len(offsets)]); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			if n := len(f.log.all()); n != 0 {
				b.Fatalf("%d requests for cached reads", n)
			}
		})
	}
}

// BenchmarkColdRead opens the image with a fresh Opener and reads every
// file of the first layer once (the 64 small files, then the big one), and
// reports the requests made per file read, with and without a fake round
// trip of 20ms. Sequential reads of adjacent files share requests.
func BenchmarkColdRead(b *testing.B) {
	ctx := context.Background()
	ta := buildArchive(b)
	names := make([]string, 0, numSmall+1)
	for i := range numSmall {
		names = append(names, smallName(i))
	}
	names = append(names, "usr/lib/big.bin")
	for _, latency := range []time.Duration{0, 20 * time.Millisecond} {
		b.Run(fmt.Sprintf("latency=%s", latency), func(b *testing.B) {
			f := newFake(b, nil, zenodotest.WithLatency(latency))
			var opens, fetches int64
			for b.Loop() {
				var st Stats
				op := NewOpener(f.client(b), WithObserver(st.Observe))
				img, err := op.Open(ctx, f.ref(b))
				if err != nil {
					b.Fatal(err)
				}
				l, err := img.Layer(ctx, ta.layers[0])
				if err != nil {
					b.Fatal(err)
				}
				for _, n := range names {
					if _, err := readFile(ctx, l, lookup(b, l, n), 128<<10); err != nil {
						b.Fatal(err)
					}
				}
				op.Close()
				s := st.Snapshot()
				opens++
				fetches += s.FetchRequests
			}
			b.ReportMetric(float64(fetches)/float64(opens*int64(len(names))), "requests/file")
			b.ReportMetric(float64(fetches)/float64(opens), "requests/layer")
		})
	}
}

// BenchmarkFill streams the readahead test layer (13 MiB) into an on-disk
// cache with the background fill, and reports the bytes the fill allocated
// per byte fetched: the stream reuses one buffer for its members, so the
// garbage a fill makes is small whatever the layer's size.
func BenchmarkFill(b *testing.B) {
	ctx := context.Background()
	ta := readaheadArchive(b)
	f := newFake(b, []zenodotest.SeedFile{{Name: archive.ArchiveFileName, Data: ta.tar}, {Name: archive.IndexFileName, Data: ta.index}})
	var allocs, fetched float64
	for b.Loop() {
		b.StopTimer()
		c, err := cache.NewDirectory(b.TempDir(), cache.WithSync(false))
		require.NoError(b, err)
		var st Stats
		op := NewOpener(f.client(b), WithCache(c), WithObserver(st.Observe))
		img, err := op.Open(ctx, f.ref(b))
		require.NoError(b, err)
		l, err := img.Layer(ctx, ta.layers[0])
		require.NoError(b, err)
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		b.StartTimer()
		l.StartFill(ctx)
		require.NoError(b, l.WaitFill(ctx))
		b.StopTimer()
		runtime.ReadMemStats(&after)
		allocs += float64(after.TotalAlloc - before.TotalAlloc)
		fetched += float64(st.Snapshot().FillBytes)
		op.Close()
		c.Close()
		b.StartTimer()
	}
	b.ReportMetric(allocs/fetched, "alloc-bytes/fill-byte")
}
