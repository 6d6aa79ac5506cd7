package zenodo_test

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/zenodo"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/zenodo/zenodotest"
)

func randomBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, seed+1))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// reqLog records requests as the server answers them: the entry exists
// before the client can see the response (the fake's own log is written
// when the handler returns, which may be after the client is done).
type reqLog struct {
	mu      sync.Mutex
	entries []zenodotest.Request
}

func (l *reqLog) Reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.entries = nil
}

func (l *reqLog) Requests() []zenodotest.Request {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]zenodotest.Request(nil), l.entries...)
}

type statusWriter struct {
	http.ResponseWriter
	log  *reqLog
	req  zenodotest.Request
	done bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.done {
		w.done = true
		w.req.Status = code
		w.log.mu.Lock()
		w.log.entries = append(w.log.entries, w.req)
		w.log.mu.Unlock()
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if !w.done {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// newFake starts a fake Zenodo behind a request recorder.
func newFake(t *testing.T, opts ...zenodotest.Option) (*zenodotest.Server, *httptest.Server, *reqLog) {
	t.Helper()
	fake, err := zenodotest.Open(opts...)
	require.NoError(t, err)
	log := &reqLog{}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w, log: log, req: zenodotest.Request{Method: r.Method, Path: r.URL.Path, Range: r.Header.Get("Range")}}
		fake.ServeHTTP(sw, r)
	}))
	t.Cleanup(func() {
		ts.Close()
		assert.NoError(t, fake.Close())
	})
	return fake, ts, log
}

func imageMetadata(version string) zenodo.Metadata {
	return zenodo.Metadata{
		Title:       "Docker image example/tool",
		Description: "<p>test image</p>",
		Version:     version,
		UploadType:  "software",
		Creators:    []zenodo.Creator{{Name: "Doe, Jane", Affiliation: "Test"}},
		Keywords:    []string{"container", "oci"},
	}
}

// TestAgainstFake runs the whole life of an image record against the fake
// Zenodo: create, upload, publish, new version, resolve by tag, range and
// stream reads, with faults on the way.
func TestAgainstFake(t *testing.T) {
	fake, ts, reqs := newFake(t)
	ctx := context.Background()
	clk := zenodo.NewFakeClock() // the fake's 503s say Retry-After: 60
	c, err := zenodo.New(ts.URL, zenodo.WithToken(zenodotest.DefaultToken), zenodo.WithRetry(5, time.Millisecond),
		zenodo.WithRateLimit(0, 0), zenodo.WithFakeClock(clk))
	require.NoError(t, err)

	// Version 1.0.
	dep, err := c.CreateDeposition(ctx, imageMetadata("1.0"))
	require.NoError(t, err)
	doi1 := dep.ReservedDOI()
	require.NotEmpty(t, doi1, "the DOI is reserved when the draft is made")
	v1 := randomBytes(300<<10, 1)
	var progress []int64
	f, err := c.Upload(ctx, dep, "image.tar", bytes.NewReader(v1), int64(len(v1)), func(n int64) { progress = append(progress, n) })
	require.NoError(t, err)
	sum := md5.Sum(v1)
	assert.Equal(t, hex.EncodeToString(sum[:]), f.MD5())
	assert.Equal(t, int64(len(v1)), f.Size)
	assert.Equal(t, int64(len(v1)), progress[len(progress)-1])
	_, err = c.Upload(ctx, dep, "image.tar.index.json", bytes.NewReader([]byte(`{}`)), 2, nil)
	require.NoError(t, err)
	pub1, err := c.Publish(ctx, string(dep.ID))
	require.NoError(t, err)
	assert.True(t, pub1.Published())
	assert.Equal(t, doi1, pub1.DOI)
	concept := string(pub1.ConceptRecID)
	require.NotEmpty(t, concept)

	// Version 2.0: the draft inherits the files and drops the version.
	draft, err := c.NewVersion(ctx, string(pub1.ID))
	require.NoError(t, err)
	assert.NotEqual(t, pub1.ID, draft.ID)
	assert.Empty(t, draft.Metadata.Version)
	files, err := c.DepositionFiles(ctx, string(draft.ID))
	require.NoError(t, err)
	require.Len(t, files, 2)
	for _, f := range files {
		if f.Key == "image.tar" {
			require.NoError(t, c.DeleteFile(ctx, string(draft.ID), f.ID))
		}
	}
	md := draft.Metadata
	md.Version = "2.0"
	draft, err = c.UpdateMetadata(ctx, string(draft.ID), md)
	require.NoError(t, err)
	assert.Equal(t, "2.0", draft.Metadata.Version)
	v2 := randomBytes(200<<10, 2)
	_, err = c.Upload(ctx, draft, "image.tar", bytes.NewReader(v2), int64(len(v2)), nil)
	require.NoError(t, err)
	pub2, err := c.Publish(ctx, string(draft.ID))
	require.NoError(t, err)
	assert.Equal(t, pub1.ConceptRecID, pub2.ConceptRecID)

	// The search finds both versions under the title.
	found, err := c.SearchDepositions(ctx, "Docker image example/tool")
	require.NoError(t, err)
	var foundIDs []string
	for _, d := range found {
		foundIDs = append(foundIDs, string(d.ID))
	}
	assert.Contains(t, foundIDs, string(pub1.ID))
	assert.Contains(t, foundIDs, string(pub2.ID))

	// Resolve: by tag on the concept, by version DOI, latest.
	conceptDOI := "10.5281/zenodo." + concept
	resolve := func(s string) (*zenodo.Record, error) {
		ref, err := zenodo.ParseReference(s)
		require.NoError(t, err)
		return c.Resolve(ctx, ref)
	}
	for ref, want := range map[string]string{
		"zenodo.org/" + conceptDOI + ":1.0":             string(pub1.ID),
		"zenodo.org/" + conceptDOI + ":2.0":             string(pub2.ID),
		"zenodo.org/" + conceptDOI:                      string(pub2.ID),
		"zenodo.org/" + conceptDOI + ":latest":          string(pub2.ID),
		doi1:                                            string(pub1.ID),
		"zenodo.org/" + doi1 + ":2.0":                   string(pub2.ID),
		"https://zenodo.org/records/" + string(pub2.ID): string(pub2.ID),
	} {
		rec, err := resolve(ref)
		require.NoError(t, err, ref)
		assert.Equal(t, want, rec.RecordID(), ref)
	}
	_, err = resolve("zenodo.org/" + conceptDOI + ":3.0")
	require.ErrorIs(t, err, zenodo.ErrNotFound)
	assert.Contains(t, err.Error(), `"3.0"`)
	assert.Contains(t, err.Error(), "1.0 ("+doi1+")")
	assert.Contains(t, err.Error(), "2.0 (")

	versions, err := c.Versions(ctx, concept)
	require.NoError(t, err)
	require.Len(t, versions, 2)
	assert.Equal(t, []string{"1.0", "2.0"}, []string{versions[0].Version(), versions[1].Version()})
	rec2, err := c.Latest(ctx, concept)
	require.NoError(t, err)
	img, ok := rec2.File("image.tar")
	require.True(t, ok)
	assert.Equal(t, int64(len(v2)), img.Size)

	// Ranged reads of version 2.
	reqs.Reset()
	ra, err := c.NewReaderAt(ctx, rec2.RecordID(), "image.tar", img.Size)
	require.NoError(t, err)
	for _, off := range []int64{0, 1, 4096, 100000, int64(len(v2)) - 100} {
		buf := make([]byte, 100)
		n, err := ra.ReadAt(buf, off)
		require.NoError(t, err, off)
		assert.Equal(t, v2[off:off+int64(n)], buf[:n])
	}
	require.NoError(t, ra.Close())
	var ranges []string
	for _, r := range reqs.Requests() {
		ranges = append(ranges, r.Range)
	}
	assert.Equal(t, []string{"bytes=0-0", "bytes=0-99", "bytes=1-100", "bytes=4096-4195", "bytes=100000-100099", "bytes=204700-204799"}, ranges)

	// A truncated body and a reset connection mid-stream are resumed.
	fake.InjectFault(zenodotest.Fault{Method: http.MethodGet, PathContains: "/records/" + rec2.RecordID() + "/files/", Truncate: 50000})
	fake.InjectFault(zenodotest.Fault{Method: http.MethodGet, PathContains: "/records/" + rec2.RecordID() + "/files/", ResetAfter: 70000})
	reqs.Reset()
	rc, err := c.Open(ctx, rec2.RecordID(), "image.tar")
	require.NoError(t, err)
	got, err := io.ReadAll(rc)
	require.NoError(t, err)
	require.NoError(t, rc.Close())
	assert.True(t, bytes.Equal(v2, got))
	ranges = ranges[:0]
	for _, r := range reqs.Requests() {
		ranges = append(ranges, r.Range)
	}
	require.Len(t, ranges, 3)
	assert.Empty(t, ranges[0])
	assert.Equal(t, "bytes=50000-", ranges[1])

	// 5xx on a GET is retried.
	fake.InjectFault(zenodotest.Fault{Method: http.MethodGet, PathContains: "/versions/latest", Status: http.StatusServiceUnavailable, Times: 2})
	_, err = c.Latest(ctx, concept)
	require.NoError(t, err)
	// Zenodo sends Retry-After (the rate-limit window) on every response: a
	// 503 is retried with backoff, never by waiting out that window.
	for _, d := range clk.Sleeps() {
		assert.Less(t, d, time.Minute, "a 503 waited out Retry-After")
	}

	// A damaged upload is detected, and the bad file removed.
	draft3, err := c.NewVersion(ctx, string(pub2.ID))
	require.NoError(t, err)
	fake.InjectFault(zenodotest.Fault{Method: http.MethodPut, PathContains: "/api/files/", WrongChecksum: true})
	_, err = c.Upload(ctx, draft3, "extra.bin", bytes.NewReader([]byte("payload")), 7, nil)
	require.ErrorIs(t, err, zenodo.ErrChecksumMismatch)
	files, err = c.DepositionFiles(ctx, string(draft3.ID))
	require.NoError(t, err)
	assert.False(t, slices.ContainsFunc(files, func(f zenodo.File) bool { return f.Key == "extra.bin" }))
	require.NoError(t, c.Discard(ctx, string(draft3.ID)))
	_, err = c.GetDeposition(ctx, string(draft3.ID))
	assert.ErrorIs(t, err, zenodo.ErrNotFound)

	// The /api/.../content route ignores Range: a reader over it is refused.
	// (The client never uses it; the probe logic is what matters.)
	guest, err := zenodo.New(ts.URL, zenodo.WithRetry(2, time.Millisecond))
	require.NoError(t, err)
	_, err = guest.CreateDeposition(ctx, imageMetadata("x"))
	assert.ErrorIs(t, err, zenodo.ErrUnauthorized)
	rec1, err := guest.GetRecord(ctx, string(pub1.ID))
	require.NoError(t, err, "records are public")
	assert.Equal(t, "1.0", rec1.Version())
}

// TestAgainstFakeConceptRedirect resolves concepts on a fake that redirects
// /api/records/<concept> to the latest version, as newer Zenodo does.
func TestAgainstFakeConceptRedirect(t *testing.T) {
	fake, ts := zenodotest.NewTestServer(t, zenodotest.WithConceptRedirect(), zenodotest.WithDOIPrefix("10.5072"))
	p1, err := fake.Publish(zenodotest.SeedRecord{Title: "Docker image a", Version: "1", Files: []zenodotest.SeedFile{{Name: "image.tar", Data: []byte("one")}}})
	require.NoError(t, err)
	p2, err := fake.Publish(zenodotest.SeedRecord{Title: "Docker image a", Version: "2", ConceptRecID: p1.ConceptRecID, Files: []zenodotest.SeedFile{{Name: "image.tar", Data: []byte("two")}}})
	require.NoError(t, err)
	c, err := zenodo.New(ts.URL, zenodo.WithRateLimit(0, 0))
	require.NoError(t, err)
	ctx := context.Background()
	for ref, want := range map[string]string{
		p1.ConceptDOI:        p2.RecID,
		p1.ConceptDOI + ":1": p1.RecID,
		p2.DOI:               p2.RecID,
		p1.DOI + ":latest":   p2.RecID,
	} {
		r, err := zenodo.ParseReference(ref)
		require.NoError(t, err)
		assert.True(t, r.Sandbox())
		rec, err := c.Resolve(ctx, r)
		require.NoError(t, err, ref)
		assert.Equal(t, want, rec.RecordID(), ref)
	}
	rc, err := c.Open(ctx, p1.RecID, "image.tar")
	require.NoError(t, err)
	b, err := io.ReadAll(rc)
	require.NoError(t, err)
	assert.Equal(t, "one", string(b))
	require.NoError(t, rc.Close())
}

// TestAgainstFakeRateLimit hammers a fake that allows 20 requests a minute
// from 50 goroutines: a client whose own budget is that limit sends all 20
// at once and never gets a 429, and one without its own budget recovers from the 429s by following
// Retry-After and the X-RateLimit headers.
func TestAgainstFakeRateLimit(t *testing.T) {
	ctx := context.Background()
	t.Run("own budget", func(t *testing.T) {
		fake, ts, reqs := newFake(t, zenodotest.WithRateLimit(20, 0))
		p, err := fake.Publish(zenodotest.SeedRecord{Title: "t", Version: "1", Files: []zenodotest.SeedFile{{Name: "f", Data: []byte("x")}}})
		require.NoError(t, err)
		c, err := zenodo.New(ts.URL, zenodo.WithRateLimit(20, 0))
		require.NoError(t, err)
		// Exactly the minute's budget fits before a deadline shorter than
		// the minute the 21st would wait.
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		var wg sync.WaitGroup
		var mu sync.Mutex
		var ok, limited int
		for range 50 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := c.GetRecord(dctx, p.RecID)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					ok++
				case errors.Is(err, zenodo.ErrRateLimited):
					limited++
				default:
					t.Errorf("unexpected: %v", err)
				}
			}()
		}
		wg.Wait()
		assert.Equal(t, 20, ok)
		assert.Equal(t, 30, limited)
		for _, r := range reqs.Requests() {
			assert.NotEqual(t, http.StatusTooManyRequests, r.Status)
		}
		assert.Len(t, reqs.Requests(), 20)
	})
	t.Run("server limit only", func(t *testing.T) {
		clk := zenodo.NewFakeClock()
		fake, ts, reqs := newFake(t, zenodotest.WithRateLimit(20, 0), zenodotest.WithClock(clk.Now))
		p, err := fake.Publish(zenodotest.SeedRecord{Title: "t", Version: "1", Files: []zenodotest.SeedFile{{Name: "f", Data: []byte("x")}}})
		require.NoError(t, err)
		rec := make(chan zenodo.Event, 1000)
		c, err := zenodo.New(ts.URL, zenodo.WithRateLimit(0, 0), zenodo.WithFakeClock(clk), zenodo.WithRetry(10, time.Millisecond),
			zenodo.WithObserver(func(e zenodo.Event) {
				if e.Kind == zenodo.EventRetry {
					rec <- e
				}
			}))
		require.NoError(t, err)
		var wg sync.WaitGroup
		for range 50 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := c.GetRecord(ctx, p.RecID)
				assert.NoError(t, err)
			}()
		}
		wg.Wait()
		var okCount, tooMany int
		for _, r := range reqs.Requests() {
			switch r.Status {
			case http.StatusOK:
				okCount++
			case http.StatusTooManyRequests:
				tooMany++
			}
		}
		assert.Equal(t, 50, okCount)
		assert.Positive(t, tooMany, "the server limit was hit")
		assert.NotEmpty(t, rec, "the client retried after the 429s")
		assert.Positive(t, len(clk.Sleeps()))
	})
}
