// Package fs is the lazy layer filesystem: a read-only FUSE tree built from a
// seekable layer's TOC, whose file contents are read on demand through a
// Layer (the cache and fetcher live behind it).
//
// Everything but file contents (lookup, stat, readdir, readlink, xattrs,
// statfs) is answered from the TOC in memory and never touches the network;
// only reads call Layer.ReadAt, once per FUSE read request (at most 128 KiB,
// at the offset the kernel asks), each bounded by a timeout after which it
// fails with EIO instead of hanging. There is no data cache here besides the
// kernel's page cache, which is kept across opens (the layer never changes).
//
// The tree is what containerd's overlay snapshotter would extract from the
// layer (archive.Apply with archive.OverlayConvertWhiteout; see buildTree),
// ready for use as an overlayfs lower directory: whiteouts are character
// devices 0/0, opaque directories carry trusted.overlay.opaque=y (see
// WithUserXattr), and the layer's own trusted.* xattrs are dropped. Symlinks
// are returned as stored: the kernel resolves them in the reading process's
// root, which inside a container is the container's rootfs, so an absolute
// or "../" target cannot reach the host's files from a container (on the
// host, the mount is no different from an extracted layer directory).
//
// The mount is read-only, allow_other (containers run as any user) and
// default_permissions (the kernel checks the layer's modes and owners; without
// it any user could read any file of the mount; overlayfs reads its lower
// layers with the mounter's root credentials and is not affected). It keeps
// setuid bits and device nodes working (no nosuid, no nodev), as an extracted
// layer would. It shows as source "zenodo", type "fuse.zenodo". Kernel entry,
// attribute and negative-lookup caches last 24h: the tree never changes.
package fs

import (
	"context"
	"errors"
	"fmt"
	stdlog "log"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
	"golang.org/x/time/rate"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/seekable"
)

// Layer is what the filesystem reads from: a TOC and file contents (served by
// the cache/fetcher, another package).
//
// TOC is called once, at Mount; the TOC must not change afterwards. ReadAt
// reads len(p) > 0 bytes of the regular file e at offset off, with
// io.ReaderAt's contract; off+len(p) never exceeds e.Size. e is an entry of
// that TOC of type "reg": for a hardlink, the entry holding the data (what
// seekable's TOC.Resolve returns). ReadAt is called concurrently; it should
// honour ctx, which is cancelled when the read times out or is interrupted,
// but the filesystem does not wait for it if it does not.
type Layer interface {
	TOC() *seekable.TOC
	ReadAt(ctx context.Context, e *seekable.Entry, p []byte, off int64) (int, error)
}

const (
	// fsName is the mount's source, shown by mount(8) and df(1); the type
	// shows as fuse.zenodo.
	fsName = "zenodo"
	// cacheTimeout is how long the kernel may cache entries, negative
	// lookups and attributes: the tree never changes while mounted.
	cacheTimeout = 24 * time.Hour
	// unmountWait bounds how long Unmount waits for the FUSE server to stop
	// once the mount is gone; it outlives that while another mount (such
	// as an overlay using it as a lower directory) still holds it.
	unmountWait = 10 * time.Second
)

// Mounted is a mounted layer filesystem.
type Mounted struct {
	mountpoint string
	logCtx     context.Context
	done       chan struct{} // closed when the FUSE server has stopped
	wait       time.Duration // how long Unmount waits for done

	mu        sync.Mutex
	unmounted bool
}

// Mount builds the file tree from layer's TOC and mounts it read-only on
// mountpoint, an existing directory. It returns once the kernel serves the
// mount. The mount outlives ctx; ctx's logger is used for the mount's logs
// (go-fuse's own messages go to it at debug level). Mount needs root (or
// CAP_SYS_ADMIN) and /dev/fuse; without them it tries fusermount.
func Mount(ctx context.Context, mountpoint string, layer Layer, opts ...Option) (_ *Mounted, retErr error) {
	o, err := makeOptions(opts)
	if err != nil {
		return nil, err
	}
	if layer == nil {
		return nil, fmt.Errorf("mounting layer filesystem: no layer: %w", errdefs.ErrInvalidArgument)
	}
	toc := layer.TOC()
	if toc == nil {
		return nil, fmt.Errorf("mounting layer filesystem: layer has no TOC: %w", errdefs.ErrInvalidArgument)
	}
	mp, err := filepath.Abs(mountpoint)
	if err != nil {
		return nil, fmt.Errorf("mounting layer filesystem at %s: %w", mountpoint, err)
	}
	if fi, err := os.Stat(mp); err != nil {
		return nil, fmt.Errorf("mounting layer filesystem at %s: %w", mp, err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("mounting layer filesystem at %s: not a directory: %w", mp, errdefs.ErrInvalidArgument)
	}

	logCtx := log.WithLogger(context.WithoutCancel(ctx), log.G(ctx).WithField("mountpoint", mp))
	opaque := opaqueXattrTrusted
	if o.userXattr {
		opaque = opaqueXattrUser
	}
	fsys := &filesystem{
		layer:  layer,
		opts:   o,
		tree:   buildTree(logCtx, toc, opaque),
		logCtx: logCtx,
		errLog: rate.Sometimes{First: 10, Interval: 5 * time.Second},
	}

	logw := log.G(logCtx).WriterLevel(log.DebugLevel)
	defer func() {
		if retErr != nil {
			logw.Close()
		}
	}()
	fuseLog := stdlog.New(logw, "go-fuse: ", 0)
	timeout := cacheTimeout
	fopts := &fusefs.Options{
		MountOptions: fuse.MountOptions{
			AllowOther: true,
			FsName:     fsName,
			Name:       fsName,
			// suid and dev: the layer's setuid binaries and device
			// nodes work as if extracted; ro: no write reaches us.
			Options:              []string{"ro", "default_permissions", "suid", "dev"},
			DirectMount:          true,
			DirectMountFlags:     syscall.MS_RDONLY,
			EnableSymlinkCaching: true,
			Debug:                o.debug,
			Logger:               fuseLog,
		},
		EntryTimeout:    &timeout,
		AttrTimeout:     &timeout,
		NegativeTimeout: &timeout,
		// Modes are served as stored, even 0 (go-fuse would make it 0644).
		NullPermissions: true,
		RootStableAttr:  &fusefs.StableAttr{Ino: fsys.tree.root.ino},
		Logger:          fuseLog,
	}
	root := &inode{fs: fsys, n: fsys.tree.root}
	server, err := fuse.NewServer(fusefs.NewNodeFS(root, fopts), mp, &fopts.MountOptions)
	if err != nil {
		return nil, fmt.Errorf("mounting layer filesystem at %s: %w", mp, err)
	}
	m := &Mounted{mountpoint: mp, logCtx: logCtx, done: make(chan struct{}), wait: unmountWait}
	go func() {
		server.Serve()
		logw.Close()
		close(m.done)
	}()
	if err := server.WaitMount(); err != nil {
		if uerr := m.Unmount(); uerr != nil {
			log.G(logCtx).WithError(uerr).Warn("cleaning up failed layer mount")
		}
		return nil, fmt.Errorf("mounting layer filesystem at %s: %w", mp, err)
	}
	log.G(logCtx).WithField("files", fsys.tree.files).Debug("layer filesystem mounted")
	return m, nil
}

// Unmount unmounts the filesystem. When it is busy (open files, a process's
// working directory) it is detached lazily instead (umount -l): it disappears
// from the mount table at once and is served until its last user goes away.
// Unmount then waits a bounded time for the FUSE server to stop; it keeps
// serving while another mount (an overlay using it as a lower directory)
// still holds it. Calling Unmount again is a no-op.
func (m *Mounted) Unmount() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.unmounted {
		return nil
	}
	err := unmount(m.mountpoint, 0)
	switch {
	case err == nil:
	case errors.Is(err, unix.EBUSY):
		log.G(m.logCtx).WithError(err).Warn("layer filesystem busy, detaching it lazily")
		if err := unmount(m.mountpoint, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("unmounting layer filesystem at %s lazily: %w", m.mountpoint, err)
		}
	case errors.Is(err, unix.EINVAL):
		// Not (or no longer) a mount point: fine if the server has stopped.
		if !m.stopped() {
			return fmt.Errorf("unmounting layer filesystem at %s: %w", m.mountpoint, err)
		}
	default:
		return fmt.Errorf("unmounting layer filesystem at %s: %w", m.mountpoint, err)
	}
	m.unmounted = true
	if !m.stopped() {
		log.G(m.logCtx).Warn("layer filesystem unmounted but still in use (open files, or another mount such as an overlay); served until released")
	}
	return nil
}

// fuseSuperMagic is statfs's f_type of FUSE filesystems.
const fuseSuperMagic = 0x65735546

// Check reports whether the filesystem still serves: not unmounted, its FUSE
// server running, and its mountpoint answering statfs as a FUSE mount. It
// never calls the Layer, so a slow or unreachable remote does not make it
// fail. Errors match errdefs.ErrUnavailable.
func (m *Mounted) Check() error {
	m.mu.Lock()
	unmounted := m.unmounted
	m.mu.Unlock()
	select {
	case <-m.done:
		return fmt.Errorf("layer filesystem at %s: FUSE server stopped: %w", m.mountpoint, errdefs.ErrUnavailable)
	default:
	}
	if unmounted {
		return fmt.Errorf("layer filesystem at %s: unmounted: %w", m.mountpoint, errdefs.ErrUnavailable)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(m.mountpoint, &st); err != nil {
		return fmt.Errorf("layer filesystem at %s: statfs: %w: %w", m.mountpoint, err, errdefs.ErrUnavailable)
	}
	if st.Type != fuseSuperMagic {
		return fmt.Errorf("layer filesystem at %s: not mounted (filesystem type %#x): %w", m.mountpoint, st.Type, errdefs.ErrUnavailable)
	}
	return nil
}

// stopped reports whether the FUSE server stopped within m.wait.
func (m *Mounted) stopped() bool {
	t := time.NewTimer(m.wait)
	defer t.Stop()
	select {
	case <-m.done:
		return true
	case <-t.C:
		return false
	}
}

func unmount(target string, flags int) error {
	for {
		err := unix.Unmount(target, flags)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}
