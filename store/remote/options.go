package remote

import (
	"time"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/cache"
)

// Defaults of the options.
const (
	// DefaultTTL is how long a resolved reference is remembered.
	DefaultTTL = 5 * time.Minute
	// DefaultMinRequest is the smallest span an on-demand fetch asks for.
	DefaultMinRequest = 1 << 20
	// DefaultMaxRequest is the largest span one on-demand fetch asks for.
	DefaultMaxRequest = 16 << 20
	// DefaultMemoryCacheSize bounds the decompressed members kept in memory.
	DefaultMemoryCacheSize = 16 << 20
	// DefaultConcurrency is how many on-demand fetches a layer runs at once.
	DefaultConcurrency = 4
	// DefaultFillRetries is how many times in a row a background fill may
	// fail without progress before it gives up.
	DefaultFillRetries = 5
	// DefaultMaxSpoolSize bounds a downloaded (decompressed) archive.
	DefaultMaxSpoolSize = 64 << 30
	// DefaultMaxMetadata bounds the metadata range read when an image is
	// opened; a larger one is read on demand instead.
	DefaultMaxMetadata = 64 << 20
)

// Option configures an Opener.
type Option func(*options)

type options struct {
	cache       cache.Cache
	stateDir    string
	ttl         time.Duration
	observer    func(Event)
	minRequest  int64
	maxRequest  int64
	memCache    int64
	concurrency int
	fill        bool
	fillRetries int
	fillBackoff time.Duration
	maxSpool    int64
	maxMetadata int64
	maxRecords  int
}

func makeOptions(opts []Option) *options {
	o := &options{
		ttl:         DefaultTTL,
		minRequest:  DefaultMinRequest,
		maxRequest:  DefaultMaxRequest,
		memCache:    DefaultMemoryCacheSize,
		concurrency: DefaultConcurrency,
		fill:        true,
		fillRetries: DefaultFillRetries,
		fillBackoff: 200 * time.Millisecond,
		maxSpool:    DefaultMaxSpoolSize,
		maxMetadata: DefaultMaxMetadata,
		maxRecords:  1024,
	}
	for _, opt := range opts {
		if opt != nil {
			opt(o)
		}
	}
	if o.maxRequest < o.minRequest {
		o.maxRequest = o.minRequest
	}
	return o
}

// WithCache keeps fetched members (compressed, keyed by their digest) in c,
// so they are fetched once and survive restarts. Give the cache
// cache.WithVerify(cache.VerifyDigest) so nothing unverified is ever stored.
// The default is no on-disk cache: only the memory cache (WithMemoryCacheSize)
// holds members, and background fills are not run.
func WithCache(c cache.Cache) Option {
	return func(o *options) { o.cache = c }
}

// WithStateDir keeps, under dir, what an image needs to be opened again
// without network: the record's JSON, the archive index and the metadata
// blobs (and the spool files of archives that had to be downloaded whole).
// Version DOIs opened before are then served from dir without any request.
// The default is none: nothing is kept across restarts, and spool files go
// to a temporary directory removed by Close.
func WithStateDir(dir string) Option {
	return func(o *options) { o.stateDir = dir }
}

// WithTTL sets how long a resolved reference (concept DOI, tag) is
// remembered in memory before it is looked up again. Version DOIs name
// immutable records; they are remembered for as long as their image is
// open. d <= 0 selects the default, 5 minutes (DefaultTTL).
func WithTTL(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.ttl = d
		}
	}
}

// WithObserver calls fn with every Event (for metrics; see Stats). fn is
// called synchronously, possibly concurrently, from the goroutine doing the
// work: it must be quick and safe for concurrent use. The default is none.
func WithObserver(fn func(Event)) Option {
	return func(o *options) { o.observer = fn }
}

// WithMinRequest sets the smallest span, in compressed bytes, an on-demand
// fetch asks for: a miss is extended with the neighbouring uncached members
// until the request holds at least n bytes (or the layer ends). n <= 0
// selects the default, 1 MiB (DefaultMinRequest).
func WithMinRequest(n int64) Option {
	return func(o *options) {
		if n > 0 {
			o.minRequest = n
		}
	}
}

// WithMaxRequest sets the largest span one on-demand fetch asks for; larger
// reads are split into parallel requests. A single member larger than n is
// still fetched whole. n <= 0 selects the default, 16 MiB
// (DefaultMaxRequest); it is raised to the minimum request if below it.
func WithMaxRequest(n int64) Option {
	return func(o *options) {
		if n > 0 {
			o.maxRequest = n
		}
	}
}

// WithMemoryCacheSize bounds the decompressed members kept in memory, shared
// by every layer of the Opener. n <= 0 selects the default, 16 MiB
// (DefaultMemoryCacheSize).
func WithMemoryCacheSize(n int64) Option {
	return func(o *options) {
		if n > 0 {
			o.memCache = n
		}
	}
}

// WithConcurrency sets how many on-demand fetches one layer runs at once;
// more wait. n <= 0 selects the default, 4 (DefaultConcurrency).
func WithConcurrency(n int) Option {
	return func(o *options) {
		if n > 0 {
			o.concurrency = n
		}
	}
}

// WithBackgroundFill says whether Layer.StartFill streams layers into the
// cache. The default is true (it needs WithCache).
func WithBackgroundFill(on bool) Option {
	return func(o *options) { o.fill = on }
}

// WithFillRetries sets how many times in a row a background fill may fail
// without progress before it gives up; each failure reopens the stream
// where it stopped after a backoff (200ms, doubling, at most 10s). n <= 0
// selects the default, 5 (DefaultFillRetries).
func WithFillRetries(n int) Option {
	return func(o *options) {
		if n > 0 {
			o.fillRetries = n
		}
	}
}

// WithMaxSpoolSize bounds the decompressed size of an archive that has to be
// downloaded whole (a .tar.gz, or a server without range support). n <= 0
// selects the default, 64 GiB (DefaultMaxSpoolSize).
func WithMaxSpoolSize(n int64) Option {
	return func(o *options) {
		if n > 0 {
			o.maxSpool = n
		}
	}
}
