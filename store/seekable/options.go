package seekable

import (
	"fmt"
	"runtime"

	"github.com/containerd/errdefs"
	"github.com/klauspost/compress/gzip"
)

// Option configures Convert.
type Option func(*options) error

type options struct {
	minMember   int64
	maxMember   int64
	concurrency int
	level       int
}

// Defaults of the options.
const (
	DefaultMinMemberSize = 64 << 10
	DefaultMaxMemberSize = 4 << 20
	DefaultLevel         = 6
)

func makeOptions(opts []Option) (*options, error) {
	o := &options{
		minMember:   DefaultMinMemberSize,
		maxMember:   DefaultMaxMemberSize,
		concurrency: runtime.GOMAXPROCS(0),
		level:       DefaultLevel,
	}
	for _, opt := range opts {
		if err := opt(o); err != nil {
			return nil, err
		}
	}
	if o.minMember > o.maxMember {
		return nil, fmt.Errorf("minimum member size %d is above the maximum %d: %w", o.minMember, o.maxMember, errdefs.ErrInvalidArgument)
	}
	return o, nil
}

// WithMinMemberSize sets the member size, in uncompressed bytes, from which
// Convert starts a new member at the content start of the next regular file.
// 0 gives every non-empty regular file its own member(s). The default value
// is 64 KiB (DefaultMinMemberSize).
func WithMinMemberSize(n int64) Option {
	return func(o *options) error {
		if n < 0 {
			return fmt.Errorf("minimum member size %d: %w", n, errdefs.ErrInvalidArgument)
		}
		o.minMember = n
		return nil
	}
}

// WithMaxMemberSize sets the uncompressed size at which Convert always cuts a
// member, wherever in the tar that falls. It must be in [1, MaxMemberUSize].
// The default value is 4 MiB (DefaultMaxMemberSize).
func WithMaxMemberSize(n int64) Option {
	return func(o *options) error {
		if n < 1 || n > MaxMemberUSize {
			return fmt.Errorf("maximum member size %d out of range [1, %d]: %w", n, MaxMemberUSize, errdefs.ErrInvalidArgument)
		}
		o.maxMember = n
		return nil
	}
}

// WithConcurrency sets how many members Convert compresses at once. At most
// n+2 members are in flight, so memory use is about n+2 times the maximum
// member size plus their compressed forms. The default value is
// runtime.GOMAXPROCS(0).
func WithConcurrency(n int) Option {
	return func(o *options) error {
		if n < 1 {
			return fmt.Errorf("concurrency %d: %w", n, errdefs.ErrInvalidArgument)
		}
		o.concurrency = n
		return nil
	}
}

// WithLevel sets the gzip compression level, from gzip.StatelessCompression
// (-3) to gzip.BestCompression (9), as github.com/klauspost/compress/gzip
// defines them. The default value is 6 (DefaultLevel).
func WithLevel(l int) Option {
	return func(o *options) error {
		if l < gzip.StatelessCompression || l > gzip.BestCompression {
			return fmt.Errorf("compression level %d out of range [%d, %d]: %w", l, gzip.StatelessCompression, gzip.BestCompression, errdefs.ErrInvalidArgument)
		}
		o.level = l
		return nil
	}
}
