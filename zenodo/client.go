// Package zenodo is a client for Zenodo's REST API: references (DOIs and
// record links), records and their versions, depositions (create, upload,
// new version, publish) and downloads, streamed or by HTTP range.
//
// Every request waits on a request budget kept below Zenodo's rate limits,
// is retried with backoff when that is safe, and never carries the access
// token anywhere but its Authorization header.
package zenodo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
)

// Base URLs of the Zenodo instances: the site root, under which the client
// uses /api/... and /records/<id>/files/<key>.
const (
	// ProductionURL is production Zenodo.
	ProductionURL = "https://zenodo.org"
	// SandboxURL is the Zenodo sandbox.
	SandboxURL = "https://sandbox.zenodo.org"
)

// Size limits on what the client reads into memory.
const (
	maxJSONBody  = 64 << 20
	maxErrorBody = 64 << 10
)

// Client talks to one Zenodo instance. It is safe for concurrent use.
type Client struct {
	base        *url.URL
	token       string
	hc          *http.Client
	userAgent   string
	budget      *budget
	maxAttempts int
	backoff     time.Duration
	timeout     time.Duration
	observer    func(Event)
	clock       clock
}

// New returns a client for the Zenodo instance at baseURL (ProductionURL,
// SandboxURL, or a fake's address; a path prefix is kept).
func New(baseURL string, opts ...Option) (*Client, error) {
	u, err := url.Parse(strings.TrimSpace(baseURL))
	if err != nil {
		return nil, fmt.Errorf("parsing Zenodo base URL: %w", errors.Join(err, errdefs.ErrInvalidArgument))
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("zenodo base URL %q: want http(s)://host[/prefix]: %w", redactURL(baseURL), errdefs.ErrInvalidArgument)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawPath = ""
	o, err := makeOptions(opts)
	if err != nil {
		return nil, err
	}
	hc := o.httpClient
	if o.token != "" {
		// The token goes on every hop of a request, redirects included,
		// that is on the client's own origin, and on no other.
		withAuth := *hc
		base := hc.Transport
		if base == nil {
			base = http.DefaultTransport
		}
		withAuth.Transport = &authTransport{base: base, origin: u, header: "Bearer " + o.token}
		hc = &withAuth
	}
	return &Client{
		base:        u,
		token:       o.token,
		hc:          hc,
		userAgent:   o.userAgent,
		budget:      newBudget(o.perMinute, o.burst, o.perHour, o.clock),
		maxAttempts: o.maxAttempts,
		backoff:     o.backoff,
		timeout:     o.timeout,
		observer:    o.observer,
		clock:       o.clock,
	}, nil
}

// BaseURL is the base URL the client was made with.
func (c *Client) BaseURL() string { return c.base.String() }

// Authenticated reports whether the client has a token.
func (c *Client) Authenticated() bool { return c.token != "" }

// EventKind says what an Event reports.
type EventKind int

// Event kinds.
const (
	// EventRequest: an HTTP attempt got its response headers, or failed.
	// StatusCode (0 on failure), Duration (to the headers) and Err are set.
	EventRequest EventKind = iota + 1
	// EventRetry: an attempt failed and is retried after Duration.
	EventRetry
	// EventRateLimitWait: the request budget delayed a request by Duration.
	EventRateLimitWait
	// EventTransfer: a request or response body is finished; Bytes moved.
	EventTransfer
)

// String implements fmt.Stringer.
func (k EventKind) String() string {
	switch k {
	case EventRequest:
		return "request"
	case EventRetry:
		return "retry"
	case EventRateLimitWait:
		return "rate-limit-wait"
	case EventTransfer:
		return "transfer"
	}
	return "EventKind(" + strconv.Itoa(int(k)) + ")"
}

// Event is what WithObserver's callback receives. It carries no secrets.
type Event struct {
	Kind       EventKind
	Method     string
	URL        string // without credentials
	Attempt    int    // 1 for the first try
	StatusCode int
	Duration   time.Duration
	Bytes      int64
	Err        error
}

func (c *Client) emit(e Event) {
	if c.observer != nil {
		c.observer(e)
	}
}

// clock is time as the client sees it; tests replace it.
type clock interface {
	Now() time.Time
	// Sleep waits d or until ctx is done.
	Sleep(ctx context.Context, d time.Duration) error
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// retryPolicy says when a call may be repeated.
type retryPolicy int

const (
	// idempotent: repeat on any temporary failure.
	idempotent retryPolicy = iota
	// unsent: repeat only when the server cannot have acted (429, dial errors).
	unsent
)

// call is one logical API request, possibly tried several times.
type call struct {
	method string
	url    string
	header http.Header
	// body returns a fresh body for each attempt; nil means no body. It
	// returns errNotReplayable when it cannot start over.
	body func() (io.Reader, error)
	// canReplay, if set, says whether body can start over; nil means it can.
	canReplay func() bool
	size      int64 // body length, -1 if unknown
	policy    retryPolicy
	search    bool  // also waits on the search budget
	expect    []int // success statuses; default 200
	// decode, if set, reads a successful response inside the retry loop (a
	// body cut short is then retried); the client closes the body after it.
	// Without decode the caller gets the open response.
	decode func(*http.Response) error
	// deleteIdempotent: a 404 after an attempt with an unknown outcome
	// means an earlier attempt succeeded.
	deleteIdempotent bool
}

var errNotReplayable = errors.New("request body cannot be sent again")

// stallError is an attempt that made no progress for too long.
type stallError struct{ d time.Duration }

func (e *stallError) Error() string   { return fmt.Sprintf("no progress for %s", e.d) }
func (e *stallError) Timeout() bool   { return true }
func (e *stallError) Temporary() bool { return true }
func (e *stallError) Is(target error) bool {
	return target == context.DeadlineExceeded
}

// do runs a call: budget, attempts, retries, error mapping. On success
// without decode the response body is open and the caller must close it.
func (c *Client) do(ctx context.Context, cl *call) (*http.Response, error) {
	safeURL := redactURL(cl.url)
	var lastErr *Error
	for attempt := 1; ; attempt++ {
		if err := c.wait(ctx, cl, safeURL, attempt); err != nil {
			if lastErr != nil {
				return nil, errors.Join(err, lastErr)
			}
			return nil, err
		}
		resp, err := c.attempt(ctx, cl, safeURL, attempt)
		var e *Error
		switch {
		case err != nil && ctx.Err() != nil:
			// The caller gave up: not a Zenodo failure.
			return nil, fmt.Errorf("%s %s: %w", cl.method, safeURL, context.Cause(ctx))
		case err != nil:
			e = &Error{Method: cl.method, URL: safeURL, kind: transportKind(err), err: err}
		case expected(cl.expect, resp.StatusCode):
			if cl.decode == nil {
				return resp, nil
			}
			derr := cl.decode(resp)
			resp.Body.Close()
			if derr == nil {
				return resp, nil
			}
			var se *json.SyntaxError
			var te *json.UnmarshalTypeError
			if errors.As(derr, &se) || errors.As(derr, &te) || errors.Is(derr, errTooLarge) {
				return nil, &Error{Method: cl.method, URL: safeURL, StatusCode: resp.StatusCode,
					Message: "decoding response: " + c.redact(derr.Error()), kind: errdefs.ErrUnknown}
			}
			if ctx.Err() != nil {
				return nil, fmt.Errorf("%s %s: %w", cl.method, safeURL, context.Cause(ctx))
			}
			e = &Error{Method: cl.method, URL: safeURL, kind: transportKind(derr), err: derr}
		case cl.deleteIdempotent && resp.StatusCode == http.StatusNotFound && lastErr != nil && lastErr.StatusCode != http.StatusTooManyRequests:
			resp.Body.Close()
			return resp, nil
		default:
			e = c.statusError(cl, safeURL, resp)
		}
		lastErr = e
		if attempt >= c.maxAttempts || !c.retryable(cl, e) {
			return nil, e
		}
		delay := c.backoffFor(attempt, e)
		if e.RetryAfter > MaxRetryAfter {
			return nil, e
		}
		if dl, ok := ctx.Deadline(); ok && c.clock.Now().Add(delay).After(dl) {
			return nil, e
		}
		c.emit(Event{Kind: EventRetry, Method: cl.method, URL: safeURL, Attempt: attempt, StatusCode: e.StatusCode, Duration: delay, Err: e})
		log.G(ctx).WithFields(log.Fields{"method": cl.method, "url": safeURL, "attempt": attempt, "delay": delay}).
			WithError(e).Info("zenodo request failed, retrying")
		if err := c.clock.Sleep(ctx, delay); err != nil {
			return nil, fmt.Errorf("%s %s: waiting to retry: %w", cl.method, safeURL, errors.Join(err, e))
		}
	}
}

// wait takes a slot in the request budget.
func (c *Client) wait(ctx context.Context, cl *call, safeURL string, attempt int) error {
	waited, err := c.budget.wait(ctx, cl.search)
	if waited > 0 {
		c.emit(Event{Kind: EventRateLimitWait, Method: cl.method, URL: safeURL, Attempt: attempt, Duration: waited})
		log.G(ctx).WithFields(log.Fields{"method": cl.method, "url": safeURL, "wait": waited}).Debug("zenodo request waited for rate-limit budget")
	}
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("%s %s: waiting for rate-limit budget: %w", cl.method, safeURL, context.Cause(ctx))
	}
	return &Error{Method: cl.method, URL: safeURL, Message: err.Error(), kind: ErrRateLimited, err: context.DeadlineExceeded}
}

// attempt sends one HTTP request. Its response body, if any, resets the
// stall watchdog on every read and releases the attempt on Close.
func (c *Client) attempt(ctx context.Context, cl *call, safeURL string, attempt int) (*http.Response, error) {
	start := c.clock.Now()
	actx, cancel := context.WithCancelCause(ctx)
	wd := newWatchdog(c.timeout, func() { cancel(&stallError{c.timeout}) })
	finish := func(resp *http.Response, err error) {
		status := 0
		var h http.Header
		if resp != nil {
			status, h = resp.StatusCode, resp.Header
		}
		c.budget.done(h, status)
		d := c.clock.Now().Sub(start)
		c.emit(Event{Kind: EventRequest, Method: cl.method, URL: safeURL, Attempt: attempt, StatusCode: status, Duration: d, Err: err})
		entry := log.G(ctx).WithFields(log.Fields{"method": cl.method, "url": safeURL, "status": status, "attempt": attempt, "duration": d})
		if err != nil {
			entry = entry.WithError(err)
		}
		entry.Debug("zenodo request")
	}

	var body io.Reader
	if cl.body != nil {
		b, err := cl.body()
		if err != nil {
			wd.stop()
			cancel(nil)
			c.budget.done(nil, 0)
			return nil, err
		}
		body = &kickReader{r: b, wd: wd}
	}
	req, err := http.NewRequestWithContext(actx, cl.method, cl.url, body)
	if err != nil {
		wd.stop()
		cancel(nil)
		c.budget.done(nil, 0)
		return nil, err
	}
	if body != nil && cl.size >= 0 {
		req.ContentLength = cl.size
		if cl.size == 0 {
			req.Body = http.NoBody
		}
	}
	for k, v := range cl.header {
		req.Header[k] = v
	}
	req.Header.Set("User-Agent", c.userAgent)
	if req.Header.Get("Accept") == "" {
		req.Header.Set("Accept", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if cause := context.Cause(actx); ctx.Err() == nil && cause != nil {
			err = fmt.Errorf("%w (%w)", cause, err)
		}
		wd.stop()
		cancel(nil)
		err = c.redactErr(err)
		finish(nil, err)
		return nil, err
	}
	wd.kick()
	finish(resp, nil)
	resp.Body = &attemptBody{rc: resp.Body, wd: wd, ctx: actx, cancel: cancel}
	return resp, nil
}

// statusError turns an unexpected response into an *Error (reading a
// bounded part of its body) and closes the body.
func (c *Client) statusError(cl *call, safeURL string, resp *http.Response) *Error {
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	e := &Error{
		Method:     cl.method,
		URL:        safeURL,
		StatusCode: resp.StatusCode,
		Message:    c.redact(errorMessage(b)),
		kind:       kindForStatus(resp.StatusCode),
	}
	// Zenodo sends Retry-After on every response (the rate-limit window's
	// reset), so it only means "wait this long" on a 429; 5xx use backoff.
	if resp.StatusCode == http.StatusTooManyRequests {
		e.RetryAfter = parseRetryAfter(resp.Header, c.clock.Now())
	}
	return e
}

// retryable says whether e may be retried under cl's policy.
func (c *Client) retryable(cl *call, e *Error) bool {
	if !e.Temporary() {
		return false
	}
	if errors.Is(e.err, errNotReplayable) || (cl.canReplay != nil && !cl.canReplay()) {
		return false
	}
	if e.StatusCode == http.StatusTooManyRequests {
		return true
	}
	if cl.policy == idempotent {
		return true
	}
	// Not idempotent: only when the request cannot have reached the server.
	var op *net.OpError
	return e.StatusCode == 0 && errors.As(e.err, &op) && op.Op == "dial"
}

// backoffFor is the delay before retrying after attempt failed with e.
func (c *Client) backoffFor(attempt int, e *Error) time.Duration {
	if e.RetryAfter > 0 {
		return e.RetryAfter
	}
	return c.backoffDelay(attempt)
}

// backoffDelay is exponential backoff with jitter: in [d/2, d] for
// d = backoff·2^(attempt-1), capped at max(MaxBackoff, backoff).
func (c *Client) backoffDelay(attempt int) time.Duration {
	d := c.backoff
	limit := max(MaxBackoff, c.backoff)
	for i := 1; i < attempt && d < limit; i++ {
		d *= 2
	}
	d = min(d, limit)
	half := d / 2
	return half + rand.N(half+1)
}

// doJSON sends in (if not nil) as JSON and decodes the response into out
// (if not nil).
func (c *Client) doJSON(ctx context.Context, method, u string, policy retryPolicy, in, out any, expect ...int) error {
	cl := &call{method: method, url: u, policy: policy, expect: expect, size: -1}
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encoding request: %w", errors.Join(err, errdefs.ErrInvalidArgument))
		}
		cl.body = func() (io.Reader, error) { return bytes.NewReader(b), nil }
		cl.size = int64(len(b))
		cl.header = http.Header{"Content-Type": {"application/json"}}
	}
	cl.decode = func(resp *http.Response) error {
		if out == nil || resp.StatusCode == http.StatusNoContent {
			_, err := io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
			return err
		}
		return decodeJSON(resp.Body, out)
	}
	_, err := c.do(ctx, cl)
	return err
}

var errTooLarge = errors.New("response body too large")

// decodeJSON decodes one JSON value of bounded size from r.
func decodeJSON(r io.Reader, out any) error {
	b, err := io.ReadAll(io.LimitReader(r, maxJSONBody+1))
	if err != nil {
		return err
	}
	if len(b) > maxJSONBody {
		return errTooLarge
	}
	return json.Unmarshal(b, out)
}

// expected reports whether status is a success for a call.
func expected(expect []int, status int) bool {
	if len(expect) == 0 {
		return status == http.StatusOK
	}
	for _, s := range expect {
		if s == status {
			return true
		}
	}
	return false
}

// transportKind classifies a failure without an HTTP status.
func transportKind(err error) error {
	if errors.Is(err, errNotReplayable) {
		return errdefs.ErrAborted
	}
	return errdefs.ErrUnavailable
}

// endpoint builds an absolute URL under the base from escaped path segments.
func (c *Client) endpoint(query url.Values, segments ...string) string {
	u := *c.base
	var b strings.Builder
	b.WriteString(c.base.Path)
	for _, s := range segments {
		b.WriteByte('/')
		b.WriteString(url.PathEscape(s))
	}
	u.RawPath = b.String()
	p, err := url.PathUnescape(u.RawPath)
	if err != nil {
		p = u.RawPath
	}
	u.Path = p
	u.RawQuery = query.Encode()
	return u.String()
}

// resolveLink resolves a link from a response against the base URL.
func (c *Client) resolveLink(link string) (string, error) {
	u, err := url.Parse(link)
	if err != nil {
		return "", fmt.Errorf("bad link in Zenodo response: %w", errors.Join(err, errdefs.ErrInvalidArgument))
	}
	if u.Scheme != "" && u.Scheme != "http" && u.Scheme != "https" {
		return "", fmt.Errorf("bad link scheme %q in Zenodo response: %w", u.Scheme, errdefs.ErrInvalidArgument)
	}
	base := *c.base
	base.Path += "/"
	return base.ResolveReference(u).String(), nil
}

// authTransport sends the token on the requests to the client's own origin
// (scheme, host and port), and on no other. It is a transport rather than
// a header set on each request because http.Client forwards an
// Authorization header on a redirect to any URL with the same host name,
// whatever its scheme or port: a redirect to http:// would send the token
// in clear text.
type authTransport struct {
	base   http.RoundTripper
	origin *url.URL
	header string
}

// RoundTrip implements http.RoundTripper.
func (t *authTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	switch {
	case sameOrigin(req.URL, t.origin):
		req = req.Clone(req.Context())
		req.Header.Set("Authorization", t.header)
	case req.Header.Get("Authorization") != "":
		req = req.Clone(req.Context())
		req.Header.Del("Authorization")
	}
	return t.base.RoundTrip(req)
}

// CloseIdleConnections closes the idle connections of the base transport.
func (t *authTransport) CloseIdleConnections() {
	if c, ok := t.base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// sameOrigin reports whether u is on the client's own scheme and host, the
// only place the token is sent.
func sameOrigin(u, base *url.URL) bool {
	return strings.EqualFold(u.Scheme, base.Scheme) && strings.EqualFold(u.Host, base.Host)
}

// redact removes the token from s.
func (c *Client) redact(s string) string {
	if c.token == "" || !strings.Contains(s, c.token) {
		return s
	}
	return strings.ReplaceAll(s, c.token, "REDACTED")
}

// redactErr makes sure err's text has no token (it never should).
func (c *Client) redactErr(err error) error {
	if err == nil || c.token == "" || !strings.Contains(err.Error(), c.token) {
		return err
	}
	return &redactedError{msg: c.redact(err.Error()), err: err}
}

type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// redactURL strips credentials from a URL: user info and query parameters
// that carry tokens.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "<unparsable URL>"
	}
	u.User = nil
	if u.RawQuery != "" {
		q := u.Query()
		changed := false
		for k := range q {
			lk := strings.ToLower(k)
			if strings.Contains(lk, "token") || strings.Contains(lk, "key") || strings.Contains(lk, "secret") {
				q.Set(k, "REDACTED")
				changed = true
			}
		}
		if changed {
			u.RawQuery = q.Encode()
		}
	}
	return u.String()
}

// parseRetryAfter reads Retry-After (seconds or an HTTP date); 0 if absent.
func parseRetryAfter(h http.Header, now time.Time) time.Duration {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n <= 0 {
			return 0
		}
		if n > int64(24*time.Hour/time.Second) {
			n = int64(24 * time.Hour / time.Second)
		}
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return min(t.Sub(now), 24*time.Hour)
	}
	return 0
}

// watchdog cancels an attempt that makes no progress for d.
type watchdog struct {
	t *time.Timer
	d time.Duration
}

func newWatchdog(d time.Duration, f func()) *watchdog {
	if d <= 0 {
		return nil
	}
	return &watchdog{t: time.AfterFunc(d, f), d: d}
}

func (w *watchdog) kick() {
	if w != nil {
		w.t.Reset(w.d)
	}
}

func (w *watchdog) stop() {
	if w != nil {
		w.t.Stop()
	}
}

// kickReader is a request body that counts as progress when read.
type kickReader struct {
	r  io.Reader
	wd *watchdog
}

func (k *kickReader) Read(p []byte) (int, error) {
	n, err := k.r.Read(p)
	k.wd.kick()
	return n, err
}

// attemptBody is a response body that keeps the attempt alive while it is
// read, reports a stall as such, and releases the attempt on Close.
type attemptBody struct {
	rc     io.ReadCloser
	wd     *watchdog
	ctx    context.Context
	cancel context.CancelCauseFunc
}

func (b *attemptBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if n > 0 {
		b.wd.kick()
	}
	if err != nil && err != io.EOF {
		var se *stallError
		if cause := context.Cause(b.ctx); errors.As(cause, &se) {
			err = fmt.Errorf("reading response: %w (%w)", se, err)
		}
	}
	return n, err
}

func (b *attemptBody) Close() error {
	b.wd.stop()
	err := b.rc.Close()
	b.cancel(nil)
	return err
}
