//go:build linux

// Package snapshot is the containerd snapshotter that makes lazy (remote)
// layers appear as ordinary committed snapshots. It knows only a small
// FileSystem interface; everything that is not lazy (writable layers, layers
// containerd unpacks itself, mounts) is containerd's overlay snapshotter,
// which this package wraps rather than re-implements.
//
// The remote-snapshot protocol (as in stargz-snapshotter's snapshot.go):
// containerd's unpacker calls Prepare with the label
// "containerd.io/snapshot.ref" set to the layer's chain ID plus the layer
// descriptor's "containerd.io/snapshot/..." annotations. When those include
// LabelTOCDigest, the snapshotter creates the active snapshot, commits it as
// RemoteName(chain ID, parent) with the Prepare labels plus LabelRemote, mounts
// the lazy layer on that snapshot's directory and answers an error wrapping
// errdefs.ErrAlreadyExists; containerd then finds the committed snapshot by
// its snapshot.ref label and parent and skips the download. If the mount
// fails the caller gets a normal active snapshot (a "fallback": containerd
// downloads and unpacks the layer) and the log, the observers and Stats say
// so. Prepare never answers ErrAlreadyExists for a lazy layer without the
// snapshot.ref label (containerd 1.6 would turn it into an unknown error).
//
// Where the lazy layer is mounted: on the overlay snapshotter's own
// per-snapshot directory, <root>/snapshots/<id>/fs. It is never computed
// here: the overlay snapshotter is always built with overlay.WithUpperdirLabel
// and reports that directory in the label
// "containerd.io/snapshot/overlay.upperdir" of Stat, for active and committed
// snapshots alike (the label is hidden from callers unless they asked for it).
// On Prepare the reported directory is cross-checked against the mounts the
// overlay snapshotter returned (bind source or upperdir= option); if they
// disagree nothing is mounted and the layer falls back. The overlay
// snapshotter uses the same directory as lowerdir (or bind source) for every
// snapshot built on top, so children see the lazy layer with no further work.
//
// The committed snapshot is made before the mount, so the overlay
// snapshotter's Commit measures an empty directory (usage ~0, like
// stargz-snapshotter) instead of walking the whole lazy tree through FUSE.
//
// The snapshotter never advertises the "rebase" capability (containerd would
// then unpack layers in parallel, without parents, and never ask for remote
// snapshots).
package snapshot

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/moby/sys/mountinfo"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/plugins/snapshots/overlay"
)

const (
	// LabelTOCDigest is the layer annotation (and snapshot label) holding the
	// digest of the layer's TOC; its presence makes a layer lazy.
	LabelTOCDigest = "containerd.io/snapshot/zenodo/toc.digest"
	// LabelDOI is the layer annotation holding the DOI of the Zenodo record
	// the layer lives in.
	LabelDOI = "containerd.io/snapshot/zenodo/doi"
	// LabelUncompressedSize is the layer annotation holding the layer's
	// uncompressed size in bytes.
	LabelUncompressedSize = "containerd.io/snapshot/zenodo/uncompressed-size"
	// LabelRemote marks a committed snapshot whose content is a lazy layer
	// mounted by the FileSystem. Its value is RemoteLabelValue. Only this
	// package sets it: callers' attempts to set or drop it are ignored.
	LabelRemote = "containerd.io/snapshot/remote"
	// RemoteLabelValue is the value of LabelRemote (as stargz-snapshotter's).
	RemoteLabelValue = "remote snapshot"

	// upperdirLabel is the overlay snapshotter's (unexported) label naming a
	// snapshot's own directory, enabled with overlay.WithUpperdirLabel.
	upperdirLabel = "containerd.io/snapshot/overlay.upperdir"
	// logKeyPrepared is logged on every remote Prepare: "true" when the layer
	// was mounted lazily, "false" when it fell back (stargz's key).
	logKeyPrepared = "remote-snapshot-prepared"
	// zenodoLabelPrefix prefixes the labels that locate a lazy layer.
	zenodoLabelPrefix = "containerd.io/snapshot/zenodo/"

	restoreConcurrency = 4
	checkConcurrency   = 8
)

// FileSystem mounts lazy layers. It is all this package knows about them.
type FileSystem interface {
	// Mount mounts the lazy layer described by labels (the snapshot's
	// labels: LabelTOCDigest, LabelDOI, ...) on mountpoint, an existing empty
	// directory. ctx bounds the call, not the life of the mount. If Mount
	// fails, mountpoint must be left unmounted.
	Mount(ctx context.Context, mountpoint string, labels map[string]string) error
	// Check reports whether the layer mounted on mountpoint is healthy. It is
	// called each time a snapshot built on it is prepared, viewed or
	// mounted; an error makes those calls fail with errdefs.ErrUnavailable,
	// so it should fail only when the mount cannot serve reads at all (not
	// merely because the network is slow or down and reads of uncached data
	// would fail).
	Check(ctx context.Context, mountpoint string, labels map[string]string) error
	// Unmount unmounts the layer mounted on mountpoint.
	Unmount(ctx context.Context, mountpoint string) error
}

// remoteRef names a committed remote snapshot and where its layer lives.
type remoteRef struct {
	name       string
	mountpoint string
	labels     map[string]string
}

// remoteState is what this process knows about one remote snapshot's mount.
type remoteState struct {
	name    string
	labels  map[string]string
	mounted bool // false: a remount failed; retried on use
	removed bool // the snapshot is gone but unmounting failed; retried by Cleanup
}

type snapshotter struct {
	inner        snapshots.Snapshotter
	cleaner      snapshots.Cleaner
	fs           FileSystem
	root         string
	asyncRemove  bool
	showUpperdir bool
	allowInvalid bool
	observers    []func(Event)
	logCtx       context.Context // carries the constructor's logger for Close

	targetLocks keyedLocks // by snapshot name: remote Prepare vs Remove of it
	mountLocks  keyedLocks // by mountpoint: Mount/remount

	mu      sync.Mutex
	remotes map[string]*remoteState // by mountpoint

	mountedN, fallbackN, restoredN, restoreFailN, unmountedN atomic.Uint64

	closeOnce sync.Once
	closeErr  error
}

var (
	_ snapshots.Snapshotter = (*snapshotter)(nil)
	_ snapshots.Cleaner     = (*snapshotter)(nil)
	_ StatsReporter         = (*snapshotter)(nil)
)

// NewSnapshotter returns a snapshotter storing its data under root (the
// overlay snapshotter's layout: metadata.db and snapshots/) that mounts lazy
// layers with fs. Before returning it detaches mounts left under
// root/snapshots by a previous process and mounts every committed remote
// snapshot again (see WithAllowInvalidMountsOnRestart for failures). Close
// unmounts every lazy layer.
func NewSnapshotter(ctx context.Context, root string, fs FileSystem, opts ...Opt) (_ snapshots.Snapshotter, retErr error) {
	if fs == nil {
		return nil, fmt.Errorf("creating snapshotter: nil FileSystem: %w", errdefs.ErrInvalidArgument)
	}
	if root == "" {
		return nil, fmt.Errorf("creating snapshotter: empty root: %w", errdefs.ErrInvalidArgument)
	}
	cfg, err := newConfig(opts)
	if err != nil {
		return nil, fmt.Errorf("creating snapshotter: %w", err)
	}
	root, err = filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("creating snapshotter: resolving %s: %w", root, err)
	}

	s := &snapshotter{
		fs:           fs,
		root:         root,
		allowInvalid: cfg.allowInvalidMounts,
		observers:    cfg.observers,
		logCtx:       log.WithLogger(context.Background(), log.G(ctx)),
		remotes:      map[string]*remoteState{},
	}
	ovOpts := slices.Clone(cfg.overlayOpts)
	for _, o := range ovOpts {
		s.asyncRemove = s.asyncRemove || sameOpt(o, overlay.AsynchronousRemove)
		s.showUpperdir = s.showUpperdir || sameOpt(o, overlay.WithUpperdirLabel)
	}
	// Removal is always asynchronous inside: Remove unmounts a lazy layer
	// between dropping the metadata and reclaiming its directory.
	ovOpts = append(ovOpts, overlay.AsynchronousRemove, overlay.WithUpperdirLabel)
	inner, err := overlay.NewSnapshotter(root, ovOpts...)
	if err != nil {
		return nil, fmt.Errorf("creating overlay snapshotter in %s: %w", root, err)
	}
	cleaner, ok := inner.(snapshots.Cleaner)
	if !ok {
		inner.Close()
		return nil, fmt.Errorf("overlay snapshotter cannot clean up: %w", errdefs.ErrNotImplemented)
	}
	s.inner, s.cleaner = inner, cleaner
	defer func() {
		if retErr != nil {
			if err := s.Close(); err != nil {
				log.G(ctx).WithError(err).Warn("closing snapshotter after failed start")
			}
		}
	}()

	// The overlay snapshotter holds its metadata.db lock from here on, so
	// anything mounted under root/snapshots is a leftover of a dead process.
	s.detachStaleMounts(ctx)
	if err := s.restore(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// sameOpt reports whether a is the top-level function b (overlay options
// carry no other identity).
func sameOpt(a, b overlay.Opt) bool {
	return reflect.ValueOf(a).Pointer() == reflect.ValueOf(b).Pointer()
}

// Stats implements StatsReporter.
func (s *snapshotter) Stats() Stats {
	return Stats{
		Mounted:         s.mountedN.Load(),
		Fallbacks:       s.fallbackN.Load(),
		Restored:        s.restoredN.Load(),
		RestoreFailures: s.restoreFailN.Load(),
		Unmounted:       s.unmountedN.Load(),
	}
}

// Stat returns the info of a snapshot by name or key.
func (s *snapshotter) Stat(ctx context.Context, key string) (snapshots.Info, error) {
	info, err := s.inner.Stat(ctx, key)
	return s.public(info), err
}

// Update updates a snapshot's labels. On remote snapshots the labels that
// locate the lazy layer (LabelRemote, snapshot.ref and the
// "containerd.io/snapshot/zenodo/" ones) cannot be changed or dropped; on
// other snapshots LabelRemote cannot be set.
func (s *snapshotter) Update(ctx context.Context, info snapshots.Info, fieldpaths ...string) (snapshots.Info, error) {
	cur, err := s.inner.Stat(ctx, info.Name)
	if err != nil {
		return snapshots.Info{}, err
	}
	info.Labels = maps.Clone(info.Labels)
	if info.Labels == nil {
		info.Labels = map[string]string{}
	}
	delete(info.Labels, upperdirLabel)
	keep := map[string]string{}
	if isRemote(cur.Labels) {
		keep = locatingLabels(cur.Labels)
	}
	if len(fieldpaths) == 0 || slices.Contains(fieldpaths, "labels") {
		delete(info.Labels, LabelRemote)
		maps.Copy(info.Labels, keep)
	} else {
		for _, fp := range fieldpaths {
			k, ok := strings.CutPrefix(fp, "labels.")
			if !ok {
				continue
			}
			if v, ok := keep[k]; ok {
				info.Labels[k] = v
			} else if k == LabelRemote {
				delete(info.Labels, k)
			}
		}
	}
	out, err := s.inner.Update(ctx, info, fieldpaths...)
	return s.public(out), err
}

// Usage returns the resources taken by a snapshot. A remote snapshot takes
// (almost) none: its data lives in the FileSystem's cache.
func (s *snapshotter) Usage(ctx context.Context, key string) (snapshots.Usage, error) {
	return s.inner.Usage(ctx, key)
}

// Mounts returns the mounts of an active or view snapshot, after checking
// the remote layers below it.
func (s *snapshotter) Mounts(ctx context.Context, key string) ([]mount.Mount, error) {
	if s.hasRemotes() {
		info, err := s.inner.Stat(ctx, key)
		if err != nil {
			return nil, err
		}
		if err := s.ensureAvailable(ctx, info.Parent); err != nil {
			return nil, fmt.Errorf("mounts of %q: %w", key, err)
		}
	}
	return s.inner.Mounts(ctx, key)
}

// Prepare creates an active snapshot, or, for a lazy layer (see the package
// documentation), commits a remote snapshot named RemoteName(snapshot.ref
// label, parent) and returns an error wrapping errdefs.ErrAlreadyExists.
func (s *snapshotter) Prepare(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	var base snapshots.Info
	for _, o := range opts {
		if err := o(&base); err != nil {
			return nil, err
		}
	}
	opts = append(slices.Clone(opts), withoutLabel(LabelRemote))
	if target := base.Labels[snapshots.LabelSnapshotRef]; target != "" {
		if _, ok := base.Labels[LabelTOCDigest]; ok {
			return s.prepareRemote(ctx, key, parent, target, base.Labels, opts)
		}
		if doi, ok := base.Labels[LabelDOI]; ok {
			ev := Event{Kind: EventFallback, Key: key, Name: target, DOI: doi, Err: ErrNoTOC}
			log.G(ctx).WithFields(log.Fields{"key": key, "target": target, "doi": doi, logKeyPrepared: "false"}).
				Warn("zenodo layer has no TOC, containerd will download it whole")
			s.fallbackN.Add(1)
			s.emit(ev)
		}
	}
	if err := s.ensureAvailable(ctx, parent); err != nil {
		return nil, fmt.Errorf("preparing %q: %w", key, err)
	}
	return s.inner.Prepare(ctx, key, parent, opts...)
}

// View creates a read-only snapshot of parent.
func (s *snapshotter) View(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	if err := s.ensureAvailable(ctx, parent); err != nil {
		return nil, fmt.Errorf("viewing %q: %w", key, err)
	}
	opts = append(slices.Clone(opts), withoutLabel(LabelRemote))
	return s.inner.View(ctx, key, parent, opts...)
}

// Commit commits an active snapshot under name.
func (s *snapshotter) Commit(ctx context.Context, name, key string, opts ...snapshots.Opt) error {
	opts = append(slices.Clone(opts), withoutLabel(LabelRemote))
	return s.inner.Commit(ctx, name, key, opts...)
}

// Remove removes a snapshot; a remote snapshot's lazy layer is unmounted
// before its directory is reclaimed.
func (s *snapshotter) Remove(ctx context.Context, key string) error {
	unlock := s.targetLocks.lock(key)
	defer unlock()
	info, statErr := s.inner.Stat(ctx, key)
	if err := s.inner.Remove(ctx, key); err != nil {
		return err
	}
	if statErr == nil && isRemote(info.Labels) {
		s.unmount(ctx, info.Labels[upperdirLabel])
	}
	if !s.asyncRemove {
		s.reclaim(ctx)
	}
	return nil
}

// Walk calls fn for every snapshot matching filters.
func (s *snapshotter) Walk(ctx context.Context, fn snapshots.WalkFunc, filters ...string) error {
	return s.inner.Walk(ctx, func(ctx context.Context, info snapshots.Info) error {
		return fn(ctx, s.public(info))
	}, filters...)
}

// Cleanup retries unmounting the lazy layers of removed snapshots, then
// reclaims the directories of removed snapshots.
func (s *snapshotter) Cleanup(ctx context.Context) error {
	s.mu.Lock()
	var orphans []string
	for mp, r := range s.remotes {
		if r.removed {
			orphans = append(orphans, mp)
		}
	}
	s.mu.Unlock()
	for _, mp := range orphans {
		s.unmount(ctx, mp)
	}
	return s.cleaner.Cleanup(ctx)
}

// Close unmounts every lazy layer and closes the overlay snapshotter. It may
// be called more than once.
func (s *snapshotter) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		var mps []string
		for mp, r := range s.remotes {
			if r.mounted {
				mps = append(mps, mp)
			}
		}
		s.mu.Unlock()
		for _, mp := range mps {
			s.unmount(s.logCtx, mp)
		}
		if err := s.inner.Close(); err != nil {
			s.closeErr = fmt.Errorf("closing overlay snapshotter: %w", err)
		}
	})
	return s.closeErr
}

// RemoteName is the name under which Prepare commits the lazy layer whose
// chain ID is target on top of the snapshot parent: target itself for a
// bottom layer, else "<target>@<parent>". The parent is part of the name
// because containerd's metadata store gives every namespace its own parent
// names, so the same layer pulled into two namespaces needs two snapshots
// (containerd finds them by their snapshot.ref label and parent, never by
// name).
func RemoteName(target, parent string) string {
	if parent == "" {
		return target
	}
	return target + "@" + parent
}

// prepareRemote is Prepare for a lazy layer.
func (s *snapshotter) prepareRemote(ctx context.Context, key, parent, target string, labels map[string]string, opts []snapshots.Opt) ([]mount.Mount, error) {
	name := RemoteName(target, parent)
	ctx = log.WithLogger(ctx, log.G(ctx).WithFields(log.Fields{"key": key, "parent": parent, "target": target}))
	ev := Event{Key: key, Name: name, DOI: labels[LabelDOI], TOCDigest: labels[LabelTOCDigest]}
	unlock := s.targetLocks.lock(name)
	defer unlock()

	// A retry, or another pull into the same namespace, may have made it.
	if s.reusable(ctx, name, target, parent) {
		log.G(ctx).WithField(logKeyPrepared, "true").Debug("remote snapshot already exists")
		return nil, fmt.Errorf("target snapshot %q: %w", target, errdefs.ErrAlreadyExists)
	}

	mounts, err := s.inner.Prepare(ctx, key, parent, opts...)
	if err != nil {
		return nil, err
	}
	mp, err := s.activeMountpoint(ctx, key, mounts)
	if err != nil {
		return s.fallback(ctx, ev, err, key, parent, mounts)
	}
	ev.Mountpoint = mp
	commitOpts := append(slices.Clone(opts), snapshots.WithLabels(map[string]string{
		LabelRemote:                RemoteLabelValue,
		snapshots.LabelSnapshotRef: target,
	}))
	if err := s.inner.Commit(ctx, name, key, commitOpts...); err != nil {
		// key is still active and empty: hand it out as a normal snapshot.
		return s.fallback(ctx, ev, fmt.Errorf("committing %q: %w", name, err), key, parent, mounts)
	}
	if err := s.fs.Mount(ctx, mp, fsLabels(labels)); err != nil {
		cause := fmt.Errorf("mounting lazy layer on %s: %w", mp, err)
		// Undo the commit and give the caller key as a normal snapshot.
		if rerr := s.inner.Remove(ctx, name); rerr != nil {
			return nil, fmt.Errorf("%v; removing snapshot %q afterwards: %w", cause, name, rerr)
		}
		if !s.asyncRemove {
			s.reclaim(ctx)
		}
		mounts, err := s.inner.Prepare(ctx, key, parent, opts...)
		if err != nil {
			return nil, fmt.Errorf("%v; preparing %q afterwards: %w", cause, key, err)
		}
		return s.fallback(ctx, ev, cause, key, parent, mounts)
	}
	s.setState(mp, &remoteState{name: name, labels: fsLabels(labels), mounted: true})
	s.mountedN.Add(1)
	ev.Kind = EventMounted
	s.emit(ev)
	log.G(ctx).WithFields(log.Fields{logKeyPrepared: "true", "mountpoint": mp, "doi": ev.DOI}).Info("mounted lazy layer")
	return nil, fmt.Errorf("target snapshot %q: %w", target, errdefs.ErrAlreadyExists)
}

// fallback reports that a lazy layer became the normal active snapshot key
// and returns its mounts, once the layers below are known to be usable.
func (s *snapshotter) fallback(ctx context.Context, ev Event, cause error, key, parent string, mounts []mount.Mount) ([]mount.Mount, error) {
	ev.Kind, ev.Err = EventFallback, cause
	s.fallbackN.Add(1)
	s.emit(ev)
	log.G(ctx).WithError(cause).WithField(logKeyPrepared, "false").
		Warn("lazy layer unavailable, containerd will download it whole")
	if err := s.ensureAvailable(ctx, parent); err != nil {
		if rerr := s.inner.Remove(ctx, key); rerr != nil {
			log.G(ctx).WithError(rerr).Warn("removing snapshot after failed check")
		} else if !s.asyncRemove {
			s.reclaim(ctx)
		}
		return nil, fmt.Errorf("preparing %q: %w", key, err)
	}
	return mounts, nil
}

// reusable reports whether name is already a usable remote snapshot of
// target on parent (mounting it again if an earlier remount failed).
func (s *snapshotter) reusable(ctx context.Context, name, target, parent string) bool {
	info, err := s.inner.Stat(ctx, name)
	if err != nil {
		if !errdefs.IsNotFound(err) {
			log.G(ctx).WithError(err).Warn("checking for an existing remote snapshot")
		}
		return false
	}
	if info.Kind != snapshots.KindCommitted || info.Parent != parent || !isRemote(info.Labels) ||
		info.Labels[snapshots.LabelSnapshotRef] != target {
		log.G(ctx).WithField("name", name).Warn("the remote snapshot's name is taken by another snapshot")
		return false
	}
	if err := s.available(ctx, refOf(info)); err != nil {
		log.G(ctx).WithError(err).Warn("existing remote snapshot is unavailable")
		return false
	}
	return true
}

// activeMountpoint returns the directory of the active snapshot key, as the
// overlay snapshotter reports it, after checking it against mounts.
func (s *snapshotter) activeMountpoint(ctx context.Context, key string, mounts []mount.Mount) (string, error) {
	info, err := s.inner.Stat(ctx, key)
	if err != nil {
		return "", fmt.Errorf("locating directory of %q: %w", key, err)
	}
	dir := info.Labels[upperdirLabel]
	if dir == "" {
		return "", fmt.Errorf("overlay snapshotter reports no directory for %q: %w", key, errdefs.ErrNotImplemented)
	}
	if got, ok := upperFromMounts(mounts); !ok || filepath.Clean(got) != filepath.Clean(dir) {
		return "", fmt.Errorf("overlay snapshotter's directory %s for %q does not match its mounts %+v: %w",
			dir, key, mounts, errdefs.ErrNotImplemented)
	}
	return dir, nil
}

// upperFromMounts returns the writable directory of an active snapshot's
// mounts as the overlay snapshotter makes them: the source of a bind mount
// (no parent) or the upperdir= option of an overlay mount.
func upperFromMounts(ms []mount.Mount) (string, bool) {
	if len(ms) != 1 {
		return "", false
	}
	switch m := ms[0]; m.Type {
	case "bind":
		return m.Source, m.Source != ""
	case "overlay":
		for _, o := range m.Options {
			if v, ok := strings.CutPrefix(o, "upperdir="); ok && v != "" {
				return v, true
			}
		}
	}
	return "", false
}

// ensureAvailable checks (and if need be mounts again) every remote layer in
// the chain ending at name.
func (s *snapshotter) ensureAvailable(ctx context.Context, name string) error {
	if name == "" || !s.hasRemotes() {
		return nil
	}
	var refs []remoteRef
	for n := name; n != ""; {
		info, err := s.inner.Stat(ctx, n)
		if err != nil {
			return fmt.Errorf("checking layer %q: %w", n, err)
		}
		if isRemote(info.Labels) {
			refs = append(refs, refOf(info))
		}
		n = info.Parent
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(checkConcurrency)
	for _, r := range refs {
		g.Go(func() error { return s.available(gctx, r) })
	}
	return g.Wait()
}

// available checks the remote layer r, mounting it again if this process
// has not mounted it (a failed restore). Errors wrap errdefs.ErrUnavailable.
func (s *snapshotter) available(ctx context.Context, r remoteRef) error {
	if s.isMounted(r.mountpoint) {
		if err := s.fs.Check(ctx, r.mountpoint, fsLabels(r.labels)); err != nil {
			log.G(ctx).WithError(err).WithFields(log.Fields{"snapshot": r.name, "mountpoint": r.mountpoint}).
				Warn("remote layer is unhealthy")
			return fmt.Errorf("remote layer %q on %s is unhealthy: %v: %w", r.name, r.mountpoint, err, errdefs.ErrUnavailable)
		}
		return nil
	}
	if err := s.remount(ctx, r); err != nil {
		return fmt.Errorf("remote layer %q is not mounted: %v: %w", r.name, err, errdefs.ErrUnavailable)
	}
	return nil
}

// restore mounts every committed remote snapshot again.
func (s *snapshotter) restore(ctx context.Context) error {
	var refs []remoteRef
	if err := s.inner.Walk(ctx, func(_ context.Context, info snapshots.Info) error {
		if info.Kind == snapshots.KindCommitted && isRemote(info.Labels) {
			refs = append(refs, refOf(info))
		}
		return nil
	}); err != nil && !errdefs.IsNotFound(err) { // NotFound: a new, empty store
		return fmt.Errorf("listing remote snapshots: %w", err)
	}
	var g errgroup.Group
	g.SetLimit(restoreConcurrency)
	for _, r := range refs {
		g.Go(func() error {
			if err := s.remount(ctx, r); err != nil && !s.allowInvalid {
				return fmt.Errorf("restoring remote snapshot %q: %w", r.name, err)
			}
			return nil
		})
	}
	return g.Wait()
}

// remount mounts the committed remote snapshot r unless this process already
// has, recording the outcome.
func (s *snapshotter) remount(ctx context.Context, r remoteRef) error {
	if r.mountpoint == "" {
		return fmt.Errorf("no directory known for %q: %w", r.name, errdefs.ErrNotFound)
	}
	unlock := s.mountLocks.lock(r.mountpoint)
	defer unlock()
	if s.isMounted(r.mountpoint) {
		return nil
	}
	lg := log.G(ctx).WithFields(log.Fields{"snapshot": r.name, "mountpoint": r.mountpoint})
	ev := Event{Name: r.name, Mountpoint: r.mountpoint, DOI: r.labels[LabelDOI], TOCDigest: r.labels[LabelTOCDigest]}
	err := os.MkdirAll(r.mountpoint, 0o755)
	if err == nil {
		err = s.fs.Mount(ctx, r.mountpoint, fsLabels(r.labels))
	}
	if err != nil {
		s.setState(r.mountpoint, &remoteState{name: r.name, labels: r.labels})
		s.restoreFailN.Add(1)
		ev.Kind, ev.Err = EventRestoreFailed, err
		s.emit(ev)
		lg.WithError(err).Warn("cannot mount remote layer again; it is unavailable until a retry succeeds")
		return fmt.Errorf("mounting %s: %w", r.mountpoint, err)
	}
	s.setState(r.mountpoint, &remoteState{name: r.name, labels: r.labels, mounted: true})
	s.restoredN.Add(1)
	ev.Kind = EventRestored
	s.emit(ev)
	lg.Info("mounted remote layer again")
	return nil
}

// unmount unmounts the lazy layer on mp (if this process mounted it) and
// forgets it; when that fails the mount is detached, and failing that kept
// for Cleanup to retry.
func (s *snapshotter) unmount(ctx context.Context, mp string) {
	if mp == "" {
		return
	}
	unlock := s.mountLocks.lock(mp)
	defer unlock()
	s.mu.Lock()
	r := s.remotes[mp]
	s.mu.Unlock()
	if r != nil && !r.mounted {
		s.setState(mp, nil)
		return
	}
	lg := log.G(ctx).WithField("mountpoint", mp)
	if err := s.fs.Unmount(ctx, mp); err != nil {
		lg.WithError(err).Warn("unmounting lazy layer failed, detaching it")
		if err := mount.UnmountAll(mp, unix.MNT_DETACH); err != nil {
			lg.WithError(err).Warn("detaching lazy layer failed; Cleanup will retry")
			if r != nil {
				s.mu.Lock()
				r.removed = true
				s.mu.Unlock()
			}
			return
		}
	}
	s.setState(mp, nil)
	if r != nil {
		s.unmountedN.Add(1)
		s.emit(Event{Kind: EventUnmounted, Name: r.name, Mountpoint: mp,
			DOI: r.labels[LabelDOI], TOCDigest: r.labels[LabelTOCDigest]})
	}
}

// detachStaleMounts lazily unmounts whatever is mounted below root/snapshots
// (FUSE mounts of a process that died), deepest first.
func (s *snapshotter) detachStaleMounts(ctx context.Context) {
	dir, err := filepath.EvalSymlinks(filepath.Join(s.root, "snapshots"))
	if err != nil {
		log.G(ctx).WithError(err).Warn("resolving snapshots directory")
		return
	}
	infos, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		log.G(ctx).WithError(err).Warn("listing stale mounts")
		return
	}
	var mps []string
	for _, m := range infos {
		if m.Mountpoint != dir {
			mps = append(mps, m.Mountpoint)
		}
	}
	sort.Slice(mps, func(i, j int) bool { return len(mps[i]) > len(mps[j]) })
	for _, mp := range slices.Compact(mps) {
		if err := mount.UnmountAll(mp, unix.MNT_DETACH); err != nil {
			log.G(ctx).WithError(err).WithField("mountpoint", mp).Warn("detaching stale mount")
			continue
		}
		log.G(ctx).WithField("mountpoint", mp).Info("detached stale mount")
	}
}

// reclaim removes the directories of removed snapshots (synchronous mode).
func (s *snapshotter) reclaim(ctx context.Context) {
	if err := s.cleaner.Cleanup(ctx); err != nil {
		log.G(ctx).WithError(err).Warn("reclaiming directories of removed snapshots")
	}
}

func (s *snapshotter) hasRemotes() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.remotes) > 0
}

func (s *snapshotter) isMounted(mp string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.remotes[mp]
	return r != nil && r.mounted
}

// setState records (or, with nil, forgets) the state of the mount on mp.
func (s *snapshotter) setState(mp string, r *remoteState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r == nil {
		delete(s.remotes, mp)
		return
	}
	s.remotes[mp] = r
}

func (s *snapshotter) emit(ev Event) {
	for _, fn := range s.observers {
		fn(ev)
	}
}

// public hides the internal upperdir label unless the caller asked for it.
func (s *snapshotter) public(info snapshots.Info) snapshots.Info {
	if s.showUpperdir {
		return info
	}
	if _, ok := info.Labels[upperdirLabel]; ok {
		info.Labels = maps.Clone(info.Labels)
		delete(info.Labels, upperdirLabel)
		if len(info.Labels) == 0 {
			info.Labels = nil
		}
	}
	return info
}

func isRemote(labels map[string]string) bool {
	_, ok := labels[LabelRemote]
	return ok
}

func refOf(info snapshots.Info) remoteRef {
	return remoteRef{name: info.Name, mountpoint: info.Labels[upperdirLabel], labels: maps.Clone(info.Labels)}
}

// fsLabels is what a FileSystem is given for a committed snapshot: its
// labels without the ones this package adds.
func fsLabels(labels map[string]string) map[string]string {
	out := maps.Clone(labels)
	delete(out, upperdirLabel)
	delete(out, LabelRemote)
	return out
}

// locatingLabels returns the labels a remote snapshot cannot lose.
func locatingLabels(labels map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range labels {
		if k == LabelRemote || k == snapshots.LabelSnapshotRef || strings.HasPrefix(k, zenodoLabelPrefix) {
			out[k] = v
		}
	}
	return out
}

// withoutLabel drops label k from a snapshot's labels.
func withoutLabel(k string) snapshots.Opt {
	return func(info *snapshots.Info) error {
		delete(info.Labels, k)
		return nil
	}
}
