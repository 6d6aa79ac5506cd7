package fs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/log"
	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/time/rate"
)

// filesystem is what every inode of one mount shares.
type filesystem struct {
	layer  Layer
	opts   *options
	tree   *tree
	logCtx context.Context // never cancelled; carries the mount's logger
	bufs   sync.Pool       // *[]byte read buffers
	// errLog limits read error logs to the first few, then one per
	// interval: an unreachable Zenodo fails every read. The observer sees
	// them all.
	errLog rate.Sometimes
}

// inode is the go-fuse node of one TOC node. A fresh one is made per kernel
// lookup; go-fuse keeps the first one made for an inode number and drops the
// others, so hardlinks share one kernel inode.
type inode struct {
	fusefs.Inode
	fs *filesystem
	n  *node
}

var (
	_ fusefs.InodeEmbedder      = (*inode)(nil)
	_ fusefs.NodeLookuper       = (*inode)(nil)
	_ fusefs.NodeOpendirHandler = (*inode)(nil)
	_ fusefs.NodeGetattrer      = (*inode)(nil)
	_ fusefs.NodeGetxattrer     = (*inode)(nil)
	_ fusefs.NodeListxattrer    = (*inode)(nil)
	_ fusefs.NodeReadlinker     = (*inode)(nil)
	_ fusefs.NodeOpener         = (*inode)(nil)
	_ fusefs.NodeReader         = (*inode)(nil)
	_ fusefs.NodeStatfser       = (*inode)(nil)

	_ fusefs.NodeSetattrer     = (*inode)(nil)
	_ fusefs.NodeSetxattrer    = (*inode)(nil)
	_ fusefs.NodeRemovexattrer = (*inode)(nil)
	_ fusefs.NodeCreater       = (*inode)(nil)
	_ fusefs.NodeMkdirer       = (*inode)(nil)
	_ fusefs.NodeMknoder       = (*inode)(nil)
	_ fusefs.NodeLinker        = (*inode)(nil)
	_ fusefs.NodeSymlinker     = (*inode)(nil)
	_ fusefs.NodeUnlinker      = (*inode)(nil)
	_ fusefs.NodeRmdirer       = (*inode)(nil)
	_ fusefs.NodeRenamer       = (*inode)(nil)
)

func stableAttr(n *node) fusefs.StableAttr {
	return fusefs.StableAttr{Mode: n.mode & syscall.S_IFMT, Ino: n.ino}
}

// fill writes n's attributes; go-fuse adds the timeouts.
func fill(n *node, a *fuse.Attr) {
	a.Ino = n.ino
	a.Mode = n.mode
	a.Size = n.size
	a.Blocks = (n.size + 511) / 512
	a.Blksize = blockSize
	a.Nlink = n.nlink
	a.Uid = n.uid
	a.Gid = n.gid
	a.Rdev = n.rdev
	var sec int64
	var nsec int
	if !n.mtime.IsZero() && n.mtime.Unix() > 0 {
		sec, nsec = n.mtime.Unix(), n.mtime.Nanosecond()
	}
	a.Atime, a.Mtime, a.Ctime = uint64(sec), uint64(sec), uint64(sec)
	a.Atimensec, a.Mtimensec, a.Ctimensec = uint32(nsec), uint32(nsec), uint32(nsec)
}

// Lookup answers from the tree; nothing reaches the Layer.
func (i *inode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	c, ok := i.n.children[name]
	if !ok {
		return nil, syscall.ENOENT
	}
	fill(c, &out.Attr)
	return i.NewInode(ctx, &inode{fs: i.fs, n: c}, stableAttr(c)), 0
}

// OpendirHandle lists a directory from the tree, and lets the kernel cache
// the listing (the tree never changes).
func (i *inode) OpendirHandle(ctx context.Context, flags uint32) (fusefs.FileHandle, uint32, syscall.Errno) {
	d := i.n
	if !d.isDir() {
		return nil, 0, syscall.ENOTDIR
	}
	parent := d.parent
	if parent == nil {
		parent = d
	}
	entries := make([]fuse.DirEntry, 0, len(d.names)+2)
	entries = append(entries,
		fuse.DirEntry{Name: ".", Mode: syscall.S_IFDIR, Ino: d.ino},
		fuse.DirEntry{Name: "..", Mode: syscall.S_IFDIR, Ino: parent.ino})
	for _, name := range d.names {
		c := d.children[name]
		entries = append(entries, fuse.DirEntry{Name: name, Mode: c.mode & syscall.S_IFMT, Ino: c.ino})
	}
	return fusefs.NewListDirStream(entries), fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE, 0
}

// Getattr answers from the tree.
func (i *inode) Getattr(ctx context.Context, f fusefs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	fill(i.n, &out.Attr)
	return 0
}

// Getxattr answers from the tree.
func (i *inode) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	v, ok := i.n.xattrs[attr]
	if !ok {
		return 0, syscall.ENODATA
	}
	if len(dest) < len(v) {
		return uint32(len(v)), syscall.ERANGE
	}
	return uint32(copy(dest, v)), 0
}

// Listxattr answers from the tree: sorted names, each NUL-terminated.
func (i *inode) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	names := make([]string, 0, len(i.n.xattrs))
	size := 0
	for k := range i.n.xattrs {
		names = append(names, k)
		size += len(k) + 1
	}
	if len(dest) < size {
		return uint32(size), syscall.ERANGE
	}
	slices.Sort(names)
	off := 0
	for _, k := range names {
		off += copy(dest[off:], k)
		dest[off] = 0
		off++
	}
	return uint32(off), 0
}

// Readlink returns the target as stored in the layer. The kernel resolves it
// relative to the process's root: inside a container that is the container's
// rootfs, so an absolute or ".."-laden target cannot reach the host.
func (i *inode) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	if i.n.mode&syscall.S_IFMT != syscall.S_IFLNK {
		return nil, syscall.EINVAL
	}
	return []byte(i.n.link), 0
}

// Open allows read-only opens and lets the kernel keep file contents cached
// across opens (they never change).
func (i *inode) Open(ctx context.Context, flags uint32) (fusefs.FileHandle, uint32, syscall.Errno) {
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY || flags&syscall.O_TRUNC != 0 {
		return nil, 0, syscall.EROFS
	}
	return nil, fuse.FOPEN_KEEP_CACHE, 0
}

// Read serves file contents through Layer.ReadAt, bounded by the read timeout.
func (i *inode) Read(ctx context.Context, f fusefs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	n := i.n
	if n.entry == nil || off < 0 || uint64(off) >= n.size {
		return fuse.ReadResultData(nil), 0
	}
	want := min(uint64(len(dest)), n.size-uint64(off))
	nr, errno := i.fs.read(ctx, n, dest[:want], off)
	return fuse.ReadResultData(dest[:nr]), errno
}

// Statfs reports the layer's size: contents in blocks, nodes as files, none
// free.
func (i *inode) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	out.Blocks = i.fs.tree.blocks
	out.Files = i.fs.tree.files
	out.Bsize = blockSize
	out.Frsize = blockSize
	out.NameLen = maxNameLen
	return 0
}

// The filesystem is read-only: every change fails with EROFS (the mount is
// read-only too, so the kernel normally answers before asking).

// Setattr fails with EROFS.
func (i *inode) Setattr(ctx context.Context, f fusefs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return syscall.EROFS
}

// Setxattr fails with EROFS.
func (i *inode) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	return syscall.EROFS
}

// Removexattr fails with EROFS.
func (i *inode) Removexattr(ctx context.Context, attr string) syscall.Errno {
	return syscall.EROFS
}

// Create fails with EROFS.
func (i *inode) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fusefs.Inode, fusefs.FileHandle, uint32, syscall.Errno) {
	return nil, nil, 0, syscall.EROFS
}

// Mkdir fails with EROFS.
func (i *inode) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}

// Mknod fails with EROFS.
func (i *inode) Mknod(ctx context.Context, name string, mode uint32, dev uint32, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}

// Link fails with EROFS.
func (i *inode) Link(ctx context.Context, target fusefs.InodeEmbedder, name string, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}

// Symlink fails with EROFS.
func (i *inode) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}

// Unlink fails with EROFS.
func (i *inode) Unlink(ctx context.Context, name string) syscall.Errno { return syscall.EROFS }

// Rmdir fails with EROFS.
func (i *inode) Rmdir(ctx context.Context, name string) syscall.Errno { return syscall.EROFS }

// Rename fails with EROFS.
func (i *inode) Rename(ctx context.Context, name string, newParent fusefs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	return syscall.EROFS
}

type readResult struct {
	n   int
	err error
}

// read fills p from the Layer at off. It returns within the read timeout
// whatever the Layer does: a ReadAt still running then keeps its own buffer
// (never p, which go-fuse reuses) and is abandoned.
func (fsys *filesystem) read(fctx context.Context, n *node, p []byte, off int64) (int, syscall.Errno) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(fsys.logCtx, fsys.opts.readTimeout)
	defer cancel()

	bp := fsys.buffer(len(p))
	buf := (*bp)[:len(p)]
	done := make(chan readResult)
	abandon := make(chan struct{})
	go func() {
		nr, err := fsys.layer.ReadAt(ctx, n.entry, buf, off)
		select {
		case done <- readResult{nr, err}:
		case <-abandon:
			fsys.bufs.Put(bp)
		}
	}()

	var (
		nr  int
		err error
	)
	select {
	case r := <-done:
		nr = min(max(r.n, 0), len(p))
		copy(p, buf[:nr])
		fsys.bufs.Put(bp)
		switch {
		case nr == len(p) && (r.err == nil || errors.Is(r.err, io.EOF)):
			err = nil
		case r.err == nil || errors.Is(r.err, io.EOF):
			err = fmt.Errorf("reading %s: %d bytes at %d, got %d: %w", n.name, len(p), off, nr, io.ErrUnexpectedEOF)
		default:
			err = fmt.Errorf("reading %s: %d bytes at %d: %w", n.name, len(p), off, r.err)
		}
	case <-ctx.Done():
		close(abandon)
		err = fmt.Errorf("reading %s: %d bytes at %d: no answer after %v: %w", n.name, len(p), off, fsys.opts.readTimeout, ErrReadTimeout)
	case <-fctx.Done():
		close(abandon)
		err = fmt.Errorf("reading %s: %d bytes at %d: %w", n.name, len(p), off, ErrInterrupted)
	}

	var errno syscall.Errno
	switch {
	case err == nil:
	case errors.Is(err, ErrInterrupted):
		nr, errno = 0, syscall.EINTR
		log.G(fsys.logCtx).WithError(err).Debug("layer read interrupted")
	default:
		nr, errno = 0, syscall.EIO
		fsys.errLog.Do(func() {
			log.G(fsys.logCtx).WithError(err).Error("layer read failed, returning EIO (further errors are logged at most every few seconds)")
		})
	}
	if fsys.opts.observer != nil {
		fsys.opts.observer(Event{
			Name:    n.name,
			Offset:  off,
			Size:    len(p),
			Bytes:   nr,
			Latency: time.Since(start),
			Err:     err,
		})
	}
	return nr, errno
}

// buffer returns a pooled buffer of at least size bytes.
func (fsys *filesystem) buffer(size int) *[]byte {
	if bp, ok := fsys.bufs.Get().(*[]byte); ok && cap(*bp) >= size {
		return bp
	}
	b := make([]byte, max(size, 128<<10))
	return &b
}
