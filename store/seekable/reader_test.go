package seekable

import (
	"bytes"
	"io"
	"sync"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/klauspost/compress/gzip"
	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestFileReaderFetchesOnlyItsMembers proves that reading a file through its
// TOC fetches exactly its members' bytes, each once.
func TestFileReaderFetchesOnlyItsMembers(t *testing.T) {
	tarBytes, out, res := bigLayer(t)
	toc := res.TOC
	tests := []struct {
		name   string
		off, n int64 // n < 0: the whole file with io.ReadAll
	}{
		{"opt/big20m", 0, -1},
		{"opt/big5m", 0, -1},
		{"usr/lib/a64k+1", 0, -1},
		{"etc/one", 0, -1},
		{"usr/bin/hard", 0, -1},
		{"opt/big20m", 9 << 20, 10},
		{"opt/big20m", 4<<20 - 5, 10},
		{"opt/big20m", 1 << 20, 8 << 20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, ok := toc.Lookup(tt.name)
			require.True(t, ok)
			data := toc.Resolve(e)
			off, n := tt.off, tt.n
			if n < 0 {
				n = data.Size
			}
			first, last := toc.MemberRange(data, off, n)
			require.LessOrEqual(t, first, last)
			lo, hi := toc.Members[first].Offset, toc.Members[last].Offset+toc.Members[last].Size

			ra := &countingReaderAt{ra: bytes.NewReader(out)}
			fr := NewFileReader(ra, toc, e)
			var got []byte
			if tt.n < 0 {
				var err error
				got, err = io.ReadAll(fr)
				require.NoError(t, err)
			} else {
				got = make([]byte, n)
				_, err := fr.ReadAt(got, off)
				require.NoError(t, err)
			}
			start := data.Offset + off
			require.True(t, bytes.Equal(tarBytes[start:start+n], got))
			for _, r := range ra.ranges {
				assert.GreaterOrEqual(t, r[0], lo)
				assert.LessOrEqual(t, r[1], hi)
			}
			assert.Equal(t, hi-lo, ra.bytes, "each member fetched once")
			assert.Less(t, ra.bytes, res.Size)
		})
	}
}

func TestFileReaderConcurrent(t *testing.T) {
	tarBytes, out, res := bigLayer(t)
	e, ok := res.TOC.Lookup("opt/big5m")
	require.True(t, ok)
	want := tarBytes[e.Offset : e.Offset+e.Size]
	fr := NewFileReader(bytes.NewReader(out), res.TOC, e)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 100<<10)
			for off := int64(g) * 7919; off < e.Size; off += 500 << 10 {
				n, err := fr.ReadAt(buf, off)
				if err != nil && err != io.EOF {
					assert.NoError(t, err)
					return
				}
				assert.True(t, bytes.Equal(want[off:off+int64(n)], buf[:n]))
			}
		}()
	}
	wg.Wait()
}

func TestFileReaderEdges(t *testing.T) {
	tarBytes := buildTar(t, standardEntries(false))
	out, res := convert(t, tarBytes)
	for _, name := range []string{"etc/empty", "usr/lib", "usr/bin/sh", "dev/null"} {
		e, ok := res.TOC.Lookup(name)
		require.True(t, ok)
		fr := NewFileReader(bytes.NewReader(out), res.TOC, e)
		assert.Equal(t, int64(0), fr.Size(), name)
		b, err := io.ReadAll(fr)
		require.NoError(t, err)
		assert.Empty(t, b)
	}
	e, _ := res.TOC.Lookup("etc/one")
	fr := NewFileReader(bytes.NewReader(out), res.TOC, e)
	buf := make([]byte, 10)
	n, err := fr.ReadAt(buf, 0)
	assert.Equal(t, 1, n)
	assert.Equal(t, io.EOF, err)
	_, err = fr.ReadAt(buf, 1)
	assert.Equal(t, io.EOF, err)

	// A layer shorter than its TOC says.
	e, _ = res.TOC.Lookup("usr/lib/a64k")
	_, err = io.ReadAll(NewFileReader(bytes.NewReader(out[:len(out)/2]), res.TOC, e))
	assert.ErrorIs(t, err, io.ErrUnexpectedEOF)
}

func TestCorruptMember(t *testing.T) {
	_, out, res := bigLayer(t)
	toc := res.TOC
	e, ok := toc.Lookup("opt/big5m")
	require.True(t, ok)
	first, last := toc.MemberRange(e, 0, e.Size)
	for _, i := range []int{first, last} {
		m := toc.Members[i]
		for _, at := range []int64{0, m.Size / 2, m.Size - 1} {
			bad := bytes.Clone(out)
			bad[m.Offset+at] ^= 0x40
			_, err := io.ReadAll(NewFileReader(bytes.NewReader(bad), toc, e))
			require.Error(t, err)
			assert.ErrorIs(t, err, ErrDigestMismatch)
			assert.True(t, errdefs.IsDataLoss(err))
			_, err = DecompressMember(bad[m.Offset:m.Offset+m.Size], m)
			assert.ErrorIs(t, err, ErrDigestMismatch)
		}
	}
	m := toc.Members[0]
	_, err := DecompressMember(out[m.Offset:m.Offset+m.Size-1], m)
	assert.ErrorIs(t, err, ErrDigestMismatch, "short member")
}

func TestDecompressMemberCorrupt(t *testing.T) {
	gz := func(parts ...string) []byte {
		var buf bytes.Buffer
		for _, p := range parts {
			zw := gzip.NewWriter(&buf)
			_, err := zw.Write([]byte(p))
			require.NoError(t, err)
			require.NoError(t, zw.Close())
		}
		return buf.Bytes()
	}
	member := func(b []byte, usize int64) Member {
		return Member{Size: int64(len(b)), USize: usize, Digest: digest.FromBytes(b)}
	}
	one := gz("hello")
	badCRC := bytes.Clone(one)
	badCRC[len(badCRC)-8] ^= 1
	tests := []struct {
		name string
		data []byte
		m    Member
		want error
	}{
		{"not gzip", []byte("hello world"), member([]byte("hello world"), 11), ErrCorrupt},
		{"shorter than usize", one, member(one, 6), ErrCorrupt},
		{"longer than usize", one, member(one, 4), ErrCorrupt},
		{"two members", gz("hel", "lo"), member(gz("hel", "lo"), 5), ErrCorrupt},
		{"trailing garbage", append(bytes.Clone(one), 0), member(append(bytes.Clone(one), 0), 5), ErrCorrupt},
		{"bad CRC", badCRC, member(badCRC, 5), ErrCorrupt},
		{"huge usize", one, member(one, MaxMemberUSize+1), errdefs.ErrInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecompressMember(tt.data, tt.m)
			require.Error(t, err)
			assert.ErrorIs(t, err, tt.want)
			t.Log(err)
		})
	}
	got, err := DecompressMember(one, member(one, 5))
	require.NoError(t, err)
	assert.Equal(t, "hello", string(got))
}
