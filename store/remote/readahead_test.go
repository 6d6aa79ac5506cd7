package remote

import (
	"archive/tar"
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/archive"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/zenodo/zenodotest"
)

// Shape of the readahead test layer: a package of many files, some filler,
// and a far directory.
const (
	raFiles    = 128
	raFileSize = 64 << 10
	raMin      = 64 << 10
	raMax      = 4 << 20
)

func raName(dir string, i int) string { return fmt.Sprintf("usr/lib/%s/f%03d.bin", dir, i) }

func farName(i int) string { return fmt.Sprintf("opt/far/f%03d.bin", i) }

var (
	raOnce    sync.Once
	raArchive *testArchive
	raErr     error
)

// readaheadArchive returns the readahead test archive, built once per test
// binary.
func readaheadArchive(t testing.TB) *testArchive {
	t.Helper()
	raOnce.Do(func() { raArchive, raErr = makeReadaheadArchive() })
	require.NoError(t, raErr)
	return raArchive
}

func makeReadaheadArchive() (*testArchive, error) {
	files := []tfile{{name: "usr/", typ: tar.TypeDir}, {name: "usr/lib/", typ: tar.TypeDir}, {name: "usr/lib/mod/", typ: tar.TypeDir}}
	for i := range raFiles {
		files = append(files, tfile{name: raName("mod", i), typ: tar.TypeReg, data: pseudoRandom(uint64(5000+i), raFileSize)})
	}
	// Beyond the reach of the package's last request.
	files = append(files, tfile{name: "usr/lib/filler.bin", typ: tar.TypeReg, data: pseudoRandom(7, 2*raMax)},
		tfile{name: "opt/", typ: tar.TypeDir}, tfile{name: "opt/far/", typ: tar.TypeDir})
	for i := range 8 {
		files = append(files, tfile{name: farName(i), typ: tar.TypeReg, data: pseudoRandom(uint64(9000+i), raFileSize)})
	}
	return makeArchiveOf([][]tfile{files})
}

// rangeBytes returns the bytes asked for by each ranged request of the log.
func rangeBytes(t testing.TB, reqs []zenodotest.Request) []int64 {
	t.Helper()
	var out []int64
	for _, r := range reqs {
		if r.Range == "" {
			continue
		}
		var lo, hi int64
		_, err := fmt.Sscanf(strings.TrimPrefix(r.Range, "bytes="), "%d-%d", &lo, &hi)
		require.NoError(t, err, r.Range)
		out = append(out, hi-lo+1)
	}
	return out
}

func TestReadaheadGrowsAndResets(t *testing.T) {
	ctx := context.Background()
	ta := readaheadArchive(t)
	f := newFake(t, []zenodotest.SeedFile{{Name: archive.ArchiveFileName, Data: ta.tar}, {Name: archive.IndexFileName, Data: ta.index}})
	op := newOpener(t, f.client(t), WithMinRequest(raMin), WithMaxRequest(raMax))
	img, err := op.Open(ctx, f.ref(t))
	require.NoError(t, err)
	l, err := img.Layer(ctx, ta.layers[0])
	require.NoError(t, err)
	f.reset()

	// Reading a package's files in order costs O(log N) requests of
	// doubling size, not N.
	for i := range raFiles {
		got, err := readFile(ctx, l, lookup(t, l, raName("mod", i)), 16<<10)
		require.NoError(t, err)
		require.Equal(t, ta.files[0][raName("mod", i)], got)
	}
	idle(l)
	sizes := rangeBytes(t, f.srv.Requests())
	assert.LessOrEqual(t, len(sizes), 10, "request sizes: %v", sizes)
	for k := 1; k < len(sizes)-1; k++ {
		assert.Greater(t, sizes[k], sizes[k-1], "each request of a stream is larger: %v", sizes)
	}

	// A far jump starts again at the minimum request size.
	f.reset()
	got, err := readFile(ctx, l, lookup(t, l, farName(0)), 16<<10)
	require.NoError(t, err)
	require.Equal(t, ta.files[0][farName(0)], got)
	idle(l)
	sizes = rangeBytes(t, f.srv.Requests())
	require.Len(t, sizes, 1)
	assert.Less(t, sizes[0], int64(2*raMin+raFileSize), "a far jump resets the window")
}

func TestReadaheadRegion(t *testing.T) {
	tests := []struct {
		name string
		off  []int64 // compressed offsets of successive misses
		reg  []cspan
		want []int64 // window of each
	}{
		{"sequential doubles", []int64{0, 1 << 20, 3 << 20, 7 << 20, 15 << 20, 31 << 20}, nil,
			[]int64{1 << 20, 2 << 20, 4 << 20, 8 << 20, 16 << 20, 16 << 20}},
		{"far jump resets", []int64{0, 1 << 20, 100 << 20, 101 << 20}, nil,
			[]int64{1 << 20, 2 << 20, 1 << 20, 2 << 20}},
		{"interleaved streams", []int64{0, 100 << 20, 1 << 20, 101 << 20, 3 << 20}, nil,
			[]int64{1 << 20, 1 << 20, 2 << 20, 2 << 20, 4 << 20}},
		{"same directory region", []int64{0, 20 << 20, 10 << 20}, []cspan{{0, 30 << 20}, {0, 30 << 20}, {0, 30 << 20}},
			[]int64{1 << 20, 2 << 20, 4 << 20}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ra readahead
			for k, off := range tt.off {
				var reg cspan
				if tt.reg != nil {
					reg = tt.reg[k]
				}
				w, s := ra.window(off, reg, 1<<20, 16<<20)
				assert.Equal(t, tt.want[k], w, "miss %d at %d", k, off)
				ra.cover(s, cspan{off, off + w})
			}
		})
	}
}

func TestRegionOfPackage(t *testing.T) {
	ta := readaheadArchive(t)
	ctx := context.Background()
	f := newFake(t, []zenodotest.SeedFile{{Name: archive.ArchiveFileName, Data: ta.tar}, {Name: archive.IndexFileName, Data: ta.index}})
	op := newOpener(t, f.client(t))
	img, err := op.Open(ctx, f.ref(t))
	require.NoError(t, err)
	l, err := img.Layer(ctx, ta.layers[0])
	require.NoError(t, err)
	toc := l.TOC()
	first, last := lookup(t, l, raName("mod", 0)), lookup(t, l, raName("mod", raFiles-1))
	reg := region(toc, lookup(t, l, raName("mod", 40)))
	_, lm := toc.MemberRange(last, last.Size-1, 1)
	// usr (with the filler) is within maxRegion too: the region is the
	// largest such ancestor, and stops before opt.
	assert.LessOrEqual(t, reg.lo, toc.Members[first.Member].Offset)
	assert.GreaterOrEqual(t, reg.hi, toc.Members[lm].Offset+toc.Members[lm].Size)
	far := lookup(t, l, farName(0))
	assert.LessOrEqual(t, reg.hi, toc.Members[far.Member].Offset+toc.Members[far.Member].Size)
}

func TestReadaheadPrefetchesRegion(t *testing.T) {
	ctx := context.Background()
	ta := readaheadArchive(t)
	f := newFake(t, []zenodotest.SeedFile{{Name: archive.ArchiveFileName, Data: ta.tar}, {Name: archive.IndexFileName, Data: ta.index}})
	op := newOpener(t, f.client(t), WithCache(memCacheOf(t)), WithMinRequest(raMin), WithMaxRequest(16<<20))
	img, err := op.Open(ctx, f.ref(t))
	require.NoError(t, err)
	l, err := img.Layer(ctx, ta.layers[0])
	require.NoError(t, err)
	f.reset()

	// An import reads a package's files in no particular order: from the
	// second miss on, the package's region is fetched by a few requests.
	r := rand.New(rand.NewPCG(3, 4))
	for _, i := range r.Perm(raFiles) {
		got, err := readFile(ctx, l, lookup(t, l, raName("mod", i)), 16<<10)
		require.NoError(t, err)
		require.Equal(t, ta.files[0][raName("mod", i)], got)
	}
	idle(l)
	sizes := rangeBytes(t, f.srv.Requests())
	assert.LessOrEqual(t, len(sizes), 2+maxPrefetchRuns+2, "request sizes: %v", sizes)
}
