package remote

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
)

// countingSource is a local source that counts the ranges opened.
type countingSource struct {
	localSource
	opens atomic.Int64
}

func (s *countingSource) openRange(ctx context.Context, off, n int64) (io.ReadCloser, error) {
	s.opens.Add(1)
	return s.localSource.openRange(ctx, off, n)
}

// FuzzArchiveFile checks that archiveFile reads what a bytes.Reader reads,
// whatever the sequence of reads, metadata prefix and blob layout.
func FuzzArchiveFile(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0}, uint16(0), false)
	f.Add([]byte{1, 2, 3, 4, 5, 6, 7, 8, 200, 100, 50, 25, 12, 6, 3, 1}, uint16(100), true)
	f.Add(bytes.Repeat([]byte{0xff, 0x10, 0x00, 0x80}, 16), uint16(5000), true)
	f.Add(bytes.Repeat([]byte{0x00, 0x01, 0x00, 0x10}, 16), uint16(0), false)
	data := pseudoRandom(7, 40000)
	f.Fuzz(func(t *testing.T, ops []byte, metaLen uint16, withBlobs bool) {
		if len(ops) > 512 {
			return
		}
		meta := data[:min(int(metaLen), len(data))]
		var blobs []span
		if withBlobs {
			for off := int64(len(meta)); off < int64(len(data)); off += 7000 {
				blobs = append(blobs, span{off, min(off+6000, int64(len(data)))})
			}
		}
		src := &countingSource{localSource: localSource{ra: bytes.NewReader(data)}}
		af := newArchiveFile(context.Background(), src, int64(len(data)), meta, blobs, 1024)
		defer af.Close()
		want := bytes.NewReader(data)
		for len(ops) >= 4 {
			off := int64(binary.BigEndian.Uint16(ops[0:2])) % int64(len(data)+100)
			n := int(binary.BigEndian.Uint16(ops[2:4])) % 9000
			ops = ops[4:]
			got := make([]byte, n)
			exp := make([]byte, n)
			gn, gerr := af.ReadAt(got, off)
			en, eerr := want.ReadAt(exp, off)
			require.Equal(t, en, gn, "read of %d at %d", n, off)
			require.Equal(t, exp[:en], got[:gn])
			if eerr == io.EOF {
				require.Equal(t, io.EOF, gerr)
			} else {
				require.NoError(t, gerr)
			}
		}
	})
}

// TestArchiveFileSequentialBlob checks that a blob read in order through the
// archive file costs one request.
func TestArchiveFileSequentialBlob(t *testing.T) {
	data := pseudoRandom(9, 1<<20)
	src := &countingSource{localSource: localSource{ra: bytes.NewReader(data)}}
	af := newArchiveFile(context.Background(), src, int64(len(data)), data[:1000], []span{{1000, 900000}, {900000, 1 << 20}}, 64<<10)
	defer af.Close()
	buf := make([]byte, 32<<10)
	var out []byte
	for off := int64(1000); off < 900000; {
		n := min(int64(len(buf)), 900000-off)
		m, err := af.ReadAt(buf[:n], off)
		require.NoError(t, err)
		out = append(out, buf[:m]...)
		off += int64(m)
	}
	require.Equal(t, data[1000:900000], out)
	require.Equal(t, int64(1), src.opens.Load())
}
