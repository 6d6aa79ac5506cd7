package resolver

import (
	"time"
)

// Defaults of the options.
const (
	// DefaultCacheTTL is how long an opened image (and what a tag or a
	// digest was found to name) is reused before Zenodo is asked again.
	DefaultCacheTTL = time.Minute
	// DefaultCacheSize is how many opened images are kept.
	DefaultCacheSize = 64
	// DefaultReadSize is the size of each upstream read of a blob when the
	// Image cannot stream it (see BlobStreamer).
	DefaultReadSize = 4 << 20
	// DefaultMaxVersionSearch is how many versions of a record are opened,
	// newest first, to find a digest no cached image holds.
	DefaultMaxVersionSearch = 16
)

const (
	// negativeTTL bounds how long a "not found" answer is reused: long
	// enough to serve a client's HEAD-then-GET or manifests-then-blobs
	// fallback from one look-up, short enough that a tag published just
	// now is found on the next try.
	negativeTTL = 5 * time.Second
	// maxManifestSize bounds the manifests and indexes read into memory.
	maxManifestSize = 4 << 20
	// maxSmallBlob is the largest blob (configs, mostly) kept in memory and
	// read once for concurrent requests.
	maxSmallBlob = 1 << 20
	// maxSmallBlobsPerImage bounds the memory of one image's small blobs.
	maxSmallBlobsPerImage = 16 << 20
	// minReadSize is the smallest WithReadSize accepted.
	minReadSize = 64 << 10
	// maxReadSize is the largest WithReadSize accepted (memory per stream
	// is about three reads).
	maxReadSize = 64 << 20
)

// Option configures NewHandler and NewResolver. Invalid values (negative
// durations or sizes) leave the default in place.
type Option func(*options)

type options struct {
	ttl              time.Duration
	cacheSize        int
	readSize         int
	maxVersionSearch int
	now              func() time.Time
	retryAfter       time.Duration
}

func makeOptions(opts []Option) *options {
	o := &options{
		ttl:              DefaultCacheTTL,
		cacheSize:        DefaultCacheSize,
		readSize:         DefaultReadSize,
		maxVersionSearch: DefaultMaxVersionSearch,
		now:              time.Now,
		retryAfter:       time.Minute,
	}
	for _, opt := range opts {
		if opt != nil {
			opt(o)
		}
	}
	return o
}

// WithCacheTTL sets how long an opened image, and which image a tag or a
// digest was found in, are reused without asking Zenodo again (a new version
// published under a tag is seen after at most this long). 0 turns caching
// off: every request opens the image again (concurrent ones still share
// one Open). The default is DefaultCacheTTL (1 minute).
func WithCacheTTL(d time.Duration) Option {
	return func(o *options) {
		if d >= 0 {
			o.ttl = d
		}
	}
}

// WithCacheSize sets how many opened images are cached; the oldest go first.
// The default is DefaultCacheSize (64); values below 1 keep the default.
func WithCacheSize(n int) Option {
	return func(o *options) {
		if n >= 1 {
			o.cacheSize = n
		}
	}
}

// WithReadSize sets the size of each upstream read when a blob is streamed
// through the Image's ReaderAt (Images that are BlobStreamers stream it with
// one request). Each stream holds about three reads in memory; one read
// ahead is in flight while the previous one is sent. The default is
// DefaultReadSize (4 MiB); values are clamped to [64 KiB, 64 MiB].
func WithReadSize(n int) Option {
	return func(o *options) {
		if n > 0 {
			o.readSize = min(max(n, minReadSize), maxReadSize)
		}
	}
}

// WithMaxVersionSearch sets how many versions of a record are opened, newest
// first, when a digest is asked for that no cached image of the repository
// holds (a digest of an older version, pulled by digest only). 0 looks in
// the newest version only. The default is DefaultMaxVersionSearch (16).
func WithMaxVersionSearch(n int) Option {
	return func(o *options) {
		if n >= 0 {
			o.maxVersionSearch = n
		}
	}
}

// WithClock sets the clock the cache's TTLs are measured with, for tests.
// The default is time.Now.
func WithClock(now func() time.Time) Option {
	return func(o *options) {
		if now != nil {
			o.now = now
		}
	}
}
