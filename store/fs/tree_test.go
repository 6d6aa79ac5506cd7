package fs

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/seekable"
)

var t0 = time.Unix(1700000000, 123456789)

func ent(typ, name string, mode int64) seekable.Entry {
	return seekable.Entry{Name: name, Type: typ, Mode: mode, ModTime: t0}
}

func withLink(e seekable.Entry, link string) seekable.Entry { e.Linkname = link; return e }
func withSize(e seekable.Entry, n int64) seekable.Entry     { e.Size = n; return e }
func withOwner(e seekable.Entry, uid, gid int) seekable.Entry {
	e.UID, e.GID = uid, gid
	return e
}
func withXattr(e seekable.Entry, k, v string) seekable.Entry {
	if e.Xattrs == nil {
		e.Xattrs = map[string]string{}
	}
	e.Xattrs[k] = v
	return e
}

// want describes one node of a built tree; zero fields are not checked
// except mode, which always is.
type want struct {
	mode   uint32
	uid    uint32
	nlink  uint32
	size   uint64
	rdev   uint32
	link   string
	xattrs map[string]string
	names  []string
	entry  string // name of the TOC entry serving the contents
	epoch  bool   // mtime is the Unix epoch (implied directory)
}

func lookupPath(tr *tree, p string) *node {
	n := tr.root
	if p == "" {
		return n
	}
	for c := range strings.SplitSeq(p, "/") {
		n = n.children[c]
		if n == nil {
			return nil
		}
	}
	return n
}

func TestBuildTree(t *testing.T) {
	for _, tc := range []struct {
		name    string
		entries []seekable.Entry
		opaque  string
		want    map[string]*want // nil: must not exist
	}{{
		name: "types and attributes",
		entries: []seekable.Entry{
			ent(typeDir, ".", 0o700), // the root's entry is ignored
			withXattr(withXattr(withOwner(ent(typeDir, "etc", 0o755), 1, 2), "user.a", "b"), "trusted.overlay.opaque", "y"),
			withSize(withOwner(ent(typeReg, "etc/passwd", 0o4644), 3, 4), 10),
			withLink(ent(typeSymlink, "etc/ln", 0o644), "/abs/../target"),
			func() seekable.Entry { e := ent(typeChar, "dev/null", 0o666); e.Devmajor, e.Devminor = 1, 3; return e }(),
			func() seekable.Entry { e := ent(typeBlock, "dev/sda", 0o660); e.Devmajor, e.Devminor = 8, 1; return e }(),
			ent(typeFifo, "run/fifo", 0o600),
			ent(typeDir, "tmp", 0o1777),
		},
		want: map[string]*want{
			"":           {mode: syscall.S_IFDIR | 0o755, nlink: 6, names: []string{"dev", "etc", "run", "tmp"}, epoch: true},
			"etc":        {mode: syscall.S_IFDIR | 0o755, uid: 1, nlink: 2, xattrs: map[string]string{"user.a": "b"}, names: []string{"ln", "passwd"}},
			"etc/passwd": {mode: syscall.S_IFREG | 0o4644, uid: 3, nlink: 1, size: 10, entry: "etc/passwd"},
			"etc/ln":     {mode: syscall.S_IFLNK | 0o777, nlink: 1, size: 14, link: "/abs/../target"},
			"dev":        {mode: syscall.S_IFDIR | 0o755, nlink: 2, epoch: true},
			"dev/null":   {mode: syscall.S_IFCHR | 0o666, nlink: 1, rdev: uint32(unix.Mkdev(1, 3))},
			"dev/sda":    {mode: syscall.S_IFBLK | 0o660, nlink: 1, rdev: uint32(unix.Mkdev(8, 1))},
			"run/fifo":   {mode: syscall.S_IFIFO | 0o600, nlink: 1},
			"tmp":        {mode: syscall.S_IFDIR | 0o1777, nlink: 2},
		},
	}, {
		name: "whiteouts and opaque directories",
		entries: []seekable.Entry{
			withOwner(ent(typeReg, "a/.wh.gone", 0o644), 5, 6),
			ent(typeDir, "o", 0o750),
			ent(typeReg, "o/.wh..wh..opq", 0o644),
			ent(typeReg, "o/new", 0o644),
			ent(typeReg, ".wh..wh.plnk", 0o644), // aufs metadata: dropped
			ent(typeReg, ".wh..wh..opq", 0o644), // opaque root
			ent(typeReg, "b/.wh..", 0o644),      // invalid: skipped
		},
		opaque: opaqueXattrTrusted,
		want: map[string]*want{
			"":       {mode: syscall.S_IFDIR | 0o755, names: []string{"a", "b", "o"}, xattrs: map[string]string{"trusted.overlay.opaque": "y"}},
			"a/gone": {mode: syscall.S_IFCHR, uid: 5, nlink: 1},
			"o":      {mode: syscall.S_IFDIR | 0o750, names: []string{"new"}, xattrs: map[string]string{"trusted.overlay.opaque": "y"}},
			"b":      {mode: syscall.S_IFDIR | 0o755, names: []string{}},
		},
	}, {
		name: "user xattr for opaque",
		entries: []seekable.Entry{
			ent(typeReg, "o/.wh..wh..opq", 0o644),
			withXattr(withXattr(ent(typeDir, "r", 0o755), "user.overlay.redirect", "/o"), "user.ok", "1"),
		},
		opaque: opaqueXattrUser,
		want: map[string]*want{
			"o": {mode: syscall.S_IFDIR | 0o755, names: []string{}, xattrs: map[string]string{"user.overlay.opaque": "y"}},
			"r": {mode: syscall.S_IFDIR | 0o755, names: []string{}, xattrs: map[string]string{"user.ok": "1"}},
		},
	}, {
		name: "hardlinks share a node and count links",
		entries: []seekable.Entry{
			withSize(ent(typeReg, "f", 0o644), 3),
			withLink(ent(typeHardlink, "d/g", 0o600), "f"),
			withLink(ent(typeHardlink, "h", 0o600), "./d/g"),
			withSize(ent(typeReg, "f", 0o644), 7), // replaces f; g and h keep the old node
			withLink(ent(typeHardlink, "bad", 0o644), "missing"),
			withLink(ent(typeHardlink, "dirlink", 0o644), "d"),
			withLink(ent(typeSymlink, "s", 0o644), "x"),
			withLink(ent(typeHardlink, "s2", 0o600), "s"),
		},
		want: map[string]*want{
			"d/g":     {mode: syscall.S_IFREG | 0o600, nlink: 2, size: 3, entry: "f"},
			"h":       {mode: syscall.S_IFREG | 0o600, nlink: 2, size: 3, entry: "f"},
			"f":       {mode: syscall.S_IFREG | 0o644, nlink: 1, size: 7, entry: "f"},
			"s2":      {mode: syscall.S_IFLNK | 0o777, nlink: 2, link: "x"},
			"bad":     nil,
			"dirlink": nil,
		},
	}, {
		name: "later entries replace earlier, directories merge",
		entries: []seekable.Entry{
			ent(typeDir, "m", 0o755),
			withXattr(ent(typeDir, "m", 0o755), "user.x", "1"),
			ent(typeReg, "m/a", 0o644),
			withXattr(withOwner(ent(typeDir, "m", 0o700), 7, 7), "user.y", "2"),
			ent(typeReg, "swap", 0o644),
			ent(typeDir, "swap", 0o711),
			ent(typeReg, "swap/in", 0o644),
			ent(typeDir, "gone", 0o755),
			ent(typeReg, "gone/child", 0o644),
			ent(typeReg, "gone", 0o600),
			ent(typeReg, "gone/orphan", 0o644), // parent is a file now: skipped
		},
		want: map[string]*want{
			"m":           {mode: syscall.S_IFDIR | 0o700, uid: 7, names: []string{"a"}, xattrs: map[string]string{"user.x": "1", "user.y": "2"}},
			"swap":        {mode: syscall.S_IFDIR | 0o711, names: []string{"in"}},
			"gone":        {mode: syscall.S_IFREG | 0o600, nlink: 1},
			"gone/child":  nil,
			"gone/orphan": nil,
		},
	}, {
		name: "names are confined to the root",
		entries: []seekable.Entry{
			ent(typeReg, "../../etc/x", 0o644),
			ent(typeReg, "/abs/y", 0o644),
			ent(typeReg, "./a//b/../c", 0o644),
			ent(typeReg, "nul\x00name", 0o644),
			ent(typeReg, strings.Repeat("n", 256), 0o644),
			ent("weird", "w", 0o644),
		},
		want: map[string]*want{
			"":      {mode: syscall.S_IFDIR | 0o755, names: []string{"a", "abs", "etc"}},
			"etc/x": {mode: syscall.S_IFREG | 0o644},
			"abs/y": {mode: syscall.S_IFREG | 0o644},
			"a/c":   {mode: syscall.S_IFREG | 0o644},
			"w":     nil,
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			opaque := tc.opaque
			if opaque == "" {
				opaque = opaqueXattrTrusted
			}
			toc := &seekable.TOC{Entries: tc.entries}
			tr := buildTree(context.Background(), toc, opaque)
			for p, w := range tc.want {
				n := lookupPath(tr, p)
				if w == nil {
					assert.Nil(t, n, "%q must not exist", p)
					continue
				}
				require.NotNil(t, n, "%q must exist", p)
				assert.Equal(t, w.mode, n.mode, "%q mode %o", p, n.mode)
				if w.uid != 0 {
					assert.Equal(t, w.uid, n.uid, "%q uid", p)
				}
				if w.nlink != 0 {
					assert.Equal(t, w.nlink, n.nlink, "%q nlink", p)
				}
				if w.size != 0 {
					assert.Equal(t, w.size, n.size, "%q size", p)
				}
				assert.Equal(t, w.rdev, n.rdev, "%q rdev", p)
				assert.Equal(t, w.link, n.link, "%q link", p)
				if w.xattrs != nil {
					assert.Equal(t, w.xattrs, n.xattrs, "%q xattrs", p)
				}
				if w.names != nil {
					assert.Equal(t, w.names, n.names, "%q names", p)
				}
				if w.entry != "" {
					require.NotNil(t, n.entry, "%q entry", p)
					assert.Equal(t, w.entry, n.entry.Name, "%q entry", p)
				} else if n.mode&syscall.S_IFMT != syscall.S_IFREG {
					assert.Nil(t, n.entry, "%q entry", p)
				}
				if w.epoch {
					assert.Equal(t, int64(0), n.mtime.Unix(), "%q mtime", p)
				} else if p != "" && n.mode&syscall.S_IFMT != syscall.S_IFDIR {
					assert.True(t, n.mtime.Equal(t0), "%q mtime %v", p, n.mtime)
				}
				assert.NotZero(t, n.ino, "%q ino", p)
			}
		})
	}
}

func TestBuildTreeInodes(t *testing.T) {
	toc := &seekable.TOC{Entries: []seekable.Entry{
		withSize(ent(typeReg, "a/f", 0o644), 5000),
		withLink(ent(typeHardlink, "b/g", 0o644), "a/f"),
		withSize(ent(typeReg, "c", 0o644), 1),
	}}
	tr := buildTree(context.Background(), toc, opaqueXattrTrusted)
	seen := map[uint64]*node{}
	var walk func(n *node)
	walk = func(n *node) {
		if o, ok := seen[n.ino]; ok {
			assert.Same(t, o, n, "inode %d shared by different nodes", n.ino)
		}
		seen[n.ino] = n
		for _, c := range n.children {
			walk(c)
		}
	}
	walk(tr.root)
	assert.Len(t, seen, 5) // root, a, a/f = b/g, b, c
	assert.Equal(t, uint64(5), tr.files)
	assert.Equal(t, uint64(2+1), tr.blocks)
	assert.Equal(t, uint64(1), tr.root.ino)
}

// FuzzBuildTree feeds arbitrary names, types and link targets: the builder
// must not panic, and every reachable node must be consistent.
func FuzzBuildTree(f *testing.F) {
	f.Add("a/b/c", "reg", "", "a/.wh.b", "hardlink", "a/b/c")
	f.Add("../x", "dir", "", ".wh..wh..opq", "reg", "")
	f.Add("d", "symlink", "/etc/passwd", "d/e", "hardlink", "d")
	f.Add("x/y", "hardlink", "x/y", "./x", "char", "")
	f.Add("\x00", "fifo", "", strings.Repeat("z/", 300), "dir", "..")
	f.Fuzz(func(t *testing.T, n1, t1, l1, n2, t2, l2 string) {
		toc := &seekable.TOC{Entries: []seekable.Entry{
			withLink(ent(t1, n1, 0o755), l1),
			withLink(ent(t2, n2, 0o7777), l2),
			withLink(ent(t1, n2+"/"+n1, 0o644), l1),
		}}
		tr := buildTree(context.Background(), toc, opaqueXattrTrusted)
		stack := []*node{tr.root}
		seen := map[*node]bool{}
		for len(stack) > 0 {
			n := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			if n.ino == 0 || n.nlink == 0 {
				t.Fatalf("node %q: ino %d nlink %d", n.name, n.ino, n.nlink)
			}
			if !n.isDir() {
				continue
			}
			if seen[n] {
				t.Fatalf("directory %q reached twice", n.name)
			}
			seen[n] = true
			if len(n.names) != len(n.children) {
				t.Fatalf("directory %q: %d names, %d children", n.name, len(n.names), len(n.children))
			}
			for name, c := range n.children {
				if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") || len(name) > maxNameLen {
					t.Fatalf("bad name %q in %q", name, n.name)
				}
				stack = append(stack, c)
			}
		}
	})
}
