// Package cache is the bounded cache of verified chunks that the lazy layer
// reader keeps between Zenodo range reads.
//
// Keys are content-addressed strings (a seekable-gzip member's digest, or
// "<blob digest>/<offset>-<len>"): a key always names the same bytes. Keys are
// hashed (SHA-256) before they touch storage, so any string is a safe key and
// none is ever used as a path.
//
// A value is written through a [Writer] and becomes visible only on
// [Writer.Commit], after the optional verification hook accepted it. Past the
// byte or entry bound the least recently used entries are evicted. A [Reader]
// keeps reading its value after that value was evicted, until it is closed.
//
// [NewDirectory] keeps values on disk (one file per value, fanned out into 256
// sub-directories, written to a "wip" file and renamed into place on Commit) and
// rebuilds its LRU index from the directory when it starts; [NewMemory] keeps
// them in memory, for tests. Neither starts goroutines.
package cache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
)

// Cache is a bounded, content-addressed cache of byte values. It is safe for
// concurrent use.
type Cache interface {
	// Get returns a reader of the whole cached value of key, or an error
	// wrapping errdefs.ErrNotFound when the cache holds none. A hit makes the
	// entry the most recently used one. The reader stays valid after the entry
	// is evicted, until it is closed.
	Get(ctx context.Context, key string) (Reader, error)
	// Add starts writing a value for key; nothing is visible until
	// Writer.Commit. Abort (or Close without Commit) discards it. Concurrent
	// writers of the same key are allowed: the first commit stores the value,
	// later ones are no-ops (keys are content-addressed).
	Add(ctx context.Context, key string) (Writer, error)
	// Stats returns the cache's counters.
	Stats() Stats
	// Close releases the cache (and, on disk, its directory lock). Open
	// readers keep working; pending writers fail to commit. Get and Add on a
	// closed cache return an error wrapping errdefs.ErrUnavailable.
	Close() error
}

// Reader reads one cached value. ReadAt is safe for concurrent use.
type Reader interface {
	io.ReaderAt
	io.Closer
	// Size is the length of the value in bytes.
	Size() int64
}

// Writer writes one value. It is not safe for concurrent use.
type Writer interface {
	// Write appends to the value. Writing more than the cache's byte bound
	// fails with an error wrapping errdefs.ErrResourceExhausted.
	io.Writer
	// Close discards the value unless it was committed.
	io.Closer
	// Commit verifies the value (see WithVerify) and makes it visible. On
	// any error nothing is stored. The writer is finished either way.
	Commit() error
	// Abort discards the value.
	Abort() error
}

// Stats are a cache's counters. Hits, Misses, Evictions and Commits count
// since the cache was opened; Entries and Bytes are the current contents.
type Stats struct {
	Entries   int
	Bytes     int64
	MaxBytes  int64
	Hits      uint64
	Misses    uint64
	Evictions uint64
	Commits   uint64
}

// EventKind says what happened in an Event.
type EventKind int

// The kinds of events the observer receives.
const (
	// EventHit is a Get that found its key.
	EventHit EventKind = iota + 1
	// EventMiss is a Get that did not.
	EventMiss
	// EventCommit is a committed value that was stored (not a no-op commit of
	// a key already present).
	EventCommit
	// EventEvict is an entry evicted to respect the bounds.
	EventEvict
	// EventVerifyFailure is a Commit refused by the verification hook.
	EventVerifyFailure
)

// String returns the kind's lower-case name, fit for a metric label.
func (k EventKind) String() string {
	switch k {
	case EventHit:
		return "hit"
	case EventMiss:
		return "miss"
	case EventCommit:
		return "commit"
	case EventEvict:
		return "evict"
	case EventVerifyFailure:
		return "verify_failure"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event is one cache event, reported to the function given to WithObserver.
type Event struct {
	Kind EventKind
	// Key is the entry's key; empty for EventEvict (the index keeps only
	// key hashes).
	Key string
	// Size is the value's size in bytes; 0 for EventMiss.
	Size int64
}

// Option configures a cache.
type Option func(*options)

type options struct {
	maxBytes   int64
	maxEntries int
	verify     func(key string, data io.Reader) error
	observer   func(Event)
	sync       bool
	now        func() time.Time
	touchEvery time.Duration
}

// Default bounds.
const (
	DefaultDirectoryMaxBytes   = 10 << 30
	DefaultMemoryMaxBytes      = 64 << 20
	DefaultDirectoryMaxEntries = 1 << 20
	DefaultMemoryMaxEntries    = 1 << 16
)

// WithMaxBytes bounds the total size of the committed values; least recently
// used entries are evicted past it, and a single value larger than it cannot
// be written. n <= 0 selects the default: 10 GiB on disk
// (DefaultDirectoryMaxBytes), 64 MiB in memory (DefaultMemoryMaxBytes).
// Values still being written are not counted.
func WithMaxBytes(n int64) Option {
	return func(o *options) {
		if n > 0 {
			o.maxBytes = n
		}
	}
}

// WithMaxEntries bounds the number of entries, and with it the memory of the
// index (about 150 bytes per entry), whatever the values' sizes; least
// recently used entries are evicted past it. n <= 0 selects the default:
// 1Mi entries on disk (DefaultDirectoryMaxEntries), 64Ki in memory
// (DefaultMemoryMaxEntries).
func WithMaxEntries(n int) Option {
	return func(o *options) {
		if n > 0 {
			o.maxEntries = n
		}
	}
}

// WithVerify sets a function that checks each value before Commit stores
// it; when it returns an error, Commit stores nothing and returns an error
// wrapping it. data reads the whole value from its start. VerifyDigest checks
// keys that are digests. The default is no verification.
func WithVerify(fn func(key string, data io.Reader) error) Option {
	return func(o *options) { o.verify = fn }
}

// WithObserver sets a function called with every Event (for metrics). It is
// called synchronously, outside the cache's locks, from the goroutine that
// caused the event, and must be quick. The default is none.
func WithObserver(fn func(Event)) Option {
	return func(o *options) { o.observer = fn }
}

// WithSync says whether the on-disk cache fsyncs each value before making it
// visible, so that a power loss cannot leave a truncated value in place of a
// committed one (about 2 ms per MiB on an ordinary SSD). The default is true.
// The memory cache ignores it.
func WithSync(sync bool) Option {
	return func(o *options) { o.sync = sync }
}

// withClock replaces time.Now (tests).
func withClock(now func() time.Time) Option {
	return func(o *options) { o.now = now }
}

// defaultTouchEvery is how stale an on-disk entry's modification time (its
// last use, read back at restart) may get before a hit refreshes it; between
// restarts the in-memory LRU order is exact.
const defaultTouchEvery = time.Minute

func makeOptions(maxBytes int64, maxEntries int, opts []Option) options {
	o := options{
		maxBytes:   maxBytes,
		maxEntries: maxEntries,
		sync:       true,
		now:        time.Now,
		touchEvery: defaultTouchEvery,
	}
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// keyHash is the SHA-256 of a key: the only form in which keys reach storage.
type keyHash [sha256.Size]byte

func hashKey(key string) keyHash { return sha256.Sum256([]byte(key)) }

func (h keyHash) String() string { return hex.EncodeToString(h[:]) }

// storage keeps the values of a cache; the cache keeps the index.
type storage interface {
	// create starts a value.
	create() (pending, error)
	// open opens a stored value of the given size, or returns an error
	// wrapping errdefs.ErrNotFound when it is missing or not of that size.
	open(h keyHash, size int64) (Reader, error)
	// touch records a use of the value (its LRU order after a restart).
	touch(h keyHash, t time.Time) error
	// remove deletes a value; open readers keep theirs.
	remove(h keyHash) error
	close() error
}

// pending is a value being written.
type pending interface {
	io.Writer
	// contents reads the size bytes written so far, from the start.
	contents(size int64) io.Reader
	// finish ends writing (flushes, closes); called outside the cache lock.
	finish() error
	// publish makes the value visible as h, last used at t; called with the
	// cache locked, after finish.
	publish(h keyHash, t time.Time) error
	// discard deletes the value; safe to call more than once and after
	// publish fails.
	discard() error
}

// entry is one committed value in the LRU list (a ring through cache.lru).
type entry struct {
	h          keyHash
	size       int64
	touched    int64 // unix nanoseconds of the last recorded use on storage
	prev, next *entry
}

type cache struct {
	st   storage
	opts options

	// pubMu serialises changes to storage (publish, remove) so that they
	// stay consistent with the index without holding mu, which Get takes,
	// across file-system calls. Lock order: pubMu, then mu.
	pubMu sync.Mutex

	mu      sync.Mutex
	closed  bool
	index   map[keyHash]*entry
	lru     entry // sentinel: lru.next is the most recently used entry
	entries int
	bytes   int64

	hits, misses, evictions, commits atomic.Uint64
}

var _ Cache = (*cache)(nil)

func newCache(st storage, o options) *cache {
	c := &cache{st: st, opts: o, index: make(map[keyHash]*entry)}
	c.lru.next, c.lru.prev = &c.lru, &c.lru
	return c
}

func (c *cache) unlink(e *entry) {
	e.prev.next, e.next.prev = e.next, e.prev
	e.prev, e.next = nil, nil
}

func (c *cache) pushFront(e *entry) {
	e.prev, e.next = &c.lru, c.lru.next
	c.lru.next.prev = e
	c.lru.next = e
}

// insert adds e as the most recently used entry; c.mu held.
func (c *cache) insert(e *entry) {
	c.index[e.h] = e
	c.pushFront(e)
	c.entries++
	c.bytes += e.size
}

// drop removes e from the index; c.mu held.
func (c *cache) drop(e *entry) {
	delete(c.index, e.h)
	c.unlink(e)
	c.entries--
	c.bytes -= e.size
}

// evictOver evicts least recently used entries until the bounds hold, and
// returns them; c.mu held. The caller removes them from storage.
func (c *cache) evictOver() []*entry {
	var evicted []*entry
	for (c.bytes > c.opts.maxBytes || c.entries > c.opts.maxEntries) && c.lru.prev != &c.lru {
		e := c.lru.prev
		c.drop(e)
		evicted = append(evicted, e)
	}
	return evicted
}

func (c *cache) observe(ev Event) {
	if c.opts.observer != nil {
		c.opts.observer(ev)
	}
}

func checkKey(key string) error {
	if key == "" {
		return fmt.Errorf("empty cache key: %w", errdefs.ErrInvalidArgument)
	}
	return nil
}

func errClosed(doing string) error {
	return fmt.Errorf("%s: cache is closed: %w", doing, errdefs.ErrUnavailable)
}

// Get implements Cache.
func (c *cache) Get(ctx context.Context, key string) (Reader, error) {
	if err := checkKey(key); err != nil {
		return nil, err
	}
	h := hashKey(key)
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, errClosed(fmt.Sprintf("getting %q", key))
	}
	e, ok := c.index[h]
	if !ok {
		c.mu.Unlock()
		return nil, c.miss(key)
	}
	c.unlink(e)
	c.pushFront(e)
	size := e.size
	now := c.opts.now()
	touch := now.UnixNano()-e.touched >= int64(c.opts.touchEvery)
	if touch {
		e.touched = now.UnixNano()
	}
	c.mu.Unlock()

	r, err := c.st.open(h, size)
	if err != nil {
		if !errdefs.IsNotFound(err) {
			return nil, fmt.Errorf("opening cache entry %q: %w", key, err)
		}
		// Evicted since the lookup, or missing or damaged in storage
		// (outside the cache's control): then forget it.
		c.pubMu.Lock()
		c.mu.Lock()
		drop := c.index[h] == e
		if drop {
			c.drop(e)
		}
		c.mu.Unlock()
		if drop {
			log.G(ctx).WithError(err).WithField("key", key).Warn("cache entry lost from storage, dropping it")
			if err := c.st.remove(h); err != nil {
				log.G(ctx).WithError(err).WithField("key", key).Warn("removing damaged cache entry")
			}
		}
		c.pubMu.Unlock()
		return nil, c.miss(key)
	}
	if touch {
		if err := c.st.touch(h, now); err != nil {
			log.G(ctx).WithError(err).WithField("key", key).Debug("recording use of cache entry")
		}
	}
	c.hits.Add(1)
	c.observe(Event{Kind: EventHit, Key: key, Size: size})
	return r, nil
}

func (c *cache) miss(key string) error {
	c.misses.Add(1)
	c.observe(Event{Kind: EventMiss, Key: key})
	return fmt.Errorf("cache entry %q: %w", key, errdefs.ErrNotFound)
}

// Add implements Cache.
func (c *cache) Add(ctx context.Context, key string) (Writer, error) {
	if err := checkKey(key); err != nil {
		return nil, err
	}
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return nil, errClosed(fmt.Sprintf("adding %q", key))
	}
	p, err := c.st.create()
	if err != nil {
		return nil, fmt.Errorf("adding cache entry %q: %w", key, err)
	}
	return &writer{ctx: ctx, c: c, key: key, p: p}, nil
}

// Stats implements Cache.
func (c *cache) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Stats{
		Entries:   c.entries,
		Bytes:     c.bytes,
		MaxBytes:  c.opts.maxBytes,
		Hits:      c.hits.Load(),
		Misses:    c.misses.Load(),
		Evictions: c.evictions.Load(),
		Commits:   c.commits.Load(),
	}
}

// Close implements Cache.
func (c *cache) Close() error {
	c.pubMu.Lock()
	defer c.pubMu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	if err := c.st.close(); err != nil {
		return fmt.Errorf("closing cache: %w", err)
	}
	return nil
}

// commit stores a finished value; see Writer.Commit.
func (c *cache) commit(ctx context.Context, key string, p pending, size int64) error {
	h := hashKey(key)
	now := c.opts.now()
	c.pubMu.Lock()
	c.mu.Lock()
	closed := c.closed
	e, present := c.index[h]
	if present {
		// Same key, same bytes: keep the stored value.
		c.unlink(e)
		c.pushFront(e)
	}
	c.mu.Unlock()
	if closed || present {
		c.pubMu.Unlock()
		if closed {
			return errClosed(fmt.Sprintf("committing %q", key))
		}
		discard(ctx, key, p)
		return nil
	}
	// Nothing else publishes or removes while pubMu is held, so the key is
	// still absent.
	if err := p.publish(h, now); err != nil {
		c.pubMu.Unlock()
		return fmt.Errorf("committing cache entry %q: %w", key, err)
	}
	c.mu.Lock()
	c.insert(&entry{h: h, size: size, touched: now.UnixNano()})
	evicted := c.evictOver()
	c.mu.Unlock()
	for _, e := range evicted {
		if err := c.st.remove(e.h); err != nil {
			log.G(ctx).WithError(err).WithField("hash", e.h.String()).Warn("removing evicted cache entry")
		}
	}
	c.pubMu.Unlock()

	c.commits.Add(1)
	c.observe(Event{Kind: EventCommit, Key: key, Size: size})
	c.evictions.Add(uint64(len(evicted)))
	for _, e := range evicted {
		c.observe(Event{Kind: EventEvict, Size: e.size})
	}
	return nil
}

func discard(ctx context.Context, key string, p pending) {
	if err := p.discard(); err != nil {
		log.G(ctx).WithError(err).WithField("key", key).Warn("discarding unfinished cache entry")
	}
}

// writer implements Writer over a pending value.
type writer struct {
	ctx  context.Context // for logging only
	c    *cache
	key  string
	p    pending
	size int64
	done bool
}

var _ Writer = (*writer)(nil)

func (w *writer) Write(b []byte) (int, error) {
	if w.done {
		return 0, fmt.Errorf("writing cache entry %q: writer is finished: %w", w.key, errdefs.ErrFailedPrecondition)
	}
	if int64(len(b)) > w.c.opts.maxBytes-w.size {
		return 0, fmt.Errorf("writing cache entry %q: value exceeds the cache bound of %d bytes: %w",
			w.key, w.c.opts.maxBytes, errdefs.ErrResourceExhausted)
	}
	n, err := w.p.Write(b)
	w.size += int64(n)
	if err != nil {
		return n, fmt.Errorf("writing cache entry %q: %w", w.key, err)
	}
	return n, nil
}

func (w *writer) Commit() (retErr error) {
	if w.done {
		return fmt.Errorf("committing cache entry %q: writer is finished: %w", w.key, errdefs.ErrFailedPrecondition)
	}
	w.done = true
	defer func() {
		if retErr != nil {
			discard(w.ctx, w.key, w.p)
		}
	}()
	if v := w.c.opts.verify; v != nil {
		if err := v(w.key, w.p.contents(w.size)); err != nil {
			w.c.observe(Event{Kind: EventVerifyFailure, Key: w.key, Size: w.size})
			return fmt.Errorf("verifying cache entry %q: %w", w.key, err)
		}
	}
	if err := w.p.finish(); err != nil {
		return fmt.Errorf("committing cache entry %q: %w", w.key, err)
	}
	return w.c.commit(w.ctx, w.key, w.p, w.size)
}

func (w *writer) Abort() error {
	if w.done {
		return nil
	}
	w.done = true
	if err := w.p.discard(); err != nil {
		return fmt.Errorf("aborting cache entry %q: %w", w.key, err)
	}
	return nil
}

func (w *writer) Close() error { return w.Abort() }
