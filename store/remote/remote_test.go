package remote

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/archive"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/cache"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/seekable"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/zenodo"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/zenodo/zenodotest"
)

func TestOpenCostsAtMostThreeRequests(t *testing.T) {
	ctx := context.Background()
	f := newFake(t, nil)
	var st Stats
	op := newOpener(t, f.client(t), WithObserver(st.Observe))
	img, err := op.Open(ctx, f.ref(t))
	require.NoError(t, err)
	assert.LessOrEqual(t, len(f.srv.Requests()), 3, "requests: %+v", f.srv.Requests())
	reqs := f.log.all()
	assert.Len(t, reqs, 3, "record, index, metadata: %+v", reqs)
	assert.Equal(t, ModeIndex, img.Mode())
	assert.Equal(t, archive.ArchiveFileName, img.File().Key)
	assert.Equal(t, f.pub.RecID, img.Record().RecordID())
	assert.Equal(t, buildArchive(t).idx.Root.Digest, img.Root().Digest)

	// Every layer's TOC, and the manifests, come from the metadata range.
	for _, d := range buildArchive(t).layers {
		l, err := img.Layer(ctx, d)
		require.NoError(t, err)
		assert.NotEmpty(t, l.TOC().Entries)
	}
	mans, err := img.Archive().Manifests(ctx)
	require.NoError(t, err)
	require.Len(t, mans, 1)
	// Opening again, by DOI, costs nothing.
	img2, err := op.OpenByDOI(ctx, f.pub.DOI)
	require.NoError(t, err)
	assert.Same(t, img, img2)
	assert.Len(t, f.log.all(), len(reqs))
	assert.Equal(t, int64(1), st.Snapshot().Opens)
}

func TestReadOneSmallFileOneRequest(t *testing.T) {
	ctx := context.Background()
	f := newFake(t, nil)
	ta := buildArchive(t)
	var st Stats
	op := newOpener(t, f.client(t), WithCache(memCacheOf(t)), WithObserver(st.Observe))
	img, err := op.Open(ctx, f.ref(t))
	require.NoError(t, err)
	l, err := img.Layer(ctx, ta.layers[0])
	require.NoError(t, err)
	f.reset()

	name := smallName(10)
	e := lookup(t, l, name)
	got, err := readFile(ctx, l, e, 128<<10)
	require.NoError(t, err)
	assert.Equal(t, ta.files[0][name], got)
	idle(l)
	require.Len(t, f.log.files(), 1)
	assert.LessOrEqual(t, len(f.srv.Requests()), 1)
	s := st.Snapshot()
	m := l.TOC().Members[e.Member]
	assert.GreaterOrEqual(t, s.FetchBytes, m.Size)
	assert.GreaterOrEqual(t, s.FetchBytes, int64(DefaultMinRequest), "a miss is extended to the minimum request")
	assert.Equal(t, int64(1), s.FetchRequests)
}

func TestAdjacentFilesCoalesced(t *testing.T) {
	ctx := context.Background()
	f := newFake(t, nil)
	ta := buildArchive(t)
	var st Stats
	op := newOpener(t, f.client(t), WithCache(memCacheOf(t)), WithObserver(st.Observe))
	img, err := op.Open(ctx, f.ref(t))
	require.NoError(t, err)
	l, err := img.Layer(ctx, ta.layers[0])
	require.NoError(t, err)
	f.reset()
	for i := 5; i < 5+32; i++ {
		got, err := readFile(ctx, l, lookup(t, l, smallName(i)), 4096)
		require.NoError(t, err)
		require.Equal(t, ta.files[0][smallName(i)], got)
	}
	idle(l)
	assert.Len(t, f.log.files(), 1)
	s := st.Snapshot()
	assert.Equal(t, int64(1), s.FetchRequests)
	assert.GreaterOrEqual(t, s.FetchMembers, int64(32), "one request brought every file's member")
}

func TestConcurrentReadersOneRequest(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		file string
		opts []Option
	}{
		{"small file, disk cache", smallName(7), []Option{WithCache(cache.NewMemory(cache.WithVerify(cache.VerifyDigest)))}},
		{"small file, memory only", smallName(7), nil},
		{"big file", "usr/lib/big.bin", []Option{WithCache(cache.NewMemory()), WithMaxRequest(4 << 20)}},
		{"big file, no cache", "usr/lib/big.bin", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t, nil)
			ta := buildArchive(t)
			op := newOpener(t, f.client(t), tc.opts...)
			img, err := op.Open(ctx, f.ref(t))
			require.NoError(t, err)
			l, err := img.Layer(ctx, ta.layers[0])
			require.NoError(t, err)
			f.reset()
			e := lookup(t, l, tc.file)
			var wg sync.WaitGroup
			errs := make(chan error, 20)
			for range 20 {
				wg.Go(func() {
					got, err := readFile(ctx, l, e, 128<<10)
					if err == nil && !bytes.Equal(got, ta.files[0][tc.file]) {
						err = errors.New("wrong content")
					}
					errs <- err
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				require.NoError(t, err)
			}
			idle(l)
			assert.Len(t, f.log.files(), 1)
		})
	}
}

// TestReaderAfterFinishedFetch: a reader that missed the caches while
// another reader's fetch of the same member was under way, and that plans
// its own fetch only once that one is over, uses the fetched member instead
// of asking for it again.
func TestReaderAfterFinishedFetch(t *testing.T) {
	ctx := context.Background()
	ta := buildArchive(t)
	for _, tc := range []struct {
		name  string
		cache bool
	}{
		{"memory only", false},
		{"disk cache", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := zenodotest.New()
			t.Cleanup(func() { srv.Close() })
			// File requests wait for gate once gated is set; arrived says one did.
			var gated atomic.Bool
			gate, arrived := make(chan struct{}), make(chan struct{}, 1)
			var openGate sync.Once
			release := func() { openGate.Do(func() { close(gate) }) }
			ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if gated.Load() && strings.Contains(r.URL.Path, "/files/") {
					select {
					case arrived <- struct{}{}:
					default:
					}
					select {
					case <-gate:
					case <-r.Context().Done():
						return
					}
				}
				srv.ServeHTTP(w, r)
			}))
			t.Cleanup(ts.Close)
			t.Cleanup(release) // before ts.Close
			f := publish(t, srv, ts, nil)

			name := smallName(7)
			// The first reader misses each member of the file once; the
			// second reader's first miss waits until a fetch has finished.
			var misses atomic.Int32
			var secondMissed, fetched sync.Once
			missedCh, fetchedCh := make(chan struct{}), make(chan struct{})
			var perReader atomic.Int32
			observe := func(e Event) {
				switch e.Kind {
				case EventCacheMiss:
					if misses.Add(1) == perReader.Load()+1 {
						secondMissed.Do(func() { close(missedCh) })
						<-fetchedCh
					}
				case EventFetch:
					if e.Err == nil {
						fetched.Do(func() { close(fetchedCh) })
					}
				}
			}
			opts := []Option{WithObserver(observe)}
			if tc.cache {
				opts = append(opts, WithCache(memCacheOf(t)), WithBackgroundFill(false))
			}
			op := newOpener(t, f.client(t), opts...)
			img, err := op.Open(ctx, f.ref(t))
			require.NoError(t, err)
			l, err := img.Layer(ctx, ta.layers[0])
			require.NoError(t, err)
			e := lookup(t, l, name)
			first, last := l.TOC().MemberRange(e, 0, e.Size)
			perReader.Store(int32(last - first + 1))
			f.reset()
			gated.Store(true)

			type result struct {
				data []byte
				err  error
			}
			read := func() <-chan result {
				ch := make(chan result, 1)
				go func() {
					data, err := readFile(ctx, l, e, 128<<10)
					ch <- result{data, err}
				}()
				return ch
			}
			a := read()
			<-arrived // the first reader's fetch is under way
			b := read()
			<-missedCh // the second reader missed the caches
			release()
			for _, ch := range []<-chan result{a, b} {
				r := <-ch
				require.NoError(t, r.err)
				assert.Equal(t, ta.files[0][name], r.data)
			}
			idle(l)
			assert.Len(t, f.log.files(), 1, "the second reader fetched the member again")
		})
	}
}

// TestReadEveryFile reads every file of every layer, with several read
// sizes and offsets, and compares with the original bytes.
func TestReadEveryFile(t *testing.T) {
	ctx := context.Background()
	f := newFake(t, nil)
	ta := buildArchive(t)
	for _, tc := range []struct {
		name  string
		chunk int
		opts  []Option
	}{
		{"128KiB reads, cache", 128 << 10, []Option{WithCache(cache.NewMemory(cache.WithVerify(cache.VerifyDigest)))}},
		{"odd reads, no cache, tiny requests", 3001, []Option{WithMinRequest(1), WithMaxRequest(1), WithMemoryCacheSize(1)}},
		{"whole files", 8 << 20, []Option{WithMinRequest(64 << 10)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			op := newOpener(t, f.client(t), tc.opts...)
			img, err := op.Open(ctx, f.ref(t))
			require.NoError(t, err)
			for li, d := range ta.layers {
				l, err := img.Layer(ctx, d)
				require.NoError(t, err)
				seen := 0
				for i := range l.TOC().Entries {
					e := &l.TOC().Entries[i]
					r := l.TOC().Resolve(e)
					if r.Type != seekable.TypeReg {
						continue
					}
					got, err := readFile(ctx, l, e, tc.chunk)
					require.NoError(t, err, e.Name)
					want, ok := ta.files[li][r.Name]
					require.True(t, ok, r.Name)
					require.Equal(t, len(want), len(got), e.Name)
					require.True(t, bytes.Equal(want, got), e.Name)
					seen++
				}
				assert.Greater(t, seen, 0)
			}
		})
	}
}

func TestReadAtContract(t *testing.T) {
	ctx := context.Background()
	f := newFake(t, nil)
	ta := buildArchive(t)
	op := newOpener(t, f.client(t))
	img, err := op.Open(ctx, f.ref(t))
	require.NoError(t, err)
	l, err := img.Layer(ctx, ta.layers[1])
	require.NoError(t, err)
	e := lookup(t, l, "etc/hostname")
	p := make([]byte, 100)
	n, err := l.ReadAt(ctx, e, p, 2)
	assert.Equal(t, 5, n)
	assert.Equal(t, io.EOF, err)
	assert.Equal(t, "nodo\n", string(p[:n]))
	n, err = l.ReadAt(ctx, e, p, 7)
	assert.Equal(t, 0, n)
	assert.Equal(t, io.EOF, err)
	_, err = l.ReadAt(ctx, e, p, -1)
	assert.True(t, errdefs.IsInvalidArgument(err))
	_, err = l.ReadAt(ctx, lookup(t, l, "etc"), p, 0)
	assert.True(t, errdefs.IsInvalidArgument(err))
	require.NoError(t, l.Close())
	_, err = l.ReadAt(ctx, e, p, 0)
	assert.ErrorIs(t, err, fs.ErrClosed)
	// A closed layer is replaced by a new one.
	l2, err := img.Layer(ctx, ta.layers[1])
	require.NoError(t, err)
	assert.NotSame(t, l, l2)
}

func TestCorruptMember(t *testing.T) {
	ctx := context.Background()
	ta := buildArchive(t)
	// Flip a byte inside the member holding f20 of the first layer.
	probe, err := archive.Open(ctx, bytes.NewReader(ta.tar), int64(len(ta.tar)), archive.WithIndex(ta.idx))
	require.NoError(t, err)
	toc, err := probe.TOC(ctx, ta.layers[0])
	require.NoError(t, err)
	e, ok := toc.Lookup(smallName(20))
	require.True(t, ok)
	m := toc.Members[e.Member]
	layerOff, _, ok := probe.Blob(ta.layers[0].Digest)
	require.True(t, ok)
	bad := bytes.Clone(ta.tar)
	bad[layerOff+m.Offset+m.Size/2] ^= 0x40

	f := newFake(t, []zenodotest.SeedFile{{Name: archive.ArchiveFileName, Data: bad}, {Name: archive.IndexFileName, Data: ta.index}})
	c := memCacheOf(t)
	op := newOpener(t, f.client(t), WithCache(c))
	img, err := op.Open(ctx, f.ref(t))
	require.NoError(t, err)
	l, err := img.Layer(ctx, ta.layers[0])
	require.NoError(t, err)
	_, err = readFile(ctx, l, lookup(t, l, smallName(20)), 4096)
	require.Error(t, err)
	assert.ErrorIs(t, err, seekable.ErrDigestMismatch)
	assert.True(t, errdefs.IsDataLoss(err))
	_, err = c.Get(ctx, m.Digest.String())
	assert.True(t, errdefs.IsNotFound(err), "the corrupt member must not be cached: %v", err)
	// Its neighbours were fine and are served.
	got, err := readFile(ctx, l, lookup(t, l, smallName(21)), 4096)
	require.NoError(t, err)
	assert.Equal(t, ta.files[0][smallName(21)], got)
}

func TestBackgroundFill(t *testing.T) {
	ctx := context.Background()
	f := newFake(t, nil)
	ta := buildArchive(t)
	var st Stats
	op := newOpener(t, f.client(t), WithCache(memCacheOf(t)), WithObserver(st.Observe))
	img, err := op.Open(ctx, f.ref(t))
	require.NoError(t, err)
	l, err := img.Layer(ctx, ta.layers[0])
	require.NoError(t, err)
	// One on-demand read first, then the fill of the rest.
	_, err = readFile(ctx, l, lookup(t, l, smallName(0)), 4096)
	require.NoError(t, err)
	idle(l)
	f.reset()
	l.StartFill(ctx)
	l.StartFill(ctx) // a second call does nothing
	require.NoError(t, l.WaitFill(ctx))
	require.Len(t, f.log.files(), 1)
	_, size := layerSpan(t, img, l)
	s := st.Snapshot()
	assert.LessOrEqual(t, s.FillBytes, size)
	assert.Equal(t, int64(len(l.TOC().Members)), s.FillMembers+s.FetchMembers, "the fill skips the members cached before")

	f.reset()
	for i := range l.TOC().Entries {
		e := &l.TOC().Entries[i]
		if e.Type != seekable.TypeReg || e.Size == 0 {
			continue
		}
		got, err := readFile(ctx, l, e, 128<<10)
		require.NoError(t, err)
		require.Equal(t, ta.files[0][e.Name], got)
	}
	assert.Empty(t, f.log.all(), "after the fill every read is served from the cache")
	s = st.Snapshot()
	assert.Equal(t, int64(1), s.Fills)
	assert.Equal(t, int64(0), s.FillErrors)
	assert.Equal(t, int64(1), s.FillRequests)
}

// layerSpan returns the layer blob's offset and size in the archive.
func layerSpan(t testing.TB, img *Image, l *Layer) (off, size int64) {
	t.Helper()
	off, size, ok := img.Archive().Blob(l.Descriptor().Digest)
	require.True(t, ok)
	return off, size
}

func TestBackgroundFillResumes(t *testing.T) {
	ctx := context.Background()
	f := newFake(t, nil)
	ta := buildArchive(t)
	c := memCacheOf(t)
	var mu sync.Mutex
	var offsets []int64
	op := newOpener(t, f.client(t), WithCache(c), WithFillRetries(3), WithObserver(func(e Event) {
		if e.Kind == EventFetch && e.Fill {
			mu.Lock()
			offsets = append(offsets, e.Offset)
			mu.Unlock()
		}
	}))
	img, err := op.Open(ctx, f.ref(t))
	require.NoError(t, err)
	l, err := img.Layer(ctx, ta.layers[0])
	require.NoError(t, err)
	f.reset()
	f.srv.InjectFault(zenodotest.Fault{Method: "GET", PathContains: "/files/" + archive.ArchiveFileName, ResetAfter: 300 << 10})
	l.StartFill(ctx)
	require.NoError(t, l.WaitFill(ctx))
	require.Len(t, f.log.files(), 2)
	mu.Lock()
	require.Len(t, offsets, 2)
	assert.Equal(t, int64(0), offsets[0])
	assert.Greater(t, offsets[1], int64(0), "the second request resumes where the first stopped")
	mu.Unlock()
	for _, m := range l.TOC().Members {
		r, err := c.Get(ctx, m.Digest.String())
		require.NoError(t, err, "member at %d not cached", m.Offset)
		r.Close()
	}
}

func TestFillGivesUp(t *testing.T) {
	ctx := context.Background()
	f := newFake(t, nil)
	ta := buildArchive(t)
	op := newOpener(t, f.client(t), WithCache(memCacheOf(t)), WithFillRetries(2))
	img, err := op.Open(ctx, f.ref(t))
	require.NoError(t, err)
	l, err := img.Layer(ctx, ta.layers[0])
	require.NoError(t, err)
	f.srv.InjectFault(zenodotest.Fault{Method: "GET", PathContains: "/files/", Times: 100, ResetAfter: zenodotest.BeforeBody})
	l.StartFill(ctx)
	err = l.WaitFill(ctx)
	require.Error(t, err)
	assert.True(t, errdefs.IsUnavailable(err), "%v", err)
}

func TestFillStopsOnClose(t *testing.T) {
	ctx := context.Background()
	f := newFake(t, nil, zenodotest.WithBandwidth(256<<10))
	ta := buildArchive(t)
	var st Stats
	started := make(chan struct{}, 1)
	op := newOpener(t, f.client(t), WithCache(memCacheOf(t)), WithObserver(func(e Event) {
		st.Observe(e)
		if e.Kind == EventFetch && e.Fill {
			select {
			case started <- struct{}{}:
			default:
			}
		}
	}))
	img, err := op.Open(ctx, f.ref(t))
	require.NoError(t, err)
	l, err := img.Layer(ctx, ta.layers[0])
	require.NoError(t, err)
	l.StartFill(ctx)
	require.NoError(t, l.Close())
	err = l.WaitFill(ctx)
	if err != nil {
		assert.ErrorIs(t, err, fs.ErrClosed)
	}
	assert.Equal(t, int64(1), st.Snapshot().Fills)
}

func TestOffline(t *testing.T) {
	ctx := context.Background()
	ta := buildArchive(t)
	srv := zenodotest.New()
	t.Cleanup(func() { srv.Close() })
	ts := httptest.NewServer(srv)
	f := publish(t, srv, ts, nil)
	stateDir, cacheDir := t.TempDir(), t.TempDir()

	dc, err := cache.NewDirectory(cacheDir, cache.WithVerify(cache.VerifyDigest), cache.WithSync(false))
	require.NoError(t, err)
	op := NewOpener(f.client(t), WithStateDir(stateDir), WithCache(dc))
	img, err := op.OpenByDOI(ctx, f.pub.DOI)
	require.NoError(t, err)
	l, err := img.Layer(ctx, ta.layers[0])
	require.NoError(t, err)
	cached := smallName(1)
	_, err = readFile(ctx, l, lookup(t, l, cached), 4096)
	require.NoError(t, err)
	require.NoError(t, op.Close())
	require.NoError(t, dc.Close())
	ts.Close() // Zenodo is gone.

	dc, err = cache.NewDirectory(cacheDir, cache.WithVerify(cache.VerifyDigest))
	require.NoError(t, err)
	t.Cleanup(func() { dc.Close() })
	var st Stats
	op = newOpener(t, newClient(t, ts.URL), WithStateDir(stateDir), WithCache(dc), WithObserver(st.Observe))
	img, err = op.OpenByDOI(ctx, f.pub.DOI)
	require.NoError(t, err)
	assert.Equal(t, ModeState, img.Mode())
	l, err = img.LayerByTOC(ctx, digest.Digest(ta.layers[0].Annotations[seekable.AnnotationTOCDigest]))
	require.NoError(t, err)
	got, err := readFile(ctx, l, lookup(t, l, cached), 4096)
	require.NoError(t, err)
	assert.Equal(t, ta.files[0][cached], got)
	// The provider serves metadata blobs offline.
	_, err = content.ReadBlob(ctx, img.Archive(), img.Root())
	require.NoError(t, err)
	// Uncached data fails (and does not hang).
	_, err = readFile(ctx, l, lookup(t, l, "usr/lib/big.bin"), 4096)
	require.Error(t, err)
	assert.True(t, errdefs.IsUnavailable(err), "%v", err)
	assert.Equal(t, int64(1), st.Snapshot().ReadErrors)
}

func TestFileChoice(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		files []string
		want  string
		err   error
	}{
		{"no image", []string{"README.md", "data.csv"}, "", ErrNoImage},
		{"two tars", []string{"a.tar", "b.tar.gz"}, "", ErrAmbiguous},
		{"two image.tar", []string{"image.tar.gz", "image.tar.zst"}, "", ErrAmbiguous},
		{"image.tar wins", []string{"image.tar", "image.tar.gz", "image.tar.index.json"}, "image.tar", nil},
		{"prefix", []string{"image.tar.gz", "other.tar"}, "image.tar.gz", nil},
		{"single tar", []string{"README.md", "tool.tar.gz"}, "tool.tar.gz", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &zenodo.Record{ID: "1"}
			for _, n := range tc.files {
				rec.Files = append(rec.Files, zenodo.File{Key: n, Size: 1})
			}
			got, err := chooseFile(rec)
			if tc.err != nil {
				require.ErrorIs(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got.Key)
		})
	}

	// Through Open, on records of the fake.
	srv, ts := zenodotest.NewTestServer(t)
	for _, tc := range []struct {
		files []string
		err   error
		kind  func(error) bool
	}{
		{[]string{"README.md"}, ErrNoImage, errdefs.IsNotFound},
		{[]string{"one.tar", "two.tar"}, ErrAmbiguous, errdefs.IsInvalidArgument},
	} {
		var seeds []zenodotest.SeedFile
		for _, n := range tc.files {
			seeds = append(seeds, zenodotest.SeedFile{Name: n, Data: []byte("x")})
		}
		f := publish(t, srv, ts, seeds)
		op := newOpener(t, f.client(t))
		_, err := op.Open(ctx, f.ref(t))
		require.ErrorIs(t, err, tc.err)
		assert.True(t, tc.kind(err))
		assert.Contains(t, err.Error(), f.pub.RecID)
	}
}

func TestTarGzSpooled(t *testing.T) {
	ctx := context.Background()
	ta := buildArchive(t)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, err := zw.Write(ta.tar)
	require.NoError(t, err)
	require.NoError(t, zw.Close())
	for _, stateful := range []bool{false, true} {
		t.Run(fmt.Sprintf("state=%v", stateful), func(t *testing.T) {
			f := newFake(t, []zenodotest.SeedFile{{Name: "image.tar.gz", Data: gz.Bytes()}})
			var opts []Option
			stateDir := ""
			if stateful {
				stateDir = t.TempDir()
				opts = append(opts, WithStateDir(stateDir))
			}
			var st Stats
			op := newOpener(t, f.client(t), append(opts, WithObserver(st.Observe))...)
			img, err := op.Open(ctx, f.ref(t))
			require.NoError(t, err)
			assert.Equal(t, ModeSpool, img.Mode())
			require.Len(t, f.log.all(), 2, "record and one download")
			assert.Equal(t, int64(1), st.Snapshot().Fallbacks)

			l, err := img.Layer(ctx, ta.layers[0])
			require.NoError(t, err)
			got, err := readFile(ctx, l, lookup(t, l, "usr/lib/big.bin"), 128<<10)
			require.NoError(t, err)
			assert.Equal(t, ta.files[0]["usr/lib/big.bin"], got)
			blob, err := content.ReadBlob(ctx, img.Archive(), ta.layers[1])
			require.NoError(t, err)
			assert.Equal(t, ta.blobs[ta.layers[1].Digest], blob)
			assert.Len(t, f.log.all(), 2, "served locally")
			l.StartFill(ctx) // nothing to fill
			require.NoError(t, l.WaitFill(ctx))

			if stateful {
				// A restart opens the spool file without network.
				op2 := newOpener(t, newClient(t, "http://127.0.0.1:1"), WithStateDir(stateDir))
				img2, err := op2.OpenByDOI(ctx, f.pub.DOI)
				require.NoError(t, err)
				assert.Equal(t, ModeState, img2.Mode())
			}
		})
	}
}

func TestWalkWithoutIndex(t *testing.T) {
	ctx := context.Background()
	ta := buildArchive(t)
	f := newFake(t, []zenodotest.SeedFile{{Name: archive.ArchiveFileName, Data: ta.tar}})
	op := newOpener(t, f.client(t))
	img, err := op.Open(ctx, f.ref(t))
	require.NoError(t, err)
	assert.Equal(t, ModeWalk, img.Mode())
	t.Logf("header walk: %d requests", len(f.log.all()))
	l, err := img.Layer(ctx, ta.layers[1])
	require.NoError(t, err)
	got, err := readFile(ctx, l, lookup(t, l, "etc/text"), 128<<10)
	require.NoError(t, err)
	assert.Equal(t, ta.files[1]["etc/text"], got)
}

func TestServerIgnoringRange(t *testing.T) {
	ctx := context.Background()
	srv := zenodotest.New()
	t.Cleanup(func() { srv.Close() })
	ts := httptest.NewServer(noRange(srv))
	t.Cleanup(ts.Close)
	f := publish(t, srv, ts, nil)
	op := newOpener(t, f.client(t), WithStateDir(t.TempDir()))
	img, err := op.Open(ctx, f.ref(t))
	require.NoError(t, err)
	assert.Equal(t, ModeSpool, img.Mode())
	ta := buildArchive(t)
	l, err := img.Layer(ctx, ta.layers[0])
	require.NoError(t, err)
	got, err := readFile(ctx, l, lookup(t, l, smallName(3)), 4096)
	require.NoError(t, err)
	assert.Equal(t, ta.files[0][smallName(3)], got)
	// And a header walk falls back the same way.
	f2 := publish(t, srv, ts, []zenodotest.SeedFile{{Name: archive.ArchiveFileName, Data: ta.tar}})
	img2, err := op.Open(ctx, f2.ref(t))
	require.NoError(t, err)
	assert.Equal(t, ModeSpool, img2.Mode())
}

func TestProviderStreamsBlobs(t *testing.T) {
	ctx := context.Background()
	f := newFake(t, nil)
	ta := buildArchive(t)
	op := newOpener(t, f.client(t))
	img, err := op.Open(ctx, f.ref(t))
	require.NoError(t, err)
	f.reset()
	for _, d := range ta.layers {
		ra, err := img.Archive().ReaderAt(ctx, d)
		require.NoError(t, err)
		var buf bytes.Buffer
		_, err = io.Copy(&buf, content.NewReader(ra))
		require.NoError(t, err)
		require.NoError(t, ra.Close())
		assert.Equal(t, ta.blobs[d.Digest], buf.Bytes())
	}
	assert.Len(t, f.log.all(), len(ta.layers), "one streamed request per layer blob")
}

func TestPinnedDigestAndConcept(t *testing.T) {
	ctx := context.Background()
	f := newFake(t, nil)
	ta := buildArchive(t)
	op := newOpener(t, f.client(t))
	ref := f.ref(t)
	ref.Digest = ta.idx.Root.Digest
	_, err := op.Open(ctx, ref)
	require.NoError(t, err)
	ref.Digest = digest.FromString("nope")
	_, err = op.Open(ctx, ref)
	assert.True(t, errdefs.IsNotFound(err), "%v", err)

	concept, err := zenodo.ParseReference(f.pub.ConceptDOI + ":1.0")
	require.NoError(t, err)
	img, err := op.Open(ctx, concept)
	require.NoError(t, err)
	assert.Equal(t, f.pub.RecID, img.Record().RecordID())
	// A tag that does not exist.
	concept.Tag = "2.0"
	_, err = op.Open(ctx, concept)
	assert.True(t, errdefs.IsNotFound(err), "%v", err)
}

func TestConcurrentOpensCollapsed(t *testing.T) {
	ctx := context.Background()
	f := newFake(t, nil, zenodotest.WithLatency(0))
	op := newOpener(t, f.client(t))
	var wg sync.WaitGroup
	imgs := make([]*Image, 10)
	for i := range imgs {
		wg.Go(func() {
			img, err := op.Open(ctx, f.ref(t))
			assert.NoError(t, err)
			imgs[i] = img
		})
	}
	wg.Wait()
	for _, img := range imgs {
		assert.Same(t, imgs[0], img)
	}
	assert.Len(t, f.log.all(), 3)
}

func TestLayerErrors(t *testing.T) {
	ctx := context.Background()
	f := newFake(t, nil)
	ta := buildArchive(t)
	op := newOpener(t, f.client(t))
	img, err := op.Open(ctx, f.ref(t))
	require.NoError(t, err)
	d := ta.layers[0]
	d.Annotations = nil
	_, err = img.Layer(ctx, d)
	assert.ErrorIs(t, err, ErrNoTOC)
	d = ta.layers[0]
	d.Digest = digest.FromString("other")
	_, err = img.Layer(ctx, d)
	assert.True(t, errdefs.IsNotFound(err))
	_, err = img.LayerByTOC(ctx, digest.FromString("no toc"))
	assert.True(t, errdefs.IsNotFound(err))
	require.NoError(t, op.Close())
	_, err = op.Open(ctx, f.ref(t))
	assert.True(t, errdefs.IsUnavailable(err))
	_, err = img.Layer(ctx, ta.layers[0])
	assert.Error(t, err)
}

func TestOpenRange(t *testing.T) {
	ctx := context.Background()
	f := newFake(t, nil)
	ta := buildArchive(t)
	c := f.client(t)
	rc, err := c.OpenRange(ctx, f.pub.RecID, archive.ArchiveFileName, 1000, 5000)
	require.NoError(t, err)
	got, err := io.ReadAll(rc)
	require.NoError(t, err)
	require.NoError(t, rc.Close())
	assert.Equal(t, ta.tar[1000:6000], got)
	_, err = c.OpenRange(ctx, f.pub.RecID, archive.ArchiveFileName, int64(len(ta.tar))-10, 20)
	assert.ErrorIs(t, err, zenodo.ErrChecksumMismatch)
	_, err = c.OpenRange(ctx, f.pub.RecID, archive.ArchiveFileName, -1, 20)
	assert.True(t, errdefs.IsInvalidArgument(err))
	// A body cut short is an error of the read.
	f.srv.InjectFault(zenodotest.Fault{PathContains: "/files/", Truncate: 100})
	rc, err = c.OpenRange(ctx, f.pub.RecID, archive.ArchiveFileName, 0, 5000)
	require.NoError(t, err)
	_, err = io.ReadAll(rc)
	assert.ErrorIs(t, err, io.ErrUnexpectedEOF)
	rc.Close()
}

func TestResolutionTTL(t *testing.T) {
	ctx := context.Background()
	f := newFake(t, nil)
	concept, err := zenodo.ParseReference(f.pub.ConceptDOI)
	require.NoError(t, err)
	for _, tc := range []struct {
		name      string
		ttl       time.Duration
		reresolve bool
	}{
		{"default TTL", 0, false},
		{"expired", time.Nanosecond, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			op := newOpener(t, f.client(t), WithTTL(tc.ttl))
			img, err := op.Open(ctx, concept)
			require.NoError(t, err)
			f.reset()
			img2, err := op.Open(ctx, concept)
			require.NoError(t, err)
			assert.Same(t, img, img2)
			files := 0
			for _, e := range f.log.all() {
				if strings.Contains(e.URL, "/files/") {
					files++
				}
			}
			assert.Zero(t, files, "the image stays open")
			if tc.reresolve {
				assert.NotEmpty(t, f.log.all(), "the concept is resolved again")
			} else {
				assert.Empty(t, f.log.all())
			}
			// A version DOI of an open image needs no request, whatever the TTL.
			f.reset()
			_, err = op.Open(ctx, f.ref(t))
			require.NoError(t, err)
			assert.Empty(t, f.log.all())
		})
	}
}

func TestOnDemandFetchResumes(t *testing.T) {
	ctx := context.Background()
	f := newFake(t, nil)
	ta := buildArchive(t)
	op := newOpener(t, f.client(t))
	img, err := op.Open(ctx, f.ref(t))
	require.NoError(t, err)
	l, err := img.Layer(ctx, ta.layers[0])
	require.NoError(t, err)
	f.reset()
	f.srv.InjectFault(zenodotest.Fault{Method: "GET", PathContains: "/files/", Truncate: 64 << 10})
	got, err := readFile(ctx, l, lookup(t, l, "usr/lib/big.bin"), 128<<10)
	require.NoError(t, err)
	assert.Equal(t, ta.files[0]["usr/lib/big.bin"], got)
	idle(l)
	assert.Len(t, f.log.files(), 2, "the cut request is resumed once")
}
