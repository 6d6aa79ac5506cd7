package zenodo

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// defaultPause is how long the budget stops after a 429 without Retry-After.
const defaultPause = 10 * time.Second

// budget is the client's request budget: token buckets per minute, per hour
// and for searches, plus what the server's X-RateLimit-* headers say.
type budget struct {
	clock clock

	mu        sync.Mutex
	minute    *rate.Limiter // nil: no own per-minute budget
	perMinute int
	hour      *rate.Limiter // nil: no hourly budget
	search    *rate.Limiter

	// The server's current window: until windowEnd, at most allowance more
	// requests may start. After a 429, allowance is 0 until windowEnd.
	windowEnd time.Time
	allowance int
	inflight  int
}

// newBudget makes a budget allowing at most perMinute requests in any minute
// (burst at once) and perHour in any hour; 0 turns either off.
func newBudget(perMinute, burst, perHour int, clk clock) *budget {
	b := &budget{clock: clk, perMinute: perMinute}
	if perMinute > 0 {
		b.minute = newWindowLimiter(perMinute, burst, time.Minute)
		searchMax := min(SearchPerMinute, perMinute)
		b.search = newWindowLimiter(searchMax, max(1, min(burst, searchMax/10)), time.Minute)
	}
	if perHour > 0 {
		hb := min(max(perMinute, 1), perHour/2)
		b.hour = newWindowLimiter(perHour, max(hb, 1), time.Hour)
	}
	return b
}

// newWindowLimiter is a token bucket admitting at most n events in any window
// of length w, burst of them at once: it refills at (n-burst)/w.
func newWindowLimiter(n, burst int, w time.Duration) *rate.Limiter {
	if burst >= n {
		burst = max(n-1, 1)
	}
	refill := max(n-burst, 1)
	return rate.NewLimiter(rate.Limit(float64(refill)/w.Seconds()), burst)
}

// budgetError is a request the budget cannot admit before ctx's deadline.
type budgetError struct{ wait time.Duration }

func (e *budgetError) Error() string {
	return fmt.Sprintf("client request budget exhausted: next slot in %s, past the context deadline", e.wait.Round(time.Millisecond))
}

// wait blocks until a request may start and counts it as started; every
// wait must be followed by one done. It returns how long it waited.
func (b *budget) wait(ctx context.Context, search bool) (time.Duration, error) {
	start := b.clock.Now()
	for {
		b.mu.Lock()
		now := b.clock.Now()
		if now.Before(b.windowEnd) && b.allowance <= 0 {
			d := b.windowEnd.Sub(now)
			b.mu.Unlock()
			if dl, ok := ctx.Deadline(); ok && now.Add(d).After(dl) {
				return now.Sub(start), &budgetError{d}
			}
			if err := b.clock.Sleep(ctx, d); err != nil {
				return b.clock.Now().Sub(start), err
			}
			continue
		}
		var rs []*rate.Reservation
		var delay time.Duration
		for _, l := range []*rate.Limiter{b.minute, b.hour, b.searchFor(search)} {
			if l == nil {
				continue
			}
			r := l.ReserveN(now, 1)
			rs = append(rs, r)
			delay = max(delay, r.DelayFrom(now))
		}
		if dl, ok := ctx.Deadline(); ok && now.Add(delay).After(dl) {
			for _, r := range rs {
				r.CancelAt(now)
			}
			b.mu.Unlock()
			return now.Sub(start), &budgetError{delay}
		}
		if now.Before(b.windowEnd) {
			b.allowance--
		}
		b.inflight++
		b.mu.Unlock()
		if delay > 0 {
			if err := b.clock.Sleep(ctx, delay); err != nil {
				for _, r := range rs {
					r.Cancel()
				}
				b.done(nil, 0)
				return b.clock.Now().Sub(start), err
			}
		}
		return b.clock.Now().Sub(start), nil
	}
}

func (b *budget) searchFor(search bool) *rate.Limiter {
	if search {
		return b.search
	}
	return nil
}

// done ends a request started by wait, learning from the response headers h
// (nil when no response came).
func (b *budget) done(h http.Header, status int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.inflight--
	if h == nil {
		return
	}
	now := b.clock.Now()

	// A lower server limit lowers our own per-minute budget, for good.
	if limit, ok := headerInt(h, "X-RateLimit-Limit"); ok && limit > 0 && b.minute != nil && limit < b.perMinute {
		burst := min(b.minute.Burst(), max(1, limit/2))
		if burst >= limit {
			burst = max(limit-1, 1)
		}
		b.minute.SetLimitAt(now, rate.Limit(float64(max(limit-burst, 1))/60))
		b.minute.SetBurstAt(now, burst)
		b.perMinute = limit
	}

	// The server's window: Zenodo sends Retry-After (seconds to the reset)
	// on every response, which is immune to clock skew; else use the epoch.
	var resetIn time.Duration
	if status != http.StatusTooManyRequests {
		if ra := parseRetryAfter(h, now); ra > 0 && ra <= time.Hour {
			resetIn = ra
		}
	}
	if resetIn == 0 {
		if epoch, ok := headerInt(h, "X-RateLimit-Reset"); ok {
			if d := time.Unix(int64(epoch), 0).Sub(now); d > 0 && d <= time.Hour {
				resetIn = d
			}
		}
	}
	if remaining, ok := headerInt(h, "X-RateLimit-Remaining"); ok && resetIn > 0 {
		end := now.Add(resetIn)
		allow := max(remaining-b.inflight, 0)
		if !now.Before(b.windowEnd) || end.After(b.windowEnd.Add(2*time.Second)) {
			// A new server window.
			b.windowEnd, b.allowance = end, allow
		} else {
			// Same window, responses out of order: trust the lowest count.
			b.allowance = min(b.allowance, allow)
			if end.After(b.windowEnd) {
				b.windowEnd = end
			}
		}
	}
	if status == http.StatusTooManyRequests {
		pause := parseRetryAfter(h, now)
		if pause <= 0 {
			pause = defaultPause
		}
		pause = min(pause, MaxRetryAfter)
		if end := now.Add(pause); end.After(b.windowEnd) {
			b.windowEnd = end
		}
		b.allowance = 0
	}
}

// headerInt reads a non-negative integer header.
func headerInt(h http.Header, name string) (int, bool) {
	v := strings.TrimSpace(h.Get(name))
	if v == "" {
		return 0, false
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 || n > 1<<40 {
		return 0, false
	}
	return int(n), true
}

// Available is how many requests could start now without waiting for the
// client's request budget or the server's reported window (math.MaxInt32
// when neither limits). A prefetcher uses it to leave room for on-demand
// reads; it reserves nothing.
func (c *Client) Available() int { return c.budget.available() }

func (b *budget) available() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.clock.Now()
	n := math.MaxInt32
	for _, l := range []*rate.Limiter{b.minute, b.hour} {
		if l != nil {
			n = min(n, int(math.Floor(l.TokensAt(now))))
		}
	}
	if now.Before(b.windowEnd) {
		n = min(n, b.allowance)
	}
	return max(n, 0)
}
