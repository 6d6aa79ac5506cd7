package zenodo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func testData(n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// fileServer serves data at /records/1/files/image.tar with http.ServeContent
// (full Range support); misbehave may replace a response.
type fileServer struct {
	data      []byte
	mu        sync.Mutex
	ranges    []string
	misbehave func(n int, w http.ResponseWriter, r *http.Request) bool
}

func (f *fileServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/records/1/files/image.tar" {
		http.NotFound(w, r)
		return
	}
	f.mu.Lock()
	f.ranges = append(f.ranges, r.Header.Get("Range"))
	n := len(f.ranges)
	f.mu.Unlock()
	if r.Header.Get("Accept-Encoding") != "identity" {
		http.Error(w, "want identity encoding", http.StatusBadRequest)
		return
	}
	if f.misbehave != nil && f.misbehave(n, w, r) {
		return
	}
	http.ServeContent(w, r, "image.tar", time.Time{}, bytes.NewReader(f.data))
}

func (f *fileServer) Ranges() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.ranges...)
}

// truncate sends the headers of a full (or ranged) response but only the
// first keep bytes of its body, then ends the connection.
func truncateResponse(w http.ResponseWriter, r *http.Request, data []byte, keep int) {
	start := 0
	if rg := r.Header.Get("Range"); rg != "" {
		s, _, _ := strings.Cut(strings.TrimPrefix(rg, "bytes="), "-")
		start, _ = strconv.Atoi(s)
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, len(data)-1, len(data)))
		w.Header().Set("Content-Length", strconv.Itoa(len(data)-start))
		w.WriteHeader(http.StatusPartialContent)
	} else {
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		w.WriteHeader(http.StatusOK)
	}
	w.Write(data[start : start+keep])
}

func TestOpenResumes(t *testing.T) {
	data := testData(100 << 10)
	tests := []struct {
		name      string
		misbehave func(n int, w http.ResponseWriter, r *http.Request) bool
		ranges    []string
	}{
		{name: "clean", ranges: []string{""}},
		{
			name: "truncated twice",
			misbehave: func(n int, w http.ResponseWriter, r *http.Request) bool {
				if n <= 2 {
					truncateResponse(w, r, data, 10000)
					return true
				}
				return false
			},
			ranges: []string{"", "bytes=10000-", "bytes=20000-"},
		},
		{
			name: "server ignores Range on resume",
			misbehave: func(n int, w http.ResponseWriter, r *http.Request) bool {
				switch n {
				case 1:
					truncateResponse(w, r, data, 30000)
				default:
					w.Header().Set("Content-Length", strconv.Itoa(len(data)))
					w.Write(data)
				}
				return true
			},
			ranges: []string{"", "bytes=30000-"},
		},
		{
			name: "resume hits a 503 first",
			misbehave: func(n int, w http.ResponseWriter, r *http.Request) bool {
				switch n {
				case 1:
					truncateResponse(w, r, data, 5)
					return true
				case 2:
					w.WriteHeader(http.StatusServiceUnavailable)
					return true
				}
				return false
			},
			ranges: []string{"", "bytes=5-", "bytes=5-"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fsrv := &fileServer{data: data, misbehave: tt.misbehave}
			srv := newServer(t, fsrv)
			rec := &recorder{}
			c := newClient(t, srv.URL, WithObserver(rec.observe))
			rc, err := c.Open(context.Background(), "1", "image.tar")
			require.NoError(t, err)
			got, err := io.ReadAll(rc)
			require.NoError(t, err)
			require.NoError(t, rc.Close())
			require.NoError(t, rc.Close())
			assert.True(t, bytes.Equal(data, got), "content")
			assert.Equal(t, tt.ranges, fsrv.Ranges())
			_, err = rc.Read(make([]byte, 1))
			assert.ErrorIs(t, err, fs.ErrClosed)
			var transferred int64
			for _, e := range rec.all() {
				if e.Kind == EventTransfer {
					transferred += e.Bytes
				}
			}
			assert.GreaterOrEqual(t, transferred, int64(len(data)))
		})
	}
}

func TestOpenFailures(t *testing.T) {
	data := testData(1000)
	t.Run("gives up without progress", func(t *testing.T) {
		fsrv := &fileServer{data: data, misbehave: func(n int, w http.ResponseWriter, r *http.Request) bool {
			truncateResponse(w, r, data, 0)
			return true
		}}
		c := newClient(t, newServer(t, fsrv).URL, WithRetry(3, time.Millisecond))
		rc, err := c.Open(context.Background(), "1", "image.tar")
		require.NoError(t, err)
		defer rc.Close()
		_, err = io.ReadAll(rc)
		require.Error(t, err)
		assert.ErrorIs(t, err, io.ErrUnexpectedEOF)
		assert.True(t, errdefs.IsUnavailable(err))
		_, again := rc.Read(make([]byte, 1))
		assert.Equal(t, err, again, "errors are sticky")
	})
	t.Run("wrong Content-Range on resume", func(t *testing.T) {
		fsrv := &fileServer{data: data, misbehave: func(n int, w http.ResponseWriter, r *http.Request) bool {
			if n == 1 {
				truncateResponse(w, r, data, 10)
				return true
			}
			w.Header().Set("Content-Range", "bytes 0-999/1000")
			w.WriteHeader(http.StatusPartialContent)
			w.Write(data)
			return true
		}}
		c := newClient(t, newServer(t, fsrv).URL)
		rc, err := c.Open(context.Background(), "1", "image.tar")
		require.NoError(t, err)
		defer rc.Close()
		_, err = io.ReadAll(rc)
		assert.ErrorIs(t, err, ErrChecksumMismatch)
	})
	t.Run("size changed on resume", func(t *testing.T) {
		fsrv := &fileServer{data: data, misbehave: func(n int, w http.ResponseWriter, r *http.Request) bool {
			if n == 1 {
				truncateResponse(w, r, data, 10)
				return true
			}
			w.Header().Set("Content-Length", "5")
			w.Write(data[:5])
			return true
		}}
		c := newClient(t, newServer(t, fsrv).URL)
		rc, err := c.Open(context.Background(), "1", "image.tar")
		require.NoError(t, err)
		defer rc.Close()
		_, err = io.ReadAll(rc)
		assert.ErrorIs(t, err, ErrChecksumMismatch)
	})
	t.Run("not found", func(t *testing.T) {
		c := newClient(t, newServer(t, &fileServer{data: data}).URL)
		_, err := c.Open(context.Background(), "1", "other.tar")
		assert.ErrorIs(t, err, ErrNotFound)
	})
	t.Run("bad arguments", func(t *testing.T) {
		c := newClient(t, "http://127.0.0.1:1")
		_, err := c.Open(context.Background(), "x", "k")
		assert.ErrorIs(t, err, errdefs.ErrInvalidArgument)
		_, err = c.Open(context.Background(), "1", "")
		assert.ErrorIs(t, err, errdefs.ErrInvalidArgument)
		_, err = c.NewReaderAt(context.Background(), "1", "", 0)
		assert.ErrorIs(t, err, errdefs.ErrInvalidArgument)
		_, err = c.NewReaderAt(context.Background(), "01", "k", 0)
		assert.ErrorIs(t, err, errdefs.ErrInvalidArgument)
	})
	t.Run("stall then resume", func(t *testing.T) {
		fsrv := &fileServer{data: data, misbehave: func(n int, w http.ResponseWriter, r *http.Request) bool {
			if n == 1 {
				w.Header().Set("Content-Length", strconv.Itoa(len(data)))
				w.Write(data[:100])
				w.(http.Flusher).Flush()
				<-r.Context().Done()
				return true
			}
			return false
		}}
		c := newClient(t, newServer(t, fsrv).URL, WithTimeout(250*time.Millisecond))
		rc, err := c.Open(context.Background(), "1", "image.tar")
		require.NoError(t, err)
		defer rc.Close()
		got, err := io.ReadAll(rc)
		require.NoError(t, err)
		assert.Equal(t, data, got)
		assert.Equal(t, []string{"", "bytes=100-"}, fsrv.Ranges())
	})
}

func TestOpenCloseAbortsRead(t *testing.T) {
	data := testData(1000)
	fsrv := &fileServer{data: data, misbehave: func(n int, w http.ResponseWriter, r *http.Request) bool {
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		w.Write(data[:10])
		w.(http.Flusher).Flush()
		<-r.Context().Done()
		return true
	}}
	c := newClient(t, newServer(t, fsrv).URL)
	rc, err := c.Open(context.Background(), "1", "image.tar")
	require.NoError(t, err)
	buf := make([]byte, 100)
	n, err := io.ReadFull(rc, buf[:10])
	require.NoError(t, err)
	assert.Equal(t, 10, n)
	done := make(chan error, 1)
	go func() {
		_, err := rc.Read(buf)
		done <- err
	}()
	require.NoError(t, rc.Close())
	assert.ErrorIs(t, <-done, fs.ErrClosed)
}

func TestReaderAt(t *testing.T) {
	data := testData(64 << 10)
	fsrv := &fileServer{data: data}
	srv := newServer(t, fsrv)
	c := newClient(t, srv.URL)
	ra, err := c.NewReaderAt(context.Background(), "1", "image.tar", int64(len(data)))
	require.NoError(t, err)
	assert.Equal(t, int64(len(data)), ra.Size())
	assert.Equal(t, []string{"bytes=0-0"}, fsrv.Ranges())

	var wg sync.WaitGroup
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			off := int64(i * 4000)
			buf := make([]byte, 3000)
			n, err := ra.ReadAt(buf, off)
			assert.NoError(t, err)
			assert.Equal(t, 3000, n)
			assert.Equal(t, data[off:off+3000], buf)
		}()
	}
	wg.Wait()
	assert.Len(t, fsrv.Ranges(), 17, "one GET per ReadAt")

	// Reading across the end returns what exists and io.EOF.
	buf := make([]byte, 100)
	n, err := ra.ReadAt(buf, int64(len(data))-10)
	assert.Equal(t, 10, n)
	assert.ErrorIs(t, err, io.EOF)
	assert.Equal(t, data[len(data)-10:], buf[:10])
	n, err = ra.ReadAt(buf, int64(len(data)))
	assert.Zero(t, n)
	assert.ErrorIs(t, err, io.EOF)
	_, err = ra.ReadAt(buf, -1)
	assert.ErrorIs(t, err, errdefs.ErrInvalidArgument)
	// Whole file through io.SectionReader.
	all, err := io.ReadAll(io.NewSectionReader(ra, 0, ra.Size()))
	require.NoError(t, err)
	assert.Equal(t, data, all)

	require.NoError(t, ra.Close())
	_, err = ra.ReadAt(buf, 0)
	assert.ErrorIs(t, err, fs.ErrClosed)

	// Unknown size: taken from the probe.
	ra2, err := c.NewReaderAt(context.Background(), "1", "image.tar", -1)
	require.NoError(t, err)
	assert.Equal(t, int64(len(data)), ra2.Size())
	// Wrong expected size.
	_, err = c.NewReaderAt(context.Background(), "1", "image.tar", 5)
	assert.ErrorIs(t, err, ErrChecksumMismatch)
}

func TestReaderAtMisbehaving(t *testing.T) {
	data := testData(10000)
	open := func(t *testing.T, misbehave func(n int, w http.ResponseWriter, r *http.Request) bool, opts ...Option) (ReaderAt, *fileServer, error) {
		fsrv := &fileServer{data: data, misbehave: misbehave}
		c := newClient(t, newServer(t, fsrv).URL, opts...)
		ra, err := c.NewReaderAt(context.Background(), "1", "image.tar", int64(len(data)))
		return ra, fsrv, err
	}
	t.Run("probe answered 200", func(t *testing.T) {
		_, _, err := open(t, func(n int, w http.ResponseWriter, r *http.Request) bool {
			w.Write(data)
			return true
		})
		require.ErrorIs(t, err, ErrRangeUnsupported)
		assert.True(t, errdefs.IsNotImplemented(err))
	})
	t.Run("bad probe Content-Range", func(t *testing.T) {
		_, _, err := open(t, func(n int, w http.ResponseWriter, r *http.Request) bool {
			w.Header().Set("Content-Range", "bytes 0-9/10000")
			w.WriteHeader(http.StatusPartialContent)
			w.Write(data[:10])
			return true
		})
		require.ErrorIs(t, err, ErrRangeUnsupported)
	})
	t.Run("200 in the middle", func(t *testing.T) {
		ra, _, err := open(t, func(n int, w http.ResponseWriter, r *http.Request) bool {
			if n == 1 {
				return false
			}
			w.Write(data)
			return true
		})
		require.NoError(t, err)
		_, err = ra.ReadAt(make([]byte, 10), 50)
		assert.ErrorIs(t, err, ErrRangeUnsupported)
	})
	t.Run("short body is resumed", func(t *testing.T) {
		ra, fsrv, err := open(t, func(n int, w http.ResponseWriter, r *http.Request) bool {
			if n == 2 {
				w.Header().Set("Content-Range", "bytes 100-1099/10000")
				w.Header().Set("Content-Length", "1000")
				w.WriteHeader(http.StatusPartialContent)
				w.Write(data[100:400])
				return true
			}
			return false
		})
		require.NoError(t, err)
		buf := make([]byte, 1000)
		n, err := ra.ReadAt(buf, 100)
		require.NoError(t, err)
		assert.Equal(t, 1000, n)
		assert.Equal(t, data[100:1100], buf)
		assert.Equal(t, []string{"bytes=0-0", "bytes=100-1099", "bytes=400-1099"}, fsrv.Ranges())
	})
	t.Run("shorter range than asked is completed", func(t *testing.T) {
		ra, fsrv, err := open(t, func(n int, w http.ResponseWriter, r *http.Request) bool {
			if n == 2 {
				w.Header().Set("Content-Range", "bytes 0-499/10000")
				w.Header().Set("Content-Length", "500")
				w.WriteHeader(http.StatusPartialContent)
				w.Write(data[:500])
				return true
			}
			return false
		})
		require.NoError(t, err)
		buf := make([]byte, 1000)
		n, err := ra.ReadAt(buf, 0)
		require.NoError(t, err)
		assert.Equal(t, 1000, n)
		assert.Equal(t, data[:1000], buf)
		assert.Equal(t, []string{"bytes=0-0", "bytes=0-999", "bytes=500-999"}, fsrv.Ranges())
	})
	t.Run("wrong Content-Range", func(t *testing.T) {
		ra, _, err := open(t, func(n int, w http.ResponseWriter, r *http.Request) bool {
			if n == 2 {
				w.Header().Set("Content-Range", "bytes 1-10/10000")
				w.WriteHeader(http.StatusPartialContent)
				w.Write(data[1:11])
				return true
			}
			return false
		})
		require.NoError(t, err)
		_, err = ra.ReadAt(make([]byte, 10), 0)
		assert.ErrorIs(t, err, ErrChecksumMismatch)
	})
	t.Run("Content-Length disagrees with Content-Range", func(t *testing.T) {
		ra, _, err := open(t, func(n int, w http.ResponseWriter, r *http.Request) bool {
			if n == 2 {
				w.Header().Set("Content-Range", "bytes 0-9/10000")
				w.Header().Set("Content-Length", "5")
				w.WriteHeader(http.StatusPartialContent)
				w.Write(data[:5])
				return true
			}
			return false
		})
		require.NoError(t, err)
		_, err = ra.ReadAt(make([]byte, 10), 0)
		assert.ErrorIs(t, err, ErrChecksumMismatch)
	})
	t.Run("gives up", func(t *testing.T) {
		var calls atomic.Int32
		ra, _, err := open(t, func(n int, w http.ResponseWriter, r *http.Request) bool {
			if n == 1 {
				return false
			}
			calls.Add(1)
			w.Header().Set("Content-Range", "bytes 0-9/10000")
			w.Header().Set("Content-Length", "10")
			w.WriteHeader(http.StatusPartialContent)
			return true
		}, WithRetry(3, time.Millisecond))
		require.NoError(t, err)
		n, err := ra.ReadAt(make([]byte, 10), 0)
		assert.Zero(t, n)
		assert.ErrorIs(t, err, io.ErrUnexpectedEOF)
		assert.Equal(t, int32(3), calls.Load())
	})
	t.Run("ReadAtContext honours its context", func(t *testing.T) {
		ra, _, err := open(t, nil)
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err = ra.ReadAtContext(ctx, make([]byte, 10), 0)
		assert.ErrorIs(t, err, context.Canceled)
	})
	t.Run("empty file", func(t *testing.T) {
		fsrv := &fileServer{data: nil}
		c := newClient(t, newServer(t, fsrv).URL)
		ra, err := c.NewReaderAt(context.Background(), "1", "image.tar", 0)
		require.NoError(t, err)
		assert.Zero(t, ra.Size())
		n, err := ra.ReadAt(make([]byte, 1), 0)
		assert.Zero(t, n)
		assert.ErrorIs(t, err, io.EOF)
	})
	t.Run("416 with a size", func(t *testing.T) {
		_, _, err := open(t, func(n int, w http.ResponseWriter, r *http.Request) bool {
			w.Header().Set("Content-Range", "bytes */10000")
			w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
			return true
		})
		require.Error(t, err)
		assert.False(t, errors.Is(err, ErrRangeUnsupported))
	})
}

func TestParseContentRange(t *testing.T) {
	tests := []struct {
		in                 string
		first, last, total int64
		ok                 bool
	}{
		{"bytes 0-0/37093571", 0, 0, 37093571, true},
		{"bytes 37093391-37093570/37093571", 37093391, 37093570, 37093571, true},
		{"bytes 5-9/*", 5, 9, -1, true},
		{"bytes */0", -1, -1, 0, true},
		{"bytes */*", 0, 0, 0, false},
		{"bytes 9-5/10", 0, 0, 0, false},
		{"bytes 0-10/10", 0, 0, 0, false},
		{"bytes -1-5/10", 0, 0, 0, false},
		{"bytes 0-5", 0, 0, 0, false},
		{"bytes 05/10", 0, 0, 0, false},
		{"items 0-5/10", 0, 0, 0, false},
		{"bytes 0-5/x", 0, 0, 0, false},
		{"", 0, 0, 0, false},
	}
	for _, tt := range tests {
		f, l, tot, ok := parseContentRange(tt.in)
		assert.Equal(t, tt.ok, ok, tt.in)
		if ok {
			assert.Equal(t, []int64{tt.first, tt.last, tt.total}, []int64{f, l, tot}, tt.in)
		}
	}
}
