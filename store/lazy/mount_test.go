package lazy

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/internal/testutil"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/cache"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/remote"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/seekable"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/snapshot"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/zenodo"
)

// TestMountRemote mounts a layer of a record of the fake Zenodo through the
// real stack (zenodo client, store/remote, store/fs over FUSE): every file
// reads back byte for byte, a second mount of the same layer shares its
// reader (no new request), and labels naming no layer of the record fail.
func TestMountRemote(t *testing.T) {
	testutil.RequireFUSE(t)
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	require.NoError(t, err)
	reqs := &requestLog{}
	_, client := newFake(t, zenodo.WithObserver(reqs.observe))
	pub := publish(t, client, testFiles())
	require.Len(t, pub.layers, 1)
	toc := pub.layers[0].Annotations[seekable.AnnotationTOCDigest]
	require.NotEmpty(t, toc)
	assert.Equal(t, pub.doi, pub.layers[0].Annotations[snapshot.LabelDOI])

	op := remote.NewOpener(client, remote.WithCache(cache.NewMemory(cache.WithVerify(cache.VerifyDigest))),
		remote.WithObserver(m.RemoteObserver()), remote.WithStateDir(t.TempDir()))
	t.Cleanup(func() { op.Close() })
	f, err := NewFileSystem(RemoteOpener(op), WithBackgroundFill(false), WithMetrics(m), WithReadTimeout(20*time.Second))
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, f.Close()) })

	labels := map[string]string{snapshot.LabelDOI: pub.doi, snapshot.LabelTOCDigest: toc}
	mp1, mp2 := t.TempDir(), t.TempDir()
	require.NoError(t, f.Mount(t.Context(), mp1, labels))
	require.NoError(t, f.Check(t.Context(), mp1, labels))

	reqs.reset()
	got, err := os.ReadFile(filepath.Join(mp1, "etc/hostname"))
	require.NoError(t, err)
	assert.Equal(t, "zenodo\n", string(got))
	assert.NotEmpty(t, reqs.files())
	for name, want := range pub.files {
		got, err := os.ReadFile(filepath.Join(mp1, name))
		require.NoError(t, err, name)
		require.Equal(t, digest.FromBytes(want), digest.FromBytes(got), name)
	}
	assert.Positive(t, promtest.ToFloat64(m.readBytes))
	assert.Positive(t, promtest.ToFloat64(m.fetchedBytes.WithLabelValues("on-demand")))

	// The second mount reads what the first fetched, without a request.
	reqs.reset()
	require.NoError(t, f.Mount(t.Context(), mp2, labels))
	got, err = os.ReadFile(filepath.Join(mp2, "usr/big.bin"))
	require.NoError(t, err)
	assert.Equal(t, digest.FromBytes(pub.files["usr/big.bin"]), digest.FromBytes(got))
	assert.Empty(t, reqs.files(), "shared reader, cached members")
	assert.Equal(t, 2.0, promtest.ToFloat64(m.mountedLayers))
	assert.Equal(t, 1.0, promtest.ToFloat64(m.openLayers))

	require.NoError(t, f.Unmount(t.Context(), mp1))
	require.NoError(t, f.Unmount(t.Context(), mp2))
	assert.Equal(t, 0.0, promtest.ToFloat64(m.openLayers))

	// Labels that locate nothing: the snapshotter falls back.
	err = f.Mount(t.Context(), mp1, map[string]string{snapshot.LabelDOI: pub.doi, snapshot.LabelTOCDigest: digest.FromString("x").String()})
	require.ErrorIs(t, err, errdefs.ErrNotFound)
	err = f.Mount(t.Context(), mp1, map[string]string{snapshot.LabelDOI: "10.5281/zenodo.999999", snapshot.LabelTOCDigest: toc})
	require.ErrorIs(t, err, errdefs.ErrNotFound)
	entries, err := os.ReadDir(mp1)
	require.NoError(t, err)
	assert.Empty(t, entries, "nothing mounted after a failed Mount")
}

// TestMountBackgroundFill: with the fill on, Mount streams the whole layer
// into the cache with one request, after which every file reads without
// any.
func TestMountBackgroundFill(t *testing.T) {
	testutil.RequireFUSE(t)
	reqs := &requestLog{}
	_, client := newFake(t, zenodo.WithObserver(reqs.observe))
	pub := publish(t, client, testFiles())
	toc := pub.layers[0].Annotations[seekable.AnnotationTOCDigest]

	op := remote.NewOpener(client, remote.WithCache(cache.NewMemory(cache.WithVerify(cache.VerifyDigest))))
	t.Cleanup(func() { op.Close() })
	var opened []*remote.Layer
	var mu sync.Mutex
	inner := RemoteOpener(op)
	f, err := NewFileSystem(OpenerFunc(func(ctx context.Context, doi string, toc digest.Digest) (Layer, error) {
		l, err := inner.OpenLayer(ctx, doi, toc)
		if err == nil {
			mu.Lock()
			opened = append(opened, l.(*remote.Layer))
			mu.Unlock()
		}
		return l, err
	}))
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, f.Close()) })

	_, err = op.OpenByDOI(t.Context(), pub.doi) // the metadata range: not the fill's
	require.NoError(t, err)
	reqs.reset()
	mp := t.TempDir()
	require.NoError(t, f.Mount(t.Context(), mp, map[string]string{snapshot.LabelDOI: pub.doi, snapshot.LabelTOCDigest: toc}))
	require.Len(t, opened, 1)
	require.NoError(t, opened[0].WaitFill(t.Context()))
	assert.Len(t, reqs.files(), 1, "one request streams the layer")

	reqs.reset()
	for name, want := range pub.files {
		got, err := os.ReadFile(filepath.Join(mp, name))
		require.NoError(t, err, name)
		require.Equal(t, digest.FromBytes(want), digest.FromBytes(got), name)
	}
	assert.Empty(t, reqs.files(), "all cached")
}
