package zenodotest

import (
	"fmt"
	"math"
	"net/http"
	"sync"
	"time"
)

// unlimitedNominal is the X-RateLimit-Limit shown when no limit is set: high
// enough that a client budgeting from the headers never waits in tests.
const unlimitedNominal = 1000000

// rateLimiter keeps fixed windows per client, as flask-limiter's fixed
// window strategy behind Zenodo: a window opens at a client's first request
// and its count resets when it expires (X-RateLimit-Reset is its end).
type rateLimiter struct {
	perMinute, perHour, searchPerMinute int
	now                                 func() time.Time

	mu      sync.Mutex
	clients map[string]*clientWindows
	sweep   time.Time
}

type window struct {
	start time.Time
	count int
}

type clientWindows struct {
	minute, hour, search window
}

// rlResult is the outcome of one request against the limits.
type rlResult struct {
	allowed   bool
	limit     int
	remaining int
	reset     time.Time
	per       string // "minute" or "hour", for the 429 message
}

func newRateLimiter(perMinute, perHour, searchPerMinute int, now func() time.Time) *rateLimiter {
	return &rateLimiter{perMinute: perMinute, perHour: perHour, searchPerMinute: searchPerMinute, now: now, clients: map[string]*clientWindows{}}
}

func roll(w *window, now time.Time, d time.Duration) {
	if w.start.IsZero() || now.Sub(w.start) >= d || now.Before(w.start) {
		w.start, w.count = now, 0
	}
}

func (l *rateLimiter) take(client string, search bool) rlResult {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	l.gc(now)
	c := l.clients[client]
	if c == nil {
		c = &clientWindows{}
		l.clients[client] = c
	}
	roll(&c.minute, now, time.Minute)
	roll(&c.hour, now, time.Hour)
	roll(&c.search, now, time.Minute)

	deny := func(w *window, limit int, d time.Duration, per string) rlResult {
		return rlResult{limit: limit, remaining: 0, reset: w.start.Add(d), per: per}
	}
	searchLimited := search && l.searchPerMinute > 0
	switch {
	case searchLimited && c.search.count >= l.searchPerMinute:
		return deny(&c.search, l.searchPerMinute, time.Minute, "minute")
	case l.perMinute > 0 && c.minute.count >= l.perMinute:
		return deny(&c.minute, l.perMinute, time.Minute, "minute")
	case l.perHour > 0 && c.hour.count >= l.perHour:
		return deny(&c.hour, l.perHour, time.Hour, "hour")
	}
	c.minute.count++
	c.hour.count++
	if search {
		c.search.count++
	}
	res := rlResult{allowed: true}
	switch {
	case searchLimited:
		res.limit, res.remaining, res.reset = l.searchPerMinute, l.searchPerMinute-c.search.count, c.search.start.Add(time.Minute)
	case l.perMinute > 0:
		res.limit, res.remaining, res.reset = l.perMinute, l.perMinute-c.minute.count, c.minute.start.Add(time.Minute)
		if l.perHour > 0 {
			res.remaining = min(res.remaining, l.perHour-c.hour.count)
		}
	case l.perHour > 0:
		res.limit, res.remaining, res.reset = l.perHour, l.perHour-c.hour.count, c.hour.start.Add(time.Hour)
	default:
		res.limit, res.remaining, res.reset = unlimitedNominal, max(unlimitedNominal-c.minute.count, 0), c.minute.start.Add(time.Minute)
	}
	return res
}

// gc drops clients whose windows all expired, at most once a minute, so
// that the map stays bounded by the clients of the last hour.
func (l *rateLimiter) gc(now time.Time) {
	if now.Sub(l.sweep) < time.Minute {
		return
	}
	l.sweep = now
	for k, c := range l.clients {
		if now.Sub(c.hour.start) >= time.Hour && now.Sub(c.minute.start) >= time.Minute {
			delete(l.clients, k)
		}
	}
}

// rateLimit sets the rate-limit headers (on every response, as Zenodo) and
// answers 429 when the client is over a limit.
func (s *Server) rateLimit(w http.ResponseWriter, r *http.Request) bool {
	search := r.Method == http.MethodGet && (r.URL.Path == "/api/records" || r.URL.Path == "/api/records/")
	res := s.limiter.take(s.clientKey(r), search)
	wait := max(int64(math.Ceil(res.reset.Sub(s.now()).Seconds())), 0)
	h := w.Header()
	h.Set("X-RateLimit-Limit", fmt.Sprint(res.limit))
	h.Set("X-RateLimit-Remaining", fmt.Sprint(res.remaining))
	h.Set("X-RateLimit-Reset", fmt.Sprint(res.reset.Unix()))
	h.Set("Retry-After", fmt.Sprint(wait))
	if res.allowed {
		return true
	}
	if wait < 1 {
		h.Set("Retry-After", "1")
	}
	writeLegacyError(w, http.StatusTooManyRequests, fmt.Sprintf("%d per 1 %s", res.limit, res.per))
	return false
}
