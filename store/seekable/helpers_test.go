package seekable

import (
	"archive/tar"
	"bytes"
	stdgzip "compress/gzip"
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"
)

// tarEntry is one entry for buildTar; Size is set from data for regular files.
type tarEntry struct {
	hdr  tar.Header
	data []byte
}

// buildTar writes entries as a tar with archive/tar.
func buildTar(tb testing.TB, entries []tarEntry) []byte {
	tb.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.hdr
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.data))
		}
		if h.ModTime.IsZero() {
			h.ModTime = time.Unix(1700000000, 0)
		}
		require.NoError(tb, tw.WriteHeader(&h), "header %q", h.Name)
		if len(e.data) > 0 {
			_, err := tw.Write(e.data)
			require.NoError(tb, err)
		}
	}
	require.NoError(tb, tw.Close())
	return buf.Bytes()
}

func reg(name string, data []byte) tarEntry {
	return tarEntry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Uname: "root", Gname: "root"}, data: data}
}

func dir(name string) tarEntry {
	return tarEntry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755}}
}

func symlink(name, target string) tarEntry {
	return tarEntry{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777}}
}

func hardlink(name, target string) tarEntry {
	return tarEntry{hdr: tar.Header{Typeflag: tar.TypeLink, Name: name, Linkname: target, Mode: 0o644}}
}

// words is a vocabulary for compressible, text-like content.
var words = strings.Fields(`the of and to in is that for it as with was on be by this are from
	import def return self class static const func package error nil true false if else
	usr lib share doc python3 site-packages debian license copyright version 1.2.3 0x00ff
	{ } ( ) [ ] ; : = == != <= >= + - * / # // /* */ \n \t "string" 'c' 42 3.14`)

// textContent returns n bytes of text-like content (compresses about 4x).
func textContent(rng *rand.Rand, n int) []byte {
	b := make([]byte, 0, n+16)
	for len(b) < n {
		b = append(b, words[rng.IntN(len(words))]...)
		if rng.IntN(12) == 0 {
			b = append(b, '\n')
		} else {
			b = append(b, ' ')
		}
	}
	return b[:n]
}

// binaryContent returns n bytes that compress about 2x, like executables.
func binaryContent(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := 0; i < n; {
		run := min(n-i, 16+rng.IntN(256))
		if rng.IntN(2) == 0 {
			for k := range run {
				b[i+k] = byte(rng.IntN(256))
			}
		} else if i >= 4096 {
			src := i - 1 - rng.IntN(4096)
			for k := range run {
				b[i+k] = b[src+k%(i-src)]
			}
		}
		i += run
	}
	return b
}

// randomContent returns n incompressible bytes.
func randomContent(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// standardEntries is a layer with every entry type and the sizes around the
// member rules. With big, it has files of 5 and 20 MiB.
func standardEntries(big bool) []tarEntry {
	rng := rand.New(rand.NewPCG(1, 2))
	longDir := "usr/share/" + strings.Repeat("long-directory-name/", 8)
	capability := "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
	withXattrs := reg("usr/bin/ping", binaryContent(rng, 3000))
	withXattrs.hdr.PAXRecords = map[string]string{
		"SCHILY.xattr.security.capability": capability,
		"SCHILY.xattr.user.comment":        "hello",
	}
	withXattrs.hdr.Mode = 0o4755
	nanos := reg("etc/nanos", []byte("precise\n"))
	nanos.hdr.ModTime = time.Unix(1700000000, 123456789)
	nanos.hdr.Format = tar.FormatPAX
	owned := reg("home/user/file", textContent(rng, 100))
	owned.hdr.Uid, owned.hdr.Gid, owned.hdr.Uname, owned.hdr.Gname = 1000, 1001, "user", "group"
	es := []tarEntry{
		dir("./"),
		dir("./etc/"),
		reg("./etc/empty", nil),
		reg("etc/one", []byte("x")),
		nanos,
		dir("usr/"),
		dir("usr/lib/"),
		reg("usr/lib/a64k-1", textContent(rng, 64<<10-1)),
		reg("usr/lib/a64k", binaryContent(rng, 64<<10)),
		reg("usr/lib/a64k+1", textContent(rng, 64<<10+1)),
		reg("usr/lib/small1", textContent(rng, 10)),
		reg("usr/lib/small2", textContent(rng, 5000)),
		dir("usr/bin/"),
		withXattrs,
		symlink("usr/bin/sh", "dash"),
		symlink("usr/bin/abs", "/etc/alternatives/x"),
		symlink("usr/bin/up", "../../../../etc/passwd"),
		symlink("usr/bin/longtarget", strings.Repeat("t/", 100)+"end"),
		hardlink("usr/bin/hard", "usr/lib/a64k"),
		hardlink("usr/bin/hard2", "./usr/bin/hard"),
		{hdr: tar.Header{Typeflag: tar.TypeChar, Name: "dev/null", Mode: 0o666, Devmajor: 1, Devminor: 3}},
		{hdr: tar.Header{Typeflag: tar.TypeBlock, Name: "dev/sda", Mode: 0o660, Devmajor: 8, Devminor: 0}},
		{hdr: tar.Header{Typeflag: tar.TypeFifo, Name: "run/fifo", Mode: 0o600}},
		reg(longDir+strings.Repeat("n", 200), textContent(rng, 1234)),
		reg("etc/.wh.removed", nil),
		dir("var/"),
		reg("var/.wh..wh..opq", nil),
		reg("latin1/caf\xe9", []byte("non-UTF-8 name")),
		owned,
	}
	if big {
		es = append(es,
			reg("opt/big5m", binaryContent(rng, 5<<20)),
			reg("opt/zeros5m", make([]byte, 5<<20)),
			reg("opt/big20m", append(textContent(rng, 10<<20), randomContent(rng, 10<<20)...)),
			reg("opt/after", textContent(rng, 100)),
		)
	}
	return es
}

// layer is a converted layer.
type layer struct {
	tar, out []byte
	res      *Result
}

// bigLayerCache holds the big standard layer converted with the default
// options, shared by the tests that only read it: converting it is the slow
// part of the tests under -race.
var bigLayerCache struct {
	once sync.Once
	l    layer
	err  error
}

// bigLayer returns the shared big standard layer; callers must not modify it.
func bigLayer(t *testing.T) ([]byte, []byte, *Result) {
	t.Helper()
	c := &bigLayerCache
	c.once.Do(func() {
		tarBytes := buildTar(t, standardEntries(true))
		var out bytes.Buffer
		res, err := Convert(context.Background(), &out, bytes.NewReader(tarBytes))
		c.l, c.err = layer{tar: tarBytes, out: out.Bytes(), res: res}, err
	})
	require.NoError(t, c.err)
	return c.l.tar, c.l.out, c.l.res
}

// convert runs Convert into memory.
func convert(tb testing.TB, tarBytes []byte, opts ...Option) ([]byte, *Result) {
	tb.Helper()
	var out bytes.Buffer
	res, err := Convert(context.Background(), &out, bytes.NewReader(tarBytes), opts...)
	require.NoError(tb, err)
	return out.Bytes(), res
}

// checkLayer checks everything Convert promises about out and res.
func checkLayer(t *testing.T, tarBytes, out []byte, res *Result, minMember, maxMember int64) {
	t.Helper()
	// Any gzip reader reads the original tar back.
	zr, err := stdgzip.NewReader(bytes.NewReader(out))
	require.NoError(t, err)
	got, err := io.ReadAll(zr)
	require.NoError(t, err)
	require.True(t, bytes.Equal(tarBytes, got), "compress/gzip does not read back the tar")
	kr, err := gzip.NewReader(bytes.NewReader(out))
	require.NoError(t, err)
	got, err = io.ReadAll(kr)
	require.NoError(t, err)
	require.True(t, bytes.Equal(tarBytes, got), "klauspost gzip does not read back the tar")

	require.Equal(t, digest.FromBytes(tarBytes), res.DiffID)
	require.Equal(t, digest.FromBytes(out), res.Digest)
	require.Equal(t, int64(len(out)), res.Size)
	require.Equal(t, int64(len(tarBytes)), res.UncompressedSize)
	require.Equal(t, digest.FromBytes(res.TOCJSON), res.TOCDigest)
	toc, err := ParseTOC(res.TOCJSON, res.Size)
	require.NoError(t, err)
	require.Equal(t, res.TOC, toc)
	require.Equal(t, res.UncompressedSize, toc.UncompressedSize())

	// Members: verified, decompress to their part of the tar, cut by the rules.
	for i, m := range toc.Members {
		u, err := DecompressMember(out[m.Offset:m.Offset+m.Size], m)
		require.NoError(t, err)
		require.True(t, bytes.Equal(tarBytes[m.UOffset:m.UOffset+m.USize], u), "member %d", i)
		require.LessOrEqual(t, m.USize, maxMember, "member %d", i)
	}
	starts := make(map[int64]bool)
	for _, e := range toc.Entries {
		if e.Type == TypeReg && e.Size > 0 {
			starts[e.Offset] = true
			m := toc.Members[e.Member]
			if m.UOffset < e.Offset {
				require.Less(t, e.Offset-m.UOffset, max(minMember, 1), "no cut at %q", e.Name)
			}
		}
	}
	for i := 1; i < len(toc.Members); i++ {
		prev := toc.Members[i-1]
		if prev.USize != maxMember {
			require.True(t, starts[toc.Members[i].UOffset], "member %d starts at %d, neither a file's content nor a max cut", i, toc.Members[i].UOffset)
			require.GreaterOrEqual(t, prev.USize, minMember, "member %d", i-1)
		}
	}

	// Entries match the tar, and every file reads back through its TOC.
	tr := tar.NewReader(bytes.NewReader(tarBytes))
	contents := make(map[string][]byte)
	i := 0
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		if hdr.Typeflag == tar.TypeXGlobalHeader {
			continue
		}
		data, err := io.ReadAll(tr)
		require.NoError(t, err)
		require.Less(t, i, len(toc.Entries))
		e := &toc.Entries[i]
		i++
		name, err := cleanName(hdr.Name)
		require.NoError(t, err)
		require.Equal(t, name, e.Name)
		require.Equal(t, hdr.Mode&0o7777, e.Mode, e.Name)
		require.Equal(t, hdr.Uid, e.UID, e.Name)
		require.Equal(t, hdr.Gid, e.GID, e.Name)
		require.Equal(t, hdr.Uname, e.Uname, e.Name)
		require.Equal(t, hdr.Gname, e.Gname, e.Name)
		require.True(t, hdr.ModTime.Equal(e.ModTime), "%s: mtime %v, want %v", e.Name, e.ModTime, hdr.ModTime)
		for k, v := range hdr.PAXRecords {
			if xn, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
				require.Equal(t, v, e.Xattrs[xn], e.Name)
			}
		}
		switch hdr.Typeflag {
		case tar.TypeReg:
			require.Equal(t, TypeReg, e.Type)
			require.Equal(t, digest.FromBytes(data), e.Digest, e.Name)
			contents[name] = data
		case tar.TypeLink:
			require.Equal(t, TypeHardlink, e.Type)
			target, err := cleanName(hdr.Linkname)
			require.NoError(t, err)
			require.Equal(t, target, e.Linkname)
			data = contents[target]
			contents[name] = data
		case tar.TypeSymlink:
			require.Equal(t, TypeSymlink, e.Type)
			require.Equal(t, hdr.Linkname, e.Linkname)
		case tar.TypeChar, tar.TypeBlock:
			require.Equal(t, hdr.Devmajor, e.Devmajor)
			require.Equal(t, hdr.Devminor, e.Devminor)
		}
		fr := NewFileReader(bytes.NewReader(out), toc, e)
		got, err := io.ReadAll(fr)
		require.NoError(t, err)
		require.True(t, bytes.Equal(data, got), "content of %q", e.Name)
	}
	require.Equal(t, len(toc.Entries), i)
	for name := range contents {
		_, ok := toc.Lookup(name)
		require.True(t, ok, name)
	}
}

// countingReaderAt records the ranges read.
type countingReaderAt struct {
	ra     io.ReaderAt
	mu     sync.Mutex
	ranges [][2]int64
	bytes  int64
}

func (c *countingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	c.mu.Lock()
	c.ranges = append(c.ranges, [2]int64{off, off + int64(len(p))})
	c.bytes += int64(len(p))
	c.mu.Unlock()
	return c.ra.ReadAt(p, off)
}

// benchTar returns the layer tar for benchmarks: the file named by
// $ZS_BENCH_TAR (for example a Debian rootfs made by mmdebstrap), else about
// 50 MB of synthetic, mixed files.
func benchTar(tb testing.TB) []byte {
	tb.Helper()
	if p := os.Getenv("ZS_BENCH_TAR"); p != "" {
		b, err := os.ReadFile(p)
		require.NoError(tb, err)
		return b
	}
	return syntheticTar(tb, 50<<20)
}

// syntheticTar builds a rootfs-like tar of about size bytes: many small
// files, fewer large ones; text, binaries and incompressible data; dirs,
// symlinks and hardlinks.
func syntheticTar(tb testing.TB, size int) []byte {
	rng := rand.New(rand.NewPCG(42, 42))
	var es []tarEntry
	total := 0
	var d string
	var lastFile string
	for n := 0; total < size; n++ {
		if n%25 == 0 {
			d = fmt.Sprintf("usr/lib/pkg%04d/sub%d/", n/25, rng.IntN(4))
			es = append(es, dir(d))
		}
		// Mostly log-uniform sizes from 1 byte to 64 KiB (median 256
		// bytes, mean 6 KiB), some of 256 KiB to 4 MiB; about 4000
		// files in 50 MB, like a Debian rootfs.
		sz := int(math.Exp2(rng.Float64() * 16))
		switch k := rng.IntN(200); {
		case k == 0:
			sz = int(math.Exp2(18 + rng.Float64()*4))
		case k < 10:
			sz = 0
		}
		var data []byte
		switch k := rng.IntN(10); {
		case k < 6:
			data = textContent(rng, sz)
		case k < 9:
			data = binaryContent(rng, sz)
		default:
			data = randomContent(rng, sz)
		}
		name := fmt.Sprintf("%sfile%06d", d, n)
		es = append(es, reg(name, data))
		total += sz + 512
		switch rng.IntN(30) {
		case 0:
			es = append(es, symlink(name+".link", "file"))
		case 1:
			if lastFile != "" {
				es = append(es, hardlink(name+".hard", lastFile))
			}
		}
		lastFile = name
	}
	return buildTar(tb, es)
}
