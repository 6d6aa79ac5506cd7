package donodo

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/integration/testimage"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/zenodo"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/zenodo/zenodotest"
)

// fake is a fake Zenodo and a client of it.
type fake struct {
	srv *zenodotest.Server
	ts  *httptest.Server
	url string
	zc  *zenodo.Client
}

// newFake starts a fake Zenodo and a client with its token, no rate limit
// and fast retries.
func newFake(t testing.TB, opts ...zenodotest.Option) *fake {
	t.Helper()
	srv, ts := zenodotest.NewTestServer(t, opts...)
	return &fake{srv: srv, ts: ts, url: ts.URL, zc: newClient(t, ts.URL, zenodotest.DefaultToken)}
}

func newClient(t testing.TB, url, token string) *zenodo.Client {
	t.Helper()
	zc, err := zenodo.New(url, zenodo.WithToken(token), zenodo.WithRateLimit(0, 0), zenodo.WithHourlyLimit(0),
		zenodo.WithRetry(2, time.Millisecond), zenodo.WithTimeout(30*time.Second))
	require.NoError(t, err)
	return zc
}

// settle stops the fake once every request has completed, so that its
// request log is complete (the fake logs a request when its handler
// returns, which may be after the client has read the whole answer).
func (f *fake) settle() { f.ts.Close() }

// guest is a client of the fake without a token.
func (f *fake) guest(t testing.TB) *zenodo.Client { return newClient(t, f.url, "") }

// requests counts the fake's requests whose path contains part.
func (f *fake) requests(method, part string) (n int, bytes int64) {
	for _, r := range f.srv.Requests() {
		if (method == "" || r.Method == method) && strings.Contains(r.Path, part) {
			n++
			bytes += r.Bytes
		}
	}
	return n, bytes
}

// layout writes a busybox test image layout named name and returns its
// Source.
func layout(t testing.TB, name string, opts ...testimage.Option) Source {
	t.Helper()
	dir := t.TempDir()
	testimage.Busybox(t, dir, append(opts, testimage.WithName(name))...)
	src, err := LayoutSource(dir)
	require.NoError(t, err)
	return src
}

// authors labels an image so that Push finds creators.
var authors = testimage.WithLabels(map[string]string{LabelAuthors: "Jane Smith <jane@example.org>"})

// ctx is a test context.
func ctx(t testing.TB) context.Context { return t.Context() }

// mustRef parses a reference.
func mustRef(t testing.TB, s string) zenodo.Reference {
	t.Helper()
	r, err := zenodo.ParseReference(s)
	require.NoError(t, err)
	return r
}

// pushed pushes and publishes image from src and returns the result.
func pushed(t testing.TB, f *fake, src Source, image string, opts ...PushOption) *PushResult {
	t.Helper()
	res, err := Push(ctx(t), f.zc, src, image, append([]PushOption{WithAutoPublish(), WithPushTempDir(t.TempDir())}, opts...)...)
	require.NoError(t, err)
	require.True(t, res.Published)
	return res
}
