package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/cache"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/seekable"
)

// Layer reads the files of one seekable layer of an image lazily: each read
// maps to whole gzip members, served from the memory cache, then the
// on-disk cache, then the network, where a miss is coalesced with the
// neighbouring uncached members into one ranged request of at least the
// minimum request size. Concurrent misses on the same members are fetched
// once, and every member is verified against its TOC digest before it is
// used or cached. It implements the layer interface of package store/fs.
// It is safe for concurrent use.
type Layer struct {
	o      *options
	mem    *memCache
	cache  cache.Cache // nil: none, or a local source
	src    source
	recID  string
	desc   ocispec.Descriptor
	toc    *seekable.TOC
	off    int64 // the layer blob's offset in the archive file
	sem    chan struct{}
	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc

	wg sync.WaitGroup // fetches and the fill; Add only under mu, when not closed

	mu      sync.Mutex
	closed  bool
	flights map[int]*flight
	hints   []hint
	gens    []uint32 // per member: bumped each time it is found or put in the cache
	ra      readahead
	fillCh  chan struct{} // closed when the fill ends; nil if never started
	fillErr error
}

// hint is what a layer knows of a member's presence in the on-disk cache.
type hint uint8

const (
	hintUnknown hint = iota
	hintCached
	hintAbsent
)

// flight is a member being fetched. Readers needing it wait on done.
type flight struct {
	done chan struct{}
	want bool // a reader needs the decompressed bytes
	fill bool // owned by the background fill: on failure, waiters retry
	data []byte
	err  error
}

// fileReadahead is how far, in compressed bytes, a miss is extended over
// the rest of the file being read (within the maximum request): a file read
// from its start is usually read to its end.
const fileReadahead = 4 << 20

// maxRounds bounds how often a read plans fetches for members that keep
// escaping it (evicted right after being cached, fill failures).
const maxRounds = 4

// errRetry fails a flight whose waiters should fetch the member themselves.
var errRetry = errors.New("member fetch abandoned")

func newLayer(img *Image, desc ocispec.Descriptor, toc *seekable.TOC, off int64) *Layer {
	ctx, cancel := context.WithCancel(img.ctx)
	l := &Layer{
		o:       img.o,
		mem:     img.op.mem,
		src:     img.src,
		recID:   img.rec.RecordID(),
		desc:    desc,
		toc:     toc,
		off:     off,
		sem:     make(chan struct{}, img.o.concurrency),
		ctx:     ctx,
		cancel:  cancel,
		flights: map[int]*flight{},
		hints:   make([]hint, len(toc.Members)),
		gens:    make([]uint32, len(toc.Members)),
	}
	if img.src.remote() {
		l.cache = img.o.cache
	}
	return l
}

// TOC returns the layer's table of contents, verified against the digest
// its descriptor carries.
func (l *Layer) TOC() *seekable.TOC { return l.toc }

// Descriptor returns the layer's descriptor.
func (l *Layer) Descriptor() ocispec.Descriptor { return l.desc }

// Close stops the layer's background fill and its fetches, and fails reads
// from now on (and those waiting for a fetch) with an error wrapping
// fs.ErrClosed. It waits for the fetches to stop.
func (l *Layer) Close() error {
	l.mu.Lock()
	l.closed = true
	l.cancel()
	l.mu.Unlock()
	l.wg.Wait()
	return nil
}

// usable reports whether fetches may start; l.mu is held.
func (l *Layer) usableLocked() bool {
	return !l.closed && l.ctx.Err() == nil
}

// ReadAt reads len(p) bytes of the content of the regular file e (an entry
// of the layer's TOC; a hardlink reads as its target) at offset off, with
// io.ReaderAt's contract. ctx bounds the wait: fetches it started go on
// for other readers and for the cache.
func (l *Layer) ReadAt(ctx context.Context, e *seekable.Entry, p []byte, off int64) (n int, retErr error) {
	start := time.Now()
	defer func() {
		err := retErr
		if err == io.EOF {
			err = nil
		}
		l.o.emit(Event{Kind: EventRead, Record: l.recID, Layer: l.desc.Digest, Bytes: int64(n), Duration: time.Since(start), Err: err})
	}()
	if err := l.ctx.Err(); err != nil {
		return 0, fmt.Errorf("reading layer %s: %w", l.desc.Digest, fs.ErrClosed)
	}
	if e == nil {
		return 0, fmt.Errorf("reading layer %s: no entry: %w", l.desc.Digest, errdefs.ErrInvalidArgument)
	}
	e = l.toc.Resolve(e)
	if e.Type != seekable.TypeReg {
		return 0, fmt.Errorf("reading %q of layer %s: not a regular file: %w", e.Name, l.desc.Digest, errdefs.ErrInvalidArgument)
	}
	if off < 0 {
		return 0, fmt.Errorf("reading %q at %d: %w", e.Name, off, errdefs.ErrInvalidArgument)
	}
	if off >= e.Size {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	want := min(int64(len(p)), e.Size-off)
	if want == 0 {
		return 0, nil
	}
	first, last := l.toc.MemberRange(e, off, want)
	_, fileLast := l.toc.MemberRange(e, e.Size-1, 1)
	datas, err := l.members(ctx, e, first, last, fileLast)
	if err != nil {
		return 0, fmt.Errorf("reading %q of layer %s: %w", e.Name, l.desc.Digest, err)
	}
	// Copy the file bytes [start, end) of the tar out of the members.
	tstart, tend := e.Offset+off, e.Offset+off+want
	for i, data := range datas {
		m := l.toc.Members[first+i]
		lo, hi := max(tstart, m.UOffset), min(tend, m.UOffset+m.USize)
		if lo < hi {
			copy(p[lo-tstart:hi-tstart], data[lo-m.UOffset:hi-m.UOffset])
		}
	}
	if want < int64(len(p)) {
		return int(want), io.EOF
	}
	return int(want), nil
}

// members returns the decompressed bytes of members first..last of file e;
// a fetch may extend over the file's members up to fileLast.
func (l *Layer) members(ctx context.Context, e *seekable.Entry, first, last, fileLast int) ([][]byte, error) {
	out := make([][]byte, last-first+1)
	missing := make([]int, 0, len(out))
	for i := first; i <= last; i++ {
		if data, ok := l.mem.get(l.toc.Members[i].Digest); ok {
			out[i-first] = data
			l.o.emit(Event{Kind: EventMemoryHit, Record: l.recID, Layer: l.desc.Digest})
			continue
		}
		missing = append(missing, i)
	}
	for round := 0; len(missing) > 0; round++ {
		if round == maxRounds {
			return nil, fmt.Errorf("members %d-%d: gave up after %d rounds: %w", first, last, round, errdefs.ErrUnavailable)
		}
		missing = l.fromCaches(ctx, missing, out, first, round == 0)
		if len(missing) == 0 {
			break
		}
		var err error
		if missing, err = l.fetch(ctx, e, missing, out, first, fileLast); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// fromCaches fills out from the memory and disk caches and returns the
// members still missing.
func (l *Layer) fromCaches(ctx context.Context, missing []int, out [][]byte, first int, firstRound bool) []int {
	rest := missing[:0]
	for _, i := range missing {
		m := l.toc.Members[i]
		if !firstRound {
			if data, ok := l.mem.get(m.Digest); ok {
				out[i-first] = data
				continue
			}
		}
		if data, ok := l.fromDisk(ctx, i); ok {
			out[i-first] = data
			continue
		}
		if firstRound {
			l.o.emit(Event{Kind: EventCacheMiss, Record: l.recID, Layer: l.desc.Digest})
		}
		rest = append(rest, i)
	}
	return rest
}

// fromDisk reads member i from the on-disk cache, verified.
func (l *Layer) fromDisk(ctx context.Context, i int) ([]byte, bool) {
	if l.cache == nil {
		return nil, false
	}
	m := l.toc.Members[i]
	gen := l.gen(i)
	r, err := l.cache.Get(ctx, m.Digest.String())
	if err != nil {
		if !errdefs.IsNotFound(err) {
			log.G(ctx).WithError(err).WithField("member", m.Digest).Warn("remote: reading cache")
		}
		l.markAbsent(i, gen)
		return nil, false
	}
	defer r.Close()
	var data []byte
	if r.Size() == m.Size {
		buf := make([]byte, m.Size)
		if _, err = r.ReadAt(buf, 0); err == io.EOF {
			err = nil
		}
		if err == nil {
			data, err = seekable.DecompressMember(buf, m)
		}
	} else {
		err = fmt.Errorf("cached member has %d bytes, want %d: %w", r.Size(), m.Size, seekable.ErrDigestMismatch)
	}
	if err != nil {
		// Nothing unverified is used; the entry can only have been damaged
		// on disk.
		log.G(ctx).WithError(err).WithField("member", m.Digest).Warn("remote: cached member is damaged, fetching it again")
		l.markAbsent(i, gen)
		return nil, false
	}
	l.mu.Lock()
	l.markCachedLocked(i)
	l.mu.Unlock()
	l.mem.add(m.Digest, data)
	l.o.emit(Event{Kind: EventCacheHit, Record: l.recID, Layer: l.desc.Digest, Bytes: m.Size})
	return data, true
}

// gen returns member i's generation, to be given to markAbsent.
func (l *Layer) gen(i int) uint32 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.gens[i]
}

// markAbsent records that member i was not in the cache, unless it was put
// there (or found there) since gen was read.
func (l *Layer) markAbsent(i int, gen uint32) {
	l.mu.Lock()
	if l.gens[i] == gen {
		l.hints[i] = hintAbsent
	}
	l.mu.Unlock()
}

// markCachedLocked records that member i is in the cache; l.mu is held.
func (l *Layer) markCachedLocked(i int) {
	l.hints[i] = hintCached
	l.gens[i]++
}

// run is a contiguous range of members fetched by one request.
type run struct{ first, last int }

// fetch plans requests for the missing members of file e (joining fetches
// already under way), sized by the layer's readahead, waits for them, and
// returns the members that escaped (to be looked up again).
func (l *Layer) fetch(ctx context.Context, e *seekable.Entry, missing []int, out [][]byte, first, fileLast int) ([]int, error) {
	l.probe(ctx, missing[0], missing[len(missing)-1])
	reg := region(l.toc, e)
	stream, size := -1, int64(0)
	needed := make(map[int]bool, len(missing))
	for _, i := range missing {
		needed[i] = true
	}
	waits := make(map[int]*flight, len(missing))
	var runs []run
	var recheck []int
	l.mu.Lock()
	if !l.usableLocked() {
		l.mu.Unlock()
		return nil, fmt.Errorf("layer %s: %w", l.desc.Digest, fs.ErrClosed)
	}
	for _, i := range missing {
		if f := l.flights[i]; f != nil {
			f.want = true
			waits[i] = f
			continue
		}
		if (l.cache != nil && l.hints[i] == hintCached) || l.mem.contains(l.toc.Members[i].Digest) {
			// Cached since we looked: a fetch that ended after our lookup
			// put it there (it does so before removing its flight).
			recheck = append(recheck, i)
			continue
		}
		if stream < 0 {
			size, stream = l.ra.window(l.toc.Members[i].Offset, reg, l.o.minRequest, l.o.maxRequest)
		}
		r := l.planLocked(i, needed, fileLast, size)
		l.ra.cover(stream, l.span(r))
		for j := r.first; j <= r.last; j++ {
			f := &flight{done: make(chan struct{})}
			l.flights[j] = f
			if needed[j] {
				f.want = true
				waits[j] = f
			}
		}
		runs = append(runs, r)
	}
	if l.cache != nil {
		if sp, ok := l.ra.prefetch(stream); ok {
			runs = append(runs, l.planRegionLocked(sp, l.toc.Members[missing[0]].Offset)...)
		}
	}
	l.wg.Add(len(runs))
	l.mu.Unlock()

	for _, r := range runs {
		go l.runFetch(r)
	}
	for _, i := range missing {
		f, ok := waits[i]
		if !ok {
			continue
		}
		select {
		case <-f.done:
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for member %d: %w", i, context.Cause(ctx))
		}
		switch {
		case f.err == nil && f.data != nil:
			out[i-first] = f.data
		case f.err == nil, errors.Is(f.err, errRetry):
			recheck = append(recheck, i)
		default:
			return nil, fmt.Errorf("member %d: %w", i, f.err)
		}
	}
	return recheck, nil
}

// span returns the compressed span of run r.
func (l *Layer) span(r run) cspan {
	ms := l.toc.Members
	return cspan{ms[r.first].Offset, ms[r.last].Offset + ms[r.last].Size}
}

// planLocked plans the request for missing member i: i, the needed members
// after it, the members of the rest of the file up to fileReadahead (or
// size if larger), then neighbours forward until the request holds size
// bytes, and backward until it holds the minimum request size; it takes
// only members neither cached nor being fetched, and never passes the
// maximum request size. l.mu is held.
func (l *Layer) planLocked(i int, needed map[int]bool, fileLast int, size int64) run {
	ms := l.toc.Members
	free := func(j int) bool {
		if l.flights[j] != nil {
			return false
		}
		if l.cache != nil {
			return l.hints[j] != hintCached
		}
		return !l.mem.contains(ms[j].Digest)
	}
	r := run{i, i}
	total := ms[i].Size
	size = min(max(size, l.o.minRequest), l.o.maxRequest)
	readahead := min(max(size, fileReadahead), l.o.maxRequest)
	for r.last+1 < len(ms) {
		j := r.last + 1
		if !free(j) || total+ms[j].Size > l.o.maxRequest {
			break
		}
		inFile := j <= fileLast && total < readahead
		if total >= size && !needed[j] && !inFile {
			break
		}
		r.last = j
		total += ms[j].Size
	}
	for r.first > 0 && total < l.o.minRequest {
		j := r.first - 1
		if !free(j) || total+ms[j].Size > l.o.maxRequest {
			break
		}
		r.first = j
		total += ms[j].Size
	}
	return r
}

// probe learns, from the on-disk cache, which members around lo..hi (as far
// as a request may reach) are cached, so a request is not extended over
// them.
func (l *Layer) probe(ctx context.Context, lo, hi int) {
	if l.cache == nil {
		return
	}
	ms := l.toc.Members
	var todo []int
	l.mu.Lock()
	var total int64
	for j := hi + 1; j < len(ms) && total < l.o.minRequest; j++ {
		total += ms[j].Size
		if l.hints[j] == hintUnknown && l.flights[j] == nil {
			todo = append(todo, j)
		}
	}
	total = 0
	for j := lo - 1; j >= 0 && total < l.o.minRequest; j-- {
		total += ms[j].Size
		if l.hints[j] == hintUnknown && l.flights[j] == nil {
			todo = append(todo, j)
		}
	}
	l.mu.Unlock()
	l.probeMembers(ctx, todo)
}

// probeMembers sets the hints of members from the on-disk cache.
func (l *Layer) probeMembers(ctx context.Context, todo []int) {
	for _, j := range todo {
		gen := l.gen(j)
		if r, err := l.cache.Get(ctx, l.toc.Members[j].Digest.String()); err == nil {
			r.Close()
			l.mu.Lock()
			l.markCachedLocked(j)
			l.mu.Unlock()
		} else {
			l.markAbsent(j, gen)
		}
	}
}

// runFetch fetches run r (whose flights are registered) on behalf of on-demand
// readers, in the layer's context.
func (l *Layer) runFetch(r run) {
	defer l.wg.Done()
	ctx := l.ctx
	select {
	case l.sem <- struct{}{}:
		defer func() { <-l.sem }()
	case <-ctx.Done():
		l.failFlights(r.first, r.last, context.Cause(ctx))
		return
	}
	const attempts = 3
	pos, failures := r.first, 0
	for pos <= r.last {
		next, err := l.stream(ctx, pos, r.last, false)
		if next > pos {
			failures = 0
		}
		pos = next
		if err == nil {
			continue
		}
		failures++
		var opened *openError
		if errors.As(err, &opened) || failures >= attempts || ctx.Err() != nil {
			// The client already retried the request itself.
			l.failFlights(pos, r.last, err)
			return
		}
		log.G(ctx).WithError(err).WithFields(log.Fields{"layer": l.desc.Digest, "member": pos}).Info("remote: layer fetch interrupted, resuming")
	}
}

// failFlights fails the flights of members lo..hi that are still registered.
func (l *Layer) failFlights(lo, hi int, err error) {
	var fs []*flight
	l.mu.Lock()
	for j := lo; j <= hi; j++ {
		if f := l.flights[j]; f != nil {
			delete(l.flights, j)
			fs = append(fs, f)
		}
	}
	l.mu.Unlock()
	for _, f := range fs {
		f.err = err
		if f.fill && err != nil && l.ctx.Err() == nil {
			f.err = fmt.Errorf("%w: %w", errRetry, err)
		}
		close(f.done)
	}
}

// openError is a request that could not be started.
type openError struct{ err error }

func (e *openError) Error() string { return e.err.Error() }
func (e *openError) Unwrap() error { return e.err }

// stream fetches members pos..last with one request and delivers them. In
// fill mode the flights are taken member by member as the stream reaches
// them, and members cached or being fetched by others are skipped; otherwise
// they are all registered by the caller. It returns the next member not
// delivered.
func (l *Layer) stream(ctx context.Context, pos, last int, fill bool) (int, error) {
	ms := l.toc.Members
	start := time.Now()
	off := ms[pos].Offset
	end := ms[last].Offset + ms[last].Size
	rc, err := l.src.openRange(ctx, l.off+off, end-off)
	if err != nil {
		l.o.emit(Event{Kind: EventFetch, Record: l.recID, Layer: l.desc.Digest, Offset: off, Fill: fill, Duration: time.Since(start), Err: err})
		return pos, &openError{fmt.Errorf("fetching members %d-%d of layer %s: %w", pos, last, l.desc.Digest, err)}
	}
	defer rc.Close()
	var bytes int64
	var buf []byte
	delivered := 0
	defer func() {
		l.o.emit(Event{Kind: EventFetch, Record: l.recID, Layer: l.desc.Digest, Offset: off, Fill: fill, Members: delivered,
			Bytes: bytes, Duration: time.Since(start), Err: err})
	}()
	for ; pos <= last; pos++ {
		if err = ctx.Err(); err != nil {
			if fill {
				return pos, err
			}
			return pos, &openError{err}
		}
		m := ms[pos]
		var f *flight
		if fill {
			f = l.takeForFill(pos)
		} else {
			l.mu.Lock()
			f = l.flights[pos]
			l.mu.Unlock()
		}
		if f == nil {
			// Cached, or fetched by someone else.
			var n int64
			n, err = io.CopyN(io.Discard, rc, m.Size)
			bytes += n
			if err != nil {
				return pos, fmt.Errorf("fetching member %d of layer %s: %w", pos, l.desc.Digest, err)
			}
			continue
		}
		// One buffer for the stream: deliver copies what it keeps, so a
		// layer's fill makes no garbage per member.
		if int64(cap(buf)) < m.Size {
			buf = make([]byte, m.Size)
		}
		buf = buf[:m.Size]
		var n int
		n, err = io.ReadFull(rc, buf)
		bytes += int64(n)
		if err != nil {
			if fill {
				l.failFlights(pos, pos, err)
			}
			return pos, fmt.Errorf("fetching member %d of layer %s: %w", pos, l.desc.Digest, err)
		}
		l.deliver(ctx, pos, f, buf)
		delivered++
	}
	return pos, nil
}

// takeForFill registers a fill flight for member j, unless it is cached or
// being fetched.
func (l *Layer) takeForFill(j int) *flight {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.flights[j] != nil || l.hints[j] == hintCached {
		return nil
	}
	f := &flight{done: make(chan struct{}), fill: true}
	l.flights[j] = f
	return f
}

// deliver verifies the compressed bytes of member j, caches them, and
// completes its flight.
func (l *Layer) deliver(ctx context.Context, j int, f *flight, buf []byte) {
	m := l.toc.Members[j]
	finish := func(data []byte, err error, cached bool) {
		l.mu.Lock()
		if l.flights[j] == f {
			delete(l.flights, j)
		}
		if cached {
			l.markCachedLocked(j)
		}
		want := f.want
		l.mu.Unlock()
		if err == nil && want && data == nil {
			data, err = seekable.DecompressMember(buf, m)
		}
		f.data, f.err = data, err
		close(f.done)
	}
	l.mu.Lock()
	want := f.want
	l.mu.Unlock()
	var data []byte
	var err error
	if want || l.cache == nil {
		data, err = seekable.DecompressMember(buf, m)
	} else {
		err = checkMember(buf, m)
	}
	if err != nil {
		log.G(ctx).WithError(err).WithFields(log.Fields{"layer": l.desc.Digest, "member": j}).Error("remote: fetched member does not match its TOC")
		finish(nil, fmt.Errorf("layer %s: %w", l.desc.Digest, err), false)
		return
	}
	if data != nil {
		l.mem.add(m.Digest, data)
	}
	cached := false
	if l.cache != nil {
		if err := l.store(ctx, m.Digest, buf); err != nil {
			log.G(ctx).WithError(err).WithField("member", m.Digest).Warn("remote: caching member")
		} else {
			cached = true
		}
	}
	finish(data, nil, cached)
}

// store writes a verified member into the on-disk cache.
func (l *Layer) store(ctx context.Context, d digest.Digest, buf []byte) error {
	w, err := l.cache.Add(ctx, d.String())
	if err != nil {
		return err
	}
	if _, err := w.Write(buf); err != nil {
		w.Abort()
		return err
	}
	return w.Commit()
}

// checkMember verifies compressed bytes against the member's size and
// digest, as seekable.DecompressMember does, without decompressing.
func checkMember(buf []byte, m seekable.Member) error {
	if int64(len(buf)) != m.Size {
		return fmt.Errorf("%w: member at offset %d has %d bytes, want %d", seekable.ErrDigestMismatch, m.Offset, len(buf), m.Size)
	}
	if !m.Digest.Algorithm().Available() {
		return fmt.Errorf("%w: member at offset %d: digest algorithm of %q unavailable", seekable.ErrDigestMismatch, m.Offset, m.Digest)
	}
	if got := m.Digest.Algorithm().FromBytes(buf); got != m.Digest {
		return fmt.Errorf("%w: member at offset %d is %s, want %s", seekable.ErrDigestMismatch, m.Offset, got, m.Digest)
	}
	return nil
}
