package donodo

import (
	"context"
	"io"
	"net/http"
	"path"
	"strings"
	"sync"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
)

// Progress receives the progress of transfers (uploads, downloads, archive
// conversion) to show them, for instance as progress bars. Implementations
// must be safe for concurrent use.
type Progress interface {
	// Track starts reporting on a transfer named name of total bytes (-1
	// when unknown) and returns its tracker.
	Track(name string, total int64) Tracker
}

// Tracker reports on one transfer.
type Tracker interface {
	// SetCurrent sets how many bytes are done. It may go back (a retry
	// starting over).
	SetCurrent(n int64)
	// Done ends the transfer: finished when err is nil, abandoned otherwise.
	// Calls after the first are ignored.
	Done(err error)
}

// NoProgress reports nothing; it is the default Progress.
var NoProgress Progress = noProgress{}

type noProgress struct{}

func (noProgress) Track(string, int64) Tracker { return noTracker{} }

type noTracker struct{}

func (noTracker) SetCurrent(int64) {}
func (noTracker) Done(error)       {}

// Bars is a Progress drawn as progress bars (one per transfer) on a
// terminal. Close it when done.
type Bars struct {
	p     *mpb.Progress
	w     io.Writer
	close sync.Once

	mu     sync.Mutex
	bars   []*barTracker
	closed bool
}

// NewBars returns a Progress that draws bars on w, which should be a
// terminal. The bars stop when ctx is done or Close is called.
func NewBars(ctx context.Context, w io.Writer) *Bars {
	return &Bars{p: mpb.NewWithContext(ctx, mpb.WithOutput(w), mpb.WithWidth(32), mpb.WithAutoRefresh()), w: w}
}

// Track implements Progress.
func (b *Bars) Track(name string, total int64) Tracker {
	const nameWidth = 28
	if len(name) > nameWidth {
		name = name[:nameWidth-1] + "…"
	}
	unknown := total < 0
	if unknown {
		total = 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return noTracker{}
	}
	bar, err := b.p.Add(total, mpb.BarStyle().Build(),
		mpb.PrependDecorators(decor.Name(name, decor.WCSyncSpaceR)),
		mpb.AppendDecorators(
			decor.CountersKibiByte("% .1f / % .1f", decor.WCSyncSpace),
			decor.OnComplete(decor.AverageSpeed(decor.SizeB1024(0), " % .1f", decor.WCSyncSpace), " done"),
		),
	)
	if err != nil {
		return noTracker{}
	}
	t := &barTracker{bar: bar, unknown: unknown}
	b.bars = append(b.bars, t)
	return t
}

// Writer returns a writer whose lines are printed above the bars (or
// straight to the output once the bars are closed).
func (b *Bars) Writer() io.Writer { return barsWriter{b} }

type barsWriter struct{ b *Bars }

func (w barsWriter) Write(p []byte) (int, error) {
	n, err := w.b.p.Write(p)
	if err != nil {
		return w.b.w.Write(p)
	}
	return n, nil
}

// Close abandons the bars still running and waits until the last state of
// every bar is drawn. Later calls do nothing; bars tracked after Close are
// not drawn.
func (b *Bars) Close() {
	b.close.Do(func() {
		b.mu.Lock()
		bars := b.bars
		b.bars = nil
		b.closed = true
		b.mu.Unlock()
		for _, t := range bars {
			t.Done(context.Canceled)
		}
		b.p.Wait()
	})
}

type barTracker struct {
	bar     *mpb.Bar
	unknown bool
	once    sync.Once
}

func (t *barTracker) SetCurrent(n int64) {
	if t.unknown && n > t.bar.Current() {
		t.bar.SetTotal(n+1, false)
	}
	t.bar.SetCurrent(n)
}

func (t *barTracker) Done(err error) {
	t.once.Do(func() {
		if err != nil {
			t.bar.Abort(false)
			return
		}
		t.bar.SetTotal(-1, true)
	})
}

// countingReader reports the bytes read through it to a Tracker.
type countingReader struct {
	r io.Reader
	t Tracker
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if n > 0 {
		c.n += int64(n)
		c.t.SetCurrent(c.n)
	}
	return n, err
}

// MinTrackedDownload is the smallest response body NewHTTPClient shows.
const MinTrackedDownload = 1 << 20

// NewHTTPClient returns an HTTP client (for zenodo.WithHTTPClient) that
// reports every download of at least MinTrackedDownload bytes (a whole
// file, or a layer read by range) to p, named by the file and range. Its
// transport is a clone of http.DefaultTransport keeping up to 16 idle
// connections per host, as the zenodo client's own default.
func NewHTTPClient(p Progress) *http.Client {
	base := http.DefaultTransport.(*http.Transport).Clone()
	base.MaxIdleConnsPerHost = 16
	if p == nil || p == NoProgress {
		return &http.Client{Transport: base}
	}
	return &http.Client{Transport: &progressTransport{base: base, p: p}}
}

type progressTransport struct {
	base http.RoundTripper
	p    Progress
}

func (t *progressTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err != nil || req.Method != http.MethodGet || resp.ContentLength < MinTrackedDownload ||
		(resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusPartialContent) {
		return resp, err
	}
	name := path.Base(req.URL.Path)
	if cr := resp.Header.Get("Content-Range"); cr != "" {
		name += " " + strings.TrimPrefix(cr, "bytes ")
	}
	tr := t.p.Track(name, resp.ContentLength)
	resp.Body = &trackedBody{ReadCloser: resp.Body, t: tr, size: resp.ContentLength}
	return resp, nil
}

// trackedBody reports a response body's progress; it is done at EOF, and
// abandoned when closed early or on an error.
type trackedBody struct {
	io.ReadCloser
	t    Tracker
	size int64
	n    int64
}

func (b *trackedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.n += int64(n)
		b.t.SetCurrent(b.n)
	}
	switch {
	case err == io.EOF:
		b.t.Done(nil)
	case err != nil:
		b.t.Done(err)
	}
	return n, err
}

func (b *trackedBody) Close() error {
	if b.n < b.size {
		b.t.Done(io.ErrUnexpectedEOF)
	} else {
		b.t.Done(nil)
	}
	return b.ReadCloser.Close()
}
