package lazy

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/fs"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/seekable"
)

// countingLayer counts reads and answers them with zeros.
type countingLayer struct {
	fakeLayer
	reads int
}

func (l *countingLayer) ReadAt(ctx context.Context, e *seekable.Entry, p []byte, off int64) (int, error) {
	l.reads++
	clear(p)
	return len(p), nil
}

func TestTimedOutReadsFailFast(t *testing.T) {
	now := time.Unix(1000, 0)
	to := newTimedOut(3 * time.Second)
	to.now = func() time.Time { return now }
	inner := &countingLayer{}
	g := guardedLayer{Layer: inner, t: to}
	e := &seekable.Entry{Name: "data/f", Type: seekable.TypeReg, Size: 1 << 20}
	read := func(off int64) error {
		_, err := g.ReadAt(t.Context(), e, make([]byte, 4096), off)
		return err
	}

	require.NoError(t, read(0))
	to.observe(fs.Event{Name: "data/f", Offset: 0, Size: 128 << 10, Err: fmt.Errorf("x: %w", fs.ErrReadTimeout)})
	to.observe(fs.Event{Name: "data/g", Offset: 0, Size: 4096, Err: errors.New("not a timeout")})
	to.observe(fs.Event{Name: "data/g", Offset: 0, Size: 4096})

	tests := []struct {
		name string
		off  int64
		file string
		fail bool
	}{
		{"retry of the first page", 0, "data/f", true},
		{"a later page of the timed-out read", 64 << 10, "data/f", true},
		{"past the timed-out read", 128 << 10, "data/f", false},
		{"another file", 0, "data/g", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := inner.reads
			_, err := g.ReadAt(t.Context(), &seekable.Entry{Name: tt.file, Type: seekable.TypeReg, Size: 1 << 20}, make([]byte, 4096), tt.off)
			if tt.fail {
				require.ErrorIs(t, err, ErrRecentTimeout)
				require.ErrorIs(t, err, errdefs.ErrUnavailable)
				assert.Equal(t, before, inner.reads, "not passed on")
				return
			}
			require.NoError(t, err)
			assert.Equal(t, before+1, inner.reads)
		})
	}

	now = now.Add(3 * time.Second)
	require.NoError(t, read(0), "the window is over: tried again")

	for i := range 2 * maxTimedOut {
		to.observe(fs.Event{Name: fmt.Sprint(i), Size: 1, Err: fs.ErrReadTimeout})
	}
	assert.Len(t, to.reads, maxTimedOut, "bounded")
}
