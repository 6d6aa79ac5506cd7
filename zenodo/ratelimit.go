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

// budget is the client's request budget: sliding windows per minute, per
// hour and for searches, an optional burst cap, plus what the server's
// X-RateLimit-* headers say. Every check and every start happens under mu,
// so no window ever admits more than its limit, however many goroutines
// wait.
type budget struct {
	clock clock

	mu        sync.Mutex
	minute    *slidingWindow // nil: no own per-minute budget
	perMinute int
	burst     *rate.Limiter  // nil: no cap on starts at once (WithRateLimit's burst)
	hour      *slidingWindow // nil: no hourly budget
	search    *slidingWindow // nil with minute

	// The server's current window: until windowEnd, at most allowance more
	// requests may start. After a 429, allowance is 0 until windowEnd.
	windowEnd time.Time
	allowance int
	inflight  int
}

// newBudget makes a budget allowing at most perMinute request starts in any
// 60 seconds (of which searches at most min(SearchPerMinute, perMinute)) and
// perHour in any hour; 0 turns either off. burst > 0 also caps how many may
// start at once: a token bucket of burst tokens refilled at perMinute a
// minute; 0 means no such cap.
//
// The hourly budget is a sliding window too: like the minute's, it is the
// exact rule of Zenodo's fixed windows seen from any start, and admitting
// each request as early as the rule allows completes at least as many by
// any moment as a smoothing token bucket would. Its ring grows only with
// use (at most perHour entries).
func newBudget(perMinute, burst, perHour int, clk clock) *budget {
	b := &budget{clock: clk, perMinute: perMinute}
	if perMinute > 0 {
		b.minute = newSlidingWindow(perMinute, time.Minute)
		b.search = newSlidingWindow(min(SearchPerMinute, perMinute), time.Minute)
		if burst > 0 && burst < perMinute {
			b.burst = rate.NewLimiter(rate.Limit(float64(perMinute)/time.Minute.Seconds()), burst)
		}
	}
	if perHour > 0 {
		b.hour = newSlidingWindow(perHour, time.Hour)
	}
	return b
}

// slidingWindow admits at most n starts in any window of length w: it keeps
// the start times of the last n admitted requests in a ring, and a request
// may start when the oldest of them is at least w old (or fewer than n
// started at all). It is not safe for concurrent use; budget.mu guards it.
type slidingWindow struct {
	n      int
	w      time.Duration
	starts []time.Time // ring of up to n start times; grows with use
	head   int         // index of the oldest start once len(starts) == n
}

func newSlidingWindow(n int, w time.Duration) *slidingWindow {
	return &slidingWindow{n: n, w: w}
}

// delay is how long from now until a request may start: 0 if it may start
// now, else until the oldest of the last n starts is w old.
func (s *slidingWindow) delay(now time.Time) time.Duration {
	if len(s.starts) < s.n {
		return 0
	}
	return max(s.starts[s.head].Add(s.w).Sub(now), 0)
}

// add records a start at now; the caller checked delay(now) == 0.
func (s *slidingWindow) add(now time.Time) {
	if len(s.starts) < s.n {
		s.starts = append(s.starts, now)
		return
	}
	s.starts[s.head] = now
	s.head = (s.head + 1) % s.n
}

// available is how many requests could start at now.
func (s *slidingWindow) available(now time.Time) int {
	free := s.n - len(s.starts)
	for i := range len(s.starts) {
		if now.Sub(s.starts[(s.head+i)%len(s.starts)]) < s.w {
			break // the ring is in start order: later ones are younger
		}
		free++
	}
	return free
}

// setLimit lowers n, keeping the most recent starts.
func (s *slidingWindow) setLimit(n int) {
	if n <= 0 || n >= s.n {
		return
	}
	ordered := make([]time.Time, 0, n)
	for i := range len(s.starts) {
		ordered = append(ordered, s.starts[(s.head+i)%len(s.starts)])
	}
	if len(ordered) > n {
		ordered = ordered[len(ordered)-n:]
	}
	s.n, s.starts, s.head = n, ordered, 0
}

// budgetError is a request the budget cannot admit before ctx's deadline.
type budgetError struct{ wait time.Duration }

func (e *budgetError) Error() string {
	return fmt.Sprintf("client request budget exhausted: next slot in %s, past the context deadline", e.wait.Round(time.Millisecond))
}

// wait blocks until a request may start and counts it as started; every
// successful wait must be followed by one done. It returns how long it
// waited. A wait that fails (ctx done, or no slot before ctx's deadline)
// takes no slot.
func (b *budget) wait(ctx context.Context, search bool) (time.Duration, error) {
	start := b.clock.Now()
	for {
		b.mu.Lock()
		now := b.clock.Now()
		d := b.delay(now, search)
		if d == 0 {
			b.take(now, search)
			b.mu.Unlock()
			return now.Sub(start), nil
		}
		b.mu.Unlock()
		if dl, ok := ctx.Deadline(); ok && now.Add(d).After(dl) {
			return now.Sub(start), &budgetError{d}
		}
		// Sleep, then check again: others may have taken the slot.
		if err := b.clock.Sleep(ctx, d); err != nil {
			return b.clock.Now().Sub(start), err
		}
	}
}

// delay is how long from now until a request may start (0: now). b.mu is held.
func (b *budget) delay(now time.Time, search bool) time.Duration {
	var d time.Duration
	if now.Before(b.windowEnd) && b.allowance <= 0 {
		d = b.windowEnd.Sub(now)
	}
	for _, w := range []*slidingWindow{b.minute, b.hour, b.searchFor(search)} {
		if w != nil {
			d = max(d, w.delay(now))
		}
	}
	if b.burst != nil {
		if missing := 1 - b.burst.TokensAt(now); missing > 0 {
			// Round up, so that the next check finds the token.
			d = max(d, time.Duration(math.Ceil(missing/float64(b.burst.Limit())*float64(time.Second))))
		}
	}
	return d
}

// take counts a request starting at now; delay(now) was 0. b.mu is held.
func (b *budget) take(now time.Time, search bool) {
	for _, w := range []*slidingWindow{b.minute, b.hour, b.searchFor(search)} {
		if w != nil {
			w.add(now)
		}
	}
	if b.burst != nil {
		b.burst.AllowN(now, 1)
	}
	if now.Before(b.windowEnd) {
		b.allowance--
	}
	b.inflight++
}

func (b *budget) searchFor(search bool) *slidingWindow {
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
		b.minute.setLimit(limit)
		b.search.setLimit(limit)
		if b.burst != nil {
			b.burst.SetLimitAt(now, rate.Limit(float64(limit)/time.Minute.Seconds()))
			if b.burst.Burst() >= limit {
				b.burst = nil // the window alone caps it now
			}
		}
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
	for _, w := range []*slidingWindow{b.minute, b.hour} {
		if w != nil {
			n = min(n, w.available(now))
		}
	}
	if b.burst != nil {
		n = min(n, int(math.Floor(b.burst.TokensAt(now))))
	}
	if now.Before(b.windowEnd) {
		n = min(n, b.allowance)
	}
	return max(n, 0)
}
