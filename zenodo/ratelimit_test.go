package zenodo

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// stepClock is a clock whose Sleep blocks until the test moves time on past
// its end, so that many goroutines can wait on it as on real time.
type stepClock struct {
	mu       sync.Mutex
	now      time.Time
	sleepers []*sleeper
	live     int           // goroutines the driver waits for (see run)
	changed  chan struct{} // closed and replaced when sleepers or live change
}

type sleeper struct {
	until time.Time
	wake  chan struct{}
}

func newStepClock() *stepClock {
	return &stepClock{now: time.Date(2026, 8, 1, 12, 0, 0, 0, time.UTC), changed: make(chan struct{})}
}

func (c *stepClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *stepClock) notify() {
	close(c.changed)
	c.changed = make(chan struct{})
}

func (c *stepClock) Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	c.mu.Lock()
	s := &sleeper{until: c.now.Add(d), wake: make(chan struct{})}
	c.sleepers = append(c.sleepers, s)
	c.notify()
	c.mu.Unlock()
	select {
	case <-s.wake:
		return nil
	case <-ctx.Done():
		c.mu.Lock()
		defer c.mu.Unlock()
		if i := slices.Index(c.sleepers, s); i >= 0 {
			c.sleepers = slices.Delete(c.sleepers, i, i+1)
			c.notify()
		}
		return ctx.Err()
	}
}

// waitSleepers blocks until at least n goroutines sleep.
func (c *stepClock) waitSleepers(n int) {
	for {
		c.mu.Lock()
		if len(c.sleepers) >= n {
			c.mu.Unlock()
			return
		}
		ch := c.changed
		c.mu.Unlock()
		<-ch
	}
}

// advance moves time to the earliest sleeper's end and wakes every sleeper
// due by then. c.mu is held.
func (c *stepClock) advance() {
	next := c.sleepers[0].until
	for _, s := range c.sleepers {
		if s.until.Before(next) {
			next = s.until
		}
	}
	c.now = next
	c.sleepers = slices.DeleteFunc(c.sleepers, func(s *sleeper) bool {
		if s.until.After(c.now) {
			return false
		}
		close(s.wake)
		return true
	})
	c.notify()
}

// run runs n copies of f and moves time on whenever all of those still
// running sleep: time stands still while any of them works.
func (c *stepClock) run(n int, f func()) {
	c.mu.Lock()
	c.live = n
	c.mu.Unlock()
	for range n {
		go func() {
			defer func() {
				c.mu.Lock()
				c.live--
				c.notify()
				c.mu.Unlock()
			}()
			f()
		}()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.live > 0 {
		if len(c.sleepers) == c.live {
			c.advance()
			continue
		}
		ch := c.changed
		c.mu.Unlock()
		<-ch
		c.mu.Lock()
	}
}

// TestSlidingWindow runs one request after another on a budget with a fake
// clock: each step moves time on, then waits for a slot (which must take
// exactly wait), then ends the request with the given response headers.
func TestSlidingWindow(t *testing.T) {
	type step struct {
		after  time.Duration // time passing before the step
		search bool
		wait   time.Duration // how long the budget must make it wait
		header http.Header   // the response's headers (nil: no response)
		status int
	}
	repeat := func(n int, s step) []step {
		out := make([]step, n)
		for i := range out {
			out[i] = s
		}
		return out
	}
	steps := func(parts ...[]step) []step { return slices.Concat(parts...) }
	tests := map[string]struct {
		perMinute, burst, perHour int
		steps                     []step
	}{
		"N at once, the N+1th waits until the oldest is 60s old": {
			perMinute: 5,
			steps:     steps(repeat(5, step{}), []step{{wait: time.Minute}}),
		},
		"starts spread out: each waits for its own oldest": {
			perMinute: 3,
			steps: []step{
				{}, {after: 10 * time.Second}, {after: 20 * time.Second}, // t=0, 10, 30
				{after: 5 * time.Second, wait: 25 * time.Second}, // t=35 → 60
				{wait: 10 * time.Second},                         // → 70 (10's slot)
				{wait: 20 * time.Second},                         // → 90 (30's slot)
				{after: 2 * time.Minute}, {}, {},                 // the window emptied
				{wait: time.Minute},
			},
		},
		"a 100/min budget lets a lazy start's 40 reads go at once": {
			perMinute: 100,
			steps:     repeat(40, step{}),
		},
		"searches: 30 a minute within the minute's budget": {
			perMinute: 100,
			steps:     steps(repeat(30, step{search: true}), []step{{}, {search: true, wait: time.Minute}}),
		},
		"the hourly window": {
			perMinute: 60, perHour: 3,
			steps: steps(repeat(3, step{}), []step{{wait: time.Hour}}),
		},
		"burst caps starts at once, refilled at perMinute a minute": {
			perMinute: 6, burst: 2,
			steps: []step{{}, {}, {wait: 10 * time.Second}, {wait: 10 * time.Second}, {wait: 10 * time.Second}, {wait: 10 * time.Second}, {wait: 20 * time.Second}},
		},
		"X-RateLimit-Limit lowers the budget for good": {
			perMinute: 10,
			steps: []step{
				{}, {after: time.Second}, // t=0, 1
				{after: time.Second, header: http.Header{"X-Ratelimit-Limit": {"3"}}}, // t=2: lowered to 3
				{wait: 58 * time.Second}, // t=60, the slot of t=0
				{wait: time.Second},      // t=61
				{wait: time.Second, header: http.Header{"X-Ratelimit-Limit": {"50"}}}, // t=62: higher is ignored
				{wait: 58 * time.Second},
			},
		},
		"X-RateLimit-Remaining 0 pauses until the server's reset": {
			perMinute: 60,
			steps: []step{
				{header: http.Header{"X-Ratelimit-Remaining": {"0"}, "Retry-After": {"20"}}, status: http.StatusOK},
				{wait: 20 * time.Second},
			},
		},
		"Remaining counts the server's window, requests in flight included": {
			perMinute: 60,
			steps: []step{
				{header: http.Header{"X-Ratelimit-Remaining": {"2"}, "Retry-After": {"30"}}, status: http.StatusOK},
				{}, {},
				{wait: 30 * time.Second},
			},
		},
		"429 pauses for Retry-After": {
			perMinute: 60,
			steps: []step{
				{header: http.Header{"Retry-After": {"7"}}, status: http.StatusTooManyRequests},
				{wait: 7 * time.Second},
			},
		},
		"429 without Retry-After pauses for defaultPause": {
			steps: []step{
				{header: http.Header{}, status: http.StatusTooManyRequests},
				{wait: defaultPause},
			},
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			clk := newFakeClock()
			b := newBudget(tt.perMinute, tt.burst, tt.perHour, clk)
			for i, s := range tt.steps {
				clk.mu.Lock()
				clk.now = clk.now.Add(s.after)
				clk.mu.Unlock()
				waited, err := b.wait(context.Background(), s.search)
				require.NoError(t, err, "step %d", i)
				assert.Equal(t, s.wait, waited, "step %d", i)
				b.done(s.header, s.status)
			}
			assert.Zero(t, b.inflight)
		})
	}
}

// TestBudgetWindow hammers a client with a budget of 10/minute from 50
// goroutines (95 requests, on a clock that moves only when all of them wait)
// and counts, on the server, the requests that arrive in every 60-second
// window: never more than 10, and 10 in each minute until the last, which
// starts exactly 9 minutes after the first.
func TestBudgetWindow(t *testing.T) {
	const perMinute, total = 10, 95
	clk := newStepClock()
	var mu sync.Mutex
	var arrivals []time.Time
	srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		arrivals = append(arrivals, clk.Now())
		mu.Unlock()
		fmt.Fprint(w, `{"id": 1}`)
	}))
	rec := &recorder{}
	c := newClient(t, srv.URL, withClock(clk), WithRateLimit(perMinute, 0), WithObserver(rec.observe))
	start := clk.Now()
	var next atomic.Int32
	clk.run(50, func() {
		for next.Add(1) <= total {
			_, err := c.GetRecord(context.Background(), "1")
			assert.NoError(t, err)
		}
	})
	require.Len(t, arrivals, total)
	slices.SortFunc(arrivals, func(a, b time.Time) int { return a.Compare(b) })
	for i := range arrivals {
		j := i
		for j < len(arrivals) && arrivals[j].Sub(arrivals[i]) < time.Minute {
			j++
		}
		assert.LessOrEqual(t, j-i, perMinute, "requests in the minute from arrival %d", i)
	}
	perMin := map[time.Duration]int{}
	for _, a := range arrivals {
		perMin[a.Sub(start)]++
	}
	for m := range 9 {
		assert.Equal(t, perMinute, perMin[time.Duration(m)*time.Minute], "minute %d", m)
	}
	assert.Equal(t, 5, perMin[9*time.Minute])
	// Requests that wait emit an event; one that finds a slot just freed
	// (a worker back from its request the moment the clock moved) need not.
	assert.Positive(t, rec.count(EventRateLimitWait))
	assert.LessOrEqual(t, rec.count(EventRateLimitWait), total-perMinute, "the first minute's requests did not wait")
}

// TestBudgetWaitCancel cancels requests waiting for a slot: they return the
// context's error and take no slot, and one past its deadline fails at once.
func TestBudgetWaitCancel(t *testing.T) {
	tests := map[string]struct {
		perMinute int
		header    http.Header // of the first request's response
		status    int
	}{
		"minute window":      {perMinute: 1},
		"server Remaining 0": {header: http.Header{"X-Ratelimit-Remaining": {"0"}, "Retry-After": {"60"}}, status: http.StatusOK},
		"429":                {header: http.Header{"Retry-After": {"60"}}, status: http.StatusTooManyRequests},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			clk := newStepClock()
			b := newBudget(tt.perMinute, 0, 0, clk)
			_, err := b.wait(context.Background(), false)
			require.NoError(t, err)
			b.done(tt.header, tt.status)
			require.Zero(t, b.available())

			ctx, cancel := context.WithCancel(context.Background())
			errc := make(chan error, 1)
			go func() {
				_, err := b.wait(ctx, false)
				errc <- err
			}()
			clk.waitSleepers(1)
			cancel()
			require.ErrorIs(t, <-errc, context.Canceled)
			assert.Zero(t, b.inflight, "a cancelled wait takes no slot")

			dctx, dcancel := context.WithDeadline(context.Background(), clk.Now().Add(59*time.Second))
			defer dcancel()
			_, err = b.wait(dctx, false)
			var be *budgetError
			require.ErrorAs(t, err, &be)
			assert.Equal(t, time.Minute, be.wait)

			// A minute later the slot is free, and only one.
			clk.mu.Lock()
			clk.now = clk.now.Add(time.Minute)
			clk.mu.Unlock()
			assert.Equal(t, 1, min(b.available(), 1))
			waited, err := b.wait(context.Background(), false)
			require.NoError(t, err)
			assert.Zero(t, waited)
			b.done(nil, 0)
		})
	}
}

// TestSlidingWindowAvailable checks the ring's count as starts age out and
// when the limit is lowered.
func TestSlidingWindowAvailable(t *testing.T) {
	t0 := time.Date(2026, 8, 1, 12, 0, 0, 0, time.UTC)
	s := newSlidingWindow(4, time.Minute)
	assert.Equal(t, 4, s.available(t0))
	for i := range 4 {
		s.add(t0.Add(time.Duration(i) * 10 * time.Second)) // 0, 10, 20, 30
	}
	assert.Equal(t, 0, s.available(t0.Add(59*time.Second)))
	assert.Equal(t, 1, s.available(t0.Add(time.Minute)))
	assert.Equal(t, 2, s.available(t0.Add(70*time.Second)))
	assert.Equal(t, 5*time.Second, s.delay(t0.Add(55*time.Second)))
	s.add(t0.Add(time.Minute)) // replaces 0: ring is 10, 20, 30, 60
	assert.Equal(t, 10*time.Second, s.delay(t0.Add(time.Minute)))
	s.setLimit(2) // keeps 30, 60
	assert.Equal(t, 2, s.n)
	assert.Equal(t, 30*time.Second, s.delay(t0.Add(time.Minute)))
	assert.Equal(t, 1, s.available(t0.Add(90*time.Second)))
	s.setLimit(9) // raising is ignored
	assert.Equal(t, 2, s.n)
}
