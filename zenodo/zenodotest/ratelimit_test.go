package zenodotest

import (
	"fmt"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRateLimitHeadersOnEveryResponse(t *testing.T) {
	clock := newFakeClock()
	_, ts := NewTestServer(t, WithClock(clock.Now))
	c := newAPI(t, ts.URL)
	anon := newAPI(t, ts.URL)
	anon.token = ""
	for _, r := range []resp{
		c.doJSON(http.MethodPost, "/api/deposit/depositions", map[string]any{}),
		anon.doJSON(http.MethodPost, "/api/deposit/depositions", map[string]any{}),
		anon.do(http.MethodGet, "/api/records/1", nil),
		anon.do(http.MethodGet, "/no/such/route", nil),
		anon.do(http.MethodGet, "/api/records", nil),
	} {
		assert.Equal(t, strconv.Itoa(unlimitedNominal), r.header.Get("X-RateLimit-Limit"))
		assert.NotEmpty(t, r.header.Get("X-RateLimit-Remaining"))
		assert.Equal(t, strconv.FormatInt(clock.Now().Add(time.Minute).Unix(), 10), r.header.Get("X-RateLimit-Reset"))
		assert.Equal(t, "60", r.header.Get("Retry-After"))
		assert.NotEmpty(t, r.header.Get("X-Request-Id"))
	}
}

func TestRateLimit(t *testing.T) {
	clock := newFakeClock()
	_, ts := NewTestServer(t, WithClock(clock.Now), WithRateLimit(3, 5))
	c := newAPI(t, ts.URL)
	anon := newAPI(t, ts.URL)
	anon.token = ""

	start := clock.Now()
	for i := 1; i <= 3; i++ {
		r := c.do(http.MethodGet, "/api/deposit/depositions", nil)
		require.Equal(t, http.StatusOK, r.status)
		assert.Equal(t, "3", r.header.Get("X-RateLimit-Limit"))
		assert.Equal(t, strconv.Itoa(3-i), r.header.Get("X-RateLimit-Remaining"))
		clock.Advance(10 * time.Second)
	}
	r := c.do(http.MethodGet, "/api/deposit/depositions", nil)
	require.Equal(t, http.StatusTooManyRequests, r.status)
	assert.Equal(t, "30", r.header.Get("Retry-After"))
	assert.Equal(t, strconv.FormatInt(start.Add(time.Minute).Unix(), 10), r.header.Get("X-RateLimit-Reset"))
	assert.Equal(t, map[string]any{"message": "3 per 1 minute", "status": float64(429)}, r.json(t))

	// Guests are counted by IP, apart from the token's user.
	assert.Equal(t, http.StatusOK, anon.do(http.MethodGet, "/api/records", nil).status)

	// The window resets; then the hourly limit (5) bites.
	clock.Advance(30 * time.Second)
	for i := 0; i < 2; i++ {
		require.Equal(t, http.StatusOK, c.do(http.MethodGet, "/api/deposit/depositions", nil).status)
	}
	r = c.do(http.MethodGet, "/api/deposit/depositions", nil)
	require.Equal(t, http.StatusTooManyRequests, r.status)
	assert.Equal(t, "5 per 1 hour", r.json(t)["message"])
	wait, err := strconv.Atoi(r.header.Get("Retry-After"))
	require.NoError(t, err)
	assert.Equal(t, int(time.Hour.Seconds())-60, wait)
	clock.Advance(time.Duration(wait) * time.Second)
	assert.Equal(t, http.StatusOK, c.do(http.MethodGet, "/api/deposit/depositions", nil).status)
}

func TestSearchRateLimit(t *testing.T) {
	clock := newFakeClock()
	_, ts := NewTestServer(t, WithClock(clock.Now), WithSearchRateLimit(2))
	c := newAPI(t, ts.URL)
	for i := 0; i < 2; i++ {
		r := c.do(http.MethodGet, "/api/records?q=x", nil)
		require.Equal(t, http.StatusOK, r.status)
		assert.Equal(t, "2", r.header.Get("X-RateLimit-Limit"))
	}
	r := c.do(http.MethodGet, "/api/records/?q=x", nil)
	assert.Equal(t, http.StatusTooManyRequests, r.status)
	assert.Equal(t, "2 per 1 minute", r.json(t)["message"])
	// Other routes are not search.
	assert.Equal(t, http.StatusOK, c.do(http.MethodGet, "/api/deposit/depositions", nil).status)
	clock.Advance(time.Minute)
	assert.Equal(t, http.StatusOK, c.do(http.MethodGet, "/api/records", nil).status)
}

func TestRateLimiterBounded(t *testing.T) {
	clock := newFakeClock()
	l := newRateLimiter(10, 0, 0, clock.Now)
	for i := 0; i < 1000; i++ {
		l.take(fmt.Sprint("ip:", i), false)
	}
	clock.Advance(2 * time.Hour)
	l.take("ip:new", false)
	assert.Len(t, l.clients, 1)
}
