package remote

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
)

// maxFillBackoff caps the wait between two attempts of a fill.
const maxFillBackoff = 10 * time.Second

// StartFill starts streaming the layer into the on-disk cache in the
// background: ONE sequential ranged request for the span from the first to
// the last member not cached yet, storing each member (verified) as it
// arrives. On-demand reads of members the stream has not reached go ahead
// with their own requests; the stream skips what they fetched. When the
// stream fails it is reopened where it stopped, after a backoff, until it
// fails WithFillRetries times in a row without progress.
//
// The fill keeps ctx's values (its logger) but not its cancellation: it runs
// until the layer is cached, it gives up, or the layer (or its Opener) is
// closed. StartFill does nothing when a fill was started before, when
// background fills are off (WithBackgroundFill), without an on-disk cache
// (WithCache), or when the archive is a local spool file.
func (l *Layer) StartFill(ctx context.Context) {
	if !l.o.fill || l.cache == nil {
		return
	}
	l.mu.Lock()
	if l.fillCh != nil || !l.usableLocked() {
		l.mu.Unlock()
		return
	}
	ch := make(chan struct{})
	l.fillCh = ch
	l.wg.Add(1)
	l.mu.Unlock()
	fctx := log.WithLogger(l.ctx, log.G(ctx).WithField("layer", l.desc.Digest))
	go func() {
		defer l.wg.Done()
		defer close(ch)
		start := time.Now()
		bytes, err := l.fill(fctx)
		l.mu.Lock()
		l.fillErr = err
		l.mu.Unlock()
		l.o.emit(Event{Kind: EventFillDone, Record: l.recID, Layer: l.desc.Digest, Fill: true, Bytes: bytes, Duration: time.Since(start), Err: err})
		if err != nil && !errors.Is(err, fs.ErrClosed) {
			log.G(fctx).WithError(err).Warn("remote: background fill of layer stopped")
		} else {
			log.G(fctx).WithField("bytes", bytes).Debug("remote: background fill of layer done")
		}
	}()
}

// WaitFill waits until the background fill started by StartFill ends and
// returns why it stopped early (nil when the layer is all cached, or when no
// fill was started).
func (l *Layer) WaitFill(ctx context.Context) error {
	l.mu.Lock()
	ch := l.fillCh
	l.mu.Unlock()
	if ch == nil {
		return nil
	}
	select {
	case <-ch:
	case <-ctx.Done():
		return context.Cause(ctx)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fillErr
}

// fill streams the uncached span of the layer, resuming on failures. It
// returns the bytes fetched.
func (l *Layer) fill(ctx context.Context) (int64, error) {
	ms := l.toc.Members
	if len(ms) == 0 {
		return 0, nil
	}
	all := make([]int, 0, len(ms))
	l.mu.Lock()
	for j := range ms {
		if l.hints[j] == hintUnknown {
			all = append(all, j)
		}
	}
	l.mu.Unlock()
	l.probeMembers(ctx, all)

	first, last := -1, -1
	l.mu.Lock()
	for j := range ms {
		if l.hints[j] != hintCached {
			if first < 0 {
				first = j
			}
			last = j
		}
	}
	l.mu.Unlock()
	if first < 0 {
		return 0, nil
	}
	var fetched int64
	pos, failures := first, 0
	backoff := l.o.fillBackoff
	for {
		// Skip what is cached by now at the start of the span.
		l.mu.Lock()
		for pos <= last && l.hints[pos] == hintCached {
			pos++
		}
		l.mu.Unlock()
		if pos > last {
			return fetched, nil
		}
		if err := ctx.Err(); err != nil {
			return fetched, fmt.Errorf("filling layer %s: %w", l.desc.Digest, fs.ErrClosed)
		}
		from := l.toc.Members[pos].Offset
		next, err := l.stream(ctx, pos, last, true)
		if next > pos {
			failures = 0
			backoff = l.o.fillBackoff
			fetched += l.toc.Members[next-1].Offset + l.toc.Members[next-1].Size - from
		}
		pos = next
		if err == nil {
			continue
		}
		if ctx.Err() != nil {
			return fetched, fmt.Errorf("filling layer %s: %w", l.desc.Digest, fs.ErrClosed)
		}
		failures++
		if failures >= l.o.fillRetries {
			return fetched, fmt.Errorf("filling layer %s: failed %d times at member %d: %w", l.desc.Digest, failures, pos,
				errors.Join(err, errdefs.ErrUnavailable))
		}
		log.G(ctx).WithError(err).WithFields(log.Fields{"member": pos, "delay": backoff}).Info("remote: background fill interrupted, resuming")
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return fetched, fmt.Errorf("filling layer %s: %w", l.desc.Digest, fs.ErrClosed)
		}
		backoff = min(2*backoff, maxFillBackoff)
	}
}
