package lazy

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/cache"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/fs"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/remote"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/snapshot"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/zenodo"
)

func TestMetricsObservers(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m, err := NewMetrics(reg)
	require.NoError(t, err)
	_, err = NewMetrics(reg)
	require.Error(t, err, "registering twice")

	z := m.ZenodoObserver()
	z(zenodo.Event{Kind: zenodo.EventRequest, Method: "GET", StatusCode: 206, Duration: 100 * time.Millisecond})
	z(zenodo.Event{Kind: zenodo.EventRequest, Method: "GET", StatusCode: 206})
	z(zenodo.Event{Kind: zenodo.EventRequest, Method: "GET", Err: errors.New("refused")})
	z(zenodo.Event{Kind: zenodo.EventRequest, Method: "PROPFIND", StatusCode: 405})
	z(zenodo.Event{Kind: zenodo.EventRetry})
	z(zenodo.Event{Kind: zenodo.EventRateLimitWait, Duration: 2 * time.Second})
	z(zenodo.Event{Kind: zenodo.EventTransfer, Method: "GET", Bytes: 1000})
	assert.Equal(t, 2.0, testutil.ToFloat64(m.requests.WithLabelValues("GET", "206")))
	assert.Equal(t, 1.0, testutil.ToFloat64(m.requests.WithLabelValues("GET", "error")))
	assert.Equal(t, 1.0, testutil.ToFloat64(m.requests.WithLabelValues("other", "405")))
	assert.Equal(t, 1.0, testutil.ToFloat64(m.retries))
	assert.Equal(t, 1.0, testutil.ToFloat64(m.rateWaits))
	assert.Equal(t, 2.0, testutil.ToFloat64(m.rateWaitSecs))
	assert.Equal(t, 1000.0, testutil.ToFloat64(m.transferBytes.WithLabelValues("GET")))

	c := m.CacheObserver()
	c(cache.Event{Kind: cache.EventHit})
	c(cache.Event{Kind: cache.EventMiss})
	c(cache.Event{Kind: cache.EventEvict})
	assert.Equal(t, 1.0, testutil.ToFloat64(m.cacheEvents.WithLabelValues("hit")))
	assert.Equal(t, 1.0, testutil.ToFloat64(m.cacheEvents.WithLabelValues("evict")))

	r := m.RemoteObserver()
	r(remote.Event{Kind: remote.EventOpen, Mode: remote.ModeIndex})
	r(remote.Event{Kind: remote.EventFetch, Bytes: 1 << 20, Members: 3})
	r(remote.Event{Kind: remote.EventFetch, Fill: true, Bytes: 5 << 20})
	r(remote.Event{Kind: remote.EventFetch, Err: errors.New("x")})
	r(remote.Event{Kind: remote.EventMemoryHit})
	r(remote.Event{Kind: remote.EventCacheHit})
	r(remote.Event{Kind: remote.EventCacheMiss})
	r(remote.Event{Kind: remote.EventFillDone})
	r(remote.Event{Kind: remote.EventFallback})
	assert.Equal(t, 1.0, testutil.ToFloat64(m.opens.WithLabelValues("index", "ok")))
	assert.Equal(t, float64(1<<20), testutil.ToFloat64(m.fetchedBytes.WithLabelValues("on-demand")))
	assert.Equal(t, float64(5<<20), testutil.ToFloat64(m.fetchedBytes.WithLabelValues("fill")))
	assert.Equal(t, 1.0, testutil.ToFloat64(m.fetches.WithLabelValues("on-demand", "error")))
	assert.Equal(t, 1.0, testutil.ToFloat64(m.lookups.WithLabelValues("disk")))
	assert.Equal(t, 1.0, testutil.ToFloat64(m.lookups.WithLabelValues("miss")))
	assert.Equal(t, 1.0, testutil.ToFloat64(m.fills.WithLabelValues("done")))
	assert.Equal(t, 1.0, testutil.ToFloat64(m.spools))

	f := m.FSObserver()
	f(fs.Event{Bytes: 4096, Latency: time.Millisecond})
	f(fs.Event{Err: fmt.Errorf("x: %w", fs.ErrReadTimeout)})
	assert.Equal(t, 4096.0, testutil.ToFloat64(m.readBytes))
	assert.Equal(t, 2, testutil.CollectAndCount(m.readSeconds))

	s := m.SnapshotObserver()
	s(snapshot.Event{Kind: snapshot.EventMounted})
	s(snapshot.Event{Kind: snapshot.EventFallback, Err: snapshot.ErrNoTOC})
	s(snapshot.Event{Kind: snapshot.EventFallback, Err: fmt.Errorf("x: %w", errdefs.ErrNotFound)})
	assert.Equal(t, 2.0, testutil.ToFloat64(m.snapshotEvents.WithLabelValues("fallback")))
	assert.Equal(t, 1.0, testutil.ToFloat64(m.fallbacks.WithLabelValues("no-toc")))
	assert.Equal(t, 1.0, testutil.ToFloat64(m.fallbacks.WithLabelValues("not-found")))

	mc := cache.NewMemory(cache.WithMaxBytes(1 << 20))
	require.NoError(t, m.WatchCache(mc))
	want := `# HELP zenodo_snapshotter_cache_max_bytes The on-disk cache's size bound.
# TYPE zenodo_snapshotter_cache_max_bytes gauge
zenodo_snapshotter_cache_max_bytes 1.048576e+06
`
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(want), "zenodo_snapshotter_cache_max_bytes"))
	_, err = testutil.GatherAndLint(reg)
	require.NoError(t, err)
}

// TestMetricsFileSystem: mounts move the gauges and the mount histogram.
func TestMetricsFileSystem(t *testing.T) {
	m, err := NewMetrics(prometheus.NewRegistry())
	require.NoError(t, err)
	f, _ := newFakeFS(t, &fakeOpener{}, WithMetrics(m))
	mp := t.TempDir()
	require.NoError(t, f.Mount(t.Context(), mp, labelsOf(testDOI, testTOC)))
	assert.Equal(t, 1.0, testutil.ToFloat64(m.mountedLayers))
	assert.Equal(t, 1.0, testutil.ToFloat64(m.openLayers))
	require.Error(t, f.Mount(t.Context(), t.TempDir(), nil))
	require.NoError(t, f.Unmount(t.Context(), mp))
	assert.Equal(t, 0.0, testutil.ToFloat64(m.mountedLayers))
	assert.Equal(t, 0.0, testutil.ToFloat64(m.openLayers))
	assert.Equal(t, 2, testutil.CollectAndCount(m.mountSeconds))
}

func TestNilMetrics(t *testing.T) {
	var m *Metrics
	m.ZenodoObserver()(zenodo.Event{Kind: zenodo.EventRequest})
	m.CacheObserver()(cache.Event{Kind: cache.EventHit})
	m.RemoteObserver()(remote.Event{Kind: remote.EventFetch})
	m.FSObserver()(fs.Event{})
	m.SnapshotObserver()(snapshot.Event{Kind: snapshot.EventFallback})
	require.NoError(t, m.WatchCache(cache.NewMemory()))
	_, err := NewMetrics(nil)
	require.ErrorIs(t, err, errdefs.ErrInvalidArgument)
}

func TestFallbackReason(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{nil, "none"},
		{snapshot.ErrNoTOC, "no-toc"},
		{fmt.Errorf("x: %w", remote.ErrNoTOC), "no-toc"},
		{fmt.Errorf("x: %w", errdefs.ErrNotFound), "not-found"},
		{fmt.Errorf("x: %w", errdefs.ErrInvalidArgument), "invalid"},
		{fmt.Errorf("x: %w", zenodo.ErrRateLimited), "unavailable"},
		{errors.New("boom"), "error"},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, FallbackReason(tt.err), "%v", tt.err)
	}
}
