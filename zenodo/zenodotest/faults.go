package zenodotest

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"golang.org/x/time/rate"
)

// BeforeBody, as Fault.Truncate or Fault.ResetAfter, cuts the response right
// after its headers, before any body byte.
const BeforeBody int64 = -2

// Fault is an injected failure. Faults are matched in the order they were
// injected; the first one whose Method and PathContains match a request
// hits it, Times times. A fault combines: Delay, then either Drop, Status,
// or the route's own answer altered by Truncate, ResetAfter and
// WrongChecksum.
type Fault struct {
	// Method and PathContains select requests ("" matches any).
	Method       string
	PathContains string
	// Times is how many matching requests the fault hits (0 = 1).
	Times int
	// Status replies with this status (500, 502, 503, 504, 429...) and the
	// body Zenodo's stack gives it, instead of the route's answer.
	Status int
	// RetryAfter sets Retry-After on the injected status (the default for
	// 429 is 1 minute; other statuses keep the rate-limit Retry-After every
	// Zenodo response carries, 502/504 have none).
	RetryAfter time.Duration
	// ResetAfter resets the TCP connection (RST) after this many body bytes
	// of the route's answer; 0 and -1 are off, BeforeBody cuts after the
	// headers.
	ResetAfter int64
	// Truncate sends the full Content-Length, then only this many body bytes
	// and closes the connection; 0 is off, BeforeBody sends no body byte.
	Truncate int64
	// WrongChecksum makes a bucket PUT store corrupted content (the first
	// byte flipped) and answer its md5, as if the upload was damaged on the
	// way: the answered checksum differs from the client's.
	WrongChecksum bool
	// Drop closes the connection without any answer.
	Drop bool
	// Delay is added before the first response byte (slow start).
	Delay time.Duration
}

type faultState struct {
	f    Fault
	left int
}

type wrongChecksumKey struct{}

// InjectFault adds a fault; see Fault for matching.
func (s *Server) InjectFault(f Fault) {
	n := f.Times
	if n <= 0 {
		n = 1
	}
	s.faultMu.Lock()
	s.faults = append(s.faults, &faultState{f: f, left: n})
	s.faultMu.Unlock()
}

// ClearFaults removes all faults not yet used up.
func (s *Server) ClearFaults() {
	s.faultMu.Lock()
	s.faults = nil
	s.faultMu.Unlock()
}

// PendingFaults returns how many injected hits are still unused.
func (s *Server) PendingFaults() int {
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	n := 0
	for _, f := range s.faults {
		n += f.left
	}
	return n
}

func (s *Server) matchFault(r *http.Request) *Fault {
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	for i, fs := range s.faults {
		if fs.f.Method != "" && !strings.EqualFold(fs.f.Method, r.Method) {
			continue
		}
		if fs.f.PathContains != "" && !strings.Contains(r.URL.Path, fs.f.PathContains) {
			continue
		}
		fs.left--
		f := fs.f
		if fs.left <= 0 {
			s.faults = append(s.faults[:i], s.faults[i+1:]...)
		}
		return &f
	}
	return nil
}

// errCut is returned by respWriter.Write once a fault cut the response.
var errCut = errors.New("zenodotest: response cut by an injected fault")

// respWriter wraps every response: it records the status and body bytes for
// the request log, paces the body (WithBandwidth) and applies Truncate and
// ResetAfter faults.
type respWriter struct {
	w          http.ResponseWriter
	req        *http.Request
	status     int
	n          int64
	lim        *rate.Limiter
	chunk      int
	truncate   int64
	resetAfter int64
	cut        bool
	// beforeReset runs just before the connection is reset.
	beforeReset func()
	// beforeLast runs just before the body's last bytes (by Content-Length)
	// are written, with the body's final size: the request is logged before
	// the client can have read the whole response.
	beforeLast func(n int64)
	// length is the declared Content-Length (-1: none), read at the first Write.
	length int64
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (rw *respWriter) Unwrap() http.ResponseWriter { return rw.w }

func (rw *respWriter) Header() http.Header { return rw.w.Header() }

func (rw *respWriter) shape(bytesPerSec int64) {
	chunk := bytesPerSec / 20
	if chunk < 1 {
		chunk = 1
	}
	if chunk > 64<<10 {
		chunk = 64 << 10
	}
	rw.chunk = int(chunk)
	rw.lim = rate.NewLimiter(rate.Limit(bytesPerSec), rw.chunk)
}

func (rw *respWriter) WriteHeader(code int) {
	if rw.status != 0 || rw.cut {
		return
	}
	rw.status = code
	rw.w.WriteHeader(code)
	if rw.req.Method == http.MethodHead {
		return
	}
	switch {
	case rw.resetAfter == BeforeBody:
		rw.reset()
	case rw.truncate == BeforeBody:
		rw.cut = true
	}
}

func (rw *respWriter) Write(p []byte) (int, error) {
	if rw.status == 0 {
		rw.WriteHeader(http.StatusOK)
	}
	if rw.cut {
		return 0, errCut
	}
	if rw.length == 0 {
		rw.length = -1
		if cl, err := strconv.ParseInt(rw.w.Header().Get("Content-Length"), 10, 64); err == nil && cl > 0 {
			rw.length = cl
		}
	}
	total := 0
	for len(p) > 0 {
		n := len(p)
		if rw.chunk > 0 && n > rw.chunk {
			n = rw.chunk
		}
		if rw.truncate > 0 {
			left := rw.truncate - rw.n
			if left <= 0 {
				rw.cut = true
				return total, errCut
			}
			n = int(min(int64(n), left))
		}
		if rw.resetAfter > 0 {
			left := rw.resetAfter - rw.n
			if left <= 0 {
				rw.reset()
				return total, errCut
			}
			n = int(min(int64(n), left))
		}
		if rw.lim != nil {
			if err := rw.lim.WaitN(rw.req.Context(), n); err != nil {
				return total, err
			}
		}
		if rw.beforeLast != nil && rw.length > 0 && rw.n+int64(n) >= rw.length {
			last := rw.beforeLast
			rw.beforeLast = nil
			last(rw.n + int64(n))
		}
		m, err := rw.w.Write(p[:n])
		rw.n += int64(m)
		total += m
		if err != nil {
			return total, err
		}
		p = p[n:]
	}
	if rw.resetAfter > 0 && rw.n >= rw.resetAfter {
		rw.reset()
		return total, errCut
	}
	return total, nil
}

// Flush implements http.Flusher.
func (rw *respWriter) Flush() {
	if !rw.cut {
		_ = http.NewResponseController(rw.w).Flush()
	}
}

// reset sends what was written, then closes the connection with a TCP RST
// (SO_LINGER 0). Without a hijackable connection (HTTP/2) it aborts the
// handler, which closes the stream.
func (rw *respWriter) reset() {
	if rw.cut {
		return
	}
	rw.cut = true
	rc := http.NewResponseController(rw.w)
	_ = rc.Flush()
	if rw.beforeReset != nil {
		rw.beforeReset()
	}
	conn, buf, err := rc.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	if buf != nil {
		_ = buf.Flush()
	}
	if tcp, ok := conn.(*net.TCPConn); ok {
		_ = tcp.SetLinger(0)
	}
	_ = conn.Close()
}

// pacedReader limits an upload body to a rate.
type pacedReader struct {
	ctx   context.Context
	r     io.ReadCloser
	lim   *rate.Limiter
	chunk int
}

func newPacedReader(ctx context.Context, r io.ReadCloser, bytesPerSec int64) io.ReadCloser {
	if r == nil || r == http.NoBody {
		return r
	}
	chunk := int(min(max(bytesPerSec/20, 1), 64<<10))
	return &pacedReader{ctx: ctx, r: r, lim: rate.NewLimiter(rate.Limit(bytesPerSec), chunk), chunk: chunk}
}

func (p *pacedReader) Read(b []byte) (int, error) {
	if len(b) > p.chunk {
		b = b[:p.chunk]
	}
	n, err := p.r.Read(b)
	if n > 0 {
		if werr := p.lim.WaitN(p.ctx, n); werr != nil && err == nil {
			err = werr
		}
	}
	return n, err
}

func (p *pacedReader) Close() error { return p.r.Close() }
