package zenodo

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"github.com/containerd/errdefs"
)

// Option configures a Client. Options are applied in order by New, which
// then fills defaults and rejects conflicting settings.
type Option func(*options) error

// Rate-limit defaults, from Zenodo's documented limits (DESIGN §5).
const (
	// GuestPerMinute is the default request budget without a token.
	GuestPerMinute = 60
	// GuestPerHour is the default hourly budget without a token.
	GuestPerHour = 2000
	// AuthenticatedPerMinute is the default request budget with a token.
	AuthenticatedPerMinute = 100
	// AuthenticatedPerHour is the default hourly budget with a token.
	AuthenticatedPerHour = 5000
	// SearchPerMinute is the budget of search requests (SearchDepositions).
	SearchPerMinute = 30
)

// Retry and timeout defaults.
const (
	// DefaultMaxAttempts is how many times a request is tried in all.
	DefaultMaxAttempts = 5
	// DefaultBackoff is the first retry's backoff; it doubles per attempt
	// (with jitter) up to MaxBackoff.
	DefaultBackoff = time.Second
	// MaxBackoff caps the exponential backoff between attempts.
	MaxBackoff = 30 * time.Second
	// DefaultTimeout is how long an attempt may make no progress.
	DefaultTimeout = time.Minute
	// MaxRetryAfter is the longest Retry-After the client waits out; a longer
	// one fails the request with ErrRateLimited.
	MaxRetryAfter = 5 * time.Minute
)

// TokenEnv is the environment variable TokenFromEnv reads.
const TokenEnv = "ZENODO_TOKEN"

// projectURL is named in the default User-Agent, as Zenodo asks clients to
// identify themselves.
const projectURL = "https://github.com/zenodo-snapshotter/zenodo-snapshotter"

// modulePath is this module, to find its version in the build info.
const modulePath = "github.com/zenodo-snapshotter/zenodo-snapshotter"

type options struct {
	token       string
	tokenSource string // "WithToken" or "WithTokenFile": for conflict errors
	httpClient  *http.Client
	userAgent   string

	rateSet   bool
	perMinute int
	burst     int
	hourSet   bool
	perHour   int

	maxAttempts int
	backoff     time.Duration
	timeout     time.Duration
	observer    func(Event)
	clock       clock
}

// WithToken authenticates requests with a Zenodo personal access token, sent
// only as "Authorization: Bearer" and only to the client's own host. The
// default is no token (guest access: records and downloads only). An empty
// token means guest access. Conflicts with WithTokenFile.
func WithToken(token string) Option {
	return func(o *options) error {
		return o.setToken(strings.TrimSpace(token), "WithToken")
	}
}

// WithTokenFile reads the token from a file (surrounding white space is
// ignored), as WithToken. The file must exist and not be empty.
func WithTokenFile(path string) Option {
	return func(o *options) error {
		b, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("reading token file: %w", err)
		}
		token := strings.TrimSpace(string(b))
		if token == "" {
			return fmt.Errorf("token file %s is empty: %w", path, errInvalidOption)
		}
		return o.setToken(token, "WithTokenFile")
	}
}

func (o *options) setToken(token, source string) error {
	if o.tokenSource != "" && o.tokenSource != source {
		return fmt.Errorf("%s conflicts with %s: %w", source, o.tokenSource, errInvalidOption)
	}
	for _, r := range token {
		if r <= ' ' || r == 0x7f {
			// Never echo the token itself.
			return fmt.Errorf("%s: token contains white space or control characters: %w", source, errInvalidOption)
		}
	}
	o.token, o.tokenSource = token, source
	return nil
}

// TokenFromEnv returns the token in $ZENODO_TOKEN (trimmed), or "".
// Use it as WithToken(TokenFromEnv()).
func TokenFromEnv() string { return strings.TrimSpace(os.Getenv(TokenEnv)) }

// WithHTTPClient sets the HTTP client. The default is a client of its own
// over a clone of http.DefaultTransport keeping up to 16 idle connections
// per host, with no overall timeout (see WithTimeout).
func WithHTTPClient(hc *http.Client) Option {
	return func(o *options) error {
		if hc == nil {
			return fmt.Errorf("WithHTTPClient(nil): %w", errInvalidOption)
		}
		o.httpClient = hc
		return nil
	}
}

// WithUserAgent sets the User-Agent header. The default is
// "zenodo-snapshotter/<version> (+https://github.com/zenodo-snapshotter/zenodo-snapshotter)".
func WithUserAgent(ua string) Option {
	return func(o *options) error {
		if strings.TrimSpace(ua) == "" || strings.ContainsAny(ua, "\r\n") {
			return fmt.Errorf("WithUserAgent(%q): %w", ua, errInvalidOption)
		}
		o.userAgent = ua
		return nil
	}
}

// WithRateLimit sets the client's own request budget: at most perMinute
// requests start in any 60-second window (a sliding window over the last
// perMinute start times: a request starts at once while fewer than
// perMinute started in the last 60 s, else when the oldest of them is 60 s
// old). So all of a minute's budget may go at once, as Zenodo's own limit
// allows, and no 60 s window ever sees more than perMinute starts. Searches
// also wait on a window of min(SearchPerMinute, perMinute).
// Every request waits on it, retries and resumed downloads included.
// The budget also lowers itself when Zenodo's X-RateLimit-* headers report a
// lower limit, and pauses until the server's reset when they report no
// requests remaining or when Zenodo answers 429.
//
// burst is an optional extra cap on how many requests may start at the same
// instant: with burst > 0, a token bucket of burst tokens refilled at
// perMinute a minute also spaces them out. It must be below perMinute.
// 0 (the default, and the recommended value) means no extra cap.
//
// Defaults: 60/min without a token, 100/min with one, burst 0. perMinute 0
// turns the client's own budget off (the server's headers are still obeyed).
func WithRateLimit(perMinute, burst int) Option {
	return func(o *options) error {
		switch {
		case perMinute < 0 || burst < 0:
			return fmt.Errorf("WithRateLimit(%d, %d): negative: %w", perMinute, burst, errInvalidOption)
		case perMinute > 0 && burst >= perMinute:
			return fmt.Errorf("WithRateLimit(%d, %d): burst must be below perMinute: %w", perMinute, burst, errInvalidOption)
		}
		o.rateSet, o.perMinute, o.burst = true, perMinute, burst
		return nil
	}
}

// WithHourlyLimit sets the hourly request budget: at most perHour requests
// start in any hour (a sliding window, as the minute's). Defaults: 2000 without a token, 5000 with one; 0 turns it off.
func WithHourlyLimit(perHour int) Option {
	return func(o *options) error {
		if perHour < 0 {
			return fmt.Errorf("WithHourlyLimit(%d): %w", perHour, errInvalidOption)
		}
		o.hourSet, o.perHour = true, perHour
		return nil
	}
}

// WithRetry sets how many times a request is tried in all (1 = no retries)
// and the backoff before the first retry, which doubles on each further
// retry (with jitter, capped at MaxBackoff). Connection failures, stalls,
// 5xx and 429 are retried, 429 after its Retry-After. Requests that are not
// idempotent (creating a deposition, new version, publish) are retried only
// when the server cannot have acted on them (429, connection refused);
// uploads only when their reader is an io.Seeker. Defaults: 5 attempts, 1s.
func WithRetry(maxAttempts int, backoff time.Duration) Option {
	return func(o *options) error {
		if maxAttempts < 1 || backoff <= 0 {
			return fmt.Errorf("WithRetry(%d, %s): %w", maxAttempts, backoff, errInvalidOption)
		}
		o.maxAttempts, o.backoff = maxAttempts, backoff
		return nil
	}
}

// WithTimeout bounds how long one attempt may make no progress: waiting for
// response headers, or between two reads of a body (sent or received). A
// stalled attempt fails (and is retried as a connection failure). It does
// not bound a download that keeps moving. Default one minute; 0 disables.
func WithTimeout(d time.Duration) Option {
	return func(o *options) error {
		if d < 0 {
			return fmt.Errorf("WithTimeout(%s): %w", d, errInvalidOption)
		}
		o.timeout = d
		return nil
	}
}

// WithObserver registers a callback for metrics and progress: it receives
// an Event for every finished HTTP attempt, every retry, every rate-limit
// wait and every finished body transfer. It is called synchronously from
// the requesting goroutine, possibly concurrently: it must be fast and safe
// for concurrent use. Default: none.
func WithObserver(f func(Event)) Option {
	return func(o *options) error {
		o.observer = f
		return nil
	}
}

// errInvalidOption marks a bad option.
var errInvalidOption = &kindError{"invalid option", errdefs.ErrInvalidArgument}

// makeOptions applies opts and fills defaults.
func makeOptions(opts []Option) (*options, error) {
	o := &options{
		maxAttempts: DefaultMaxAttempts,
		backoff:     DefaultBackoff,
		timeout:     DefaultTimeout,
	}
	var errs []error
	for _, opt := range opts {
		if opt == nil {
			continue
		}
		if err := opt(o); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if !o.rateSet {
		o.perMinute = GuestPerMinute
		if o.token != "" {
			o.perMinute = AuthenticatedPerMinute
		}
	}
	if !o.hourSet {
		o.perHour = GuestPerHour
		if o.token != "" {
			o.perHour = AuthenticatedPerHour
		}
		if o.rateSet && o.perMinute == 0 {
			o.perHour = 0
		}
	}
	if o.userAgent == "" {
		o.userAgent = "zenodo-snapshotter/" + moduleVersion() + " (+" + projectURL + ")"
	}
	if o.httpClient == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = 16
		o.httpClient = &http.Client{Transport: t}
	}
	if o.clock == nil {
		o.clock = realClock{}
	}
	return o, nil
}

// moduleVersion is this module's version from the build info, or "dev".
func moduleVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "dev"
	}
	if bi.Main.Path == modulePath && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	for _, dep := range bi.Deps {
		if dep.Path == modulePath && dep.Version != "" {
			return dep.Version
		}
	}
	return "dev"
}
