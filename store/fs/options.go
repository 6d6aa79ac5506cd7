package fs

import (
	"errors"
	"fmt"
	"time"

	"github.com/containerd/errdefs"
)

// DefaultReadTimeout bounds one read of file contents when WithReadTimeout is
// not given.
const DefaultReadTimeout = 30 * time.Second

// ErrReadTimeout is wrapped by Event.Err when Layer.ReadAt did not answer
// within the read timeout; the reader got EIO.
var ErrReadTimeout = errors.New("layer read timed out")

// ErrInterrupted is wrapped by Event.Err when the kernel interrupted a read
// (the reading process got a signal) before Layer.ReadAt answered; the reader
// got EINTR.
var ErrInterrupted = errors.New("read interrupted")

// Event describes one read of file contents served through Layer.ReadAt.
// Lookups, stat, readdir, readlink and xattrs never reach the Layer and are
// not reported.
type Event struct {
	// Name is the file's path inside the layer, as in the TOC.
	Name string
	// Offset and Size are the range the kernel asked for, clamped to the
	// file's size.
	Offset int64
	Size   int
	// Bytes is how many bytes were returned to the kernel (0 on error).
	Bytes int
	// Latency is the time from the kernel's request to the answer.
	Latency time.Duration
	// Err is nil on success; otherwise the error from Layer.ReadAt, or one
	// wrapping ErrReadTimeout, ErrInterrupted or io.ErrUnexpectedEOF.
	Err error
}

// Option configures Mount.
type Option func(*options) error

type options struct {
	readTimeout time.Duration
	debug       bool
	observer    func(Event)
	userXattr   bool
}

// WithReadTimeout bounds each read of file contents: a Layer.ReadAt that has
// not answered after d fails the read with EIO (its context is cancelled, and
// a ReadAt that ignores its context is abandoned, never waited for). The
// default is DefaultReadTimeout (30s); d must be positive.
func WithReadTimeout(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return fmt.Errorf("read timeout %v must be positive: %w", d, errdefs.ErrInvalidArgument)
		}
		o.readTimeout = d
		return nil
	}
}

// WithDebug logs every FUSE request and answer at debug level (go-fuse's
// protocol trace). The default is false.
func WithDebug(on bool) Option {
	return func(o *options) error {
		o.debug = on
		return nil
	}
}

// WithObserver calls fn after every read of file contents, for metrics. fn is
// called synchronously from FUSE request goroutines, possibly concurrently:
// it must be quick and safe for concurrent use. The default is no observer.
func WithObserver(fn func(Event)) Option {
	return func(o *options) error {
		o.observer = fn
		return nil
	}
}

// WithUserXattr marks opaque directories with the xattr user.overlay.opaque
// instead of trusted.overlay.opaque, for an overlayfs mounted with the
// "userxattr" option (unprivileged overlay in a user namespace). Only one of
// the two is ever served: the other would be copied up by overlayfs as an
// ordinary xattr and leak into the container's view and its diffs. The
// default is false (trusted.overlay.opaque, what containerd's overlay
// snapshotter expects).
func WithUserXattr(on bool) Option {
	return func(o *options) error {
		o.userXattr = on
		return nil
	}
}

func makeOptions(opts []Option) (*options, error) {
	o := &options{readTimeout: DefaultReadTimeout}
	for _, opt := range opts {
		if opt == nil {
			continue
		}
		if err := opt(o); err != nil {
			return nil, err
		}
	}
	return o, nil
}
