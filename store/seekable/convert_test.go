package seekable

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestConvertRoundTrip(t *testing.T) {
	smallTar := buildTar(t, standardEntries(false))
	tests := []struct {
		name     string
		big      bool // the shared big layer, converted with defaults
		tar      []byte
		opts     []Option
		min, max int64
	}{
		{name: "defaults", big: true, min: DefaultMinMemberSize, max: DefaultMaxMemberSize},
		{name: "defaults small", tar: smallTar, min: DefaultMinMemberSize, max: DefaultMaxMemberSize},
		{name: "member per file", tar: smallTar, opts: []Option{WithMinMemberSize(0)}, min: 0, max: DefaultMaxMemberSize},
		{name: "one thread level 1", tar: smallTar, opts: []Option{WithConcurrency(1), WithLevel(1)}, min: DefaultMinMemberSize, max: DefaultMaxMemberSize},
		{name: "tiny members", tar: smallTar, opts: []Option{WithMinMemberSize(1000), WithMaxMemberSize(4096), WithConcurrency(4), WithLevel(9)}, min: 1000, max: 4096},
		{name: "odd max", tar: smallTar, opts: []Option{WithMinMemberSize(0), WithMaxMemberSize(777), WithLevel(0)}, min: 0, max: 777},
		{name: "stateless", tar: smallTar, opts: []Option{WithLevel(-3)}, min: DefaultMinMemberSize, max: DefaultMaxMemberSize},
		{name: "empty tar", tar: buildTar(t, nil), min: DefaultMinMemberSize, max: DefaultMaxMemberSize},
		{name: "empty stream", tar: []byte{}, min: DefaultMinMemberSize, max: DefaultMaxMemberSize},
		{name: "no end marker", tar: buildTar(t, []tarEntry{reg("a", []byte("a"))})[:1024], min: DefaultMinMemberSize, max: DefaultMaxMemberSize},
		{name: "trailing bytes", tar: append(buildTar(t, []tarEntry{reg("a", []byte("a"))}), bytes.Repeat([]byte{0, 1}, 5000)...), min: DefaultMinMemberSize, max: DefaultMaxMemberSize},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.big {
				tarBytes, out, res := bigLayer(t)
				checkLayer(t, tarBytes, out, res, tt.min, tt.max)
				return
			}
			out, res := convert(t, tt.tar, tt.opts...)
			checkLayer(t, tt.tar, out, res, tt.min, tt.max)
		})
	}
}

func TestConvertMemberCuts(t *testing.T) {
	_, _, res := bigLayer(t)
	toc := res.TOC
	// Small files share members; the 64 KiB rule and the 4 MiB rule cut.
	assert.Less(t, len(toc.Members), 20)
	big, ok := toc.Lookup("opt/big20m")
	require.True(t, ok)
	first, last := toc.MemberRange(big, 0, big.Size)
	assert.GreaterOrEqual(t, last-first+1, 5, "20 MiB in 4 MiB members")
	assert.Equal(t, int64(0), big.InnerOffset, "a big file starts a member")
	one, _ := toc.Lookup("etc/one")
	empty, _ := toc.Lookup("etc/empty")
	assert.Equal(t, one.Member, empty.Member)

	_, res = convert(t, buildTar(t, standardEntries(false)), WithMinMemberSize(0))
	for _, e := range res.TOC.Entries {
		if e.Type == TypeReg && e.Size > 0 {
			assert.Zero(t, e.InnerOffset, "%s starts its own member", e.Name)
		}
	}
}

func TestConvertWithExternalGzip(t *testing.T) {
	gz, err := exec.LookPath("gzip")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("gzip is not installed: %v", err)
		}
		t.Skipf("SKIPPING: gzip is not installed (%v); install the gzip package to check the output with gzip -t and zcat", err)
	}
	tarBytes, out, _ := bigLayer(t)
	file := filepath.Join(t.TempDir(), "layer.tar.gz")
	require.NoError(t, os.WriteFile(file, out, 0o644))
	msg, err := exec.Command(gz, "-t", file).CombinedOutput()
	require.NoError(t, err, "gzip -t: %s", msg)
	got, err := exec.Command(gz, "-dc", file).Output()
	require.NoError(t, err, "gzip -dc")
	require.True(t, bytes.Equal(tarBytes, got), "gzip -dc does not give back the tar")
	if zcat, err := exec.LookPath("zcat"); err == nil {
		got, err := exec.Command(zcat, file).Output()
		require.NoError(t, err, "zcat")
		require.True(t, bytes.Equal(tarBytes, got), "zcat does not give back the tar")
	}
}

func TestConvertDuplicates(t *testing.T) {
	tarBytes := buildTar(t, []tarEntry{
		reg("a", []byte("one")),
		hardlink("b", "a"),
		reg("a", []byte("two")),
		dir("d/"),
		dir("d/"),
		reg("d/x", []byte("x")),
		reg("c", []byte("c1")),
		hardlink("e", "c"),
		hardlink("c", "e"), // c now links to the first c's data
	})
	out, res := convert(t, tarBytes)
	checkLayer(t, tarBytes, out, res, DefaultMinMemberSize, DefaultMaxMemberSize)
	read := func(name string) string {
		e, ok := res.TOC.Lookup(name)
		require.True(t, ok, name)
		b, err := io.ReadAll(NewFileReader(bytes.NewReader(out), res.TOC, e))
		require.NoError(t, err)
		return string(b)
	}
	assert.Equal(t, "two", read("a"), "the last entry wins")
	assert.Equal(t, "one", read("b"), "a hardlink keeps the data it linked to")
	assert.Equal(t, "c1", read("c"))
	assert.Equal(t, "c1", read("e"))
	e, _ := res.TOC.Lookup("/d/")
	assert.Equal(t, TypeDir, e.Type)
}

func TestConvertErrors(t *testing.T) {
	good := buildTar(t, standardEntries(false))
	// archive/tar does not write PAX headers over 1 MiB: make one by hand.
	hugePAX := buildTar(t, []tarEntry{reg("PaxHeaders/a", bytes.Repeat([]byte("x"), 2<<20)), reg("a", []byte("a"))})
	hugePAX[156] = tar.TypeXHeader
	fixChecksum(hugePAX[:512])
	// A PAX 1.0 sparse file (archive/tar does not write them): the PAX
	// header made by hand, the sparse map at the start of the data.
	var pax []byte
	for _, kv := range [][2]string{{"GNU.sparse.major", "1"}, {"GNU.sparse.minor", "0"}, {"GNU.sparse.name", "a"}, {"GNU.sparse.realsize", "1"}} {
		pax = append(pax, paxRecord(kv[0], kv[1])...)
	}
	sparse := buildTar(t, []tarEntry{
		reg("PaxHeaders/a", pax),
		reg("GNUSparseFile.0/a", append(append([]byte("1\n0\n1\n"), make([]byte, 506)...), 'a')),
	})
	sparse[156] = tar.TypeXHeader
	fixChecksum(sparse[:512])
	oddType := buildTar(t, []tarEntry{reg("a", []byte("a"))})
	oddType[156] = 'X'
	fixChecksum(oddType[:512])
	garbage := bytes.Repeat([]byte("garbage!"), 200)
	tests := []struct {
		name string
		tar  []byte
		src  io.Reader
		w    io.Writer
		ctx  func() context.Context
		want []error
	}{
		{name: "truncated in content", tar: good[:len(good)/2], want: []error{ErrInvalidTar, errdefs.ErrInvalidArgument}},
		{name: "truncated in header", tar: good[:700], want: []error{ErrInvalidTar}},
		{name: "garbage", tar: garbage, want: []error{ErrInvalidTar, tar.ErrHeader}},
		{name: "huge PAX header", tar: hugePAX, want: []error{ErrInvalidTar, tar.ErrFieldTooLong}},
		{name: "dot-dot name", tar: buildTar(t, []tarEntry{reg("a/../../x", nil)}), want: []error{ErrInvalidTar}},
		{name: "absolute name", tar: buildTar(t, []tarEntry{reg("/etc/passwd", nil)}), want: []error{ErrInvalidTar}},
		{name: "root not a dir", tar: buildTar(t, []tarEntry{reg(".", nil)}), want: []error{ErrInvalidTar}},
		{name: "file replaced dir", tar: buildTar(t, []tarEntry{dir("d"), reg("d/x", nil), reg("d", nil)}), want: []error{ErrInvalidTar}},
		{name: "hardlink to missing", tar: buildTar(t, []tarEntry{hardlink("a", "lower/file")}), want: []error{ErrUnsupported, errdefs.ErrNotImplemented}},
		{name: "hardlink to later", tar: buildTar(t, []tarEntry{hardlink("a", "b"), reg("b", nil)}), want: []error{ErrUnsupported}},
		{name: "hardlink to dir", tar: buildTar(t, []tarEntry{dir("d"), hardlink("a", "d")}), want: []error{ErrInvalidTar}},
		{name: "hardlink escaping", tar: buildTar(t, []tarEntry{hardlink("a", "../x")}), want: []error{ErrInvalidTar}},
		{name: "sparse", tar: sparse, want: []error{ErrUnsupported}},
		{name: "unknown type", tar: oddType, want: []error{ErrUnsupported}},
		{name: "source error", src: io.MultiReader(bytes.NewReader(good[:5000]), errReader{errBoom}), want: []error{errBoom}},
		{name: "writer error", tar: good, w: failWriter{}, want: []error{errBoom}},
		{name: "cancelled", tar: good, ctx: func() context.Context {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx
		}, want: []error{context.Canceled}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := tt.src
			if src == nil {
				src = bytes.NewReader(tt.tar)
			}
			w := tt.w
			if w == nil {
				w = io.Discard
			}
			ctx := context.Background()
			if tt.ctx != nil {
				ctx = tt.ctx()
			}
			res, err := Convert(ctx, w, src, WithMaxMemberSize(1024), WithMinMemberSize(100))
			require.Error(t, err)
			assert.Nil(t, res)
			for _, want := range tt.want {
				assert.ErrorIs(t, err, want)
			}
			if !errors.Is(err, ErrInvalidTar) {
				assert.NotErrorIs(t, err, errdefs.ErrInvalidArgument)
			}
			t.Log(err)
		})
	}
}

func TestOptions(t *testing.T) {
	tests := []struct {
		name string
		opts []Option
		ok   bool
	}{
		{"defaults", nil, true},
		{"min 0", []Option{WithMinMemberSize(0)}, true},
		{"min negative", []Option{WithMinMemberSize(-1)}, false},
		{"max 0", []Option{WithMaxMemberSize(0)}, false},
		{"max too big", []Option{WithMaxMemberSize(MaxMemberUSize + 1)}, false},
		{"max biggest", []Option{WithMaxMemberSize(MaxMemberUSize)}, true},
		{"min above max", []Option{WithMinMemberSize(8 << 20)}, false},
		{"min above max both", []Option{WithMinMemberSize(8 << 20), WithMaxMemberSize(16 << 20)}, true},
		{"concurrency 0", []Option{WithConcurrency(0)}, false},
		{"level 10", []Option{WithLevel(10)}, false},
		{"level -4", []Option{WithLevel(-4)}, false},
		{"level -1", []Option{WithLevel(-1)}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Convert(context.Background(), io.Discard, bytes.NewReader(nil), tt.opts...)
			if tt.ok {
				assert.NoError(t, err)
			} else {
				assert.ErrorIs(t, err, errdefs.ErrInvalidArgument)
			}
		})
	}
}

var errBoom = errors.New("boom")

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errBoom }

// fixChecksum recomputes the checksum of a tar header block.
func fixChecksum(blk []byte) {
	copy(blk[148:156], "        ")
	var sum int64
	for _, c := range blk[:512] {
		sum += int64(c)
	}
	copy(blk[148:156], fmt.Sprintf("%06o\x00 ", sum))
}

// paxRecord formats one PAX record.
func paxRecord(k, v string) string {
	rec := " " + k + "=" + v + "\n"
	n := len(rec) + 1
	for len(fmt.Sprint(n))+len(rec) != n {
		n++
	}
	return fmt.Sprint(n) + rec
}
