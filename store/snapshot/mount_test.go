//go:build linux

package snapshot

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/moby/sys/mountinfo"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/testsuite"
	"github.com/containerd/containerd/v2/plugins/snapshots/overlay"
)

// TestConformance runs containerd's snapshotter conformance suite on the
// snapshotter with a FileSystem that never mounts anything: with no lazy
// layers it must be exactly an overlay snapshotter (hence the suite name
// "overlayfs", which selects overlayfs's known directory-rename limit).
func TestConformance(t *testing.T) {
	requireRootOverlay(t)
	for name, opts := range map[string][]Opt{
		"default":            nil,
		"AsynchronousRemove": {WithOverlayOpts(overlay.AsynchronousRemove)},
	} {
		t.Run(name, func(t *testing.T) {
			testsuite.SnapshotterSuite(t, "overlayfs", func(ctx context.Context, root string) (snapshots.Snapshotter, func() error, error) {
				sn, err := NewSnapshotter(ctx, root, dummyFS{}, opts...)
				if err != nil {
					return nil, nil, err
				}
				return sn, sn.Close, nil
			})
		})
	}
}

// mountAt mounts ms on a new directory and returns it; it is unmounted at the
// end of the test.
func mountAt(t *testing.T, ms []mount.Mount) string {
	t.Helper()
	target := t.TempDir()
	require.NoError(t, mount.All(ms, target))
	t.Cleanup(func() { require.NoError(t, mount.UnmountAll(target, 0)) })
	return target
}

func TestOverlayOnRemoteLayer(t *testing.T) {
	requireRootOverlay(t)
	ctx := testContext(t)
	fs := newDirFS()
	sn, _ := newTestSnapshotter(t, t.TempDir(), fs)
	mp1, mp2 := remoteChain(t, sn, fs)

	// A container on the top lazy layer sees both layers and can write.
	mounts, err := sn.Prepare(ctx, "container", l2Name)
	require.NoError(t, err)
	require.Equal(t, "overlay", mounts[0].Type)
	assert.Equal(t, []string{mp2, mp1}, lowerdirs(t, mounts[0]))
	rootfs := mountAt(t, mounts)
	data, err := os.ReadFile(filepath.Join(rootfs, layerFile))
	require.NoError(t, err)
	assert.Equal(t, "10.5281/zenodo.2", string(data), "the top layer's file wins")
	require.NoError(t, os.WriteFile(filepath.Join(rootfs, "new"), []byte("x"), 0o644))
	assert.NoFileExists(t, filepath.Join(mp2, "new"), "writes go to the writable layer")

	// A view of the bottom lazy layer alone (one parent: a bind mount).
	mounts, err = sn.View(ctx, "view", "l1")
	require.NoError(t, err)
	require.Equal(t, "bind", mounts[0].Type)
	assert.Equal(t, mp1, mounts[0].Source)
	view := mountAt(t, mounts)
	data, err = os.ReadFile(filepath.Join(view, layerFile))
	require.NoError(t, err)
	assert.Equal(t, "10.5281/zenodo.1", string(data))
}

// bindFS mounts a lazy layer by bind-mounting a fixed directory read-only.
type bindFS struct {
	src string

	mu       sync.Mutex
	mounts   []string
	unmounts []string
}

var _ FileSystem = (*bindFS)(nil)

func (f *bindFS) Mount(_ context.Context, mp string, _ map[string]string) error {
	f.mu.Lock()
	f.mounts = append(f.mounts, mp)
	f.mu.Unlock()
	if err := unix.Mount(f.src, mp, "", unix.MS_BIND, ""); err != nil {
		return err
	}
	if err := unix.Mount("", mp, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		unix.Unmount(mp, 0)
		return err
	}
	return nil
}

func (f *bindFS) Check(_ context.Context, mp string, _ map[string]string) error {
	ok, err := mountinfo.Mounted(mp)
	if err == nil && !ok {
		err = errdefs.ErrNotFound
	}
	return err
}

func (f *bindFS) Unmount(_ context.Context, mp string) error {
	f.mu.Lock()
	f.unmounts = append(f.unmounts, mp)
	f.mu.Unlock()
	return unix.Unmount(mp, 0)
}

// mountCount says how many mounts sit on mp.
func mountCount(t *testing.T, mp string) int {
	t.Helper()
	infos, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(mp))
	require.NoError(t, err)
	return len(infos)
}

func TestBindMountedLayer(t *testing.T) {
	requireRootOverlay(t)
	ctx := testContext(t)
	root := t.TempDir()
	fs := &bindFS{src: t.TempDir()}
	require.NoError(t, os.WriteFile(filepath.Join(fs.src, layerFile), []byte("lazy"), 0o644))

	sn1, err := NewSnapshotter(ctx, root, fs)
	require.NoError(t, err)
	_, err = sn1.Prepare(ctx, "x1", "", snapshots.WithLabels(layerLabels("l1", testDOI)))
	require.ErrorIs(t, err, errdefs.ErrAlreadyExists)
	require.Len(t, fs.mounts, 1)
	mp := fs.mounts[0]
	assert.Equal(t, 1, mountCount(t, mp))

	mounts, err := sn1.Prepare(ctx, "container", "l1")
	require.NoError(t, err)
	rootfs := t.TempDir()
	require.NoError(t, mount.All(mounts, rootfs))
	data, err := os.ReadFile(filepath.Join(rootfs, layerFile))
	require.NoError(t, err)
	assert.Equal(t, "lazy", string(data))
	require.NoError(t, mount.UnmountAll(rootfs, 0))
	require.NoError(t, sn1.Remove(ctx, "container"))

	require.NoError(t, sn1.Close())
	assert.Equal(t, 0, mountCount(t, mp), "Close unmounts")

	// A dead process's mount left behind: NewSnapshotter replaces it.
	stale := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(stale, layerFile), []byte("stale"), 0o644))
	require.NoError(t, unix.Mount(stale, mp, "", unix.MS_BIND, ""))
	t.Cleanup(func() { mount.UnmountAll(mp, unix.MNT_DETACH) })

	sn2, _ := newTestSnapshotter(t, root, fs)
	assert.Equal(t, []string{mp, mp}, fs.mounts)
	assert.Equal(t, 1, mountCount(t, mp))
	data, err = os.ReadFile(filepath.Join(mp, layerFile))
	require.NoError(t, err)
	assert.Equal(t, "lazy", string(data))

	require.NoError(t, sn2.Remove(ctx, "l1"))
	assert.Equal(t, 0, mountCount(t, mp), "Remove unmounts")
	assert.NoDirExists(t, filepath.Dir(mp))
}
