package fs

import (
	"context"
	"path"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/log"
	"golang.org/x/sys/unix"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/seekable"
)

// Tar whiteout conventions (OCI image spec, "Whiteouts").
const (
	whiteoutPrefix     = ".wh."
	whiteoutMetaPrefix = ".wh..wh."
	whiteoutOpaqueDir  = ".wh..wh..opq"
)

// Overlayfs xattrs marking an opaque directory on a lower layer.
const (
	opaqueXattrTrusted = "trusted.overlay.opaque"
	opaqueXattrUser    = "user.overlay.opaque"
)

// TOC entry types (seekable.Entry.Type).
const (
	typeReg      = "reg"
	typeDir      = "dir"
	typeSymlink  = "symlink"
	typeHardlink = "hardlink"
	typeChar     = "char"
	typeBlock    = "block"
	typeFifo     = "fifo"
)

const (
	// maxNameLen is the longest path component the kernel accepts.
	maxNameLen = 255
	// blockSize is the st_blksize reported for every file and by statfs.
	blockSize = 4096
	// dirSize is the st_size reported for directories (as on ext4).
	dirSize = 4096
	// maxLoggedSkips bounds the warnings about unusable TOC entries; the
	// rest are counted in one summary line.
	maxLoggedSkips = 10
)

// node is one file of the layer, shared by all its names when hardlinked.
// Nodes are immutable once buildTree returns.
type node struct {
	entry  *seekable.Entry // contents of a regular file; nil otherwise
	name   string          // path of the first name, for logs and events
	mode   uint32          // S_IFMT | permission, setuid, setgid, sticky bits
	uid    uint32
	gid    uint32
	size   uint64
	mtime  time.Time
	rdev   uint32
	link   string            // symlink target, as stored
	xattrs map[string]string // nil when none
	ino    uint64
	nlink  uint32

	// Directories only.
	parent   *node
	children map[string]*node
	names    []string // sorted keys of children
}

func (n *node) isDir() bool { return n.mode&syscall.S_IFMT == syscall.S_IFDIR }

// tree is the layer's file tree, built once from its TOC.
type tree struct {
	root   *node
	files  uint64 // distinct nodes
	blocks uint64 // blockSize blocks used by regular files' contents
}

// builder applies TOC entries in order, as tar extraction would.
type builder struct {
	ctx         context.Context
	root        *node
	opaqueXattr string
	skipped     int
}

// buildTree builds the file tree a layer's TOC describes, with the semantics
// of containerd's tar extraction with overlayfs whiteout conversion
// (archive.Apply + archive.OverlayConvertWhiteout):
//
//   - names are made relative to the root and ".." cannot climb above it;
//     the root's own entry ("./") is ignored, the root is 0755 root:root;
//   - missing parent directories are created (0755, root:root, epoch mtime);
//   - a later entry replaces an earlier one of the same name, except a
//     directory over a directory, which merges (metadata updated, xattrs
//     added, children kept);
//   - a hardlink names the node its target has at that point of the TOC and
//     applies its own owner, mode, mtime and xattrs to it (as link(2) then
//     chown/chmod/chtimes/setxattr do);
//   - ".wh.NAME" becomes a character device 0/0 named NAME, with mode 0 and
//     the whiteout's owner: the form overlayfs expects on a lower layer;
//   - ".wh..wh..opq" in directory D sets the xattr opaqueXattr = "y" on D;
//     other ".wh..wh." names (aufs metadata) are dropped;
//   - symlinks have mode 0777 whatever their header says, as on Linux;
//   - xattrs in the trusted namespace are dropped (see setMeta).
//
// Entries that cannot be applied (bad name, parent not a directory, hardlink
// to a missing file or to a directory, unknown type) are skipped with a
// warning; extraction would fail on them, a read-only view just leaves them
// out. buildTree never fails and uses memory proportional to the TOC.
func buildTree(ctx context.Context, toc *seekable.TOC, opaqueXattr string) *tree {
	b := &builder{
		ctx:         ctx,
		root:        newDir("", nil),
		opaqueXattr: opaqueXattr,
	}
	for i := range toc.Entries {
		b.apply(&toc.Entries[i])
	}
	if b.skipped > maxLoggedSkips {
		log.G(ctx).WithField("skipped", b.skipped).Warn("layer TOC: entries left out of the filesystem")
	}
	return b.finish()
}

func newDir(name string, parent *node) *node {
	return &node{
		name:     name,
		mode:     syscall.S_IFDIR | 0o755,
		size:     dirSize,
		mtime:    time.Unix(0, 0),
		parent:   parent,
		children: make(map[string]*node),
	}
}

func (b *builder) skip(e *seekable.Entry, why string) {
	b.skipped++
	if b.skipped <= maxLoggedSkips {
		log.G(b.ctx).WithField("name", e.Name).WithField("type", e.Type).Warnf("layer TOC: entry left out of the filesystem: %s", why)
	}
}

// cleanName makes a TOC name relative to the root ("" is the root itself).
// It reports false for names the kernel could not serve.
func cleanName(name string) (string, bool) {
	p := path.Clean("/" + name)[1:]
	if p == "" {
		return "", true
	}
	for c := range strings.SplitSeq(p, "/") {
		if len(c) > maxNameLen || strings.IndexByte(c, 0) >= 0 {
			return "", false
		}
	}
	return p, true
}

// dir returns the directory at p, creating missing ones. It reports false
// when a component exists and is not a directory.
func (b *builder) dir(p string) (*node, bool) {
	d := b.root
	if p == "" {
		return d, true
	}
	for c := range strings.SplitSeq(p, "/") {
		child, ok := d.children[c]
		if !ok {
			child = newDir(path.Join(d.name, c), d)
			d.children[c] = child
		} else if !child.isDir() {
			return nil, false
		}
		d = child
	}
	return d, true
}

// lookup returns the node at p without creating anything.
func (b *builder) lookup(p string) *node {
	d := b.root
	if p == "" {
		return d
	}
	for c := range strings.SplitSeq(p, "/") {
		if d.children == nil {
			return nil
		}
		child, ok := d.children[c]
		if !ok {
			return nil
		}
		d = child
	}
	return d
}

func (b *builder) apply(e *seekable.Entry) {
	name, ok := cleanName(e.Name)
	if !ok {
		b.skip(e, "invalid name")
		return
	}
	if name == "" {
		// The layer's root: containerd ignores it ("resolved to root").
		return
	}
	dirName, base := path.Split(name)
	parent, ok := b.dir(strings.TrimSuffix(dirName, "/"))
	if !ok {
		b.skip(e, "a parent is not a directory")
		return
	}

	if strings.HasPrefix(base, whiteoutPrefix) {
		b.whiteout(e, parent, name, base)
		return
	}

	switch e.Type {
	case typeDir:
		if old, ok := parent.children[base]; ok && old.isDir() {
			b.setMeta(old, e)
			return
		}
		n := newDir(name, parent)
		b.setMeta(n, e)
		parent.children[base] = n
	case typeReg:
		n := &node{entry: e, name: name, mode: syscall.S_IFREG, size: uint64(max(e.Size, 0))}
		b.setMeta(n, e)
		parent.children[base] = n
	case typeSymlink:
		n := &node{name: name, mode: syscall.S_IFLNK, link: e.Linkname, size: uint64(len(e.Linkname))}
		b.setMeta(n, e)
		parent.children[base] = n
	case typeHardlink:
		target, ok := cleanName(e.Linkname)
		if !ok {
			b.skip(e, "invalid hardlink target")
			return
		}
		n := b.lookup(target)
		switch {
		case n == nil:
			b.skip(e, "hardlink target does not exist")
			return
		case n.isDir():
			b.skip(e, "hardlink target is a directory")
			return
		case parent.children[base] == n:
			return
		}
		b.setMeta(n, e)
		parent.children[base] = n
	case typeChar, typeBlock, typeFifo:
		n := &node{name: name, mode: map[string]uint32{
			typeChar:  syscall.S_IFCHR,
			typeBlock: syscall.S_IFBLK,
			typeFifo:  syscall.S_IFIFO,
		}[e.Type]}
		if e.Type != typeFifo {
			n.rdev = uint32(unix.Mkdev(uint32(e.Devmajor), uint32(e.Devminor)))
		}
		b.setMeta(n, e)
		parent.children[base] = n
	default:
		b.skip(e, "unknown entry type")
	}
}

func (b *builder) whiteout(e *seekable.Entry, parent *node, name, base string) {
	switch {
	case base == whiteoutOpaqueDir:
		if parent.xattrs == nil {
			parent.xattrs = make(map[string]string, 1)
		}
		parent.xattrs[b.opaqueXattr] = "y"
	case strings.HasPrefix(base, whiteoutMetaPrefix):
		log.G(b.ctx).WithField("name", e.Name).Debug("layer TOC: whiteout metadata dropped")
	default:
		target := base[len(whiteoutPrefix):]
		if target == "." || target == ".." || target == "" {
			b.skip(e, "invalid whiteout")
			return
		}
		parent.children[target] = &node{
			name:  path.Join(path.Dir(name), target),
			mode:  syscall.S_IFCHR, // rdev 0/0, mode 0, as mknod(path, S_IFCHR, 0)
			uid:   uint32(e.UID),
			gid:   uint32(e.GID),
			mtime: e.ModTime,
		}
	}
}

// setMeta applies an entry's owner, permission bits, mtime and xattrs to n.
// Symlinks keep mode 0777: Linux has no lchmod. Xattrs in the trusted
// namespace are dropped, as containerd's extraction does ("admin attributes
// from archive not supported"): a layer must not set trusted.overlay.*
// (opaque, redirect, metacopy) and steer overlayfs. With user overlay xattrs,
// user.overlay.* is dropped for the same reason.
func (b *builder) setMeta(n *node, e *seekable.Entry) {
	if n.mode&syscall.S_IFMT == syscall.S_IFLNK {
		n.mode = syscall.S_IFLNK | 0o777
	} else {
		n.mode = n.mode&syscall.S_IFMT | uint32(e.Mode)&0o7777
	}
	n.uid = uint32(e.UID)
	n.gid = uint32(e.GID)
	n.mtime = e.ModTime
	if len(e.Xattrs) > 0 && n.xattrs == nil {
		n.xattrs = make(map[string]string, len(e.Xattrs))
	}
	for k, v := range e.Xattrs {
		if strings.HasPrefix(k, "trusted.") || (b.opaqueXattr == opaqueXattrUser && strings.HasPrefix(k, "user.overlay.")) {
			continue
		}
		n.xattrs[k] = v
	}
}

// finish numbers the nodes reachable from the root, counts their links and
// sorts directory listings. It walks iteratively: depth is bounded only by
// the TOC's name lengths.
func (b *builder) finish() *tree {
	t := &tree{root: b.root}
	next := uint64(1)
	number := func(n *node) {
		if n.ino == 0 {
			n.ino = next
			next++
			t.files++
			if n.mode&syscall.S_IFMT == syscall.S_IFREG {
				t.blocks += (n.size + blockSize - 1) / blockSize
			}
		}
	}
	number(b.root)
	b.root.nlink = 2
	stack := []*node{b.root}
	for len(stack) > 0 {
		d := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		d.names = make([]string, 0, len(d.children))
		for name, c := range d.children {
			d.names = append(d.names, name)
			number(c)
			if c.isDir() {
				c.parent = d
				c.nlink = 2
				d.nlink++
				stack = append(stack, c)
			} else {
				c.nlink++
			}
		}
		slices.Sort(d.names)
	}
	return t
}
