package zenodotest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
)

// Zenodo's documented and configured limits (zenodo-rdm invenio.cfg:
// RDM_FILES_DEFAULT_QUOTA_SIZE = 50 * 10**9, RDM_RECORDS_MAX_FILES_COUNT
// defaults to 100).
const (
	// DefaultMaxRecordSize is the total size of the files of one record: 50 GB.
	DefaultMaxRecordSize int64 = 50 * 1000 * 1000 * 1000
	// DefaultMaxFiles is the number of files one record may hold.
	DefaultMaxFiles = 100
	// DefaultToken is the bearer token accepted when WithTokens is not given.
	DefaultToken = "test-token"
	// DefaultDOIPrefix is production Zenodo's DOI prefix (the sandbox uses 10.5072).
	DefaultDOIPrefix = "10.5281"
)

// Option configures a Server. Options are applied in order by New/Open.
type Option func(*Server)

// Server is a fake Zenodo: an http.Handler serving the legacy deposit API and
// the records API with the JSON shapes of real Zenodo responses. Create it
// with New or Open; serve it with httptest or any http.Server.
type Server struct {
	// Configuration, fixed after Open.
	tokens          []string
	doiPrefix       string
	latency         time.Duration
	bandwidth       int64
	perMinute       int
	perHour         int
	searchPerMinute int
	dir             string
	ownDir          bool
	logf            func(format string, args ...any)
	maxRecordSize   int64
	maxFiles        int
	now             func() time.Time
	conceptRedirect bool
	unreliableHEAD  bool
	indexDelay      time.Duration
	reqLogW         io.Writer
	reqLogLimit     int
	optErr          error
	// testHookLatency, if set, runs when a request starts its latency.
	testHookLatency func()

	mux     *http.ServeMux
	limiter *rateLimiter
	reqSeq  atomic.Uint64

	mu     sync.Mutex // guards st and closed
	st     *state
	closed bool

	faultMu sync.Mutex
	faults  []*faultState

	logMu sync.Mutex
	reqs  []Request
}

var _ http.Handler = (*Server)(nil)

// WithTokens sets the bearer tokens the deposit API accepts. The default is
// DefaultToken ("test-token"). Each token is its own Zenodo user: depositions
// are visible only to the token that created them.
func WithTokens(tokens ...string) Option {
	return func(s *Server) { s.tokens = append(make([]string, 0, len(tokens)), tokens...) }
}

// WithDOIPrefix sets the DOI prefix of minted DOIs (<prefix>/zenodo.<id>).
// The default is DefaultDOIPrefix ("10.5281"); the sandbox uses "10.5072".
func WithDOIPrefix(p string) Option {
	return func(s *Server) { s.doiPrefix = p }
}

// WithLatency adds d before the first byte of every response (a round trip).
// The default is 0.
func WithLatency(d time.Duration) Option {
	return func(s *Server) { s.latency = d }
}

// WithBandwidth limits every response body, and every upload body, to
// bytesPerSec per connection, paced in chunks of about 1/20 s. The default
// (0) is unshaped.
func WithBandwidth(bytesPerSec int64) Option {
	return func(s *Server) { s.bandwidth = bytesPerSec }
}

// WithRateLimit answers 429 with Retry-After once a client (a token, or an IP
// address without one) has made perMinute requests in the current minute or
// perHour in the current hour (fixed windows, as Zenodo's limiter). 0 means
// unlimited, the default for both. Every response carries X-RateLimit-Limit,
// X-RateLimit-Remaining, X-RateLimit-Reset and Retry-After either way.
func WithRateLimit(perMinute, perHour int) Option {
	return func(s *Server) { s.perMinute, s.perHour = perMinute, perHour }
}

// WithSearchRateLimit limits the public records search (GET /api/records) to
// perMinute requests per client on top of WithRateLimit, as Zenodo's
// "records.search: 30 per minute". The default (0) is unlimited.
func WithSearchRateLimit(perMinute int) Option {
	return func(s *Server) { s.searchPerMinute = perMinute }
}

// WithDir keeps the records (state.json, written atomically) and the file
// contents under dir, so that a Server opened later on the same dir sees the
// same records. The default is a fresh temporary directory removed by Close.
func WithDir(dir string) Option {
	return func(s *Server) { s.dir = dir }
}

// WithLogf sends the server's debug messages to f. The default logs them at
// debug level with github.com/containerd/log. Tokens are never logged.
func WithLogf(f func(format string, args ...any)) Option {
	return func(s *Server) { s.logf = f }
}

// WithMaxRecordSize sets the total size of the files of one record, checked
// while an upload streams in (400 "Bucket quota exceeded."). The default is
// DefaultMaxRecordSize (50 GB).
func WithMaxRecordSize(n int64) Option {
	return func(s *Server) { s.maxRecordSize = n }
}

// WithMaxFiles sets how many files one record may hold (400 past it). The
// default is DefaultMaxFiles (100).
func WithMaxFiles(n int) Option {
	return func(s *Server) { s.maxFiles = n }
}

// WithClock sets the clock used for timestamps, rate-limit windows and the
// search index delay, so tests can move time without sleeping. The default is
// time.Now. Latency and bandwidth shaping always use real timers.
func WithClock(now func() time.Time) Option {
	return func(s *Server) { s.now = now }
}

// WithConceptRedirect makes GET /api/records/<concept recid> answer 302 to the
// latest version, as invenio-rdm-records has done since Nov 2023
// ("resources: add parent doi redirection"). By default the fake answers 404,
// as Zenodo did right after its Oct 2023 migration (zenodo/zenodo#2499), so
// that clients must use /versions/latest or links.parent.
func WithConceptRedirect() Option {
	return func(s *Server) { s.conceptRedirect = true }
}

// WithUnreliableHEAD makes HEAD on file downloads answer without
// Content-Length. By default HEAD answers as recorded in fixtures 90 and 91
// (200 with Content-Length).
func WithUnreliableHEAD() Option {
	return func(s *Server) { s.unreliableHEAD = true }
}

// WithIndexDelay hides records from search (both the deposit list and the
// records search) until d after they were created or published, as Zenodo's
// search index lags behind its database. The default is 0.
func WithIndexDelay(d time.Duration) Option {
	return func(s *Server) { s.indexDelay = d }
}

// WithRequestLogWriter also writes every completed request as one JSON line
// (the fields of Request) to w. Writes are serialised. The default is none.
func WithRequestLogWriter(w io.Writer) Option {
	return func(s *Server) { s.reqLogW = w }
}

// WithRequestLogLimit caps the in-memory request log returned by Requests to
// the last n requests, so that a long-running server stays bounded. The
// default is 100000.
func WithRequestLogLimit(n int) Option {
	return func(s *Server) { s.reqLogLimit = n }
}

// New returns a Server configured by opts. It panics if the server cannot
// be opened (an unusable WithDir, bad option values); use Open to get that
// error instead.
func New(opts ...Option) *Server {
	s, err := Open(opts...)
	if err != nil {
		panic(fmt.Sprintf("zenodotest: %v", err))
	}
	return s
}

// Open returns a Server configured by opts, loading the records persisted in
// WithDir when there are any.
func Open(opts ...Option) (*Server, error) {
	s := &Server{
		doiPrefix:     DefaultDOIPrefix,
		maxRecordSize: DefaultMaxRecordSize,
		maxFiles:      DefaultMaxFiles,
		now:           time.Now,
		reqLogLimit:   100000,
	}
	for _, o := range opts {
		o(s)
	}
	if s.tokens == nil {
		s.tokens = []string{DefaultToken}
	}
	if s.logf == nil {
		s.logf = func(format string, args ...any) {
			log.G(context.Background()).Debugf(format, args...)
		}
	}
	if err := s.validate(); err != nil {
		return nil, err
	}
	if s.dir == "" {
		d, err := os.MkdirTemp("", "zenodotest-")
		if err != nil {
			return nil, fmt.Errorf("creating the data directory: %w", err)
		}
		s.dir, s.ownDir = d, true
	}
	for _, sub := range []string{blobDir, tmpDir} {
		if err := os.MkdirAll(filepath.Join(s.dir, sub), 0o755); err != nil {
			return nil, fmt.Errorf("creating the data directory %s: %w", s.dir, err)
		}
	}
	st, err := loadState(s.dir)
	if err != nil {
		return nil, err
	}
	s.st = st
	s.limiter = newRateLimiter(s.perMinute, s.perHour, s.searchPerMinute, s.now)
	s.mux = s.routes()
	return s, nil
}

func (s *Server) validate() error {
	switch {
	case s.optErr != nil:
		return s.optErr
	case len(s.tokens) == 0:
		return fmt.Errorf("WithTokens needs at least one token: %w", errdefs.ErrInvalidArgument)
	case s.doiPrefix == "" || strings.ContainsAny(s.doiPrefix, "/ "):
		return fmt.Errorf("DOI prefix %q is not of the form 10.NNNN: %w", s.doiPrefix, errdefs.ErrInvalidArgument)
	case s.latency < 0, s.bandwidth < 0, s.perMinute < 0, s.perHour < 0, s.searchPerMinute < 0, s.indexDelay < 0:
		return fmt.Errorf("negative latency, bandwidth, rate limit or index delay: %w", errdefs.ErrInvalidArgument)
	case s.maxRecordSize <= 0, s.maxFiles <= 0, s.reqLogLimit <= 0:
		return fmt.Errorf("record size, file count and request log limits must be positive: %w", errdefs.ErrInvalidArgument)
	case s.now == nil:
		return fmt.Errorf("WithClock(nil): %w", errdefs.ErrInvalidArgument)
	}
	for _, t := range s.tokens {
		if t == "" || strings.ContainsAny(t, " \t\r\n") {
			return fmt.Errorf("tokens must be non-empty and without blanks: %w", errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

// Dir returns the directory holding the server's records and files.
func (s *Server) Dir() string { return s.dir }

// Close stops accepting requests (later ones get 503) and removes the data
// directory if it was a temporary one. It does not wait for requests in
// flight; close the http.Server first.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if s.ownDir {
		if err := os.RemoveAll(s.dir); err != nil {
			return fmt.Errorf("removing %s: %w", s.dir, err)
		}
	}
	return nil
}

// ServeHTTP serves one request: latency, rate limit, injected faults, then
// the route.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rw := &respWriter{w: w, req: r}
	entry := Request{
		Method: r.Method,
		Path:   r.URL.Path,
		Query:  redactQuery(r.URL.RawQuery),
		Range:  r.Header.Get("Range"),
		Time:   s.now(),
	}
	logged := false
	logBytes := func(n int64) {
		if logged {
			return
		}
		logged = true
		entry.Status = rw.status
		if entry.Status == 0 && !rw.cut {
			entry.Status = http.StatusOK
		}
		entry.Bytes = n
		s.logRequest(entry)
	}
	logOnce := func() { logBytes(rw.n) }
	// A reset logs before closing the connection, and a complete body before
	// its last bytes, so that a client that saw the reset or read the whole
	// response also sees the request in the log.
	rw.beforeReset = logOnce
	rw.beforeLast = logBytes
	defer func() {
		p := recover()
		logOnce()
		if p != nil {
			panic(p)
		}
	}()

	f := s.matchFault(r)
	delay := s.latency
	if f != nil {
		delay += f.Delay
	}
	if delay > 0 && s.testHookLatency != nil {
		s.testHookLatency()
	}
	if delay > 0 && !sleepCtx(r.Context(), delay) {
		rw.status = statusClientClosed
		return
	}
	if s.bandwidth > 0 {
		rw.shape(s.bandwidth)
		r.Body = newPacedReader(r.Context(), r.Body, s.bandwidth)
	}
	w.Header().Set("X-Request-Id", fmt.Sprintf("%032x", s.reqSeq.Add(1)))
	if strings.HasPrefix(r.URL.Path, "/api/") {
		w.Header().Set("Access-Control-Allow-Origin", "*")
		w.Header().Set("Access-Control-Expose-Headers", "Content-Type, ETag, Link, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset")
	}

	if !s.rateLimit(rw, r) {
		return
	}
	if f != nil {
		rw.truncate, rw.resetAfter = f.Truncate, f.ResetAfter
		if f.Drop {
			rw.reset()
			return
		}
		if f.Status != 0 {
			writeFaultStatus(rw, f.Status, f.RetryAfter)
			return
		}
		if f.WrongChecksum {
			r = r.WithContext(context.WithValue(r.Context(), wrongChecksumKey{}, true))
		}
	}
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		writeLegacyError(rw, http.StatusServiceUnavailable, msgUnavailable)
		return
	}
	s.mux.ServeHTTP(rw, r)
}

// statusClientClosed is logged for requests whose client went away before
// the server answered (nginx's convention).
const statusClientClosed = 499

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// redactQuery hides the value of access_token (Zenodo accepts the token in
// the query; the request log must never show it).
func redactQuery(q string) string {
	if !strings.Contains(q, "access_token") {
		return q
	}
	parts := strings.Split(q, "&")
	for i, p := range parts {
		if k, _, ok := strings.Cut(p, "="); ok && k == "access_token" {
			parts[i] = "access_token=REDACTED"
		}
	}
	return strings.Join(parts, "&")
}

// baseURL is scheme://host of the request, for absolute links.
func baseURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	if p := r.Header.Get("X-Forwarded-Proto"); p == "http" || p == "https" {
		scheme = p
	}
	host := r.Host
	if host == "" {
		host = "localhost"
	}
	return scheme + "://" + host
}

// clientKey identifies a client for rate limiting: its token, or its IP.
func (s *Server) clientKey(r *http.Request) string {
	if tok := requestToken(r); tok != "" && s.validToken(tok) {
		return "user:" + fmt.Sprint(ownerOf(tok))
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	return "ip:" + host
}

func (s *Server) validToken(tok string) bool {
	for _, t := range s.tokens {
		if t == tok {
			return true
		}
	}
	return false
}

// requestToken returns the bearer token (or access_token query parameter).
func requestToken(r *http.Request) string {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, tok, ok := strings.Cut(h, " ")
		if ok && strings.EqualFold(scheme, "Bearer") {
			return strings.TrimSpace(tok)
		}
		return ""
	}
	return r.URL.Query().Get("access_token")
}

// auth returns the owner id of the request's token, or writes 401 (fixtures
// 80 and 82) and returns false.
func (s *Server) auth(w http.ResponseWriter, r *http.Request) (int, bool) {
	tok := requestToken(r)
	if tok == "" || !s.validToken(tok) {
		writeLegacyError(w, http.StatusUnauthorized, msgUnauthorized)
		return 0, false
	}
	return ownerOf(tok), true
}

// writeJSON writes v with a Content-Length (so that faults can truncate it).
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b = internalErrorBody()
	}
	writeBody(w, status, "application/json", b)
}

func writeBody(w http.ResponseWriter, status int, contentType string, b []byte) {
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("Content-Length", fmt.Sprint(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// errStateWrite is returned by mutations whose state could not be persisted.
var errStateWrite = errors.New("zenodotest: persisting state")
