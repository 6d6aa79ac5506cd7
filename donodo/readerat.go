package donodo

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"sync"

	"github.com/containerd/errdefs"
	"golang.org/x/sync/singleflight"
)

// rangeReader is the part of zenodo.ReaderAt that remoteReaderAt uses.
type rangeReader interface {
	ReadAtContext(ctx context.Context, p []byte, off int64) (int, error)
	Size() int64
	Close() error
}

// Bounds of remoteReaderAt.
const (
	// maxPinned bounds the metadata range fetched at once and kept.
	maxPinned = 32 << 20
	// defaultExtents is how many fetched ranges a remoteReaderAt keeps.
	defaultExtents = 8
	// smallRead is the size of a fetch that does not continue a previous
	// one (a tar header, the start of a blob).
	smallRead = 64 << 10
)

// remoteReaderAt is an io.ReaderAt over a remote file that fetches ranges
// (each one request) larger than the reads it serves and keeps the few most
// recently used, so that the small sequential reads of content.NewReader or
// a tar header walk cost few requests: a read that continues a kept range
// fetches a whole chunk after it, any other read 64 KiB. The range
// [0, pinEnd) (the metadata blobs of a format v1 archive) is fetched by one
// request on first use and kept. Concurrent misses at one offset are
// fetched once.
type remoteReaderAt struct {
	ctx   context.Context
	rr    rangeReader
	size  int64
	chunk int64
	// fetched, if set, is told the bytes each request brought.
	fetched func(n int64)

	pinEnd  int64
	pinOnce sync.Once
	pinned  []byte
	pinErr  error

	group   singleflight.Group
	mu      sync.Mutex
	extents []*extent // most recently used last
	max     int
}

// extent is a fetched range.
type extent struct {
	start int64
	data  []byte
}

func (e *extent) end() int64 { return e.start + int64(len(e.data)) }

// newRemoteReaderAt wraps rr; sequential reads fetch chunk bytes at a
// time; pinEnd > 0 names the metadata range to keep.
func newRemoteReaderAt(ctx context.Context, rr rangeReader, chunk, pinEnd int64) *remoteReaderAt {
	if pinEnd > maxPinned || pinEnd > rr.Size() {
		pinEnd = 0
	}
	return &remoteReaderAt{ctx: ctx, rr: rr, size: rr.Size(), chunk: max(chunk, smallRead), pinEnd: pinEnd, max: defaultExtents}
}

// Size is the remote file's size.
func (r *remoteReaderAt) Size() int64 { return r.size }

// Close closes the remote reader.
func (r *remoteReaderAt) Close() error { return r.rr.Close() }

// ReadAt implements io.ReaderAt.
func (r *remoteReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("read at negative offset %d: %w", off, errdefs.ErrInvalidArgument)
	}
	n := 0
	for n < len(p) {
		pos := off + int64(n)
		if pos >= r.size {
			return n, io.EOF
		}
		var (
			data  []byte
			start int64
			err   error
		)
		if pos < r.pinEnd {
			data, err = r.pin()
		} else {
			var e *extent
			e, err = r.get(pos)
			if e != nil {
				data, start = e.data, e.start
			}
		}
		if err != nil {
			return n, err
		}
		c := copy(p[n:], data[pos-start:])
		if c == 0 {
			return n, fmt.Errorf("reading at %d: empty range: %w", pos, io.ErrUnexpectedEOF)
		}
		n += c
	}
	return n, nil
}

// pin fetches and keeps [0, pinEnd).
func (r *remoteReaderAt) pin() ([]byte, error) {
	r.pinOnce.Do(func() {
		buf := make([]byte, r.pinEnd)
		n, err := r.rr.ReadAtContext(r.ctx, buf, 0)
		if r.fetched != nil {
			r.fetched(int64(n))
		}
		if err != nil && !(err == io.EOF && int64(n) == r.pinEnd) {
			r.pinErr = fmt.Errorf("reading archive metadata (%d bytes): %w", r.pinEnd, err)
			return
		}
		r.pinned = buf
	})
	return r.pinned, r.pinErr
}

// get returns a kept extent holding pos, fetching one if needed.
func (r *remoteReaderAt) get(pos int64) (*extent, error) {
	r.mu.Lock()
	size := int64(smallRead)
	for i := len(r.extents) - 1; i >= 0; i-- {
		e := r.extents[i]
		if pos >= e.start && pos < e.end() {
			r.extents = append(append(r.extents[:i:i], r.extents[i+1:]...), e)
			r.mu.Unlock()
			return e, nil
		}
		if e.end() == pos {
			size = r.chunk
		}
	}
	r.mu.Unlock()
	v, err, _ := r.group.Do(strconv.FormatInt(pos, 10), func() (any, error) {
		n := min(size, r.size-pos)
		buf := make([]byte, n)
		got, err := r.rr.ReadAtContext(r.ctx, buf, pos)
		if r.fetched != nil {
			r.fetched(int64(got))
		}
		if err != nil && !(err == io.EOF && int64(got) == n) {
			return nil, fmt.Errorf("reading bytes %d-%d: %w", pos, pos+n-1, err)
		}
		e := &extent{start: pos, data: buf}
		r.mu.Lock()
		r.extents = append(r.extents, e)
		if len(r.extents) > r.max {
			r.extents = slices.Delete(r.extents, 0, len(r.extents)-r.max)
		}
		r.mu.Unlock()
		return e, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*extent), nil
}
