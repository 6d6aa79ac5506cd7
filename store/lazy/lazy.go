package lazy

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/opencontainers/go-digest"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/fs"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/snapshot"
)

// FileSystem is the snapshotter's FileSystem (snapshot.FileSystem) over
// Zenodo records, with a Close for the end of the process.
type FileSystem interface {
	snapshot.FileSystem
	// Close unmounts every layer still mounted and closes the layers'
	// readers (stopping their fills). The snapshotter's own Close unmounts
	// its layers first, so this only catches what it left behind.
	Close() error
}

// Option configures NewFileSystem.
type Option func(*options) error

type options struct {
	fill        bool
	readTimeout time.Duration
	metrics     *Metrics
	fsOpts      []fs.Option
}

// WithBackgroundFill says whether Mount starts the layer's background fill
// (one sequential request streaming the whole layer into the on-disk
// cache). Tests that count on-demand bytes switch it off. The default is
// true.
func WithBackgroundFill(on bool) Option {
	return func(o *options) error { o.fill = on; return nil }
}

// WithReadTimeout bounds each read of file contents through a mount: a read
// that got no data within d fails with EIO (Zenodo unreachable and the
// data not cached), never hangs. For a moment after such a timeout
// (a second, or d if shorter), reads of the same range fail at once
// (ErrRecentTimeout): the kernel retries a failed readahead page by page,
// which would otherwise make one read(2) wait several timeouts. The default is fs.DefaultReadTimeout (30s); d must be
// positive.
func WithReadTimeout(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return fmt.Errorf("read timeout %v: %w", d, errdefs.ErrInvalidArgument)
		}
		o.readTimeout = d
		return nil
	}
}

// WithMetrics reports reads, mounts and mounted layers to m (see
// NewMetrics). The default is no metrics.
func WithMetrics(m *Metrics) Option {
	return func(o *options) error { o.metrics = m; return nil }
}

// WithFSOptions passes more options to every fs.Mount (fs.WithDebug,
// fs.WithUserXattr, ...). The read timeout and observer are set by
// WithReadTimeout and WithMetrics, and override these. The default is none.
func WithFSOptions(opts ...fs.Option) Option {
	return func(o *options) error { o.fsOpts = append(o.fsOpts, opts...); return nil }
}

// mounted is what the filesystem keeps of one mount: *fs.Mounted.
type mounted interface {
	Check() error
	Unmount() error
}

// mountFunc mounts a layer: fs.Mount, replaced in tests that run without
// root.
type mountFunc func(ctx context.Context, mountpoint string, l fs.Layer, opts ...fs.Option) (mounted, error)

func fuseMount(ctx context.Context, mountpoint string, l fs.Layer, opts ...fs.Option) (mounted, error) {
	return fs.Mount(ctx, mountpoint, l, opts...)
}

// shared is one layer reader, shared by every mount of its TOC digest.
type shared struct {
	toc   digest.Digest
	ready chan struct{} // closed once layer or err is set
	layer Layer
	err   error
	refs  int       // mounts using it, and callers waiting for it
	slow  *timedOut // its reads that timed out just now
}

type mountEntry struct {
	m     mounted
	layer *shared
}

type fileSystem struct {
	opener Opener
	o      options
	mount  mountFunc

	mu     sync.Mutex
	layers map[digest.Digest]*shared
	mounts map[string]*mountEntry // by clean absolute mountpoint
	closed bool
}

var _ FileSystem = (*fileSystem)(nil)

// NewFileSystem returns the FileSystem that mounts the layers opener finds
// (RemoteOpener, or Hosts of several).
func NewFileSystem(opener Opener, opts ...Option) (FileSystem, error) {
	if opener == nil {
		return nil, fmt.Errorf("creating lazy filesystem: nil Opener: %w", errdefs.ErrInvalidArgument)
	}
	o := options{fill: true, readTimeout: fs.DefaultReadTimeout}
	for _, opt := range opts {
		if opt == nil {
			continue
		}
		if err := opt(&o); err != nil {
			return nil, fmt.Errorf("creating lazy filesystem: %w", err)
		}
	}
	return &fileSystem{
		opener: opener,
		o:      o,
		mount:  fuseMount,
		layers: map[digest.Digest]*shared{},
		mounts: map[string]*mountEntry{},
	}, nil
}

// Mount implements snapshot.FileSystem: it mounts the layer the labels
// locate (snapshot.LabelDOI and snapshot.LabelTOCDigest) on mountpoint and
// starts its background fill. Missing or malformed labels are an error
// wrapping errdefs.ErrInvalidArgument; a record or layer that cannot be
// found one wrapping errdefs.ErrNotFound. Mounting a mountpoint this
// filesystem already serves is a no-op while that mount is healthy.
func (f *fileSystem) Mount(ctx context.Context, mountpoint string, labels map[string]string) (retErr error) {
	start := time.Now()
	defer func() { f.o.metrics.mountDone(time.Since(start), retErr) }()

	doi, tocLabel := labels[snapshot.LabelDOI], labels[snapshot.LabelTOCDigest]
	if tocLabel == "" {
		return fmt.Errorf("mounting lazy layer on %s: no %s label: %w", mountpoint, snapshot.LabelTOCDigest, errdefs.ErrInvalidArgument)
	}
	toc, err := digest.Parse(tocLabel)
	if err != nil {
		return fmt.Errorf("mounting lazy layer on %s: label %s=%q: %v: %w", mountpoint, snapshot.LabelTOCDigest, tocLabel, err, errdefs.ErrInvalidArgument)
	}
	if doi == "" {
		return fmt.Errorf("mounting lazy layer %s on %s: no %s label: %w", toc, mountpoint, snapshot.LabelDOI, errdefs.ErrInvalidArgument)
	}
	mp, err := cleanMountpoint(mountpoint)
	if err != nil {
		return err
	}
	ctx = log.WithLogger(ctx, log.G(ctx).WithFields(log.Fields{"doi": doi, "toc": toc, "mountpoint": mp}))

	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return fmt.Errorf("mounting lazy layer on %s: filesystem closed: %w", mp, errdefs.ErrUnavailable)
	}
	old := f.mounts[mp]
	f.mu.Unlock()
	if old != nil {
		if err := old.m.Check(); err == nil {
			log.G(ctx).Debug("lazy layer already mounted")
			return nil
		}
		log.G(ctx).Info("lazy layer mount is broken, mounting it again")
		if err := f.Unmount(ctx, mp); err != nil {
			return fmt.Errorf("mounting lazy layer on %s again: %w", mp, err)
		}
	}

	s, err := f.acquire(ctx, doi, toc)
	if err != nil {
		return fmt.Errorf("mounting lazy layer on %s: %w", mp, err)
	}
	observe := f.o.metrics.FSObserver()
	fsOpts := append(slices.Clone(f.o.fsOpts), fs.WithReadTimeout(f.o.readTimeout), fs.WithObserver(func(e fs.Event) {
		s.slow.observe(e)
		observe(e)
	}))
	m, err := f.mount(ctx, mp, guardedLayer{Layer: s.layer, t: s.slow}, fsOpts...)
	if err != nil {
		f.release(ctx, s)
		return fmt.Errorf("mounting lazy layer %s of %s on %s: %w", toc, doi, mp, err)
	}

	f.mu.Lock()
	if f.closed || f.mounts[mp] != nil {
		// Closed, or another Mount of mp won the race: undo ours.
		closed := f.closed
		f.mu.Unlock()
		uerr := m.Unmount()
		f.release(ctx, s)
		if closed {
			return errors.Join(fmt.Errorf("mounting lazy layer on %s: filesystem closed: %w", mp, errdefs.ErrUnavailable), uerr)
		}
		return errors.Join(fmt.Errorf("mounting lazy layer on %s: mounted concurrently: %w", mp, errdefs.ErrAlreadyExists), uerr)
	}
	f.mounts[mp] = &mountEntry{m: m, layer: s}
	f.updateGaugesLocked()
	f.mu.Unlock()

	if f.o.fill {
		s.layer.StartFill(ctx)
	}
	log.G(ctx).Debug("lazy layer mounted")
	return nil
}

// Check implements snapshot.FileSystem: the mount on mountpoint still
// serves (it does not read from Zenodo). A mountpoint this filesystem does
// not serve is an error wrapping errdefs.ErrNotFound.
func (f *fileSystem) Check(ctx context.Context, mountpoint string, labels map[string]string) error {
	mp, err := cleanMountpoint(mountpoint)
	if err != nil {
		return err
	}
	f.mu.Lock()
	e := f.mounts[mp]
	f.mu.Unlock()
	if e == nil {
		return fmt.Errorf("checking lazy layer on %s: not mounted: %w", mp, errdefs.ErrNotFound)
	}
	if err := e.m.Check(); err != nil {
		return fmt.Errorf("checking lazy layer on %s: %w", mp, err)
	}
	return nil
}

// Unmount implements snapshot.FileSystem. The layer's reader is closed once
// its last mount is gone. A mountpoint this filesystem does not serve is an
// error wrapping errdefs.ErrNotFound.
func (f *fileSystem) Unmount(ctx context.Context, mountpoint string) error {
	mp, err := cleanMountpoint(mountpoint)
	if err != nil {
		return err
	}
	f.mu.Lock()
	e := f.mounts[mp]
	delete(f.mounts, mp)
	f.updateGaugesLocked()
	f.mu.Unlock()
	if e == nil {
		return fmt.Errorf("unmounting lazy layer on %s: not mounted: %w", mp, errdefs.ErrNotFound)
	}
	if err := e.m.Unmount(); err != nil {
		// The FUSE server may still serve: keep its reader open.
		log.G(ctx).WithError(err).WithField("mountpoint", mp).Warn("unmounting lazy layer failed; keeping its reader open")
		return fmt.Errorf("unmounting lazy layer on %s: %w", mp, err)
	}
	f.release(ctx, e.layer)
	return nil
}

// Close implements FileSystem.
func (f *fileSystem) Close() error {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil
	}
	f.closed = true
	mps := make([]string, 0, len(f.mounts))
	for mp := range f.mounts {
		mps = append(mps, mp)
	}
	f.mu.Unlock()
	// Deepest first, in case mountpoints nest.
	sort.Sort(sort.Reverse(sort.StringSlice(mps)))
	var errs []error
	for _, mp := range mps {
		if err := f.Unmount(context.Background(), mp); err != nil && !errdefs.IsNotFound(err) {
			errs = append(errs, err)
		}
	}
	f.mu.Lock()
	var rest []Layer
	for toc, s := range f.layers {
		select {
		case <-s.ready:
			if s.layer != nil {
				rest = append(rest, s.layer)
			}
		default:
		}
		delete(f.layers, toc)
	}
	f.updateGaugesLocked()
	f.mu.Unlock()
	for _, l := range rest {
		errs = append(errs, l.Close())
	}
	return errors.Join(errs...)
}

// acquire returns the shared reader of the layer with TOC digest toc,
// opening it (once, whoever asks at the same time) through the Opener.
// Each successful acquire must be paired with a release.
func (f *fileSystem) acquire(ctx context.Context, doi string, toc digest.Digest) (*shared, error) {
	f.mu.Lock()
	s := f.layers[toc]
	owner := s == nil
	if owner {
		s = &shared{toc: toc, ready: make(chan struct{}), slow: newTimedOut(min(f.o.readTimeout, failFastWindow))}
		f.layers[toc] = s
	}
	s.refs++
	f.mu.Unlock()

	if owner {
		l, err := f.opener.OpenLayer(ctx, doi, toc)
		if err == nil && l == nil {
			err = fmt.Errorf("opening layer %s of %s: no layer: %w", toc, doi, errdefs.ErrNotFound)
		}
		f.mu.Lock()
		s.layer, s.err = l, err
		if err != nil && f.layers[toc] == s {
			// Later callers try again.
			delete(f.layers, toc)
		}
		f.updateGaugesLocked()
		f.mu.Unlock()
		close(s.ready)
	} else {
		select {
		case <-s.ready:
		case <-ctx.Done():
			f.release(ctx, s)
			return nil, fmt.Errorf("waiting for layer %s of %s: %w", toc, doi, context.Cause(ctx))
		}
	}
	if s.err != nil {
		f.release(ctx, s)
		return nil, s.err
	}
	return s, nil
}

// release drops one reference to s, closing its reader after the last one.
func (f *fileSystem) release(ctx context.Context, s *shared) {
	f.mu.Lock()
	s.refs--
	last := s.refs == 0 && s.err == nil && s.layer != nil
	if last && f.layers[s.toc] == s {
		delete(f.layers, s.toc)
	}
	f.updateGaugesLocked()
	f.mu.Unlock()
	if last {
		if err := s.layer.Close(); err != nil {
			log.G(ctx).WithError(err).WithField("toc", s.toc).Debug("closing lazy layer reader")
		}
	}
}

func (f *fileSystem) updateGaugesLocked() {
	f.o.metrics.setMounts(len(f.mounts), len(f.layers))
}

func cleanMountpoint(mp string) (string, error) {
	if mp == "" {
		return "", fmt.Errorf("empty mountpoint: %w", errdefs.ErrInvalidArgument)
	}
	abs, err := filepath.Abs(mp)
	if err != nil {
		return "", fmt.Errorf("resolving mountpoint %s: %w", mp, err)
	}
	return abs, nil
}
