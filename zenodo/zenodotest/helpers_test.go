package zenodotest

import (
	"bytes"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// api is a minimal HTTP client for the fake, built on net/http only.
type api struct {
	t     testing.TB
	base  string
	token string
	hc    *http.Client
}

func newAPI(t testing.TB, base string) *api {
	return &api{t: t, base: base, token: DefaultToken, hc: &http.Client{}}
}

// noRedirect returns a copy of a that does not follow redirects.
func (a *api) noRedirect() *api {
	b := *a
	b.hc = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return &b
}

type resp struct {
	status int
	header http.Header
	body   []byte
}

func (r resp) json(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal(r.body, &m), "body: %s", r.body)
	return m
}

func (r resp) list(t testing.TB) []any {
	t.Helper()
	var l []any
	require.NoError(t, json.Unmarshal(r.body, &l), "body: %s", r.body)
	return l
}

func (a *api) do(method, url string, body io.Reader, hdr ...string) resp {
	a.t.Helper()
	if !strings.HasPrefix(url, "http") {
		url = a.base + url
	}
	req, err := http.NewRequest(method, url, body)
	require.NoError(a.t, err)
	if a.token != "" {
		req.Header.Set("Authorization", "Bearer "+a.token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := a.hc.Do(req)
	require.NoError(a.t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(a.t, err)
	return resp{status: res.StatusCode, header: res.Header, body: b}
}

func (a *api) doJSON(method, url string, v any) resp {
	a.t.Helper()
	var body io.Reader
	if v != nil {
		b, err := json.Marshal(v)
		require.NoError(a.t, err)
		body = bytes.NewReader(b)
	}
	return a.do(method, url, body, "Content-Type", "application/json")
}

// create makes a deposition with md and returns its JSON.
func (a *api) create(md map[string]any) map[string]any {
	a.t.Helper()
	r := a.doJSON(http.MethodPost, "/api/deposit/depositions", map[string]any{"metadata": md})
	require.Equal(a.t, http.StatusCreated, r.status, "%s", r.body)
	return r.json(a.t)
}

// put uploads data to a deposition's bucket.
func (a *api) put(dep map[string]any, key string, data []byte) resp {
	a.t.Helper()
	return a.do(http.MethodPut, link(a.t, dep, "bucket")+"/"+key, bytes.NewReader(data), "Content-Type", "application/octet-stream")
}

func (a *api) action(dep map[string]any, name string) resp {
	a.t.Helper()
	return a.do(http.MethodPost, link(a.t, dep, name), nil)
}

func link(t testing.TB, m map[string]any, name string) string {
	t.Helper()
	links, ok := m["links"].(map[string]any)
	require.True(t, ok, "no links in %v", m)
	l, ok := links[name].(string)
	require.True(t, ok, "no link %q in %v", name, links)
	return l
}

func md5hex(b []byte) string {
	s := md5.Sum(b)
	return hex.EncodeToString(s[:])
}

func idOf(t testing.TB, m map[string]any) string {
	t.Helper()
	id, ok := m["id"].(float64)
	require.True(t, ok, "no id in %v", m)
	return jsonInt(id)
}

func jsonInt(f float64) string {
	b, _ := json.Marshal(int64(f))
	return string(b)
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/251)
	}
	return b
}

// fakeClock is a manually advanced clock for WithClock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// imageMetadata is what a donodo push sends.
func imageMetadata(title, version string) map[string]any {
	md := map[string]any{
		"title":       title,
		"upload_type": "software",
		"description": "A container image.",
		"creators":    []any{map[string]any{"name": "Doe, Jane", "affiliation": nil}},
	}
	if version != "" {
		md["version"] = version
	}
	return md
}
