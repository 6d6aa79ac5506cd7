package fs

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/internal/testutil"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/seekable"
)

var (
	mt1 = time.Unix(1600000000, 0)
	mt2 = time.Unix(1700000000, 987654321)
)

func dir(name string, mode int64, uid int, mt time.Time) file {
	return file{hdr: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: mode, Uid: uid, Gid: uid, ModTime: mt}}
}

func reg(name string, mode int64, uid int, body []byte) file {
	return file{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Uid: uid, Gid: uid + 1, ModTime: mt2}, body: body}
}

func link(typ byte, name, target string) file {
	return file{hdr: tar.Header{Typeflag: typ, Name: name, Linkname: target, Mode: 0o777, ModTime: mt1}}
}

func dev(typ byte, name string, mode, major, minor int64) file {
	return file{hdr: tar.Header{Typeflag: typ, Name: name, Mode: mode, Devmajor: major, Devminor: minor, ModTime: mt1}}
}

func xattrs(f file, kv ...string) file {
	f.hdr.PAXRecords = map[string]string{}
	for i := 0; i < len(kv); i += 2 {
		f.hdr.PAXRecords["SCHILY.xattr."+kv[i]] = kv[i+1]
	}
	return f
}

func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// sampleFiles is a layer with every kind of entry, including the cases tar
// extraction resolves by order.
func sampleFiles() []file {
	sh := reg("bin/sh", 0o755, 0, []byte("#!/bin/busybox sh\n"))
	sh2 := sh
	sh2.hdr.Typeflag, sh2.hdr.Name, sh2.hdr.Linkname, sh2.body = tar.TypeLink, "bin/sh2", "bin/sh", nil
	x := reg("usr/lib/x", 0o644, 0, []byte("x"))
	x2 := x
	x2.hdr.Typeflag, x2.hdr.Name, x2.hdr.Linkname, x2.body = tar.TypeLink, "usr/lib/x2", "./usr/lib/x", nil
	return []file{
		dir("./", 0o755, 0, mt1),
		dir("bin/", 0o755, 0, mt1),
		sh,
		sh2,
		link(tar.TypeSymlink, "bin/ls", "/bin/busybox"),
		link(tar.TypeSymlink, "bin/dangling", "../../../nowhere"),
		xattrs(dir("etc/", 0o755, 0, mt2), "user.dir", "etc"),
		reg("etc/passwd", 0o644, 0, []byte("root:x:0:0:root:/root:/bin/sh\n")),
		reg("etc/empty", 0o600, 0, nil),
		reg("etc/dup", 0o644, 0, []byte("one")),
		reg("etc/dup", 0o640, 0, []byte("two, longer")),
		reg("etc/.wh.removed", 0o644, 0, nil),
		xattrs(reg("etc/attrs", 0o644, 0, []byte("a")), "user.foo", "bar", "trusted.baz", "q\x00ux"),
		reg("etc/ünïcode name", 0o644, 0, []byte("u")),
		dir("tmp/", 0o1777, 0, mt1),
		dir("secret/", 0o700, 1000, mt2),
		reg("secret/key", 0o600, 1000, []byte("k")),
		reg("usr/bin/sudo", 0o4755, 0, []byte("sudo")),
		reg("usr/bin/wall", 0o2755, 0, []byte("wall")),
		x,
		x2,
		reg("lib", 0o644, 0, []byte("file first")),
		dir("lib/", 0o750, 0, mt1),
		reg("lib/in", 0o644, 0, []byte("in")),
		dir("merge/", 0o755, 0, mt1),
		reg("merge/a", 0o644, 0, []byte("a")),
		dir("merge/", 0o711, 5, mt2),
		dir("opq/", 0o755, 0, mt1),
		reg("opq/.wh..wh..opq", 0o644, 0, nil),
		reg("opq/new", 0o644, 0, []byte("new")),
		dir("dev/", 0o755, 0, mt1),
		dev(tar.TypeChar, "dev/null", 0o666, 1, 3),
		dev(tar.TypeBlock, "dev/sda", 0o660, 8, 0),
		dev(tar.TypeFifo, "dev/fifo", 0o600, 0, 0),
		reg("data/big", 0o644, 0, randomBytes(3<<20+12345, 1)),
	}
}

// implied names the directories created for a parent and the whiteouts:
// containerd gives them the extraction time as mtime.
var implied = map[string]bool{"usr": true, "usr/bin": true, "usr/lib": true, "data": true, "etc/removed": true}

func lstat(t *testing.T, p string) *syscall.Stat_t {
	t.Helper()
	var st syscall.Stat_t
	require.NoError(t, syscall.Lstat(p, &st), p)
	return &st
}

func listXattrs(t *testing.T, p string) map[string]string {
	t.Helper()
	sz, err := unix.Llistxattr(p, nil)
	require.NoError(t, err, p)
	buf := make([]byte, sz)
	sz, err = unix.Llistxattr(p, buf)
	require.NoError(t, err, p)
	out := map[string]string{}
	for _, k := range strings.Split(string(buf[:sz]), "\x00") {
		if k == "" {
			continue
		}
		n, err := unix.Lgetxattr(p, k, nil)
		require.NoError(t, err, "%s %s", p, k)
		v := make([]byte, n)
		n, err = unix.Lgetxattr(p, k, v)
		require.NoError(t, err, "%s %s", p, k)
		out[k] = string(v[:n])
	}
	return out
}

func names(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	require.NoError(t, filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		out = append(out, rel)
		return nil
	}))
	return out
}

// compareTrees checks that got has the same names, types, modes, owners,
// link counts, devices, sizes, mtimes, xattrs, link targets and hardlink
// groups as want; contents too when withContents.
func compareTrees(t *testing.T, want, got string, withContents bool) {
	t.Helper()
	wantNames, gotNames := names(t, want), names(t, got)
	require.Equal(t, wantNames, gotNames)
	wantGroups, gotGroups := map[uint64][]string{}, map[uint64][]string{}
	for _, rel := range wantNames {
		wp, gp := filepath.Join(want, rel), filepath.Join(got, rel)
		ws, gs := lstat(t, wp), lstat(t, gp)
		wantGroups[ws.Ino] = append(wantGroups[ws.Ino], rel)
		gotGroups[gs.Ino] = append(gotGroups[gs.Ino], rel)
		if rel == "." {
			continue // the extraction root is a temp dir; the layer's root entry is ignored
		}
		assert.Equal(t, ws.Mode, gs.Mode, "%s: mode %o, want %o", rel, gs.Mode, ws.Mode)
		assert.Equal(t, ws.Uid, gs.Uid, "%s: uid", rel)
		assert.Equal(t, ws.Gid, gs.Gid, "%s: gid", rel)
		assert.Equal(t, ws.Nlink, gs.Nlink, "%s: nlink", rel)
		assert.Equal(t, ws.Rdev, gs.Rdev, "%s: rdev", rel)
		isDir := ws.Mode&syscall.S_IFMT == syscall.S_IFDIR
		if !isDir {
			assert.Equal(t, ws.Size, gs.Size, "%s: size", rel)
			assert.Equal(t, (ws.Size+511)/512, gs.Blocks, "%s: blocks", rel)
		}
		if !implied[rel] {
			assert.Equal(t, ws.Mtim, gs.Mtim, "%s: mtime", rel)
		}
		assert.Equal(t, listXattrs(t, wp), listXattrs(t, gp), "%s: xattrs", rel)
		switch ws.Mode & syscall.S_IFMT {
		case syscall.S_IFLNK:
			wl, err := os.Readlink(wp)
			require.NoError(t, err)
			gl, err := os.Readlink(gp)
			require.NoError(t, err)
			assert.Equal(t, wl, gl, "%s: link target", rel)
		case syscall.S_IFREG:
			if withContents {
				wb, err := os.ReadFile(wp)
				require.NoError(t, err)
				gb, err := os.ReadFile(gp)
				require.NoError(t, err)
				assert.True(t, bytes.Equal(wb, gb), "%s: contents differ", rel)
			}
		}
	}
	group := func(m map[uint64][]string) [][]string {
		var out [][]string
		for _, g := range m {
			out = append(out, g)
		}
		slices.SortFunc(out, func(a, b []string) int { return strings.Compare(a[0], b[0]) })
		return out
	}
	assert.Equal(t, group(wantGroups), group(gotGroups), "hardlink groups")
}

func TestMountMatchesExtraction(t *testing.T) {
	testutil.RequireFUSE(t)
	tarball := tarOf(t, sampleFiles())
	want := extract(t, tarball)
	layer := layerOf(t, tarball)
	var obs observed
	mnt := mountLayer(t, layer, WithObserver(obs.observe))

	// Metadata first: none of it may reach the Layer.
	compareTrees(t, want, mnt, false)
	for _, p := range []string{"bin/ls", "bin/dangling"} {
		_, err := os.Readlink(filepath.Join(mnt, p))
		require.NoError(t, err)
	}
	assert.Zero(t, layer.reads.Load(), "stat, readdir, readlink and xattrs must not call Layer.ReadAt")

	compareTrees(t, want, mnt, true)
	assert.NotZero(t, layer.reads.Load())
	events := obs.all()
	require.NotEmpty(t, events)
	var bytesRead int
	for _, e := range events {
		assert.NoError(t, e.Err)
		assert.Equal(t, e.Size, e.Bytes, "%s at %d", e.Name, e.Offset)
		bytesRead += e.Bytes
	}
	assert.GreaterOrEqual(t, bytesRead, 3<<20, "the big file went through the Layer")
}

func TestMountOverlayForm(t *testing.T) {
	testutil.RequireFUSE(t)
	mnt := mountLayer(t, layerOf(t, tarOf(t, sampleFiles())))

	t.Run("whiteout is a char device 0/0", func(t *testing.T) {
		st := lstat(t, filepath.Join(mnt, "etc/removed"))
		assert.Equal(t, uint32(syscall.S_IFCHR), st.Mode)
		assert.Zero(t, st.Rdev)
		_, err := os.Lstat(filepath.Join(mnt, "etc/.wh.removed"))
		assert.ErrorIs(t, err, os.ErrNotExist)
	})
	t.Run("opaque directory has the overlay xattr", func(t *testing.T) {
		assert.Equal(t, map[string]string{"trusted.overlay.opaque": "y"}, listXattrs(t, filepath.Join(mnt, "opq")))
		_, err := os.Lstat(filepath.Join(mnt, "opq", whiteoutOpaqueDir))
		assert.ErrorIs(t, err, os.ErrNotExist)
		var buf [8]byte
		_, err = unix.Lgetxattr(filepath.Join(mnt, "etc"), "trusted.overlay.opaque", buf[:])
		assert.ErrorIs(t, err, unix.ENODATA)
	})
	t.Run("hardlinks share an inode", func(t *testing.T) {
		a, b := lstat(t, filepath.Join(mnt, "bin/sh")), lstat(t, filepath.Join(mnt, "bin/sh2"))
		assert.Equal(t, a.Ino, b.Ino)
		assert.Equal(t, uint64(2), uint64(a.Nlink))
	})
	t.Run("read-only", func(t *testing.T) {
		for name, op := range map[string]func() error{
			"write":    func() error { return os.WriteFile(filepath.Join(mnt, "etc/passwd"), []byte("x"), 0o644) },
			"create":   func() error { return os.WriteFile(filepath.Join(mnt, "etc/new"), []byte("x"), 0o644) },
			"mkdir":    func() error { return os.Mkdir(filepath.Join(mnt, "newdir"), 0o755) },
			"remove":   func() error { return os.Remove(filepath.Join(mnt, "etc/passwd")) },
			"rename":   func() error { return os.Rename(filepath.Join(mnt, "etc/passwd"), filepath.Join(mnt, "etc/p")) },
			"chmod":    func() error { return os.Chmod(filepath.Join(mnt, "etc/passwd"), 0o777) },
			"setxattr": func() error { return unix.Setxattr(filepath.Join(mnt, "etc"), "user.x", []byte("y"), 0) },
			"symlink":  func() error { return os.Symlink("x", filepath.Join(mnt, "etc/sl")) },
		} {
			assert.ErrorIs(t, op(), syscall.EROFS, name)
		}
	})
	t.Run("statfs", func(t *testing.T) {
		var st unix.Statfs_t
		require.NoError(t, unix.Statfs(mnt, &st))
		assert.Equal(t, int64(0x65735546), int64(st.Type), "FUSE_SUPER_MAGIC")
		assert.Equal(t, int64(blockSize), int64(st.Bsize))
		assert.NotZero(t, st.Blocks)
		assert.NotZero(t, st.Files)
		assert.Zero(t, st.Bfree)
		assert.Equal(t, int64(maxNameLen), int64(st.Namelen))
	})
	t.Run("mount options", func(t *testing.T) {
		info, err := os.ReadFile("/proc/self/mountinfo")
		require.NoError(t, err)
		var line string
		for l := range strings.SplitSeq(string(info), "\n") {
			if f := strings.Fields(l); len(f) > 4 && f[4] == mnt {
				line = l
			}
		}
		require.NotEmpty(t, line, "mount %s not in mountinfo", mnt)
		pre, post, ok := strings.Cut(line, " - ")
		require.True(t, ok, line)
		mntOpts := strings.Split(strings.Fields(pre)[5], ",")
		assert.Contains(t, mntOpts, "ro", line)
		assert.NotContains(t, mntOpts, "nosuid", line)
		assert.NotContains(t, mntOpts, "nodev", line)
		f := strings.Fields(post)
		assert.Equal(t, "fuse.zenodo", f[0], line)
		assert.Equal(t, "zenodo", f[1], line)
		sbOpts := strings.Split(f[2], ",")
		assert.Contains(t, sbOpts, "default_permissions", line)
		assert.Contains(t, sbOpts, "allow_other", line)
	})
}

func TestMountUserXattr(t *testing.T) {
	testutil.RequireFUSE(t)
	mnt := mountLayer(t, layerOf(t, tarOf(t, sampleFiles())), WithUserXattr(true))
	assert.Equal(t, map[string]string{"user.overlay.opaque": "y"}, listXattrs(t, filepath.Join(mnt, "opq")))
}

// readBounded reads a file in a goroutine and fails the test if that takes
// longer than a generous bound: a hang is the bug these tests look for.
func readBounded(t *testing.T, p string) error {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		_, err := os.ReadFile(p)
		errc <- err
	}()
	timer := time.NewTimer(time.Minute)
	defer timer.Stop()
	select {
	case err := <-errc:
		return err
	case <-timer.C:
		t.Fatalf("reading %s hung", p)
		return nil
	}
}

func TestMountReadErrors(t *testing.T) {
	testutil.RequireFUSE(t)
	errBroken := errors.New("layer is broken")
	for _, tc := range []struct {
		name    string
		readAt  func(release <-chan struct{}) func(ctx context.Context, e *seekable.Entry, p []byte, off int64) (int, error)
		opts    []Option
		wantErr error
	}{{
		name: "failing layer",
		readAt: func(<-chan struct{}) func(context.Context, *seekable.Entry, []byte, int64) (int, error) {
			return func(context.Context, *seekable.Entry, []byte, int64) (int, error) { return 0, errBroken }
		},
		wantErr: errBroken,
	}, {
		name: "short layer",
		readAt: func(<-chan struct{}) func(context.Context, *seekable.Entry, []byte, int64) (int, error) {
			return func(_ context.Context, _ *seekable.Entry, p []byte, _ int64) (int, error) { return len(p) / 2, nil }
		},
		wantErr: io.ErrUnexpectedEOF,
	}, {
		name: "layer ignoring its context",
		readAt: func(release <-chan struct{}) func(context.Context, *seekable.Entry, []byte, int64) (int, error) {
			return func(_ context.Context, _ *seekable.Entry, p []byte, _ int64) (int, error) {
				<-release
				return len(p), nil
			}
		},
		opts:    []Option{WithReadTimeout(200 * time.Millisecond)},
		wantErr: ErrReadTimeout,
	}, {
		name: "layer honouring its context",
		readAt: func(release <-chan struct{}) func(context.Context, *seekable.Entry, []byte, int64) (int, error) {
			return func(ctx context.Context, _ *seekable.Entry, p []byte, _ int64) (int, error) {
				<-ctx.Done()
				return 0, ctx.Err()
			}
		},
		opts:    []Option{WithReadTimeout(200 * time.Millisecond)},
		wantErr: ErrReadTimeout,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			layer := layerOf(t, tarOf(t, sampleFiles()))
			release := make(chan struct{})
			layer.readAt = tc.readAt(release)
			var obs observed
			mnt := mountLayer(t, layer, append(tc.opts, WithObserver(obs.observe))...)
			t.Cleanup(func() { close(release) }) // runs before the unmount

			err := readBounded(t, filepath.Join(mnt, "etc/passwd"))
			require.ErrorIs(t, err, syscall.EIO)
			// Metadata still works.
			_, err = os.Stat(filepath.Join(mnt, "data/big"))
			require.NoError(t, err)

			events := obs.all()
			require.NotEmpty(t, events)
			for _, e := range events {
				require.Error(t, e.Err)
				assert.Zero(t, e.Bytes)
				assert.ErrorIs(t, e.Err, tc.wantErr)
			}
		})
	}
}

func TestMountBadArguments(t *testing.T) {
	ctx := context.Background()
	layer := &memLayer{toc: &seekable.TOC{}}
	_, err := Mount(ctx, t.TempDir(), nil)
	assert.Error(t, err)
	_, err = Mount(ctx, t.TempDir(), &memLayer{})
	assert.Error(t, err)
	_, err = Mount(ctx, filepath.Join(t.TempDir(), "missing"), layer)
	assert.ErrorIs(t, err, os.ErrNotExist)
	_, err = Mount(ctx, t.TempDir(), layer, WithReadTimeout(0))
	assert.Error(t, err)
}

func TestUnmount(t *testing.T) {
	testutil.RequireFUSE(t)
	layer := layerOf(t, tarOf(t, sampleFiles()))

	t.Run("twice", func(t *testing.T) {
		mnt := t.TempDir()
		m, err := Mount(context.Background(), mnt, layer)
		require.NoError(t, err)
		t.Cleanup(func() { _ = m.Unmount() })
		require.NoError(t, m.Check())
		require.NoError(t, m.Unmount())
		assert.ErrorIs(t, m.Check(), errdefs.ErrUnavailable)
		require.NoError(t, m.Unmount())
		_, err = os.Stat(filepath.Join(mnt, "etc"))
		assert.ErrorIs(t, err, os.ErrNotExist)
	})
	t.Run("busy mount is detached lazily", func(t *testing.T) {
		mnt := t.TempDir()
		m, err := Mount(context.Background(), mnt, layer)
		require.NoError(t, err)
		t.Cleanup(func() { _ = m.Unmount() })
		m.wait = time.Millisecond // do not wait for the open file below
		f, err := os.Open(filepath.Join(mnt, "data/big"))
		require.NoError(t, err)
		defer f.Close()

		require.NoError(t, m.Unmount())
		_, err = os.Stat(filepath.Join(mnt, "etc"))
		assert.ErrorIs(t, err, os.ErrNotExist, "detached from the tree")
		assert.ErrorIs(t, m.Check(), errdefs.ErrUnavailable)
		select {
		case <-m.done:
			t.Fatal("server stopped while a file is open")
		default:
		}
		// The open file still reads after the detach.
		buf := make([]byte, 4096)
		_, err = f.ReadAt(buf, 1<<20)
		require.NoError(t, err)
		require.NoError(t, f.Close())
		select {
		case <-m.done:
		case <-time.After(time.Minute):
			t.Fatal("server still running after its last user went away")
		}
	})
}
