package ctxio

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// shortWriter accepts one byte less than it is given.
type shortWriter struct{}

func (shortWriter) Write(p []byte) (int, error) { return max(len(p)-1, 0), nil }

// cancelAfterRead cancels a context once it has been read from.
type cancelAfterRead struct {
	r      io.Reader
	cancel context.CancelCauseFunc
}

func (c cancelAfterRead) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.cancel(errStop)
	return n, err
}

var errStop = errors.New("stop")

func TestCopy(t *testing.T) {
	data := strings.Repeat("zenodo", 100_000) // several reads

	var out bytes.Buffer
	n, err := Copy(context.Background(), &out, strings.NewReader(data))
	require.NoError(t, err)
	assert.Equal(t, int64(len(data)), n)
	assert.Equal(t, data, out.String())

	_, err = Copy(context.Background(), shortWriter{}, strings.NewReader(data))
	assert.ErrorIs(t, err, io.ErrShortWrite)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	n, err = Copy(ctx, io.Discard, strings.NewReader(data))
	assert.ErrorIs(t, err, context.Canceled)
	assert.Zero(t, n, "nothing read once ctx is done")

	// A cancellation with a cause stops after the read under way, and says
	// both.
	cctx, ccancel := context.WithCancelCause(context.Background())
	n, err = Copy(cctx, io.Discard, cancelAfterRead{strings.NewReader(data), ccancel})
	assert.ErrorIs(t, err, context.Canceled)
	assert.ErrorIs(t, err, errStop)
	assert.Equal(t, int64(bufSize), n)
}
