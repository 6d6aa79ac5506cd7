//go:build linux

package snapshot

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/plugins/snapshots/overlay"
)

const testDOI = "10.5281/zenodo.123"

func TestPrepare(t *testing.T) {
	errMount := errors.New("boom")
	lazy := layerLabels("sha256:target", testDOI)
	noRef := layerLabels("", testDOI)
	delete(noRef, snapshots.LabelSnapshotRef)
	noTOC := layerLabels("sha256:target", testDOI)
	delete(noTOC, LabelTOCDigest)

	for _, tc := range []struct {
		name      string
		labels    map[string]string
		mountErr  error
		wantLazy  bool
		wantMount int
		wantKinds []EventKind
		wantErr   error // Event.Err of the fallback
		wantStats Stats
	}{
		{name: "lazy layer", labels: lazy, wantLazy: true, wantMount: 1,
			wantKinds: []EventKind{EventMounted}, wantStats: Stats{Mounted: 1}},
		{name: "no snapshot.ref", labels: noRef},
		{name: "ordinary layer", labels: map[string]string{snapshots.LabelSnapshotRef: "sha256:target"}},
		{name: "no labels"},
		{name: "zenodo layer without TOC", labels: noTOC,
			wantKinds: []EventKind{EventFallback}, wantErr: ErrNoTOC, wantStats: Stats{Fallbacks: 1}},
		{name: "mount fails", labels: lazy, mountErr: errMount, wantMount: 1,
			wantKinds: []EventKind{EventFallback}, wantErr: errMount, wantStats: Stats{Fallbacks: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testContext(t)
			root := t.TempDir()
			fs := newDirFS()
			fs.setFailMount(tc.mountErr)
			sn, evs := newTestSnapshotter(t, root, fs)

			var opts []snapshots.Opt
			if tc.labels != nil {
				opts = append(opts, snapshots.WithLabels(tc.labels))
			}
			mounts, err := sn.Prepare(ctx, "extract-1 sha256:target", "", opts...)
			assert.Len(t, fs.mountCalls(), tc.wantMount)
			assert.Equal(t, tc.wantKinds, evs.kinds())
			assert.Equal(t, tc.wantStats, sn.(StatsReporter).Stats())
			if tc.wantErr != nil {
				require.ErrorIs(t, evs.all()[0].Err, tc.wantErr)
			}

			if !tc.wantLazy {
				// A normal active snapshot, nothing committed.
				require.NoError(t, err)
				require.Len(t, mounts, 1)
				assert.Equal(t, "bind", mounts[0].Type)
				info, err := sn.Stat(ctx, "extract-1 sha256:target")
				require.NoError(t, err)
				assert.Equal(t, snapshots.KindActive, info.Kind)
				assert.NotContains(t, info.Labels, LabelRemote)
				_, err = sn.Stat(ctx, "sha256:target")
				require.ErrorIs(t, err, errdefs.ErrNotFound)
				entries, err := os.ReadDir(mounts[0].Source)
				require.NoError(t, err)
				assert.Empty(t, entries, "the fallback snapshot must be empty")
				// containerd can unpack into it and commit it.
				require.NoError(t, sn.Commit(ctx, "sha256:target", "extract-1 sha256:target"))
				return
			}

			require.ErrorIs(t, err, errdefs.ErrAlreadyExists)
			assert.Nil(t, mounts)
			_, err = sn.Stat(ctx, "extract-1 sha256:target")
			require.ErrorIs(t, err, errdefs.ErrNotFound, "the active key must be gone")
			info, err := sn.Stat(ctx, "sha256:target")
			require.NoError(t, err)
			assert.Equal(t, snapshots.KindCommitted, info.Kind)
			assert.Empty(t, info.Parent)
			want := map[string]string{LabelRemote: RemoteLabelValue}
			for k, v := range tc.labels {
				want[k] = v
			}
			assert.Equal(t, want, info.Labels, "labels: the Prepare labels plus the remote mark, no upperdir")

			// containerd's metadata snapshotter finds it this way.
			var found []string
			filter := fmt.Sprintf(`labels.%q==%s,parent==%q`, snapshots.LabelSnapshotRef, "sha256:target", "")
			require.NoError(t, sn.Walk(ctx, func(_ context.Context, i snapshots.Info) error {
				found = append(found, i.Name)
				return nil
			}, filter))
			assert.Equal(t, []string{"sha256:target"}, found)

			// The lazy layer is on the overlay snapshotter's directory of it.
			call := fs.mountCalls()[0]
			assert.Equal(t, tc.labels, call.Labels)
			assert.Equal(t, filepath.Join(root, "snapshots"), filepath.Dir(filepath.Dir(call.Mountpoint)))
			assert.Equal(t, "fs", filepath.Base(call.Mountpoint))
			assert.Equal(t, call.Mountpoint, evs.all()[0].Mountpoint)
			assert.Equal(t, testDOI, evs.all()[0].DOI)
			data, err := os.ReadFile(filepath.Join(call.Mountpoint, layerFile))
			require.NoError(t, err)
			assert.Equal(t, testDOI, string(data))
		})
	}
}

func TestPrepareRemoteReusesTarget(t *testing.T) {
	ctx := testContext(t)
	fs := newDirFS()
	sn, evs := newTestSnapshotter(t, t.TempDir(), fs)
	labels := snapshots.WithLabels(layerLabels("sha256:l1", testDOI))

	_, err := sn.Prepare(ctx, "ns1/extract", "", labels)
	require.ErrorIs(t, err, errdefs.ErrAlreadyExists)
	// Another namespace pulls the same image.
	_, err = sn.Prepare(ctx, "ns2/extract", "", labels)
	require.ErrorIs(t, err, errdefs.ErrAlreadyExists)
	assert.Len(t, fs.mountCalls(), 1, "the layer is mounted once")
	assert.Equal(t, []EventKind{EventMounted}, evs.kinds())
	_, err = sn.Stat(ctx, "ns2/extract")
	require.ErrorIs(t, err, errdefs.ErrNotFound)

	// On another parent (another namespace's copy of the layers below) the
	// layer is mounted again, under another name.
	_, err = sn.Prepare(ctx, "base-tmp", "")
	require.NoError(t, err)
	require.NoError(t, sn.Commit(ctx, "base", "base-tmp"))
	_, err = sn.Prepare(ctx, "ns3/extract", "base", labels)
	require.ErrorIs(t, err, errdefs.ErrAlreadyExists)
	assert.Equal(t, []EventKind{EventMounted, EventMounted}, evs.kinds())
	calls := fs.mountCalls()
	require.Len(t, calls, 2)
	assert.NotEqual(t, calls[0].Mountpoint, calls[1].Mountpoint)
	for parent, want := range map[string]string{"": "sha256:l1", "base": RemoteName("sha256:l1", "base")} {
		var found []string
		filter := fmt.Sprintf(`labels.%q==%s,parent==%q`, snapshots.LabelSnapshotRef, "sha256:l1", parent)
		require.NoError(t, sn.Walk(ctx, func(_ context.Context, i snapshots.Info) error {
			found = append(found, i.Name)
			return nil
		}, filter))
		assert.Equal(t, []string{want}, found)
	}

	// A name taken by something else: containerd gets a normal snapshot.
	_, err = sn.Prepare(ctx, "other-tmp", "")
	require.NoError(t, err)
	require.NoError(t, sn.Commit(ctx, RemoteName("sha256:l9", "base"), "other-tmp", snapshots.WithParent("base")))
	mounts, err := sn.Prepare(ctx, "ns4/extract", "base", snapshots.WithLabels(layerLabels("sha256:l9", testDOI)))
	require.NoError(t, err)
	assert.NotEmpty(t, mounts)
	assert.Equal(t, EventFallback, evs.kinds()[2])
}

func TestPrepareRemoteChain(t *testing.T) {
	ctx := testContext(t)
	fs := newDirFS()
	sn, _ := newTestSnapshotter(t, t.TempDir(), fs)

	// An ordinary base layer, then two lazy layers on it.
	_, err := sn.Prepare(ctx, "base-tmp", "")
	require.NoError(t, err)
	require.NoError(t, sn.Commit(ctx, "base", "base-tmp"))
	_, err = sn.Prepare(ctx, "x1", "base", snapshots.WithLabels(layerLabels("l1", testDOI)))
	require.ErrorIs(t, err, errdefs.ErrAlreadyExists)
	n1 := RemoteName("l1", "base")
	_, err = sn.Prepare(ctx, "x2", n1, snapshots.WithLabels(layerLabels("l2", testDOI)))
	require.ErrorIs(t, err, errdefs.ErrAlreadyExists)
	n2 := RemoteName("l2", n1)

	info, err := sn.Stat(ctx, n2)
	require.NoError(t, err)
	assert.Equal(t, n1, info.Parent)
	assert.Equal(t, "l2", info.Labels[snapshots.LabelSnapshotRef])
	info, err = sn.Stat(ctx, n1)
	require.NoError(t, err)
	assert.Equal(t, "base", info.Parent)

	// A container's writable layer on top: an overlay whose lower
	// directories are the lazy layers' mountpoints, topmost first.
	mounts, err := sn.Prepare(ctx, "container", n2)
	require.NoError(t, err)
	require.Len(t, mounts, 1)
	assert.Equal(t, "overlay", mounts[0].Type)
	calls := fs.mountCalls()
	require.Len(t, calls, 2)
	lower := lowerdirs(t, mounts[0])
	require.Len(t, lower, 3)
	assert.Equal(t, calls[1].Mountpoint, lower[0])
	assert.Equal(t, calls[0].Mountpoint, lower[1])

	// A read-only view of a lazy layer reads it from its mountpoint.
	mounts, err = sn.View(ctx, "view", n1)
	require.NoError(t, err)
	require.Len(t, mounts, 1)
	assert.Equal(t, []string{calls[0].Mountpoint, lower[2]}, lowerdirs(t, mounts[0]))
}

func lowerdirs(t *testing.T, m mount.Mount) []string {
	t.Helper()
	for _, o := range m.Options {
		if v, ok := strings.CutPrefix(o, "lowerdir="); ok {
			return strings.Split(v, ":")
		}
	}
	t.Fatalf("no lowerdir in %v", m.Options)
	return nil
}

func TestRemoveUnmounts(t *testing.T) {
	for _, async := range []bool{false, true} {
		t.Run(fmt.Sprintf("async=%v", async), func(t *testing.T) {
			ctx := testContext(t)
			fs := newDirFS()
			var opts []Opt
			if async {
				opts = append(opts, WithOverlayOpts(overlay.AsynchronousRemove))
			}
			sn, evs := newTestSnapshotter(t, t.TempDir(), fs, opts...)
			_, err := sn.Prepare(ctx, "x1", "", snapshots.WithLabels(layerLabels("l1", testDOI)))
			require.ErrorIs(t, err, errdefs.ErrAlreadyExists)
			mp := fs.mountCalls()[0].Mountpoint
			_, err = sn.Prepare(ctx, "child", "l1")
			require.NoError(t, err)

			// Still in use: nothing happens.
			require.ErrorIs(t, sn.Remove(ctx, "l1"), errdefs.ErrFailedPrecondition)
			assert.Empty(t, fs.unmountCalls())

			require.NoError(t, sn.Remove(ctx, "child"))
			assert.Empty(t, fs.unmountCalls())
			require.NoError(t, sn.Remove(ctx, "l1"))
			assert.Equal(t, []string{mp}, fs.unmountCalls())
			assert.Equal(t, []EventKind{EventMounted, EventUnmounted}, evs.kinds())
			assert.Equal(t, uint64(1), sn.(StatsReporter).Stats().Unmounted)

			if async {
				assert.DirExists(t, mp, "async: reclaimed by Cleanup")
				require.NoError(t, sn.(snapshots.Cleaner).Cleanup(ctx))
			}
			assert.NoDirExists(t, filepath.Dir(mp))

			// Close has nothing left to unmount.
			require.NoError(t, sn.Close())
			assert.Len(t, fs.unmountCalls(), 1)
		})
	}
}

// l2Name is the name of the lazy layer l2 that remoteChain puts on l1.
var l2Name = RemoteName("l2", "l1")

// remoteChain makes two lazy layers l1 <- l2 (named "l1" and l2Name) and
// returns their mountpoints.
func remoteChain(t *testing.T, sn snapshots.Snapshotter, fs *dirFS) (mp1, mp2 string) {
	t.Helper()
	ctx := testContext(t)
	_, err := sn.Prepare(ctx, "x1", "", snapshots.WithLabels(layerLabels("l1", "10.5281/zenodo.1")))
	require.ErrorIs(t, err, errdefs.ErrAlreadyExists)
	_, err = sn.Prepare(ctx, "x2", "l1", snapshots.WithLabels(layerLabels("l2", "10.5281/zenodo.2")))
	require.ErrorIs(t, err, errdefs.ErrAlreadyExists)
	calls := fs.mountCalls()
	require.Len(t, calls, 2)
	return calls[0].Mountpoint, calls[1].Mountpoint
}

func TestRestart(t *testing.T) {
	ctx := testContext(t)
	root := t.TempDir()
	fs1 := newDirFS()
	sn1, err := NewSnapshotter(ctx, root, fs1)
	require.NoError(t, err)
	mp1, mp2 := remoteChain(t, sn1, fs1)
	require.NoError(t, sn1.Close())
	assert.ElementsMatch(t, []string{mp1, mp2}, fs1.unmountCalls(), "Close unmounts every lazy layer")
	require.NoError(t, sn1.Close(), "Close twice")

	fs2 := newDirFS()
	sn2, evs := newTestSnapshotter(t, root, fs2)
	calls := fs2.mountCalls()
	require.Len(t, calls, 2)
	byMP := map[string]map[string]string{}
	for _, c := range calls {
		byMP[c.Mountpoint] = c.Labels
	}
	assert.Equal(t, layerLabels("l1", "10.5281/zenodo.1"), byMP[mp1], "remounted with the layer's labels")
	assert.Equal(t, layerLabels("l2", "10.5281/zenodo.2"), byMP[mp2])
	assert.Equal(t, []EventKind{EventRestored, EventRestored}, evs.kinds())
	assert.Equal(t, Stats{Restored: 2}, sn2.(StatsReporter).Stats())

	// Everything works as before.
	mounts, err := sn2.Prepare(ctx, "container", l2Name)
	require.NoError(t, err)
	assert.Equal(t, []string{mp2, mp1}, lowerdirs(t, mounts[0]))
	_, err = sn2.Prepare(ctx, "x3", "", snapshots.WithLabels(layerLabels("l1", "10.5281/zenodo.1")))
	require.ErrorIs(t, err, errdefs.ErrAlreadyExists)
	assert.Len(t, fs2.mountCalls(), 2)
}

func TestRestartMountFails(t *testing.T) {
	ctx := testContext(t)
	root := t.TempDir()
	fs1 := newDirFS()
	sn1, err := NewSnapshotter(ctx, root, fs1)
	require.NoError(t, err)
	mp1, mp2 := remoteChain(t, sn1, fs1)
	require.NoError(t, sn1.Close())

	t.Run("strict", func(t *testing.T) {
		fs := newDirFS()
		fs.setFailMount(errors.New("no network"))
		_, err := NewSnapshotter(ctx, root, fs, WithAllowInvalidMountsOnRestart(false))
		require.Error(t, err)
		require.ErrorContains(t, err, "no network")
	})

	fs2 := newDirFS()
	fs2.setFailMount(errors.New("no network"))
	sn2, evs := newTestSnapshotter(t, root, fs2)
	assert.Equal(t, []EventKind{EventRestoreFailed, EventRestoreFailed}, evs.kinds())
	assert.Equal(t, Stats{RestoreFailures: 2}, sn2.(StatsReporter).Stats())

	// Unusable while the layers cannot be mounted...
	_, err = sn2.Prepare(ctx, "container", l2Name)
	require.ErrorIs(t, err, errdefs.ErrUnavailable)
	_, err = sn2.View(ctx, "view", "l1")
	require.ErrorIs(t, err, errdefs.ErrUnavailable)
	_, err = sn2.Stat(ctx, "container")
	require.ErrorIs(t, err, errdefs.ErrNotFound)

	// ...and mounted again on first use once they can.
	fs2.setFailMount(nil)
	mounts, err := sn2.Prepare(ctx, "container", l2Name)
	require.NoError(t, err)
	assert.Equal(t, []string{mp2, mp1}, lowerdirs(t, mounts[0]))
	assert.Equal(t, uint64(2), sn2.(StatsReporter).Stats().Restored)

	// A layer that was never mounted again can still be removed.
	require.NoError(t, sn2.Remove(ctx, "container"))
	require.NoError(t, sn2.Remove(ctx, l2Name))
	require.NoError(t, sn2.Remove(ctx, "l1"))
}

func TestUnhealthyLayer(t *testing.T) {
	ctx := testContext(t)
	fs := newDirFS()
	sn, _ := newTestSnapshotter(t, t.TempDir(), fs)
	_, mp2 := remoteChain(t, sn, fs)
	_, err := sn.Prepare(ctx, "container", l2Name)
	require.NoError(t, err)

	fs.setFailCheck(errors.New("fuse connection lost"))
	_, err = sn.Mounts(ctx, "container")
	require.ErrorIs(t, err, errdefs.ErrUnavailable)
	require.ErrorContains(t, err, "fuse connection lost")
	_, err = sn.View(ctx, "view", l2Name)
	require.ErrorIs(t, err, errdefs.ErrUnavailable)
	_, err = sn.Prepare(ctx, "c2", "l1")
	require.ErrorIs(t, err, errdefs.ErrUnavailable)

	fs.setFailCheck(nil)
	mounts, err := sn.Mounts(ctx, "container")
	require.NoError(t, err)
	assert.Equal(t, mp2, lowerdirs(t, mounts[0])[0])
}

func TestLabels(t *testing.T) {
	ctx := testContext(t)
	fs := newDirFS()
	sn, _ := newTestSnapshotter(t, t.TempDir(), fs)
	remoteChain(t, sn, fs)
	locating := layerLabels("l1", "10.5281/zenodo.1")
	locating[LabelRemote] = RemoteLabelValue

	for _, tc := range []struct {
		name       string
		labels     map[string]string
		fieldpaths []string
		want       map[string]string
	}{
		{name: "replace all", labels: map[string]string{"a": "1"}, fieldpaths: []string{"labels"},
			want: merge(locating, map[string]string{"a": "1"})},
		{name: "replace all, no fieldpaths", labels: map[string]string{"b": "2"},
			want: merge(locating, map[string]string{"b": "2"})},
		{name: "drop the remote mark", labels: map[string]string{},
			fieldpaths: []string{"labels." + LabelRemote, "labels." + LabelDOI, "labels.c"},
			want:       merge(locating, map[string]string{"b": "2"})},
		{name: "one label", labels: map[string]string{"d": "4"}, fieldpaths: []string{"labels.d"},
			want: merge(locating, map[string]string{"b": "2", "d": "4"})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := sn.Update(ctx, snapshots.Info{Name: "l1", Labels: tc.labels}, tc.fieldpaths...)
			require.NoError(t, err)
			assert.Equal(t, tc.want, got.Labels)
			st, err := sn.Stat(ctx, "l1")
			require.NoError(t, err)
			assert.Equal(t, tc.want, st.Labels)
		})
	}

	// Nobody else can mark a snapshot remote.
	mark := snapshots.WithLabels(map[string]string{LabelRemote: RemoteLabelValue, "x": "y"})
	_, err := sn.Prepare(ctx, "a", "", mark)
	require.NoError(t, err)
	require.NoError(t, sn.Commit(ctx, "c", "a", mark))
	_, err = sn.View(ctx, "v", "c", mark)
	require.NoError(t, err)
	got, err := sn.Update(ctx, snapshots.Info{Name: "c", Labels: map[string]string{LabelRemote: "yes"}}, "labels")
	require.NoError(t, err)
	assert.Nil(t, got.Labels)
	require.NoError(t, sn.Walk(ctx, func(_ context.Context, i snapshots.Info) error {
		assert.NotContains(t, i.Labels, upperdirLabel, i.Name)
		if i.Name != "l1" && i.Name != l2Name {
			assert.NotContains(t, i.Labels, LabelRemote, i.Name)
		}
		return nil
	}))
}

func merge(ms ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

func TestUpperdirLabelShownWhenAsked(t *testing.T) {
	ctx := testContext(t)
	sn, _ := newTestSnapshotter(t, t.TempDir(), newDirFS(), WithOverlayOpts(overlay.WithUpperdirLabel))
	_, err := sn.Prepare(ctx, "a", "")
	require.NoError(t, err)
	info, err := sn.Stat(ctx, "a")
	require.NoError(t, err)
	assert.Contains(t, info.Labels, upperdirLabel)
}

func TestNewSnapshotterInvalid(t *testing.T) {
	ctx := testContext(t)
	for _, tc := range []struct {
		name string
		root string
		fs   FileSystem
		opts []Opt
	}{
		{name: "nil fs", root: t.TempDir()},
		{name: "empty root", fs: newDirFS()},
		{name: "nil observer", root: t.TempDir(), fs: newDirFS(), opts: []Opt{WithObserver(nil)}},
		{name: "nil overlay opt", root: t.TempDir(), fs: newDirFS(), opts: []Opt{WithOverlayOpts(nil)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewSnapshotter(ctx, tc.root, tc.fs, tc.opts...)
			require.ErrorIs(t, err, errdefs.ErrInvalidArgument)
		})
	}
}

func TestUpperFromMounts(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mounts []mount.Mount
		want   string
		ok     bool
	}{
		{name: "bind", mounts: []mount.Mount{{Type: "bind", Source: "/r/snapshots/1/fs", Options: []string{"rw", "rbind"}}},
			want: "/r/snapshots/1/fs", ok: true},
		{name: "overlay", mounts: []mount.Mount{{Type: "overlay", Source: "overlay",
			Options: []string{"workdir=/r/snapshots/2/work", "upperdir=/r/snapshots/2/fs", "lowerdir=/r/snapshots/1/fs"}}},
			want: "/r/snapshots/2/fs", ok: true},
		{name: "read-only overlay", mounts: []mount.Mount{{Type: "overlay", Options: []string{"lowerdir=/a:/b"}}}},
		{name: "none"},
		{name: "two", mounts: []mount.Mount{{Type: "bind", Source: "/a"}, {Type: "bind", Source: "/b"}}},
		{name: "empty source", mounts: []mount.Mount{{Type: "bind"}}},
		{name: "other type", mounts: []mount.Mount{{Type: "erofs", Source: "/a"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := upperFromMounts(tc.mounts)
			assert.Equal(t, tc.ok, ok)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestKeyedLocks(t *testing.T) {
	var k keyedLocks
	u1 := k.lock("a")
	u2 := k.lock("b") // another key does not block
	done := make(chan struct{})
	go func() {
		defer close(done)
		u := k.lock("a")
		u()
	}()
	u2()
	u1()
	<-done
	assert.Empty(t, k.m)
}
