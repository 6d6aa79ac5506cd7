//go:build linux

package snapshot

import (
	"errors"
	"fmt"

	"github.com/containerd/errdefs"

	"github.com/containerd/containerd/v2/plugins/snapshots/overlay"
)

// Opt configures NewSnapshotter.
type Opt func(*config) error

type config struct {
	overlayOpts        []overlay.Opt
	observers          []func(Event)
	allowInvalidMounts bool
}

func newConfig(opts []Opt) (*config, error) {
	c := &config{allowInvalidMounts: true}
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o(c); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// WithOverlayOpts passes options to containerd's overlay snapshotter, which
// handles every snapshot that is not a lazy layer. The default is none (the
// overlay snapshotter's own defaults).
//
// overlay.AsynchronousRemove keeps its meaning (directories, and the FUSE
// mounts of removed remote layers' leftovers, are reclaimed by Cleanup);
// overlay.WithUpperdirLabel makes the upperdir label visible to callers (it is
// used internally either way and hidden unless asked for).
func WithOverlayOpts(opts ...overlay.Opt) Opt {
	return func(c *config) error {
		for _, o := range opts {
			if o == nil {
				return fmt.Errorf("nil overlay option: %w", errdefs.ErrInvalidArgument)
			}
		}
		c.overlayOpts = append(c.overlayOpts, opts...)
		return nil
	}
}

// WithObserver registers fn to be told about every remote-layer outcome
// (mounted, fallback, restored, restore failed, unmounted): the hook for
// metrics. fn is called synchronously, possibly from several goroutines at
// once; it must be quick, safe for concurrent use and must not call back into
// the snapshotter. Several observers may be registered; the default is none.
func WithObserver(fn func(Event)) Opt {
	return func(c *config) error {
		if fn == nil {
			return fmt.Errorf("nil observer: %w", errdefs.ErrInvalidArgument)
		}
		c.observers = append(c.observers, fn)
		return nil
	}
}

// WithAllowInvalidMountsOnRestart says what NewSnapshotter does when a
// committed remote snapshot cannot be mounted again at start-up. With allow
// true (the default) it logs, emits EventRestoreFailed and keeps going: the
// snapshot is marked unavailable, every later Prepare, View or Mounts that
// needs it first retries the mount and, if that fails again, returns an
// error wrapping errdefs.ErrUnavailable; it can still be removed. With allow
// false NewSnapshotter fails instead (stargz-snapshotter's default).
func WithAllowInvalidMountsOnRestart(allow bool) Opt {
	return func(c *config) error {
		c.allowInvalidMounts = allow
		return nil
	}
}

// EventKind names what happened to a remote layer.
type EventKind string

const (
	// EventMounted: Prepare mounted a lazy layer, committed it and answered
	// ErrAlreadyExists.
	EventMounted EventKind = "mounted"
	// EventFallback: a Zenodo layer became a normal snapshot that containerd
	// fills by a full download (no TOC label, mount failure, ...). Event.Err
	// says why.
	EventFallback EventKind = "fallback"
	// EventRestored: a committed remote snapshot was mounted again, at
	// start-up or on first use after a failed restore.
	EventRestored EventKind = "restored"
	// EventRestoreFailed: a committed remote snapshot could not be mounted
	// again; it is unavailable until a retry succeeds. Event.Err says why.
	EventRestoreFailed EventKind = "restore-failed"
	// EventUnmounted: a remote snapshot's lazy layer was unmounted (Remove,
	// Cleanup or Close).
	EventUnmounted EventKind = "unmounted"
)

// Event describes one remote-layer outcome, for WithObserver.
type Event struct {
	Kind EventKind
	// Key is the active key passed to Prepare (empty for restores/unmounts).
	Key string
	// Name is the remote snapshot's name, RemoteName(chain ID, parent).
	Name string
	// Mountpoint is the directory the lazy layer is (or was to be) mounted on.
	Mountpoint string
	// DOI and TOCDigest are the layer's labels, when present.
	DOI, TOCDigest string
	// Err is the cause of a fallback or a failed restore.
	Err error
}

// ErrNoTOC is the Event.Err of a fallback for a Zenodo layer (it has
// LabelDOI) that carries no LabelTOCDigest, so it cannot be read lazily.
var ErrNoTOC = errors.New("zenodo layer has no TOC digest label")

// Stats counts remote-layer outcomes since NewSnapshotter.
type Stats struct {
	Mounted         uint64 // lazy layers mounted by Prepare
	Fallbacks       uint64 // Zenodo layers that became normal snapshots
	Restored        uint64 // remote snapshots mounted again
	RestoreFailures uint64 // remote snapshots that could not be mounted again
	Unmounted       uint64 // lazy layers unmounted
}

// StatsReporter is implemented by the snapshotter NewSnapshotter returns:
// sn.(snapshot.StatsReporter).Stats() reads its counters.
type StatsReporter interface {
	Stats() Stats
}
