package zenodo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestNewValidation(t *testing.T) {
	for _, base := range []string{"", "zenodo.org", "ftp://zenodo.org", "https://user:pw@zenodo.org", "https://zenodo.org/?x=1", "https://zenodo.org/#f", "://"} {
		_, err := New(base)
		assert.ErrorIs(t, err, errdefs.ErrInvalidArgument, base)
	}
	c, err := New(ProductionURL + "/")
	require.NoError(t, err)
	assert.Equal(t, ProductionURL, c.BaseURL())
	assert.False(t, c.Authenticated())
	assert.Equal(t, GuestPerMinute, c.budget.perMinute)
	assert.Contains(t, c.userAgent, "zenodo-snapshotter/")
	assert.Contains(t, c.userAgent, projectURL)

	dir := t.TempDir()
	tokFile := filepath.Join(dir, "token")
	require.NoError(t, os.WriteFile(tokFile, []byte("  "+testToken+"\n"), 0o600))
	empty := filepath.Join(dir, "empty")
	require.NoError(t, os.WriteFile(empty, []byte("\n"), 0o600))

	c, err = New(SandboxURL, WithTokenFile(tokFile))
	require.NoError(t, err)
	assert.True(t, c.Authenticated())
	assert.Equal(t, testToken, c.token)
	assert.Equal(t, AuthenticatedPerMinute, c.budget.perMinute)

	t.Setenv(TokenEnv, " "+testToken+" ")
	assert.Equal(t, testToken, TokenFromEnv())

	bad := map[string][]Option{
		"token conflict":   {WithToken(testToken), WithTokenFile(tokFile)},
		"empty token file": {WithTokenFile(empty)},
		"token with space": {WithToken("a b")},
		"nil http client":  {WithHTTPClient(nil)},
		"empty user agent": {WithUserAgent(" ")},
		"negative rate":    {WithRateLimit(-1, 0)},
		"burst too big":    {WithRateLimit(10, 10)},
		"negative hourly":  {WithHourlyLimit(-1)},
		"zero attempts":    {WithRetry(0, time.Second)},
		"zero backoff":     {WithRetry(3, 0)},
		"negative timeout": {WithTimeout(-time.Second)},
	}
	for name, opts := range bad {
		_, err := New(ProductionURL, opts...)
		assert.ErrorIs(t, err, errdefs.ErrInvalidArgument, name)
		if err != nil {
			assert.NotContains(t, err.Error(), testToken, name)
		}
	}

	_, err = New(ProductionURL, WithTokenFile(filepath.Join(dir, "nope")))
	assert.ErrorIs(t, err, os.ErrNotExist)

	ok := []Option{
		WithUserAgent("test/1"), WithHTTPClient(&http.Client{}), WithRateLimit(0, 0), WithHourlyLimit(0),
		WithTimeout(0), WithObserver(func(Event) {}), nil,
	}
	c, err = New(ProductionURL, ok...)
	require.NoError(t, err)
	assert.Nil(t, c.budget.minute)
	assert.Nil(t, c.budget.hour)
	assert.Equal(t, "test/1", c.userAgent)
	c, err = New(ProductionURL, WithRateLimit(10, 0))
	require.NoError(t, err)
	assert.Nil(t, c.budget.burst, "burst 0: the whole minute's budget may start at once")
	c, err = New(ProductionURL, WithRateLimit(10, 4))
	require.NoError(t, err)
	assert.Equal(t, 4, c.budget.burst.Burst())
	assert.Equal(t, "request", EventRequest.String())
	assert.Equal(t, "retry", EventRetry.String())
	assert.Equal(t, "rate-limit-wait", EventRateLimitWait.String())
	assert.Equal(t, "transfer", EventTransfer.String())
	assert.Equal(t, "EventKind(9)", EventKind(9).String())
}

// TestRequestHeaders checks the User-Agent, the Bearer token, and that the
// token goes nowhere but the client's own host.
func TestRequestHeaders(t *testing.T) {
	var mu sync.Mutex
	auth := map[string]string{}
	other := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		auth["other "+r.URL.Path] = r.Header.Get("Authorization")
		mu.Unlock()
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, `{"key":"f","size":1,"checksum":"md5:0cc175b9c0f1b6a831c399e269772661"}`)
	}))
	srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		auth[r.URL.Path] = r.Header.Get("Authorization")
		auth["ua"] = r.Header.Get("User-Agent")
		auth["query"] += r.URL.RawQuery
		mu.Unlock()
		fmt.Fprint(w, `{"id": 1, "links": {}}`)
	}))
	c := newClient(t, srv.URL, WithToken(testToken), WithUserAgent("probe/1.0"))
	_, err := c.GetDeposition(context.Background(), "1")
	require.NoError(t, err)
	// A bucket link to another host gets no token.
	_, err = c.Upload(context.Background(), &Deposition{ID: "1", Links: Links{"bucket": other.URL + "/api/files/b"}}, "f", strings.NewReader("a"), 1, nil)
	require.NoError(t, err)
	assert.Equal(t, "Bearer "+testToken, auth["/api/deposit/depositions/1"])
	assert.Equal(t, "", auth["other /api/files/b/f"])
	assert.Equal(t, "probe/1.0", auth["ua"])
	assert.NotContains(t, auth["query"], testToken)
}

// TestTokenStaysOnOrigin: a redirect takes the token along only to the
// client's own origin. (http.Client forwards Authorization to any URL with
// the same host name, whatever its scheme or port.)
func TestTokenStaysOnOrigin(t *testing.T) {
	var mu sync.Mutex
	auth := map[string]string{}
	record := func(w http.ResponseWriter, r *http.Request, who string) {
		mu.Lock()
		auth[who+" "+r.URL.Path] = r.Header.Get("Authorization")
		mu.Unlock()
	}
	// Same host name (127.0.0.1), another port and scheme.
	plain := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		record(w, r, "plain")
		fmt.Fprint(w, `{"id": 1, "links": {}}`)
	}))
	var tlsURL string
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		record(w, r, "tls")
		switch r.URL.Path {
		case "/api/deposit/depositions/1":
			http.Redirect(w, r, plain.URL+"/api/deposit/depositions/2", http.StatusFound)
		case "/api/deposit/depositions/3":
			http.Redirect(w, r, tlsURL+"/api/deposit/depositions/4", http.StatusFound)
		default:
			fmt.Fprint(w, `{"id": 4, "links": {}}`)
		}
	}))
	t.Cleanup(srv.Close)
	tlsURL = srv.URL
	c := newClient(t, srv.URL, WithToken(testToken), WithHTTPClient(srv.Client()))

	_, err := c.GetDeposition(context.Background(), "1")
	require.NoError(t, err)
	_, err = c.GetDeposition(context.Background(), "3")
	require.NoError(t, err)
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, "Bearer "+testToken, auth["tls /api/deposit/depositions/1"])
	assert.Equal(t, "", auth["plain /api/deposit/depositions/2"], "token sent in clear text to another origin")
	assert.Equal(t, "Bearer "+testToken, auth["tls /api/deposit/depositions/3"])
	assert.Equal(t, "Bearer "+testToken, auth["tls /api/deposit/depositions/4"], "a redirect on the same origin keeps the token")
}

func TestRetries(t *testing.T) {
	t.Run("5xx then success", func(t *testing.T) {
		var n atomic.Int32
		srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch n.Add(1) {
			case 1:
				w.WriteHeader(http.StatusBadGateway)
			case 2:
				w.WriteHeader(http.StatusServiceUnavailable)
				fmt.Fprint(w, "<html>busy</html>")
			default:
				fmt.Fprint(w, `{"id": 7, "recid": "7"}`)
			}
		}))
		rec := &recorder{}
		clk := newFakeClock()
		c := newClient(t, srv.URL, WithObserver(rec.observe), withClock(clk), WithRetry(5, 100*time.Millisecond))
		r, err := c.GetRecord(context.Background(), "7")
		require.NoError(t, err)
		assert.Equal(t, "7", r.RecordID())
		assert.Equal(t, int32(3), n.Load())
		assert.Equal(t, 2, rec.count(EventRetry))
		assert.Equal(t, 3, rec.count(EventRequest))
		sleeps := clk.Sleeps()
		require.Len(t, sleeps, 2)
		// Exponential with jitter: [50ms,100ms], then [100ms,200ms].
		assert.GreaterOrEqual(t, sleeps[0], 50*time.Millisecond)
		assert.LessOrEqual(t, sleeps[0], 100*time.Millisecond)
		assert.GreaterOrEqual(t, sleeps[1], 100*time.Millisecond)
		assert.LessOrEqual(t, sleeps[1], 200*time.Millisecond)
	})
	t.Run("429 honours Retry-After", func(t *testing.T) {
		var n atomic.Int32
		srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if n.Add(1) == 1 {
				w.Header().Set("Retry-After", "7")
				w.WriteHeader(http.StatusTooManyRequests)
				fmt.Fprint(w, `{"status": 429, "message": "100 per 1 minute"}`)
				return
			}
			fmt.Fprint(w, `{"id": 7}`)
		}))
		clk := newFakeClock()
		c := newClient(t, srv.URL, withClock(clk))
		_, err := c.GetRecord(context.Background(), "7")
		require.NoError(t, err)
		assert.Equal(t, int32(2), n.Load())
		assert.Contains(t, clk.Sleeps(), 7*time.Second)
	})
	t.Run("429 on a POST is retried", func(t *testing.T) {
		var n atomic.Int32
		srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if n.Add(1) == 1 {
				w.Header().Set("Retry-After", "Wed, 21 Oct 2099 07:28:00 GMT")
				w.WriteHeader(http.StatusTooManyRequests)
				return
			}
			w.WriteHeader(http.StatusCreated)
			fmt.Fprint(w, `{"id": 5, "links": {}}`)
		}))
		c := newClient(t, srv.URL, withClock(&fakeClock{now: time.Date(2099, 10, 21, 7, 27, 0, 0, time.UTC)}))
		_, err := c.CreateDeposition(context.Background(), Metadata{})
		require.NoError(t, err)
		assert.Equal(t, int32(2), n.Load())
	})
	t.Run("Retry-After too long fails at once", func(t *testing.T) {
		var n atomic.Int32
		srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n.Add(1)
			w.Header().Set("Retry-After", "3600")
			w.WriteHeader(http.StatusTooManyRequests)
		}))
		c := newClient(t, srv.URL)
		_, err := c.GetRecord(context.Background(), "7")
		require.ErrorIs(t, err, ErrRateLimited)
		assert.True(t, errdefs.IsResourceExhausted(err))
		var ze *Error
		require.True(t, errors.As(err, &ze))
		assert.Equal(t, time.Hour, ze.RetryAfter)
		assert.True(t, ze.Temporary())
		assert.Contains(t, err.Error(), "retry after 1h0m0s")
		assert.Equal(t, int32(1), n.Load())
	})
	t.Run("Retry-After past the deadline fails at once", func(t *testing.T) {
		srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Retry-After", "60")
			w.WriteHeader(http.StatusTooManyRequests)
		}))
		c := newClient(t, srv.URL, WithRetry(5, time.Millisecond)) // real clock
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err := c.GetRecord(ctx, "7")
		require.ErrorIs(t, err, ErrRateLimited)
	})
	t.Run("exhausted attempts", func(t *testing.T) {
		var n atomic.Int32
		srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n.Add(1)
			w.WriteHeader(http.StatusInternalServerError)
			w.Write(fixture(t, "83-error-500-deposit-publish.json"))
		}))
		c := newClient(t, srv.URL, WithRetry(3, time.Millisecond))
		_, err := c.GetRecord(context.Background(), "7")
		require.Error(t, err)
		var ze *Error
		require.True(t, errors.As(err, &ze))
		assert.Equal(t, http.StatusInternalServerError, ze.StatusCode)
		assert.True(t, ze.Temporary())
		assert.ErrorIs(t, err, errdefs.ErrInternal)
		assert.Equal(t, int32(3), n.Load())
	})
	t.Run("4xx is not retried", func(t *testing.T) {
		var n atomic.Int32
		srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n.Add(1)
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprint(w, `{"status": 400, "message": "Validation error.", "errors": [{"field": "metadata.creators.0.type", "message": "Unknown field name."}, {"field": "x", "messages": ["a", "b"]}]}`)
		}))
		c := newClient(t, srv.URL)
		_, err := c.UpdateMetadata(context.Background(), "3", Metadata{Title: "t"})
		require.ErrorIs(t, err, errdefs.ErrInvalidArgument)
		assert.Contains(t, err.Error(), "Validation error. (metadata.creators.0.type: Unknown field name., x: a; b)")
		assert.Equal(t, int32(1), n.Load())
	})
	t.Run("connection refused is retried even for POST", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		addr := l.Addr().String()
		require.NoError(t, l.Close())
		rec := &recorder{}
		c := newClient(t, "http://"+addr, WithRetry(3, time.Millisecond), WithObserver(rec.observe))
		_, err = c.CreateDeposition(context.Background(), Metadata{})
		require.Error(t, err)
		var ze *Error
		require.True(t, errors.As(err, &ze))
		assert.Zero(t, ze.StatusCode)
		assert.True(t, ze.Temporary())
		assert.True(t, errdefs.IsUnavailable(err))
		assert.Equal(t, 2, rec.count(EventRetry))
	})
	t.Run("body cut short is retried for GET", func(t *testing.T) {
		var n atomic.Int32
		srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if n.Add(1) == 1 {
				w.Header().Set("Content-Length", "100")
				fmt.Fprint(w, `{"id": 7,`)
				return
			}
			fmt.Fprint(w, `{"id": 7}`)
		}))
		c := newClient(t, srv.URL)
		_, err := c.GetRecord(context.Background(), "7")
		require.NoError(t, err)
		assert.Equal(t, int32(2), n.Load())
	})
	t.Run("bad JSON is not retried", func(t *testing.T) {
		var n atomic.Int32
		srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n.Add(1)
			fmt.Fprint(w, `{"id": [}`)
		}))
		c := newClient(t, srv.URL)
		_, err := c.GetRecord(context.Background(), "7")
		require.Error(t, err)
		assert.Contains(t, err.Error(), "decoding response")
		assert.Equal(t, int32(1), n.Load())
	})
	t.Run("cancelled context", func(t *testing.T) {
		release := make(chan struct{})
		srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}))
		defer close(release)
		c := newClient(t, srv.URL)
		ctx, cancel := context.WithCancel(context.Background())
		rec := make(chan error, 1)
		go func() {
			_, err := c.GetRecord(ctx, "7")
			rec <- err
		}()
		cancel()
		err := <-rec
		require.ErrorIs(t, err, context.Canceled)
		var ze *Error
		assert.False(t, errors.As(err, &ze) && ze.Temporary())
	})
	t.Run("delete retried after unknown outcome treats 404 as done", func(t *testing.T) {
		var n atomic.Int32
		srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if n.Add(1)%2 == 1 {
				w.WriteHeader(http.StatusBadGateway)
				return
			}
			w.WriteHeader(http.StatusNotFound)
		}))
		c := newClient(t, srv.URL)
		require.NoError(t, c.Discard(context.Background(), "9"))
		require.NoError(t, c.DeleteFile(context.Background(), "9", "abc"))
		assert.Equal(t, int32(4), n.Load())
	})
}

func TestStallTimeout(t *testing.T) {
	// The first response sends headers and then nothing until the client
	// gives up on it; the second is fine.
	var n atomic.Int32
	srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 1 {
			w.Header().Set("Content-Length", "20")
			w.WriteHeader(http.StatusOK)
			fmt.Fprint(w, `{"id":`)
			w.(http.Flusher).Flush()
			<-r.Context().Done()
			return
		}
		fmt.Fprint(w, `{"id": 7}`)
	}))
	rec := &recorder{}
	c := newClient(t, srv.URL, WithTimeout(250*time.Millisecond), WithObserver(rec.observe))
	_, err := c.GetRecord(context.Background(), "7")
	require.NoError(t, err)
	assert.Equal(t, int32(2), n.Load())
	retries := slices.DeleteFunc(rec.all(), func(e Event) bool { return e.Kind != EventRetry })
	require.Len(t, retries, 1)
	assert.ErrorIs(t, retries[0].Err, context.DeadlineExceeded)
	assert.Contains(t, retries[0].Err.Error(), "no progress for 250ms")

	// Headers that never come.
	srv2 := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
	c2 := newClient(t, srv2.URL, WithTimeout(20*time.Millisecond), WithRetry(2, time.Millisecond))
	_, err = c2.GetRecord(context.Background(), "7")
	require.Error(t, err)
	var ze *Error
	require.True(t, errors.As(err, &ze))
	assert.True(t, ze.Temporary())
	assert.ErrorIs(t, err, context.DeadlineExceeded)
}

// TestBudgetBurst hammers the client from 50 goroutines with a budget of
// 6/minute: all 6 requests reach the server at once, and the others, which
// would wait a minute for the oldest start to age out, fail at once with
// ErrRateLimited within a shorter deadline.
func TestBudgetBurst(t *testing.T) {
	var n atomic.Int32
	srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		fmt.Fprint(w, `{"id": 1}`)
	}))
	rec := &recorder{}
	c, err := New(srv.URL, WithRateLimit(6, 0), WithObserver(rec.observe))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	var ok, limited atomic.Int32
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := c.GetRecord(ctx, "1")
			switch {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, ErrRateLimited) && errors.Is(err, context.DeadlineExceeded):
				limited.Add(1)
			default:
				t.Errorf("unexpected error: %v", err)
			}
		}()
	}
	wg.Wait()
	assert.Equal(t, int32(6), n.Load(), "server saw the whole minute's budget")
	assert.Equal(t, int32(6), ok.Load())
	assert.Equal(t, int32(44), limited.Load())
	assert.NoError(t, ctx.Err(), "nobody waited for the deadline")

	// Retries draw on the same budget: a failing request gets only the
	// minute's budget.
	var m atomic.Int32
	failing := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.Add(1)
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	c2, err := New(failing.URL, WithRateLimit(4, 0), WithRetry(10, time.Millisecond))
	require.NoError(t, err)
	_, err = c2.GetRecord(ctx, "1")
	require.ErrorIs(t, err, ErrRateLimited)
	assert.ErrorIs(t, err, errdefs.ErrUnavailable, "the last server error is kept")
	assert.Equal(t, int32(4), m.Load())
}

// TestBudgetBurstCap hammers the client from 50 goroutines with a budget of
// 600/minute capped at 3 at once (WithRateLimit's burst) and counts, on the
// server, the requests that arrive in every one-second window: never more
// than the cap allows (plus a margin for scheduling), where without it all
// 30 would arrive at once. TestBudgetWindow checks the minute's window.
func TestBudgetBurstCap(t *testing.T) {
	if testing.Short() {
		t.Skip("takes ~3s of real time")
	}
	var mu sync.Mutex
	var arrivals []time.Time
	srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		arrivals = append(arrivals, time.Now())
		mu.Unlock()
		fmt.Fprint(w, `{"id": 1}`)
	}))
	const perMinute, burst, total = 600, 3, 30
	c, err := New(srv.URL, WithRateLimit(perMinute, burst))
	require.NoError(t, err)
	var wg sync.WaitGroup
	var next atomic.Int32
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= total {
				_, err := c.GetRecord(context.Background(), "1")
				assert.NoError(t, err)
			}
		}()
	}
	wg.Wait()
	require.Len(t, arrivals, total)
	slices.SortFunc(arrivals, func(a, b time.Time) int { return a.Compare(b) })
	// In any window of 1s: burst + refill·1s, with 0.5s of slack for
	// scheduling on a loaded machine.
	maxPerWindow := burst + perMinute*3/120 + 1
	for i := range arrivals {
		j := i
		for j < len(arrivals) && arrivals[j].Sub(arrivals[i]) < time.Second {
			j++
		}
		assert.LessOrEqual(t, j-i, maxPerWindow, "requests in the second from arrival %d", i)
	}
}

// TestBudgetFollowsServer checks that X-RateLimit-Remaining 0 pauses the
// client until the server's reset, and that a 429 pauses every request.
func TestBudgetFollowsServer(t *testing.T) {
	var n atomic.Int32
	srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		w.Header().Set("X-RateLimit-Limit", "1000")
		w.Header().Set("X-RateLimit-Remaining", "0")
		w.Header().Set("Retry-After", "42")
		fmt.Fprint(w, `{"id": 1}`)
	}))
	clk := newFakeClock()
	rec := &recorder{}
	c := newClient(t, srv.URL, withClock(clk), WithRateLimit(0, 0), WithObserver(rec.observe))
	_, err := c.GetRecord(context.Background(), "1")
	require.NoError(t, err)
	assert.Empty(t, clk.Sleeps())
	_, err = c.GetRecord(context.Background(), "1")
	require.NoError(t, err)
	assert.Equal(t, []time.Duration{42 * time.Second}, clk.Sleeps())
	assert.Equal(t, 1, rec.count(EventRateLimitWait))

	// The epoch form, without Retry-After.
	clk2 := newFakeClock()
	srv2 := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-RateLimit-Remaining", "0")
		w.Header().Set("X-RateLimit-Reset", fmt.Sprint(clk2.Now().Add(30*time.Second).Unix()))
		fmt.Fprint(w, `{"id": 1}`)
	}))
	c2 := newClient(t, srv2.URL, withClock(clk2), WithRateLimit(0, 0))
	for range 2 {
		_, err = c2.GetRecord(context.Background(), "1")
		require.NoError(t, err)
	}
	require.Len(t, clk2.Sleeps(), 1)
	assert.InDelta(t, 30*time.Second, clk2.Sleeps()[0], float64(time.Second))

	// Past the deadline: fail at once.
	ctx, cancel := context.WithDeadline(context.Background(), clk.Now().Add(time.Second))
	defer cancel()
	_, err = c.GetRecord(ctx, "1")
	require.ErrorIs(t, err, ErrRateLimited)

	// A 429 without Retry-After closes the budget for defaultPause.
	var m atomic.Int32
	srv3 := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if m.Add(1) == 1 {
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		fmt.Fprint(w, `{"id": 1}`)
	}))
	clk3 := newFakeClock()
	c3 := newClient(t, srv3.URL, withClock(clk3), WithRetry(1, time.Millisecond))
	_, err = c3.GetRecord(context.Background(), "1")
	require.ErrorIs(t, err, ErrRateLimited)
	_, err = c3.GetRecord(context.Background(), "1")
	require.NoError(t, err)
	assert.Equal(t, []time.Duration{defaultPause}, clk3.Sleeps())
}

func TestAvailable(t *testing.T) {
	clk := newFakeClock()
	c, err := New("http://127.0.0.1:1/prefix/", WithRateLimit(60, 6), withClock(clk))
	require.NoError(t, err)
	assert.Equal(t, 6, c.Available())
	_, err = c.budget.wait(context.Background(), false)
	require.NoError(t, err)
	assert.Equal(t, 5, c.Available())
	c.budget.done(http.Header{"X-Ratelimit-Remaining": {"2"}, "Retry-After": {"10"}}, http.StatusOK)
	assert.Equal(t, 2, c.Available())
	clk.Sleep(context.Background(), 11*time.Second)
	assert.Equal(t, 6, c.Available())
	off, err := New(ProductionURL, WithRateLimit(0, 0))
	require.NoError(t, err)
	assert.Equal(t, math.MaxInt32, off.Available())

	// A base path prefix is kept in every URL; links resolve against it.
	assert.Equal(t, "http://127.0.0.1:1/prefix/api/records/1/files/a%20b%2Fc", c.endpoint(nil, "api", "records", "1", "files", "a b/c"))
	u, err := c.resolveLink("/api/files/x")
	require.NoError(t, err)
	assert.Equal(t, "http://127.0.0.1:1/api/files/x", u)
	u, err = c.resolveLink("api/files/x")
	require.NoError(t, err)
	assert.Equal(t, "http://127.0.0.1:1/prefix/api/files/x", u)
}

func TestBudgetDone(t *testing.T) {
	clk := newFakeClock()
	b := newBudget(100, 10, 5000, clk)
	h := http.Header{}
	h.Set("X-RateLimit-Remaining", "5")
	h.Set("Retry-After", "30")
	b.inflight = 3
	b.done(h, http.StatusOK)
	assert.Equal(t, 3, b.allowance, "remaining minus the 2 still in flight")
	// An older response of the same window with a higher count is ignored.
	b.inflight = 1
	h.Set("X-RateLimit-Remaining", "50")
	b.done(h, http.StatusOK)
	assert.Equal(t, 3, b.allowance)
	// A new window replaces the count.
	clk.Sleep(context.Background(), time.Minute)
	b.inflight = 1
	b.done(h, http.StatusOK)
	assert.Equal(t, 50, b.allowance)
	// Garbage is ignored.
	h2 := http.Header{"X-Ratelimit-Remaining": {"-3"}, "X-Ratelimit-Limit": {"x"}}
	b.inflight = 1
	b.done(h2, http.StatusOK)
	assert.Equal(t, 50, b.allowance)
	assert.Equal(t, 100, b.perMinute)
	// Limit 5 lowers the budget below it.
	b.inflight = 1
	b.done(http.Header{"X-Ratelimit-Limit": {"5"}}, http.StatusOK)
	assert.Equal(t, 5, b.perMinute)
	assert.Equal(t, 5, b.minute.n)
	assert.Equal(t, 5, b.search.n)
	assert.Nil(t, b.burst, "a burst of 10 caps nothing under a limit of 5")
}

func TestHelpers(t *testing.T) {
	assert.Equal(t, "https://zenodo.org/api?access_token=REDACTED", redactURL("https://u:p@zenodo.org/api?access_token=abc"))
	assert.Equal(t, "<unparsable URL>", redactURL("http://[::1"))
	assert.Equal(t, "x", redactURL("x"))
	now := time.Now()
	assert.Zero(t, parseRetryAfter(http.Header{"Retry-After": {"-1"}}, now))
	assert.Zero(t, parseRetryAfter(http.Header{"Retry-After": {"soon"}}, now))
	assert.Equal(t, 24*time.Hour, parseRetryAfter(http.Header{"Retry-After": {"999999999"}}, now))
	assert.Equal(t, "abc…", clip("abcdef", 3))
	assert.Equal(t, "…", clip("éé", 1))
	assert.Equal(t, "", errorMessage([]byte("<html>oops</html>")))
	assert.Equal(t, "plain text", errorMessage([]byte("plain text\n")))
	for code, kind := range map[int]error{
		403: errdefs.ErrPermissionDenied, 409: errdefs.ErrConflict, 412: errdefs.ErrFailedPrecondition,
		413: errdefs.ErrResourceExhausted, 416: errdefs.ErrOutOfRange, 501: errdefs.ErrNotImplemented,
		504: errdefs.ErrUnavailable, 418: errdefs.ErrUnknown, 422: errdefs.ErrInvalidArgument,
	} {
		assert.ErrorIs(t, kindForStatus(code), kind, code)
	}
	e := &Error{Method: "GET", URL: "u", StatusCode: 501}
	assert.False(t, e.Temporary())
	e = &Error{Method: "GET", URL: "u", Message: "m"}
	assert.Equal(t, "zenodo: GET u: m", e.Error())
	assert.False(t, e.Temporary())
	assert.Empty(t, e.Unwrap())

	c := &Client{token: "sekrit"}
	err := c.redactErr(errors.New("bad sekrit here"))
	assert.Equal(t, "bad REDACTED here", err.Error())
	assert.NotNil(t, errors.Unwrap(err))
	plain := errors.New("fine")
	assert.Same(t, plain, c.redactErr(plain))
}

// TestTokenNeverLeaks drives every error path with a token and checks that
// the token appears in no error, no log line and no event, even when the
// server echoes it back.
func TestTokenNeverLeaks(t *testing.T) {
	logs := captureLogs(t)
	rec := &recorder{}
	mux := http.NewServeMux()
	mux.HandleFunc("/api/records/401", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusUnauthorized)
		w.Write(fixture(t, "82-legacy-error-401-bad-token.json"))
	})
	mux.HandleFunc("/api/records/404", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNotFound)
		// A hostile or buggy server echoing the header back.
		fmt.Fprintf(w, `{"status": 404, "message": "no record for %s"}`, r.Header.Get("Authorization"))
	})
	mux.HandleFunc("/api/records/429", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusTooManyRequests)
		fmt.Fprint(w, r.Header.Get("Authorization"))
	})
	mux.HandleFunc("/api/records/500", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
		fmt.Fprintf(w, "internal error, token was %s", r.Header.Get("Authorization"))
	})
	mux.HandleFunc("/api/records/6/versions/latest", func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done() // stalls: the client times out
	})
	mux.HandleFunc("PUT /api/files/b/{key}", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusCreated)
		fmt.Fprint(w, `{"key": "f", "size": 3, "checksum": "md5:00000000000000000000000000000000"}`)
	})
	mux.HandleFunc("GET /api/deposit/depositions/1/files", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprint(w, `{"message": "forbidden `+r.Header.Get("Authorization")+`"}`)
	})
	srv := newServer(t, mux)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	refused := "http://" + l.Addr().String()
	require.NoError(t, l.Close())

	opts := []Option{WithToken(testToken), WithObserver(rec.observe), WithRetry(2, time.Millisecond)}
	c := newClient(t, srv.URL, opts...)
	cr := newClient(t, refused, opts...)
	ct := newClient(t, srv.URL, append(opts, WithTimeout(30*time.Millisecond))...)
	ctx := context.Background()

	var errs []error
	collect := func(_ any, err error) { errs = append(errs, err) }
	collect(c.GetRecord(ctx, "401"))
	collect(c.GetRecord(ctx, "404"))
	collect(c.GetRecord(ctx, "429"))
	collect(c.GetRecord(ctx, "500"))
	collect(ct.Latest(ctx, "6"))
	collect(cr.GetRecord(ctx, "1"))
	collect(c.Upload(ctx, &Deposition{ID: "1", Links: Links{"bucket": srv.URL + "/api/files/b"}}, "f", strings.NewReader("abc"), 3, nil))
	kinds := []error{ErrUnauthorized, ErrNotFound, ErrRateLimited, errdefs.ErrInternal, context.DeadlineExceeded, errdefs.ErrUnavailable, ErrChecksumMismatch}
	require.Len(t, errs, len(kinds))
	for i, err := range errs {
		require.Error(t, err, i)
		assert.ErrorIs(t, err, kinds[i], "error %d: %v", i, err)
		assert.NotContains(t, err.Error(), testToken, "error %d", i)
		assert.NotContains(t, fmt.Sprintf("%+v %#v", err, err), testToken, "error %d", i)
		var ze *Error
		if errors.As(err, &ze) {
			assert.NotContains(t, ze.URL+ze.Message, testToken)
		}
	}
	assert.Contains(t, errs[1].Error(), "no record for Bearer REDACTED")
	assert.NotEmpty(t, logs.String())
	assert.NotContains(t, logs.String(), testToken)
	for _, e := range rec.all() {
		assert.NotContains(t, fmt.Sprintf("%+v", e), testToken)
	}
}
