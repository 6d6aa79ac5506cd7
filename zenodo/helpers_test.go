package zenodo

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/log"
	"github.com/sirupsen/logrus"
	"github.com/stretchr/testify/require"
)

// fixtureDir holds copies of the recorded Zenodo responses
// (/work/shared/zenodo-fixtures in the project's workspace).
const fixtureDir = "testdata/fixtures"

const testToken = "tok-5ecr3t-0123456789abcdef"

// withClock replaces the client's clock (tests only).
func withClock(c clock) Option {
	return func(o *options) error {
		o.clock = c
		return nil
	}
}

// fakeClock is a clock whose Sleep returns at once and moves time forward,
// recording what was slept.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	sleeps []time.Duration
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Now()} }

func (f *fakeClock) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if d > 0 {
		f.now = f.now.Add(d)
	}
	f.sleeps = append(f.sleeps, d)
	return nil
}

func (f *fakeClock) Sleeps() []time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Duration(nil), f.sleeps...)
}

// fixture reads a fixture body.
func fixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(fixtureDir, name))
	require.NoError(t, err)
	return b
}

// fixtureHeaders reads NAME.headers.txt: the status and response headers.
// It returns 0 and nil when there is no such file.
func fixtureHeaders(t testing.TB, name string) (int, http.Header) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(fixtureDir, strings.TrimSuffix(name, ".json")+".headers.txt"))
	if os.IsNotExist(err) {
		return 0, nil
	}
	require.NoError(t, err)
	status := 0
	h := http.Header{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "#"), strings.TrimSpace(line) == "":
			continue
		case strings.HasPrefix(line, "HTTP/"):
			f := strings.Fields(line)
			require.GreaterOrEqual(t, len(f), 2)
			status, err = strconv.Atoi(f[1])
			require.NoError(t, err)
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		h.Add(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	return status, h
}

// replayHeaders are the fixture headers a replaying handler sends: the
// rate-limit ones and a few harmless others (not lengths or encodings).
var replayHeaders = []string{"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset", "Retry-After", "Etag", "Content-Type", "X-Request-Id"}

// replay writes a fixture as a response, rewriting its links to point at
// the test server (the recordings use "sbapi/" for https://sandbox.zenodo.org/api/).
func replay(t testing.TB, w http.ResponseWriter, r *http.Request, name string, status int) {
	t.Helper()
	body := fixture(t, name)
	base := "http://" + r.Host
	body = bytes.ReplaceAll(body, []byte(`"sbapi/`), []byte(`"`+base+`/api/`))
	body = bytes.ReplaceAll(body, []byte(`https://sandbox.zenodo.org`), []byte(base))
	fs, fh := fixtureHeaders(t, name)
	for _, k := range replayHeaders {
		if v := fh.Values(k); len(v) > 0 {
			w.Header()[k] = v
		}
	}
	if w.Header().Get("Content-Type") == "" {
		w.Header().Set("Content-Type", "application/json")
	}
	if status == 0 {
		status = fs
	}
	if status == 0 {
		status = http.StatusOK
	}
	w.WriteHeader(status)
	w.Write(body)
}

// newServer serves h and closes it when the test ends.
func newServer(t testing.TB, h http.Handler) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s
}

// newClient makes a client for srv with fast retries and a fake clock
// unless opts say otherwise.
func newClient(t testing.TB, base string, opts ...Option) *Client {
	t.Helper()
	all := append([]Option{WithRetry(4, time.Millisecond), withClock(newFakeClock())}, opts...)
	c, err := New(base, all...)
	require.NoError(t, err)
	return c
}

// logCapture records every log line of log.L (at trace level) while a test
// runs.
type logCapture struct {
	mu    sync.Mutex
	lines []string
}

func (l *logCapture) Levels() []logrus.Level { return logrus.AllLevels }

func (l *logCapture) Fire(e *logrus.Entry) error {
	s, err := e.String()
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, s)
	return nil
}

func (l *logCapture) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "")
}

func captureLogs(t *testing.T) *logCapture {
	t.Helper()
	lc := &logCapture{}
	logger := log.L.Logger
	oldHooks := logrus.LevelHooks{}
	for lvl, hs := range logger.Hooks {
		oldHooks[lvl] = append([]logrus.Hook(nil), hs...)
	}
	oldLevel, oldOut := logger.GetLevel(), logger.Out
	logger.AddHook(lc)
	logger.SetLevel(logrus.TraceLevel)
	logger.SetOutput(io.Discard)
	t.Cleanup(func() {
		logger.ReplaceHooks(oldHooks)
		logger.SetLevel(oldLevel)
		logger.SetOutput(oldOut)
	})
	return lc
}

// recorder collects observer events.
type recorder struct {
	mu     sync.Mutex
	events []Event
}

func (r *recorder) observe(e Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

func (r *recorder) count(k EventKind) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, e := range r.events {
		if e.Kind == k {
			n++
		}
	}
	return n
}

func (r *recorder) all() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Event(nil), r.events...)
}
