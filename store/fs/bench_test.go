package fs

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/internal/testutil"
)

// wideFiles is a layer of 10,000 entries: 100 directories of 99 small files.
func wideFiles() []file {
	var files []file
	for d := range 100 {
		files = append(files, dir(fmt.Sprintf("d%03d/", d), 0o755, 0, mt1))
		for f := range 99 {
			files = append(files, reg(fmt.Sprintf("d%03d/f%03d", d, f), 0o644, 0, []byte("contents of a small file\n")))
		}
	}
	return files
}

// statWalk lstats every entry under root, as a container's find(1) would.
func statWalk(tb testing.TB, root string) int {
	n := 0
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if _, err := d.Info(); err != nil {
			return err
		}
		n++
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

// BenchmarkStatWalk walks a 10k-entry layer through the FUSE mount (warm:
// kernel caches filled by earlier iterations; cold: a fresh mount each
// time) and, as the baseline, the same tree extracted to a plain directory.
func BenchmarkStatWalk(b *testing.B) {
	testutil.RequireFUSE(b)
	tarball := tarOf(b, wideFiles())
	layer := layerOf(b, tarball)
	plain := extract(b, tarball)
	report := func(b *testing.B, n int) {
		b.ReportMetric(float64(n), "entries/op")
	}

	b.Run("plain", func(b *testing.B) {
		n := 0
		for b.Loop() {
			n = statWalk(b, plain)
		}
		report(b, n)
	})
	b.Run("fuse-warm", func(b *testing.B) {
		mnt := mountLayer(b, layer)
		n := 0
		for b.Loop() {
			n = statWalk(b, mnt)
		}
		report(b, n)
	})
	b.Run("fuse-cold", func(b *testing.B) {
		mnt := b.TempDir()
		n := 0
		for range b.N {
			b.StopTimer()
			m, err := Mount(context.Background(), mnt, layer)
			if err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			n = statWalk(b, mnt)
			b.StopTimer()
			if err := m.Unmount(); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
		report(b, n)
	})
	if layer.reads.Load() != 0 {
		b.Fatalf("a stat walk called Layer.ReadAt %d times", layer.reads.Load())
	}
}

// BenchmarkMount measures building the tree of a 10k-entry TOC and mounting it.
func BenchmarkMount(b *testing.B) {
	testutil.RequireFUSE(b)
	layer := layerOf(b, tarOf(b, wideFiles()))
	mnt := b.TempDir()
	for b.Loop() {
		m, err := Mount(context.Background(), mnt, layer)
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := m.Unmount(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

// BenchmarkRead reads a 16 MiB file sequentially: through FUSE from the
// in-memory Layer with the page cache dropped before each pass (every byte
// goes through Layer.ReadAt), through FUSE from the page cache, and from a
// plain file in the page cache as the baseline.
func BenchmarkRead(b *testing.B) {
	testutil.RequireFUSE(b)
	const size = 16 << 20
	tarball := tarOf(b, []file{{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "big", Mode: 0o644, ModTime: mt1}, body: randomBytes(size, 2)}})
	layer := layerOf(b, tarball)
	plain := extract(b, tarball)
	mnt := mountLayer(b, layer)
	buf := make([]byte, 1<<20)

	readAll := func(b *testing.B, p string, drop bool) {
		f, err := os.Open(p)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		if drop {
			if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
				b.Fatal(err)
			}
		}
		n, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{f}, buf)
		if err != nil || n != size {
			b.Fatalf("read %d bytes: %v", n, err)
		}
	}
	for _, bc := range []struct {
		name string
		path string
		drop bool
	}{
		{"fuse-uncached", filepath.Join(mnt, "big"), true},
		{"fuse-pagecache", filepath.Join(mnt, "big"), false},
		{"plain-pagecache", filepath.Join(plain, "big"), false},
	} {
		b.Run(bc.name, func(b *testing.B) {
			readAll(b, bc.path, false) // warm up
			reads := layer.reads.Load()
			b.SetBytes(size)
			iters := 0
			for b.Loop() {
				readAll(b, bc.path, bc.drop)
				iters++
			}
			b.ReportMetric(float64(layer.reads.Load()-reads)/float64(iters), "layer-reads/op")
		})
	}
}
