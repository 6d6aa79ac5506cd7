package lazy

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/containerd/errdefs"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/fs"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/seekable"
)

const (
	// maxTimedOut bounds the timed-out reads a layer remembers.
	maxTimedOut = 256
	// failFastWindow is how long a timed-out read makes reads of its range
	// fail at once. The kernel's retries come within microseconds; a reader
	// trying again later (Zenodo may be back) must reach the network.
	failFastWindow = time.Second
)

// ErrRecentTimeout is wrapped by the error of a read that fails at once
// because a read of the same range timed out moments ago (a second at
// most). It matches errdefs.ErrUnavailable.
var ErrRecentTimeout error = recentTimeoutError{}

type recentTimeoutError struct{}

func (recentTimeoutError) Error() string {
	return "a read of this range timed out moments ago"
}
func (recentTimeoutError) Unwrap() error { return errdefs.ErrUnavailable }

// timedOut remembers the reads of one layer that timed out, so that the
// kernel's immediate retries of the same pages (a failed readahead is
// retried page by page) fail at once instead of each waiting out the read
// timeout again: an uncached read with Zenodo unreachable then fails with
// EIO after one read timeout, not three or more.
type timedOut struct {
	window time.Duration
	now    func() time.Time

	mu    sync.Mutex
	reads []timedOutRead // oldest first
}

type timedOutRead struct {
	name     string
	off, end int64
	at       time.Time
}

func newTimedOut(window time.Duration) *timedOut {
	return &timedOut{window: window, now: time.Now}
}

// observe records the reads that timed out: an fs.WithObserver hook, called
// before the reader gets its EIO.
func (t *timedOut) observe(e fs.Event) {
	if e.Err == nil || !errors.Is(e.Err, fs.ErrReadTimeout) || e.Size <= 0 {
		return
	}
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.pruneLocked(now)
	if len(t.reads) >= maxTimedOut {
		t.reads = t.reads[1:]
	}
	t.reads = append(t.reads, timedOutRead{name: e.Name, off: e.Offset, end: e.Offset + int64(e.Size), at: now})
}

// recent reports whether the byte at off of the file name was in a read
// that timed out within the window.
func (t *timedOut) recent(name string, off int64) bool {
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.pruneLocked(now)
	for _, r := range t.reads {
		if r.name == name && off >= r.off && off < r.end {
			return true
		}
	}
	return false
}

func (t *timedOut) pruneLocked(now time.Time) {
	i := 0
	for i < len(t.reads) && now.Sub(t.reads[i].at) >= t.window {
		i++
	}
	t.reads = t.reads[i:]
}

// guardedLayer is the fs.Layer a mount reads: the shared layer, failing at
// once the reads of ranges that just timed out.
type guardedLayer struct {
	Layer
	t *timedOut
}

// ReadAt implements fs.Layer.
func (g guardedLayer) ReadAt(ctx context.Context, e *seekable.Entry, p []byte, off int64) (int, error) {
	if g.t.recent(e.Name, off) {
		return 0, fmt.Errorf("reading %s at %d: %w", e.Name, off, ErrRecentTimeout)
	}
	return g.Layer.ReadAt(ctx, e, p, off)
}
