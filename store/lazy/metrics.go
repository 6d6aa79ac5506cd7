package lazy

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/cache"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/fs"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/remote"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/snapshot"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/zenodo"
)

// MetricsNamespace prefixes the names of every metric (Prometheus
// namespace).
const MetricsNamespace = "zenodo_snapshotter"

// Metrics are the daemon's Prometheus collectors. Each layer of the stack
// reports to them through its observer hook:
//
//	zenodo.WithObserver(m.ZenodoObserver())     requests by method and status, retries,
//	                                            rate-limit waits, bytes transferred
//	cache.WithObserver(m.CacheObserver())       on-disk cache hits, misses, commits, evictions
//	remote.WithObserver(m.RemoteObserver())     fetches and bytes fetched (on demand / fill),
//	                                            member lookups (memory, disk, miss), image opens
//	snapshot.WithObserver(m.SnapshotObserver()) lazy mounts, fallbacks by reason, restores
//	WithMetrics(m) (this package)               on-demand read latency, mounted layers
//
// A nil *Metrics is valid and records nothing.
type Metrics struct {
	reg prometheus.Registerer

	requests       *prometheus.CounterVec
	requestSeconds *prometheus.HistogramVec
	retries        prometheus.Counter
	rateWaits      prometheus.Counter
	rateWaitSecs   prometheus.Counter
	transferBytes  *prometheus.CounterVec

	fetches      *prometheus.CounterVec
	fetchedBytes *prometheus.CounterVec
	lookups      *prometheus.CounterVec
	opens        *prometheus.CounterVec
	fills        *prometheus.CounterVec
	spools       prometheus.Counter

	cacheEvents *prometheus.CounterVec

	readSeconds *prometheus.HistogramVec
	readBytes   prometheus.Counter

	snapshotEvents *prometheus.CounterVec
	fallbacks      *prometheus.CounterVec
	mountSeconds   *prometheus.HistogramVec
	mountedLayers  prometheus.Gauge
	openLayers     prometheus.Gauge
}

// NewMetrics creates the collectors and registers them with reg
// (prometheus.NewRegistry() for a daemon's /metrics, or
// prometheus.DefaultRegisterer). Registering twice with one registry fails.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	if reg == nil {
		return nil, fmt.Errorf("creating metrics: nil registerer: %w", errdefs.ErrInvalidArgument)
	}
	ns := MetricsNamespace
	latency := []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}
	m := &Metrics{
		reg: reg,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: "zenodo", Name: "requests_total",
			Help: "HTTP attempts to Zenodo by method and status code (\"error\" when no response came)."}, []string{"method", "code"}),
		requestSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: "zenodo", Name: "request_duration_seconds",
			Help: "Time from a Zenodo request to its response headers.", Buckets: latency}, []string{"method"}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: "zenodo", Name: "retries_total",
			Help: "Zenodo requests retried after a failure."}),
		rateWaits: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: "zenodo", Name: "rate_limit_waits_total",
			Help: "Requests the client's request budget (below Zenodo's rate limit) delayed."}),
		rateWaitSecs: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: "zenodo", Name: "rate_limit_wait_seconds_total",
			Help: "Time requests spent waiting on the request budget."}),
		transferBytes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: "zenodo", Name: "transfer_bytes_total",
			Help: "Body bytes moved to or from Zenodo, by method (GET: downloaded)."}, []string{"method"}),

		fetches: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: "layer", Name: "fetches_total",
			Help: "Ranged requests for layer data, by kind (on-demand, fill) and result."}, []string{"kind", "result"}),
		fetchedBytes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: "layer", Name: "fetched_bytes_total",
			Help: "Compressed layer bytes fetched from Zenodo, by kind (on-demand, fill)."}, []string{"kind"}),
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: "layer", Name: "member_lookups_total",
			Help: "Layer chunks (gzip members) on-demand reads needed, by where they were found: memory, disk (cache hits) or miss (fetched)."}, []string{"result"}),
		opens: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: "image", Name: "opens_total",
			Help: "Image archives opened, by mode (index, walk, spool, state) and result."}, []string{"mode", "result"}),
		fills: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: "layer", Name: "fills_total",
			Help: "Background fills ended, by result (done, failed)."}, []string{"result"}),
		spools: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: "image", Name: "spool_fallbacks_total",
			Help: "Archives that could not be read by range and were downloaded whole."}),

		cacheEvents: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: "cache", Name: "events_total",
			Help: "On-disk cache events: hit, miss, commit, evict, verify-failure."}, []string{"event"}),

		readSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: "fs", Name: "read_duration_seconds",
			Help:    "Latency of on-demand reads of file contents through the FUSE layers, by result (ok, error, timeout, interrupted).",
			Buckets: latency}, []string{"result"}),
		readBytes: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: "fs", Name: "read_bytes_total",
			Help: "Bytes of file contents served through the FUSE layers (the kernel's page cache serves the rest)."}),

		snapshotEvents: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: "snapshot", Name: "remote_events_total",
			Help: "Remote-layer outcomes in the snapshotter: mounted, fallback, restored, restore-failed, unmounted."}, []string{"event"}),
		fallbacks: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: "snapshot", Name: "fallbacks_total",
			Help: "Zenodo layers that fell back to a full download, by reason (no-toc, not-found, invalid, unavailable, error)."}, []string{"reason"}),
		mountSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: "fs", Name: "mount_duration_seconds",
			Help: "Time to mount a lazy layer (opening its record if needed), by result.", Buckets: latency}, []string{"result"}),
		mountedLayers: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: "fs", Name: "mounted_layers",
			Help: "Lazy layer mounts currently served."}),
		openLayers: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: "fs", Name: "open_layers",
			Help: "Layer readers currently open (one per TOC digest, shared by its mounts)."}),
	}
	for _, c := range []prometheus.Collector{
		m.requests, m.requestSeconds, m.retries, m.rateWaits, m.rateWaitSecs, m.transferBytes,
		m.fetches, m.fetchedBytes, m.lookups, m.opens, m.fills, m.spools,
		m.cacheEvents, m.readSeconds, m.readBytes,
		m.snapshotEvents, m.fallbacks, m.mountSeconds, m.mountedLayers, m.openLayers,
	} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering metrics: %w", err)
		}
	}
	return m, nil
}

// WatchCache exports c's size (bytes, entries, bound) as gauges read at
// scrape time. Call it once per cache.
func (m *Metrics) WatchCache(c cache.Cache) error {
	if m == nil || c == nil {
		return nil
	}
	ns := MetricsNamespace
	for _, g := range []struct {
		name, help string
		val        func(cache.Stats) float64
	}{
		{"bytes", "Bytes of values in the on-disk cache.", func(s cache.Stats) float64 { return float64(s.Bytes) }},
		{"entries", "Values in the on-disk cache.", func(s cache.Stats) float64 { return float64(s.Entries) }},
		{"max_bytes", "The on-disk cache's size bound.", func(s cache.Stats) float64 { return float64(s.MaxBytes) }},
	} {
		val := g.val
		gf := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Subsystem: "cache", Name: g.name, Help: g.help},
			func() float64 { return val(c.Stats()) })
		if err := m.reg.Register(gf); err != nil {
			return fmt.Errorf("registering cache metrics: %w", err)
		}
	}
	return nil
}

// ZenodoObserver returns the hook for zenodo.WithObserver.
func (m *Metrics) ZenodoObserver() func(zenodo.Event) {
	return func(e zenodo.Event) {
		if m == nil {
			return
		}
		switch e.Kind {
		case zenodo.EventRequest:
			code := "error"
			if e.StatusCode != 0 {
				code = strconv.Itoa(e.StatusCode)
			}
			m.requests.WithLabelValues(method(e.Method), code).Inc()
			m.requestSeconds.WithLabelValues(method(e.Method)).Observe(e.Duration.Seconds())
		case zenodo.EventRetry:
			m.retries.Inc()
		case zenodo.EventRateLimitWait:
			m.rateWaits.Inc()
			m.rateWaitSecs.Add(e.Duration.Seconds())
		case zenodo.EventTransfer:
			if e.Bytes > 0 {
				m.transferBytes.WithLabelValues(method(e.Method)).Add(float64(e.Bytes))
			}
		}
	}
}

// CacheObserver returns the hook for cache.WithObserver.
func (m *Metrics) CacheObserver() func(cache.Event) {
	return func(e cache.Event) {
		if m == nil {
			return
		}
		m.cacheEvents.WithLabelValues(e.Kind.String()).Inc()
	}
}

// RemoteObserver returns the hook for remote.WithObserver.
func (m *Metrics) RemoteObserver() func(remote.Event) {
	return func(e remote.Event) {
		if m == nil {
			return
		}
		kind := "on-demand"
		if e.Fill {
			kind = "fill"
		}
		switch e.Kind {
		case remote.EventOpen:
			m.opens.WithLabelValues(e.Mode, result(e.Err)).Inc()
		case remote.EventFetch:
			m.fetches.WithLabelValues(kind, result(e.Err)).Inc()
			if e.Bytes > 0 {
				m.fetchedBytes.WithLabelValues(kind).Add(float64(e.Bytes))
			}
		case remote.EventMemoryHit:
			m.lookups.WithLabelValues("memory").Inc()
		case remote.EventCacheHit:
			m.lookups.WithLabelValues("disk").Inc()
		case remote.EventCacheMiss:
			m.lookups.WithLabelValues("miss").Inc()
		case remote.EventFillDone:
			r := "done"
			if e.Err != nil {
				r = "failed"
			}
			m.fills.WithLabelValues(r).Inc()
		case remote.EventFallback:
			m.spools.Inc()
		}
	}
}

// FSObserver returns the hook for fs.WithObserver (WithMetrics sets it on
// every mount).
func (m *Metrics) FSObserver() func(fs.Event) {
	return func(e fs.Event) {
		if m == nil {
			return
		}
		r := "ok"
		switch {
		case e.Err == nil:
		case errors.Is(e.Err, fs.ErrReadTimeout):
			r = "timeout"
		case errors.Is(e.Err, fs.ErrInterrupted):
			r = "interrupted"
		default:
			r = "error"
		}
		m.readSeconds.WithLabelValues(r).Observe(e.Latency.Seconds())
		if e.Bytes > 0 {
			m.readBytes.Add(float64(e.Bytes))
		}
	}
}

// SnapshotObserver returns the hook for snapshot.WithObserver.
func (m *Metrics) SnapshotObserver() func(snapshot.Event) {
	return func(e snapshot.Event) {
		if m == nil {
			return
		}
		m.snapshotEvents.WithLabelValues(string(e.Kind)).Inc()
		if e.Kind == snapshot.EventFallback {
			m.fallbacks.WithLabelValues(FallbackReason(e.Err)).Inc()
		}
	}
}

// FallbackReason classifies why a layer fell back to a full download, for
// the fallbacks metric's "reason" label: "no-toc" (the layer is not
// seekable), "not-found" (record or layer not found), "invalid" (bad
// labels), "unavailable" (Zenodo unreachable, rate limited...) or "error".
func FallbackReason(err error) string {
	switch {
	case err == nil:
		return "none"
	case errors.Is(err, snapshot.ErrNoTOC), errors.Is(err, remote.ErrNoTOC):
		return "no-toc"
	case errdefs.IsNotFound(err):
		return "not-found"
	case errdefs.IsInvalidArgument(err):
		return "invalid"
	case errdefs.IsUnavailable(err), errors.Is(err, zenodo.ErrRateLimited):
		return "unavailable"
	}
	return "error"
}

func (m *Metrics) mountDone(d time.Duration, err error) {
	if m == nil {
		return
	}
	m.mountSeconds.WithLabelValues(result(err)).Observe(d.Seconds())
}

func (m *Metrics) setMounts(mounts, layers int) {
	if m == nil {
		return
	}
	m.mountedLayers.Set(float64(mounts))
	m.openLayers.Set(float64(layers))
}

func result(err error) string {
	if err != nil {
		return "error"
	}
	return "ok"
}

// method keeps the method label's values to the few HTTP methods.
func method(m string) string {
	switch m = strings.ToUpper(m); m {
	case "GET", "HEAD", "PUT", "POST", "DELETE":
		return m
	}
	return "other"
}
