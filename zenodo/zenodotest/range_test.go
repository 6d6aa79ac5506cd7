package zenodotest

import (
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func seedOne(t *testing.T, s *Server, name string, data []byte) Published {
	t.Helper()
	pub, err := s.Publish(SeedRecord{Title: "ranges", Files: []SeedFile{{Name: name, Data: data}}})
	require.NoError(t, err)
	return pub
}

func TestRangeOnRecordsFilesRoute(t *testing.T) {
	s, ts := NewTestServer(t)
	data := pattern(1000)
	pub := seedOne(t, s, "layer.tar", data)
	c := newAPI(t, ts.URL)
	c.token = "" // downloads are public
	url := "/records/" + pub.RecID + "/files/layer.tar"

	for _, tc := range []struct {
		rng          string
		status       int
		contentRange string
		body         []byte
	}{
		{"bytes=0-0", http.StatusPartialContent, "bytes 0-0/1000", data[:1]},
		{"bytes=10-19", http.StatusPartialContent, "bytes 10-19/1000", data[10:20]},
		{"bytes=990-", http.StatusPartialContent, "bytes 990-999/1000", data[990:]},
		{"bytes=990-5000", http.StatusPartialContent, "bytes 990-999/1000", data[990:]},
		{"bytes=-180", http.StatusPartialContent, "bytes 820-999/1000", data[820:]},
		{"bytes=-5000", http.StatusPartialContent, "bytes 0-999/1000", data},
		{"bytes=1000-", http.StatusRequestedRangeNotSatisfiable, "bytes */1000", nil},
		{"bytes=-0", http.StatusRequestedRangeNotSatisfiable, "bytes */1000", nil},
		// Several ranges are answered with the whole file (documented choice).
		{"bytes=0-1,5-6", http.StatusOK, "", data},
		{"bytes=5-2", http.StatusOK, "", data},
		{"items=0-1", http.StatusOK, "", data},
		{"bytes=abc", http.StatusOK, "", data},
		{"", http.StatusOK, "", data},
	} {
		t.Run(tc.rng, func(t *testing.T) {
			var r resp
			if tc.rng == "" {
				r = c.do(http.MethodGet, url, nil)
			} else {
				r = c.do(http.MethodGet, url, nil, "Range", tc.rng)
			}
			assert.Equal(t, tc.status, r.status)
			assert.Equal(t, tc.contentRange, r.header.Get("Content-Range"))
			assert.Equal(t, strconv.Itoa(len(tc.body)), r.header.Get("Content-Length"))
			assert.Equal(t, len(tc.body), len(r.body))
			if tc.body != nil {
				assert.Equal(t, tc.body, r.body)
			}
			assert.Empty(t, r.header.Get("Accept-Ranges"), "Zenodo does not advertise ranges (fixture 90)")
		})
	}

	// If-Range: a stale date gets the whole file.
	stale := time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC).Format(http.TimeFormat)
	r := c.do(http.MethodGet, url, nil, "Range", "bytes=0-0", "If-Range", stale)
	assert.Equal(t, http.StatusOK, r.status)
	r = c.do(http.MethodGet, url, nil, "Range", "bytes=0-0", "If-Range", r.header.Get("Last-Modified"))
	assert.Equal(t, http.StatusPartialContent, r.status)

	// ?download=1 is an attachment, without it inline.
	assert.Equal(t, "inline", c.do(http.MethodGet, url, nil, "Range", "bytes=0-0").header.Get("Content-Disposition"))
	assert.Equal(t, "attachment; filename=layer.tar", c.do(http.MethodGet, url+"?download=1", nil).header.Get("Content-Disposition"))
	r = c.do(http.MethodGet, url+"?download=1", nil, "Range", "bytes=-10")
	assert.Equal(t, http.StatusPartialContent, r.status)
	assert.Equal(t, data[990:], r.body)

	// The old singular route redirects.
	r = c.noRedirect().do(http.MethodGet, "/record/"+pub.RecID+"/files/layer.tar?download=1", nil)
	assert.Equal(t, http.StatusMovedPermanently, r.status)
	assert.Equal(t, url+"?download=1", r.header.Get("Location"))

	// Unknown files and drafts: 404.
	assert.Equal(t, http.StatusNotFound, c.do(http.MethodGet, "/records/"+pub.RecID+"/files/nope", nil).status)
	assert.Equal(t, http.StatusNotFound, c.do(http.MethodGet, "/records/"+pub.ConceptRecID+"/files/layer.tar", nil).status)
}

func TestRangeIgnoredOnAPIContentRoute(t *testing.T) {
	s, ts := NewTestServer(t)
	data := pattern(1000)
	pub := seedOne(t, s, "layer.tar", data)
	c := newAPI(t, ts.URL)
	for _, rng := range []string{"bytes=0-0", "bytes=-10", "bytes=2000-"} {
		r := c.do(http.MethodGet, "/api/records/"+pub.RecID+"/files/layer.tar/content", nil, "Range", rng)
		assert.Equal(t, http.StatusOK, r.status, rng)
		assert.Empty(t, r.header.Get("Content-Range"))
		assert.Equal(t, data, r.body)
	}
	reqs := s.Requests()
	require.Len(t, reqs, 3)
	assert.Equal(t, Request{Method: "GET", Path: "/api/records/" + pub.RecID + "/files/layer.tar/content", Range: "bytes=0-0", Status: 200, Bytes: 1000}, withoutTime(reqs)[0])
}

func TestHEAD(t *testing.T) {
	for _, unreliable := range []bool{false, true} {
		var opts []Option
		if unreliable {
			opts = append(opts, WithUnreliableHEAD())
		}
		s, ts := NewTestServer(t, opts...)
		pub := seedOne(t, s, "cover.png", pattern(37572))
		c := newAPI(t, ts.URL)
		for _, u := range []string{"/records/" + pub.RecID + "/files/cover.png", "/api/records/" + pub.RecID + "/files/cover.png/content"} {
			r := c.do(http.MethodHead, u, nil)
			assert.Equal(t, http.StatusOK, r.status)
			assert.Equal(t, "image/png", r.header.Get("Content-Type"))
			assert.NotEmpty(t, r.header.Get("Last-Modified"))
			if unreliable {
				assert.Empty(t, r.header.Get("Content-Length"), u)
			} else {
				assert.Equal(t, "37572", r.header.Get("Content-Length"), u)
			}
		}
	}
}

func TestParseRange(t *testing.T) {
	for _, tc := range []struct {
		h      string
		size   int64
		want   byteRange
		status int
	}{
		{"bytes=0-0", 10, byteRange{0, 1}, 206},
		{"bytes = 2-4", 10, byteRange{2, 3}, 206},
		{"BYTES=2-", 10, byteRange{2, 8}, 206},
		{"bytes=-3", 10, byteRange{7, 3}, 206},
		{"bytes=-3", 0, byteRange{}, 416},
		{"bytes=0-", 0, byteRange{}, 416},
		{"bytes=10-", 10, byteRange{}, 416},
		{"bytes=-", 10, byteRange{}, 200},
		{"bytes=+1-2", 10, byteRange{}, 200},
		{"bytes=1-2,3-4", 10, byteRange{}, 200},
		{"bytes=99999999999999999999-", 10, byteRange{}, 200},
		{"bytes", 10, byteRange{}, 200},
	} {
		got, st := parseRange(tc.h, tc.size)
		assert.Equal(t, tc.status, st, tc.h)
		assert.Equal(t, tc.want, got, tc.h)
	}
}

func FuzzParseRange(f *testing.F) {
	for _, s := range []string{"bytes=0-0", "bytes=-180", "bytes=5-", "bytes=1-2,3-4", "bytes=9-1", "bytes=-0", ""} {
		f.Add(s, int64(100))
	}
	f.Fuzz(func(t *testing.T, h string, size int64) {
		if size < 0 {
			size = -size
			if size < 0 {
				size = 0
			}
		}
		br, st := parseRange(h, size)
		switch st {
		case http.StatusPartialContent:
			if br.start < 0 || br.length < 1 || br.start+br.length > size {
				t.Fatalf("parseRange(%q, %d) = %+v out of bounds", h, size, br)
			}
		case http.StatusOK, http.StatusRequestedRangeNotSatisfiable:
		default:
			t.Fatalf("parseRange(%q, %d): status %d", h, size, st)
		}
	})
}

// TestRequestLoggedBeforeBodyEnds: a client that has read a whole response
// finds the request in the log at once (tests count requests right after a
// read; the handler may return after the client saw the last byte).
func TestRequestLoggedBeforeBodyEnds(t *testing.T) {
	s, ts := NewTestServer(t)
	data := pattern(3 << 20)
	pub := seedOne(t, s, "layer.tar", data)
	url := ts.URL + "/records/" + pub.RecID + "/files/layer.tar"
	for i := range 50 {
		req, err := http.NewRequest(http.MethodGet, url, nil)
		require.NoError(t, err)
		req.Header.Set("Range", "bytes=0-"+strconv.Itoa(1000*(i+1)-1))
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		require.NoError(t, resp.Body.Close())
		require.Len(t, body, 1000*(i+1))
		reqs := s.Requests()
		require.Len(t, reqs, i+1, "request %d not logged when its body was read", i)
		assert.Equal(t, int64(1000*(i+1)), reqs[i].Bytes)
		assert.Equal(t, http.StatusPartialContent, reqs[i].Status)
	}
}
