package zenodo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
)

// ReaderAt reads a remote file by HTTP range. It is containerd's
// content.ReaderAt (io.ReaderAt, io.Closer, Size) plus ReadAtContext. It is
// safe for concurrent use.
type ReaderAt interface {
	io.ReaderAt
	io.Closer
	// Size is the file's size in bytes.
	Size() int64
	// ReadAtContext is ReadAt bounded by ctx.
	ReadAtContext(ctx context.Context, p []byte, off int64) (int, error)
}

// fileURL is the download route that honours Range: /records/<id>/files/<key>.
func (c *Client) fileURL(recID, key string) string {
	return c.endpoint(nil, "records", recID, "files", key)
}

func checkKey(key string) error {
	if key == "" || len(key) > 1024 || strings.ContainsRune(key, 0) {
		return fmt.Errorf("bad file key %q: %w", truncate(key, 64), errdefs.ErrInvalidArgument)
	}
	return nil
}

// downloadHeader asks for the bytes as stored: no transparent gzip, which
// would break byte offsets.
func downloadHeader(rangeSpec string) http.Header {
	h := http.Header{"Accept": {"*/*"}, "Accept-Encoding": {"identity"}}
	if rangeSpec != "" {
		h.Set("Range", rangeSpec)
	}
	return h
}

// Open streams file key of record recID from its start
// (GET /records/<id>/files/<key>). When the connection drops or the body
// ends short of its Content-Length, the stream transparently resumes with
// "Range: bytes=N-" (or, if the server ignores Range, by skipping N bytes of
// a new full response), up to the retry limit without progress. Reading
// fewer or more bytes than the file's size is an error. ctx bounds the
// whole stream. Like any io.Reader, the stream is read by one goroutine at
// a time; Close may be called from another one to abort a blocked Read.
func (c *Client) Open(ctx context.Context, recID, key string) (io.ReadCloser, error) {
	if err := checkRecID(recID); err != nil {
		return nil, err
	}
	if err := checkKey(key); err != nil {
		return nil, err
	}
	u := c.fileURL(recID, key)
	ctx, cancel := context.WithCancel(ctx)
	resp, err := c.do(ctx, &call{method: http.MethodGet, url: u, header: downloadHeader(""), policy: idempotent, size: -1})
	if err != nil {
		cancel()
		return nil, fmt.Errorf("opening %s of record %s: %w", key, recID, err)
	}
	return &stream{c: c, ctx: ctx, cancel: cancel, url: u, safeURL: redactURL(u), body: resp.Body, total: resp.ContentLength}, nil
}

// stream is Open's resuming reader.
type stream struct {
	c       *Client
	ctx     context.Context
	cancel  context.CancelFunc
	url     string
	safeURL string

	// Owned by the reading goroutine.
	off      int64 // bytes delivered
	total    int64 // -1 while unknown
	failures int   // consecutive failures without progress
	err      error // sticky

	transferred atomic.Int64

	mu     sync.Mutex    // guards body and closed, never held across I/O
	body   io.ReadCloser // nil between a failure and the resumption
	closed bool
}

// errResume marks a failure the stream recovers from by resuming.
type errResume struct{ err error }

func (e *errResume) Error() string { return e.err.Error() }
func (e *errResume) Unwrap() error { return e.err }

var errStreamClosed = fmt.Errorf("stream: %w", fs.ErrClosed)

// current returns the open body, or errStreamClosed.
func (s *stream) current() (io.ReadCloser, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errStreamClosed
	}
	return s.body, nil
}

// setBody installs b as the body (nil drops the current one), unless the
// stream was closed meanwhile.
func (s *stream) setBody(b io.ReadCloser) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.body != nil {
		s.body.Close()
	}
	s.body = nil
	if s.closed {
		if b != nil {
			b.Close()
		}
		return errStreamClosed
	}
	s.body = b
	return nil
}

func (s *stream) Read(p []byte) (int, error) {
	body, err := s.current()
	if err != nil {
		return 0, fmt.Errorf("reading %s: %w", s.safeURL, err)
	}
	if s.err != nil {
		return 0, s.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	for {
		n := 0
		if body == nil {
			body, err = s.reopen()
		}
		if err == nil {
			n, err = body.Read(p)
			s.off += int64(n)
			s.transferred.Add(int64(n))
			if n > 0 {
				s.failures = 0
			}
			switch {
			case err == nil:
				return n, nil
			case err == io.EOF && (s.total < 0 || s.off == s.total):
				s.err = io.EOF
				return n, io.EOF
			case err == io.EOF && s.off > s.total:
				s.err = fmt.Errorf("reading %s: got %d bytes, more than its size %d: %w", s.safeURL, s.off, s.total, ErrChecksumMismatch)
				return n, s.err
			case err == io.EOF:
				err = fmt.Errorf("body ended at byte %d of %d: %w", s.off, s.total, io.ErrUnexpectedEOF)
			}
			body = nil
			if cerr := s.setBody(nil); cerr != nil {
				return n, fmt.Errorf("reading %s: %w", s.safeURL, cerr)
			}
			err = &errResume{err}
		}
		if _, cerr := s.current(); cerr != nil {
			return n, fmt.Errorf("reading %s: %w", s.safeURL, cerr)
		}
		var re *errResume
		if !errors.As(err, &re) || s.ctx.Err() != nil {
			if s.ctx.Err() != nil {
				err = fmt.Errorf("reading %s: %w", s.safeURL, context.Cause(s.ctx))
			}
			s.err = err
			return n, err
		}
		s.failures++
		if s.failures >= s.c.maxAttempts {
			s.err = &Error{Method: http.MethodGet, URL: s.safeURL, kind: errdefs.ErrUnavailable,
				err: fmt.Errorf("download failed %d times at byte %d: %w", s.failures, s.off, re.err)}
			return n, s.err
		}
		delay := s.c.backoffDelay(s.failures)
		s.c.emit(Event{Kind: EventRetry, Method: http.MethodGet, URL: s.safeURL, Attempt: s.failures, Duration: delay, Err: re.err})
		log.G(s.ctx).WithFields(log.Fields{"url": s.safeURL, "offset": s.off, "delay": delay}).WithError(re.err).
			Info("zenodo download interrupted, resuming")
		if err := s.c.clock.Sleep(s.ctx, delay); err != nil {
			s.err = fmt.Errorf("reading %s: %w", s.safeURL, err)
			return n, s.err
		}
		err = nil
		if n > 0 {
			return n, nil
		}
	}
}

// reopen starts a new response at s.off. Errors wrapped in errResume may be
// retried; others end the stream.
func (s *stream) reopen() (io.ReadCloser, error) {
	resp, err := s.c.do(s.ctx, &call{method: http.MethodGet, url: s.url, header: downloadHeader("bytes=" + strconv.FormatInt(s.off, 10) + "-"),
		policy: idempotent, size: -1, expect: []int{http.StatusOK, http.StatusPartialContent}})
	if err != nil {
		return nil, fmt.Errorf("resuming %s at byte %d: %w", s.safeURL, s.off, err)
	}
	switch resp.StatusCode {
	case http.StatusPartialContent:
		start, _, total, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if !ok || start != s.off || (s.total >= 0 && total >= 0 && total != s.total) {
			resp.Body.Close()
			return nil, fmt.Errorf("resuming %s at byte %d of %d: server sent Content-Range %q: %w",
				s.safeURL, s.off, s.total, resp.Header.Get("Content-Range"), ErrChecksumMismatch)
		}
		if s.total < 0 {
			s.total = total
		}
	default: // 200: the whole file again; skip what was delivered.
		if s.total >= 0 && resp.ContentLength >= 0 && resp.ContentLength != s.total {
			resp.Body.Close()
			return nil, fmt.Errorf("resuming %s: size changed from %d to %d: %w", s.safeURL, s.total, resp.ContentLength, ErrChecksumMismatch)
		}
		skipped, err := io.CopyN(io.Discard, resp.Body, s.off)
		s.transferred.Add(skipped)
		if err != nil {
			resp.Body.Close()
			return nil, &errResume{fmt.Errorf("skipping %d bytes: %w", s.off, err)}
		}
	}
	if err := s.setBody(resp.Body); err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// Close ends the stream; a Read blocked in another goroutine returns.
func (s *stream) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	var err error
	if s.body != nil {
		err = s.body.Close()
		s.body = nil
	}
	s.mu.Unlock()
	s.cancel()
	s.c.emit(Event{Kind: EventTransfer, Method: http.MethodGet, URL: s.safeURL, Bytes: s.transferred.Load()})
	return err
}

// NewReaderAt opens file key of record recID for reads by HTTP range on
// GET /records/<id>/files/<key>. It probes with "Range: bytes=0-0": when
// the server answers 200 instead of 206, it returns an error wrapping
// ErrRangeUnsupported, and the caller falls back to Open. size is the
// expected size (from the record's files), checked against the server's;
// -1 takes the server's.
//
// Each ReadAt is one ranged GET (callers coalesce), with the client's
// retries; a body cut short is resumed for the missing bytes, and the byte
// count is checked against Content-Range. ctx's values (logger) are kept,
// its cancellation is not: the reader lives until Close; use ReadAtContext
// to bound a read.
func (c *Client) NewReaderAt(ctx context.Context, recID, key string, size int64) (ReaderAt, error) {
	if err := checkRecID(recID); err != nil {
		return nil, err
	}
	if err := checkKey(key); err != nil {
		return nil, err
	}
	u := c.fileURL(recID, key)
	safeURL := redactURL(u)
	resp, err := c.do(ctx, &call{method: http.MethodGet, url: u, header: downloadHeader("bytes=0-0"), policy: idempotent, size: -1,
		expect: []int{http.StatusPartialContent, http.StatusOK, http.StatusRequestedRangeNotSatisfiable}})
	if err != nil {
		return nil, fmt.Errorf("probing %s of record %s for range reads: %w", key, recID, err)
	}
	defer resp.Body.Close()
	var total int64
	switch resp.StatusCode {
	case http.StatusOK:
		if resp.ContentLength == 0 {
			// An empty file: nothing will ever be read by range.
			break
		}
		return nil, fmt.Errorf("probing %s of record %s: server answered 200 to a ranged GET: %w", key, recID, ErrRangeUnsupported)
	case http.StatusRequestedRangeNotSatisfiable:
		_, _, t, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if !ok || t != 0 {
			return nil, fmt.Errorf("probing %s of record %s: 416 with Content-Range %q: %w", key, recID,
				resp.Header.Get("Content-Range"), errdefs.ErrUnknown)
		}
	default:
		start, end, t, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if !ok || start != 0 || end != 0 || t < 1 {
			return nil, fmt.Errorf("probing %s of record %s: bad Content-Range %q: %w", key, recID,
				resp.Header.Get("Content-Range"), ErrRangeUnsupported)
		}
		total = t
		if _, err := io.Copy(io.Discard, io.LimitReader(resp.Body, 1)); err != nil {
			log.G(ctx).WithError(err).Debug("zenodo: reading range probe body")
		}
	}
	if size >= 0 && total != size {
		return nil, fmt.Errorf("%s of record %s has %d bytes, expected %d: %w", key, recID, total, size, ErrChecksumMismatch)
	}
	return &rangeReader{c: c, ctx: context.WithoutCancel(ctx), url: u, safeURL: safeURL, size: total}, nil
}

// rangeReader is NewReaderAt's ReaderAt.
type rangeReader struct {
	c       *Client
	ctx     context.Context
	url     string
	safeURL string
	size    int64
	closed  atomic.Bool
}

func (r *rangeReader) Size() int64 { return r.size }

func (r *rangeReader) Close() error {
	r.closed.Store(true)
	return nil
}

func (r *rangeReader) ReadAt(p []byte, off int64) (int, error) {
	return r.ReadAtContext(r.ctx, p, off)
}

// errFatal marks a range read failure that retrying cannot fix.
type errFatal struct{ err error }

func (e *errFatal) Error() string { return e.err.Error() }
func (e *errFatal) Unwrap() error { return e.err }

func (r *rangeReader) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	switch {
	case r.closed.Load():
		return 0, fmt.Errorf("reading %s: %w", r.safeURL, fs.ErrClosed)
	case off < 0:
		return 0, fmt.Errorf("reading %s at %d: negative offset: %w", r.safeURL, off, errdefs.ErrInvalidArgument)
	case off >= r.size:
		return 0, io.EOF
	}
	want := min(int64(len(p)), r.size-off)
	buf := p[:want]
	var got int64
	failures := 0
	for got < want {
		n, err := r.fetch(ctx, buf[got:], off+got)
		got += n
		if err == nil {
			continue
		}
		var fe *errFatal
		if errors.As(err, &fe) {
			return int(got), fe.err
		}
		if n > 0 {
			failures = 0
		}
		failures++
		if failures >= r.c.maxAttempts || ctx.Err() != nil {
			return int(got), fmt.Errorf("reading %s at %d: %w", r.safeURL, off+got, err)
		}
		delay := r.c.backoffDelay(failures)
		r.c.emit(Event{Kind: EventRetry, Method: http.MethodGet, URL: r.safeURL, Attempt: failures, Duration: delay, Err: err})
		log.G(ctx).WithFields(log.Fields{"url": r.safeURL, "offset": off + got, "delay": delay}).WithError(err).
			Info("zenodo range read interrupted, resuming")
		if err := r.c.clock.Sleep(ctx, delay); err != nil {
			return int(got), fmt.Errorf("reading %s: %w", r.safeURL, err)
		}
	}
	if int64(len(p)) > want {
		return int(got), io.EOF
	}
	return int(got), nil
}

// fetch reads buf from off with one ranged GET. A short body is a plain
// error (retried); errFatal is not retried.
func (r *rangeReader) fetch(ctx context.Context, buf []byte, off int64) (int64, error) {
	last := off + int64(len(buf)) - 1
	resp, err := r.c.do(ctx, &call{method: http.MethodGet, url: r.url,
		header: downloadHeader("bytes=" + strconv.FormatInt(off, 10) + "-" + strconv.FormatInt(last, 10)),
		policy: idempotent, size: -1, expect: []int{http.StatusPartialContent, http.StatusOK}})
	if err != nil {
		return 0, &errFatal{fmt.Errorf("reading %s at %d: %w", r.safeURL, off, err)}
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		return 0, &errFatal{fmt.Errorf("reading %s at %d: server answered 200 to a ranged GET: %w", r.safeURL, off, ErrRangeUnsupported)}
	}
	cr := resp.Header.Get("Content-Range")
	start, end, total, ok := parseContentRange(cr)
	if !ok || start != off || end < start || end > last || (total >= 0 && total != r.size) {
		return 0, &errFatal{fmt.Errorf("reading %s: asked for bytes %d-%d of %d, got Content-Range %q: %w",
			r.safeURL, off, last, r.size, cr, ErrChecksumMismatch)}
	}
	n := end - start + 1
	if resp.ContentLength >= 0 && resp.ContentLength != n {
		return 0, &errFatal{fmt.Errorf("reading %s: Content-Length %d does not match Content-Range %q: %w",
			r.safeURL, resp.ContentLength, cr, ErrChecksumMismatch)}
	}
	m, err := io.ReadFull(resp.Body, buf[:n])
	r.c.emit(Event{Kind: EventTransfer, Method: http.MethodGet, URL: r.safeURL, Bytes: int64(m)})
	if err != nil {
		return int64(m), fmt.Errorf("reading body of bytes %d-%d: %w", off, end, err)
	}
	return int64(m), nil
}

// parseContentRange parses "bytes first-last/total" and "bytes */total";
// total is -1 for "*", first and last are -1 in the unsatisfied form.
func parseContentRange(v string) (first, last, total int64, ok bool) {
	rest, found := strings.CutPrefix(strings.TrimSpace(v), "bytes ")
	if !found {
		return 0, 0, 0, false
	}
	rng, tot, found := strings.Cut(strings.TrimSpace(rest), "/")
	if !found {
		return 0, 0, 0, false
	}
	total = -1
	if tot != "*" {
		t, err := strconv.ParseInt(tot, 10, 64)
		if err != nil || t < 0 {
			return 0, 0, 0, false
		}
		total = t
	}
	if rng == "*" {
		return -1, -1, total, total >= 0
	}
	a, b, found := strings.Cut(rng, "-")
	if !found {
		return 0, 0, 0, false
	}
	fa, err1 := strconv.ParseInt(a, 10, 64)
	lb, err2 := strconv.ParseInt(b, 10, 64)
	if err1 != nil || err2 != nil || fa < 0 || lb < fa || (total >= 0 && lb >= total) {
		return 0, 0, 0, false
	}
	return fa, lb, total, true
}
