package zenodotest

import (
	"bytes"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestPersistenceAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	s1, err := Open(WithDir(dir))
	require.NoError(t, err)
	ts1 := httptest.NewServer(s1)
	c := newAPI(t, ts1.URL)
	dep := c.create(imageMetadata("persistent", "1"))
	layer := pattern(70000)
	require.Equal(t, http.StatusCreated, c.put(dep, "layer", layer).status)
	require.Equal(t, http.StatusAccepted, c.action(dep, "publish").status)
	r := c.action(dep, "newversion")
	require.Equal(t, http.StatusCreated, r.status)
	draft := r.json(t)
	require.Equal(t, http.StatusCreated, c.put(draft, "extra", []byte("draft file")).status)
	before := c.do(http.MethodGet, "/api/records/"+idOf(t, dep), nil)
	require.Equal(t, http.StatusOK, before.status)
	ts1.Close()
	require.NoError(t, s1.Close())
	_, err = os.Stat(filepath.Join(dir, stateFile))
	require.NoError(t, err, "Close keeps a WithDir directory")

	s2, ts2 := NewTestServer(t, WithDir(dir))
	c2 := newAPI(t, ts2.URL)
	after := c2.do(http.MethodGet, "/api/records/"+idOf(t, dep), nil)
	require.Equal(t, http.StatusOK, after.status)
	assert.Equal(t, strings.ReplaceAll(string(before.body), ts1.URL, ts2.URL), string(after.body))
	assert.Equal(t, layer, c2.do(http.MethodGet, "/records/"+idOf(t, dep)+"/files/layer", nil).body)

	got := c2.do(http.MethodGet, "/api/deposit/depositions/"+idOf(t, draft), nil).json(t)
	assert.Len(t, got["files"], 2, "the open draft and its files survive")
	assert.Equal(t, []byte("draft file"), c2.do(http.MethodGet, "/api/records/"+idOf(t, draft)+"/draft/files/extra/content", nil).body)
	assert.Equal(t, http.StatusBadRequest, c2.do(http.MethodPost, "/api/deposit/depositions/"+idOf(t, dep)+"/actions/newversion", nil).status, "still one open draft")
	next := c2.create(nil)
	assert.Greater(t, idOf(t, next), idOf(t, draft), "ids keep growing")

	// Discarding the draft frees its own blob, not the shared one.
	require.Equal(t, http.StatusNoContent, c2.do(http.MethodDelete, "/api/deposit/depositions/"+idOf(t, draft), nil).status)
	blobs, err := os.ReadDir(filepath.Join(dir, blobDir))
	require.NoError(t, err)
	assert.Len(t, blobs, 1)
	_ = s2
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, stateFile), []byte("{"), 0o644))
	_, err := Open(WithDir(dir))
	require.Error(t, err)
	for _, o := range []Option{WithTokens(), WithDOIPrefix("10.5281/x"), WithMaxRecordSize(0), WithLatency(-1), WithClock(nil), WithTokens("a b")} {
		_, err := Open(o)
		assert.Error(t, err)
	}
	assert.Panics(t, func() { New(WithMaxFiles(-1)) })
}

// streamReader produces n pseudo-random bytes without holding them.
type streamReader struct {
	rng *rand.ChaCha8
	n   int64
}

func (s *streamReader) Read(p []byte) (int, error) {
	if s.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > s.n {
		p = p[:s.n]
	}
	_, _ = s.rng.Read(p)
	s.n -= int64(len(p))
	return len(p), nil
}

// TestLargeUploadBoundedMemory pushes and pulls 128 MiB through the fake and
// checks that neither side held it in memory.
func TestLargeUploadBoundedMemory(t *testing.T) {
	const size = 128 << 20
	_, ts := NewTestServer(t)
	c := newAPI(t, ts.URL)
	dep := c.create(imageMetadata("large", ""))

	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	before := ms.TotalAlloc

	h := md5.New()
	body := io.TeeReader(&streamReader{rng: rand.NewChaCha8([32]byte{1}), n: size}, h)
	req, err := http.NewRequest(http.MethodPut, link(t, dep, "bucket")+"/big.tar", body)
	require.NoError(t, err)
	req.ContentLength = size
	req.Header.Set("Authorization", "Bearer "+DefaultToken)
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	up := resp{status: res.StatusCode}
	up.body, _ = io.ReadAll(res.Body)
	res.Body.Close()
	require.Equal(t, http.StatusCreated, up.status, "%s", up.body)
	want := hex.EncodeToString(h.Sum(nil))
	assert.Equal(t, "md5:"+want, up.json(t)["checksum"])

	require.Equal(t, http.StatusAccepted, c.action(dep, "publish").status)
	res, err = http.Get(ts.URL + "/records/" + idOf(t, dep) + "/files/big.tar")
	require.NoError(t, err)
	h.Reset()
	n, err := io.Copy(h, res.Body)
	res.Body.Close()
	require.NoError(t, err)
	assert.EqualValues(t, size, n)
	assert.Equal(t, want, hex.EncodeToString(h.Sum(nil)))

	runtime.ReadMemStats(&ms)
	allocated := ms.TotalAlloc - before
	t.Logf("allocated %d KiB for %d MiB up and down", allocated>>10, size>>20)
	assert.Less(t, allocated, uint64(32<<20), "the fake must stream, not buffer")
}

func TestConcurrentUploadsNoBlobLeak(t *testing.T) {
	s, ts := NewTestServer(t)
	c := newAPI(t, ts.URL)
	dep := c.create(imageMetadata("concurrent", ""))
	bucket := link(t, dep, "bucket")
	errs := make(chan error, 12)
	for i := range 12 {
		go func() {
			key := "same"
			if i < 8 {
				key = "k" + strconv.Itoa(i)
			}
			req, err := http.NewRequest(http.MethodPut, bucket+"/"+key, bytes.NewReader(pattern(64<<10+i)))
			if err == nil {
				req.Header.Set("Authorization", "Bearer "+DefaultToken)
				var res *http.Response
				if res, err = http.DefaultClient.Do(req); err == nil {
					res.Body.Close()
					if res.StatusCode != http.StatusCreated {
						err = errors.New(res.Status)
					}
				}
			}
			errs <- err
		}()
	}
	for range 12 {
		require.NoError(t, <-errs)
	}
	got := c.do(http.MethodGet, link(t, dep, "self"), nil).json(t)
	assert.Len(t, got["files"], 9)
	blobs, err := os.ReadDir(filepath.Join(s.Dir(), blobDir))
	require.NoError(t, err)
	assert.Len(t, blobs, 9, "replaced blobs are removed")
	tmps, err := os.ReadDir(filepath.Join(s.Dir(), tmpDir))
	require.NoError(t, err)
	assert.Empty(t, tmps)
}
