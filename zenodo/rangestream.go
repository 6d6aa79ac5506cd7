package zenodo

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"strconv"
	"sync"

	"github.com/containerd/errdefs"
)

// OpenRange streams bytes [off, off+n) of file key of record recID with one
// ranged GET of /records/<id>/files/<key> ("Range: bytes=off-(off+n-1)"),
// within the client's request budget, and with its retries until the
// response headers arrive. It costs one request: no probe is made first.
//
// When the server answers 200 (it ignores Range) the response is dropped and
// the error wraps ErrRangeUnsupported; callers fall back to Open. A
// Content-Range other than the one asked for (a range running past the end
// of the file included) is an error wrapping ErrChecksumMismatch.
//
// The body is not resumed when the connection drops: a Read then fails, and
// the caller opens a new range from the offset it reached. Reading returns
// exactly n bytes, then io.EOF; a body that ends early fails with
// io.ErrUnexpectedEOF. ctx bounds the whole stream. Close the reader.
func (c *Client) OpenRange(ctx context.Context, recID, key string, off, n int64) (io.ReadCloser, error) {
	if err := checkRecID(recID); err != nil {
		return nil, err
	}
	if err := checkKey(key); err != nil {
		return nil, err
	}
	if off < 0 || n <= 0 || off > (1<<62)-n {
		return nil, fmt.Errorf("range of %d bytes at %d of %s: %w", n, off, key, errdefs.ErrInvalidArgument)
	}
	u := c.fileURL(recID, key)
	safeURL := redactURL(u)
	last := off + n - 1
	resp, err := c.do(ctx, &call{method: http.MethodGet, url: u,
		header: downloadHeader("bytes=" + strconv.FormatInt(off, 10) + "-" + strconv.FormatInt(last, 10)),
		policy: idempotent, size: -1, expect: []int{http.StatusPartialContent, http.StatusOK}})
	if err != nil {
		return nil, fmt.Errorf("reading bytes %d-%d of %s of record %s: %w", off, last, key, recID, err)
	}
	if resp.StatusCode == http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("reading bytes %d-%d of %s of record %s: server answered 200 to a ranged GET: %w",
			off, last, key, recID, ErrRangeUnsupported)
	}
	cr := resp.Header.Get("Content-Range")
	start, end, _, ok := parseContentRange(cr)
	if !ok || start != off || end != last || (resp.ContentLength >= 0 && resp.ContentLength != n) {
		resp.Body.Close()
		return nil, fmt.Errorf("reading %s: asked for bytes %d-%d, got Content-Range %q and Content-Length %d: %w",
			safeURL, off, last, cr, resp.ContentLength, ErrChecksumMismatch)
	}
	return &rangeStream{c: c, safeURL: safeURL, off: off, body: resp.Body, left: n}, nil
}

// rangeStream is OpenRange's reader.
type rangeStream struct {
	c       *Client
	safeURL string
	off     int64

	mu     sync.Mutex
	body   io.ReadCloser
	left   int64
	read   int64
	err    error
	closed bool
}

func (s *rangeStream) Read(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return 0, fmt.Errorf("reading %s: %w", s.safeURL, fs.ErrClosed)
	case s.err != nil:
		return 0, s.err
	case s.left == 0:
		return 0, io.EOF
	case len(p) == 0:
		return 0, nil
	}
	if int64(len(p)) > s.left {
		p = p[:s.left]
	}
	n, err := s.body.Read(p)
	s.left -= int64(n)
	s.read += int64(n)
	switch {
	case s.left == 0:
		return n, nil
	case err == io.EOF:
		s.err = fmt.Errorf("reading %s: body ended at byte %d of the range at %d: %w", s.safeURL, s.read, s.off, io.ErrUnexpectedEOF)
		return n, s.err
	case err != nil:
		s.err = fmt.Errorf("reading %s at byte %d of the range at %d: %w", s.safeURL, s.read, s.off, err)
		return n, s.err
	}
	return n, nil
}

func (s *rangeStream) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	err := s.body.Close()
	s.c.emit(Event{Kind: EventTransfer, Method: http.MethodGet, URL: s.safeURL, Bytes: s.read})
	return err
}
