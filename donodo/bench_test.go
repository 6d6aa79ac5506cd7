package donodo

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/integration/testimage"
)

// BenchmarkPush pushes (archive, upload, publish) a busybox image with a
// 32 MiB random layer to the fake Zenodo, as a new version each time.
func BenchmarkPush(b *testing.B) {
	f := newFake(b)
	src := layout(b, "example.org/bench:0", authors, testimage.WithRandomLayer(32, 1))
	var size int64
	for i := 0; b.Loop(); i++ {
		// A new tag of the same image each time: a new version.
		ls := src.(*layoutSource)
		ls.names = append(ls.names, fmt.Sprintf("example.org/bench:%d", i+1))
		res, err := Push(ctx(b), f.zc, src, fmt.Sprintf("example.org/bench:%d", i+1), WithAutoPublish(), WithPushTempDir(b.TempDir()))
		require.NoError(b, err)
		size = res.ArchiveSize
	}
	b.SetBytes(size)
}

// BenchmarkInspect inspects a format v1 record of a 32 MiB image.
func BenchmarkInspect(b *testing.B) {
	f := newFake(b)
	res := pushed(b, f, layout(b, "example.org/bench:1.0", authors, testimage.WithRandomLayer(32, 1)), "example.org/bench:1.0")
	ref := mustRef(b, res.Reference)
	zc := f.guest(b)
	for b.Loop() {
		_, err := Inspect(ctx(b), zc, ref)
		require.NoError(b, err)
	}
}
