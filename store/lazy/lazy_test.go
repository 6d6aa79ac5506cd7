package lazy

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/fs"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/seekable"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/snapshot"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/zenodo"
)

// fakeLayer is a Layer with an empty TOC that counts fills and closes.
type fakeLayer struct {
	toc    *seekable.TOC
	fills  atomic.Int32
	closed atomic.Bool
}

func (l *fakeLayer) TOC() *seekable.TOC { return l.toc }
func (l *fakeLayer) ReadAt(ctx context.Context, e *seekable.Entry, p []byte, off int64) (int, error) {
	return 0, errors.New("no data")
}
func (l *fakeLayer) StartFill(ctx context.Context) { l.fills.Add(1) }
func (l *fakeLayer) Close() error                  { l.closed.Store(true); return nil }

// fakeOpener opens fakeLayers, counting calls; err, when set, fails them.
type fakeOpener struct {
	mu     sync.Mutex
	calls  map[digest.Digest]int
	layers []*fakeLayer
	err    error
	gate   chan struct{} // when set, OpenLayer waits for it
}

func (o *fakeOpener) OpenLayer(ctx context.Context, doi string, toc digest.Digest) (Layer, error) {
	if o.gate != nil {
		<-o.gate
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.calls == nil {
		o.calls = map[digest.Digest]int{}
	}
	o.calls[toc]++
	if o.err != nil {
		return nil, o.err
	}
	l := &fakeLayer{toc: &seekable.TOC{Version: 1}}
	o.layers = append(o.layers, l)
	return l, nil
}

func (o *fakeOpener) count(toc digest.Digest) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.calls[toc]
}

// fakeMount stands for a FUSE mount.
type fakeMount struct {
	layer     fs.Layer
	broken    atomic.Bool
	unmounted atomic.Bool
}

func (m *fakeMount) Check() error {
	if m.broken.Load() || m.unmounted.Load() {
		return errdefs.ErrUnavailable
	}
	return nil
}
func (m *fakeMount) Unmount() error { m.unmounted.Store(true); return nil }

// newFakeFS returns a fileSystem over op whose mounts are fakeMounts,
// recorded by mountpoint.
func newFakeFS(t *testing.T, op Opener, opts ...Option) (*fileSystem, func(mp string) *fakeMount) {
	t.Helper()
	f, err := NewFileSystem(op, opts...)
	require.NoError(t, err)
	fsys := f.(*fileSystem)
	var mu sync.Mutex
	mounts := map[string]*fakeMount{}
	fsys.mount = func(ctx context.Context, mp string, l fs.Layer, _ ...fs.Option) (mounted, error) {
		m := &fakeMount{layer: l}
		mu.Lock()
		mounts[mp] = m
		mu.Unlock()
		return m, nil
	}
	t.Cleanup(func() { assert.NoError(t, fsys.Close()) })
	return fsys, func(mp string) *fakeMount {
		mu.Lock()
		defer mu.Unlock()
		return mounts[mp]
	}
}

const testDOI = "10.5281/zenodo.123"

var testTOC = digest.FromString("toc")

func labelsOf(doi string, toc digest.Digest) map[string]string {
	return map[string]string{snapshot.LabelDOI: doi, snapshot.LabelTOCDigest: toc.String()}
}

func TestMountLabels(t *testing.T) {
	tests := []struct {
		name   string
		labels map[string]string
		err    error
	}{
		{"ok", labelsOf(testDOI, testTOC), nil},
		{"no TOC", map[string]string{snapshot.LabelDOI: testDOI}, errdefs.ErrInvalidArgument},
		{"bad TOC", map[string]string{snapshot.LabelDOI: testDOI, snapshot.LabelTOCDigest: "sha256:nope"}, errdefs.ErrInvalidArgument},
		{"no DOI", map[string]string{snapshot.LabelTOCDigest: testTOC.String()}, errdefs.ErrInvalidArgument},
		{"no labels", nil, errdefs.ErrInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			op := &fakeOpener{}
			f, _ := newFakeFS(t, op)
			mp := t.TempDir()
			err := f.Mount(t.Context(), mp, tt.labels)
			if tt.err != nil {
				require.ErrorIs(t, err, tt.err)
				assert.Empty(t, op.calls, "no layer is opened for bad labels")
				assert.ErrorIs(t, f.Check(t.Context(), mp, tt.labels), errdefs.ErrNotFound)
				return
			}
			require.NoError(t, err)
			require.NoError(t, f.Check(t.Context(), mp, tt.labels))
			require.NoError(t, f.Unmount(t.Context(), mp))
		})
	}
}

// TestSharedLayer: two mounts of one TOC digest (one layer in two
// namespaces) share one reader, opened once and closed after the last
// unmount; a fill starts per mount (the reader ignores repeats).
func TestSharedLayer(t *testing.T) {
	op := &fakeOpener{}
	f, mountOf := newFakeFS(t, op)
	mp1, mp2 := t.TempDir(), t.TempDir()
	require.NoError(t, f.Mount(t.Context(), mp1, labelsOf(testDOI, testTOC)))
	require.NoError(t, f.Mount(t.Context(), mp2, labelsOf(testDOI, testTOC)))
	assert.Equal(t, 1, op.count(testTOC))
	require.Len(t, op.layers, 1)
	l := op.layers[0]
	assert.Same(t, mountOf(mp1).layer.(guardedLayer).Layer, mountOf(mp2).layer.(guardedLayer).Layer)
	assert.Same(t, l, mountOf(mp1).layer.(guardedLayer).Layer)
	assert.EqualValues(t, 2, l.fills.Load())

	require.NoError(t, f.Unmount(t.Context(), mp1))
	assert.False(t, l.closed.Load(), "still mounted on %s", mp2)
	assert.True(t, mountOf(mp1).unmounted.Load())
	require.NoError(t, f.Unmount(t.Context(), mp2))
	assert.True(t, l.closed.Load())

	// Mounted again later: a fresh reader.
	require.NoError(t, f.Mount(t.Context(), mp1, labelsOf(testDOI, testTOC)))
	assert.Equal(t, 2, op.count(testTOC))
	assert.ErrorIs(t, f.Unmount(t.Context(), mp2), errdefs.ErrNotFound)
}

// TestConcurrentMounts: mounts racing for one layer open it once.
func TestConcurrentMounts(t *testing.T) {
	op := &fakeOpener{gate: make(chan struct{})}
	f, _ := newFakeFS(t, op)
	const n = 8
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		mp := filepath.Join(t.TempDir(), "mp")
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f.Mount(t.Context(), mp, labelsOf(testDOI, testTOC))
		}()
	}
	close(op.gate)
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	assert.Equal(t, 1, op.count(testTOC))
}

func TestNoBackgroundFill(t *testing.T) {
	op := &fakeOpener{}
	f, _ := newFakeFS(t, op, WithBackgroundFill(false))
	require.NoError(t, f.Mount(t.Context(), t.TempDir(), labelsOf(testDOI, testTOC)))
	require.Len(t, op.layers, 1)
	assert.Zero(t, op.layers[0].fills.Load())
}

// TestOpenFailure: a layer that cannot be opened fails Mount with the
// Opener's error kind (the snapshotter falls back), and is tried again by
// the next Mount.
func TestOpenFailure(t *testing.T) {
	op := &fakeOpener{err: errdefs.ErrNotFound}
	f, mountOf := newFakeFS(t, op)
	mp := t.TempDir()
	err := f.Mount(t.Context(), mp, labelsOf(testDOI, testTOC))
	require.ErrorIs(t, err, errdefs.ErrNotFound)
	assert.Contains(t, err.Error(), mp)
	assert.Nil(t, mountOf(mp))

	op.mu.Lock()
	op.err = nil
	op.mu.Unlock()
	require.NoError(t, f.Mount(t.Context(), mp, labelsOf(testDOI, testTOC)))
	assert.Equal(t, 2, op.count(testTOC))
}

// TestRemountBroken: Mount on a mountpoint already served is a no-op while
// the mount is healthy, and replaces it when it is broken.
func TestRemountBroken(t *testing.T) {
	op := &fakeOpener{}
	f, mountOf := newFakeFS(t, op)
	mp := t.TempDir()
	require.NoError(t, f.Mount(t.Context(), mp, labelsOf(testDOI, testTOC)))
	first := mountOf(mp)
	require.NoError(t, f.Mount(t.Context(), mp, labelsOf(testDOI, testTOC)))
	assert.Same(t, first, mountOf(mp))

	first.broken.Store(true)
	require.Error(t, f.Check(t.Context(), mp, nil))
	require.NoError(t, f.Mount(t.Context(), mp, labelsOf(testDOI, testTOC)))
	assert.NotSame(t, first, mountOf(mp))
	assert.True(t, first.unmounted.Load())
	require.NoError(t, f.Check(t.Context(), mp, nil))
}

func TestCloseUnmountsAll(t *testing.T) {
	op := &fakeOpener{}
	f, err := NewFileSystem(op)
	require.NoError(t, err)
	fsys := f.(*fileSystem)
	var mounts []*fakeMount
	fsys.mount = func(ctx context.Context, mp string, l fs.Layer, _ ...fs.Option) (mounted, error) {
		m := &fakeMount{layer: l}
		mounts = append(mounts, m)
		return m, nil
	}
	require.NoError(t, f.Mount(t.Context(), t.TempDir(), labelsOf(testDOI, testTOC)))
	require.NoError(t, f.Mount(t.Context(), t.TempDir(), labelsOf(testDOI, digest.FromString("other"))))
	require.NoError(t, f.Close())
	for _, m := range mounts {
		assert.True(t, m.unmounted.Load())
	}
	for _, l := range op.layers {
		assert.True(t, l.closed.Load())
	}
	require.ErrorIs(t, f.Mount(t.Context(), t.TempDir(), labelsOf(testDOI, testTOC)), errdefs.ErrUnavailable)
	require.NoError(t, f.Close())
}

func TestNewFileSystemOptions(t *testing.T) {
	_, err := NewFileSystem(nil)
	require.ErrorIs(t, err, errdefs.ErrInvalidArgument)
	_, err = NewFileSystem(&fakeOpener{}, WithReadTimeout(0))
	require.ErrorIs(t, err, errdefs.ErrInvalidArgument)
	_, err = NewFileSystem(&fakeOpener{}, WithReadTimeout(1), WithFSOptions(fs.WithDebug(true)), nil)
	require.NoError(t, err)
}

func TestHosts(t *testing.T) {
	var got []string
	opener := func(name string) Opener {
		return OpenerFunc(func(ctx context.Context, doi string, toc digest.Digest) (Layer, error) {
			got = append(got, name+" "+doi)
			return &fakeLayer{}, nil
		})
	}
	h := Hosts(map[zenodo.Host]Opener{zenodo.HostProduction: opener("prod"), zenodo.HostSandbox: opener("sandbox")})
	tests := []struct {
		doi  string
		want string
		err  error
	}{
		{"10.5281/zenodo.5", "prod 10.5281/zenodo.5", nil},
		{"10.5072/zenodo.7", "sandbox 10.5072/zenodo.7", nil},
		{"not a doi", "", errdefs.ErrInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.doi, func(t *testing.T) {
			got = nil
			_, err := h.OpenLayer(t.Context(), tt.doi, testTOC)
			if tt.err != nil {
				require.ErrorIs(t, err, tt.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, []string{tt.want}, got)
		})
	}
	only := Hosts(map[zenodo.Host]Opener{zenodo.HostProduction: opener("prod")})
	_, err := only.OpenLayer(t.Context(), "10.5072/zenodo.7", testTOC)
	require.ErrorIs(t, err, errdefs.ErrNotFound)
}
