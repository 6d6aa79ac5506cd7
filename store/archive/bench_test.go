package archive

import (
	"bytes"
	"context"
	"io"
	"testing"

	"github.com/stretchr/testify/require"
)

func BenchmarkWrite(b *testing.B) {
	ti := newTestImage(b, testImageOpts{})
	var size int64
	for _, t := range ti.tars {
		size += int64(len(t))
	}
	for _, bc := range []struct {
		name string
		opts []WriteOption
	}{
		{name: "convert"},
		{name: "preserve", opts: []WriteOption{WithPreserveLayers()}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			ctx := context.Background()
			provider := LayoutProvider(ti.dir)
			opts := append([]WriteOption{WithTempDir(b.TempDir())}, bc.opts...)
			b.SetBytes(size)
			b.ReportAllocs()
			for b.Loop() {
				_, err := Write(ctx, io.Discard, provider, ti.root, opts...)
				require.NoError(b, err)
			}
		})
	}
}

func BenchmarkOpenWithIndex(b *testing.B) {
	ti := newTestImage(b, testImageOpts{})
	data, idx := writeArchive(b, LayoutProvider(ti.dir), ti.root, WithImageName("busy:1"))
	ctx := context.Background()
	for _, bc := range []struct {
		name string
		opts []OpenOption
	}{
		{name: "index", opts: []OpenOption{WithIndex(idx)}},
		{name: "walk"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			cr := &countingReaderAt{ra: bytes.NewReader(data)}
			b.ReportAllocs()
			for b.Loop() {
				a, err := Open(ctx, cr, int64(len(data)), bc.opts...)
				require.NoError(b, err)
				ms, err := a.Manifests(ctx)
				require.NoError(b, err)
				require.Len(b, ms, 1)
			}
			b.ReportMetric(float64(cr.calls.Load())/float64(b.N), "readats/op")
			b.ReportMetric(float64(cr.bytes.Load())/float64(b.N), "bytesread/op")
		})
	}
}
