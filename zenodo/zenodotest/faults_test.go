package zenodotest

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// rawGet fetches url on a fresh connection (so that the transport never
// retries a reset request) and returns what arrived.
func rawGet(t *testing.T, url string) (*http.Response, []byte, error) {
	t.Helper()
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	res, err := (&http.Client{Transport: tr}).Get(url)
	if err != nil {
		return nil, nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res, b, err
}

func TestFaultStatuses(t *testing.T) {
	s, ts := NewTestServer(t)
	pub := seedOne(t, s, "f", pattern(10))
	c := newAPI(t, ts.URL)
	rec := "/api/records/" + pub.RecID

	s.InjectFault(Fault{Method: "PUT", Status: 500}) // never hits a GET
	s.InjectFault(Fault{PathContains: "/api/records/", Status: 503, Times: 2})
	for i := 0; i < 2; i++ {
		r := c.do(http.MethodGet, rec, nil)
		assert.Equal(t, http.StatusServiceUnavailable, r.status)
		assert.Equal(t, map[string]any{"status": float64(503), "message": msgUnavailable}, r.json(t))
		assert.NotEmpty(t, r.header.Get("X-RateLimit-Limit"))
	}
	assert.Equal(t, http.StatusOK, c.do(http.MethodGet, rec, nil).status)
	assert.Equal(t, 1, s.PendingFaults())
	s.ClearFaults()

	s.InjectFault(Fault{Status: 500})
	r := c.do(http.MethodGet, rec, nil)
	assert.Equal(t, http.StatusInternalServerError, r.status)
	body := r.json(t)
	assert.Equal(t, msgInternal, body["message"])
	assert.Len(t, body["error_id"], 32)

	s.InjectFault(Fault{Status: 502})
	r = c.do(http.MethodGet, rec, nil)
	assert.Equal(t, http.StatusBadGateway, r.status)
	assert.Equal(t, "text/html", r.header.Get("Content-Type"))
	assert.Contains(t, string(r.body), "<center>nginx</center>")
	assert.Empty(t, r.header.Get("X-RateLimit-Limit"), "nginx's own pages lack the application's headers")
	assert.Empty(t, r.header.Get("Retry-After"))

	s.InjectFault(Fault{Status: 503, RetryAfter: time.Second})
	r = c.do(http.MethodGet, rec, nil)
	assert.Equal(t, http.StatusServiceUnavailable, r.status)
	assert.Equal(t, "1", r.header.Get("Retry-After"))

	s.InjectFault(Fault{Status: 429, RetryAfter: 6500 * time.Millisecond})
	r = c.do(http.MethodGet, rec, nil)
	assert.Equal(t, http.StatusTooManyRequests, r.status)
	assert.Equal(t, "7", r.header.Get("Retry-After"))

	// Faults match in order of injection.
	s.InjectFault(Fault{PathContains: "/files/", Status: 504})
	s.InjectFault(Fault{PathContains: "/records/", Status: 500})
	assert.Equal(t, http.StatusInternalServerError, c.do(http.MethodGet, rec, nil).status)
	assert.Equal(t, http.StatusGatewayTimeout, c.do(http.MethodGet, "/records/"+pub.RecID+"/files/f", nil).status)

	s.InjectFault(Fault{Delay: time.Millisecond})
	assert.Equal(t, http.StatusOK, c.do(http.MethodGet, rec, nil).status)
	assert.Zero(t, s.PendingFaults())
}

func TestFaultResetAndTruncate(t *testing.T) {
	s, ts := NewTestServer(t)
	data := pattern(100000)
	pub := seedOne(t, s, "layer", data)
	url := ts.URL + "/records/" + pub.RecID + "/files/layer"

	for _, tc := range []struct {
		name  string
		fault Fault
		got   int64 // body bytes the client receives at most
	}{
		{"reset after 1000", Fault{ResetAfter: 1000}, 1000},
		{"reset after headers", Fault{ResetAfter: BeforeBody}, 0},
		{"truncate at 1000", Fault{Truncate: 1000}, 1000},
		{"truncate before body", Fault{Truncate: BeforeBody}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s.ResetRequests()
			tc.fault.PathContains = "/files/layer"
			s.InjectFault(tc.fault)
			res, body, err := rawGet(t, url)
			require.Error(t, err, "the client must see the cut")
			assert.LessOrEqual(t, int64(len(body)), tc.got)
			assert.Equal(t, data[:len(body)], body)
			if res != nil {
				assert.Equal(t, "100000", res.Header.Get("Content-Length"), "the full length is announced")
			}
			if strings.HasPrefix(tc.name, "truncate") {
				assert.ErrorIs(t, err, io.ErrUnexpectedEOF)
				assert.EqualValues(t, tc.got, len(body))
			}
			reqs := s.Requests()
			require.Len(t, reqs, 1)
			assert.Equal(t, http.StatusOK, reqs[0].Status)
			assert.Equal(t, tc.got, reqs[0].Bytes)
		})
	}
	// The next request is served in full.
	_, body, err := rawGet(t, url)
	require.NoError(t, err)
	assert.Equal(t, data, body)
}

func TestFaultDrop(t *testing.T) {
	s, ts := NewTestServer(t)
	s.InjectFault(Fault{Drop: true})
	_, _, err := rawGet(t, ts.URL+"/api/records")
	require.Error(t, err)
	reqs := s.Requests()
	require.Len(t, reqs, 1)
	assert.Zero(t, reqs[0].Status)
	assert.Zero(t, reqs[0].Bytes)
}

func TestFaultWrongChecksum(t *testing.T) {
	s, ts := NewTestServer(t)
	c := newAPI(t, ts.URL)
	dep := c.create(imageMetadata("corrupted", ""))
	data := pattern(5000)
	s.InjectFault(Fault{Method: "PUT", PathContains: "/api/files/", WrongChecksum: true})
	r := c.put(dep, "blob", data)
	require.Equal(t, http.StatusCreated, r.status)
	sum := r.json(t)["checksum"].(string)
	assert.NotEqual(t, "md5:"+md5hex(data), sum)

	// What was stored is what the checksum says: the client must notice
	// the mismatch and upload again.
	got := c.do(http.MethodGet, link(t, dep, "bucket")+"/blob", nil)
	assert.Equal(t, sum, "md5:"+md5hex(got.body))
	r = c.put(dep, "blob", data)
	assert.Equal(t, "md5:"+md5hex(data), r.json(t)["checksum"])
}

func TestBandwidthShapingKeepsContent(t *testing.T) {
	s, ts := NewTestServer(t, WithBandwidth(4<<20), WithLatency(time.Millisecond))
	data := pattern(256 << 10)
	pub := seedOne(t, s, "layer", data)
	c := newAPI(t, ts.URL)
	r := c.do(http.MethodGet, "/records/"+pub.RecID+"/files/layer", nil, "Range", "bytes=1000-")
	assert.Equal(t, http.StatusPartialContent, r.status)
	assert.Equal(t, data[1000:], r.body)
	dep := c.create(imageMetadata("shaped", ""))
	r = c.put(dep, "up", data)
	assert.Equal(t, "md5:"+md5hex(data), r.json(t)["checksum"])
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func TestClientLeavesDuringLatency(t *testing.T) {
	logged := make(chan string, 1)
	s, ts := NewTestServer(t, WithLatency(time.Hour), WithRequestLogWriter(writerFunc(func(p []byte) (int, error) {
		logged <- string(p)
		return len(p), nil
	})))
	entered := make(chan struct{})
	s.testHookLatency = func() { close(entered) }
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ts.URL+"/api/records", nil)
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() {
		res, err := http.DefaultClient.Do(req)
		if err == nil {
			res.Body.Close()
		}
		done <- err
	}()
	<-entered
	cancel()
	require.ErrorIs(t, <-done, context.Canceled)
	line := <-logged
	assert.Contains(t, line, `"status":499`)
	assert.Equal(t, statusClientClosed, s.Requests()[0].Status)
}
