package fs

import (
	"archive/tar"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/internal/testutil"
)

// requireOverlay skips (or fails with CI=true) when overlayfs is missing.
func requireOverlay(t *testing.T) {
	t.Helper()
	b, err := os.ReadFile("/proc/filesystems")
	if err == nil && strings.Contains(string(b), "\toverlay\n") {
		return
	}
	msg := "!!! SKIPPING: this test needs overlayfs (not in /proc/filesystems)"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + " — CI=true, so this is a failure")
	}
	t.Skip(msg)
}

// mountOverlay mounts an overlay on a fresh directory, unmounted at cleanup.
// upper may be empty for a read-only overlay of lowers only.
func mountOverlay(t *testing.T, lowers []string, upper bool) (merged, upperDir string) {
	t.Helper()
	merged = t.TempDir()
	data := "lowerdir=" + strings.Join(lowers, ":")
	if upper {
		upperDir = t.TempDir()
		data += ",upperdir=" + upperDir + ",workdir=" + t.TempDir()
	}
	require.NoError(t, unix.Mount("overlay", merged, "overlay", 0, data), data)
	t.Cleanup(func() {
		if err := unix.Unmount(merged, 0); err != nil && !errors.Is(err, unix.EINVAL) {
			t.Errorf("unmounting overlay %s: %v", merged, err)
			if err := unix.Unmount(merged, unix.MNT_DETACH); err != nil {
				t.Errorf("detaching overlay %s: %v", merged, err)
			}
		}
	})
	return merged, upperDir
}

// TestOverlayLower uses the FUSE layer as the upper lowerdir of an overlay
// over a plain directory (the layer below), as the snapshotter will: its
// whiteouts must hide files of the layer below and its opaque directories
// must hide that layer's contents.
func TestOverlayLower(t *testing.T) {
	testutil.RequireFUSE(t)
	requireOverlay(t)

	below := t.TempDir()
	for name, body := range map[string]string{
		"gone.txt":      "removed by the upper layer",
		"keep.txt":      "kept",
		"opq/old.txt":   "hidden by opacity",
		"opq/sub/x":     "hidden too",
		"plain/old.txt": "merged",
		"top.txt":       "shadowed",
	} {
		p := filepath.Join(below, name)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(body), 0o644))
	}
	layer := layerOf(t, tarOf(t, []file{
		reg(".wh.gone.txt", 0o644, 0, nil),
		dir("opq/", 0o755, 0, mt1),
		reg("opq/.wh..wh..opq", 0o644, 0, nil),
		reg("opq/new.txt", 0o644, 0, []byte("new in opq")),
		dir("plain/", 0o755, 0, mt1),
		reg("plain/new.txt", 0o644, 0, []byte("new in plain")),
		reg("top.txt", 0o640, 0, []byte("from the FUSE layer")),
		xattrs(reg("attrs.txt", 0o644, 0, []byte("a")), "user.k", "v"),
		file{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "abs", Linkname: "/etc/passwd", Mode: 0o777, ModTime: mt1}},
	}))
	fuseMnt := mountLayer(t, layer)

	for _, tc := range []struct {
		name  string
		upper bool
	}{{"read-only overlay", false}, {"with upper dir", true}} {
		t.Run(tc.name, func(t *testing.T) {
			merged, upper := mountOverlay(t, []string{fuseMnt, below}, tc.upper)
			read := func(name string) (string, error) {
				b, err := os.ReadFile(filepath.Join(merged, name))
				return string(b), err
			}
			for name, want := range map[string]string{
				"keep.txt":      "kept",
				"top.txt":       "from the FUSE layer",
				"opq/new.txt":   "new in opq",
				"plain/new.txt": "new in plain",
				"plain/old.txt": "merged",
				"attrs.txt":     "a",
			} {
				got, err := read(name)
				if assert.NoError(t, err, name) {
					assert.Equal(t, want, got, name)
				}
			}
			for _, name := range []string{"gone.txt", "opq/old.txt", "opq/sub"} {
				_, err := os.Lstat(filepath.Join(merged, name))
				assert.ErrorIs(t, err, os.ErrNotExist, "%s must be hidden", name)
			}
			ents, err := os.ReadDir(filepath.Join(merged, "opq"))
			require.NoError(t, err)
			require.Len(t, ents, 1)
			assert.Equal(t, "new.txt", ents[0].Name())
			ents, err = os.ReadDir(merged)
			require.NoError(t, err)
			var got []string
			for _, e := range ents {
				got = append(got, e.Name())
			}
			assert.ElementsMatch(t, []string{"abs", "attrs.txt", "keep.txt", "opq", "plain", "top.txt"}, got)
			ln, err := os.Readlink(filepath.Join(merged, "abs"))
			require.NoError(t, err)
			assert.Equal(t, "/etc/passwd", ln, "symlinks are returned as stored")
			v := make([]byte, 8)
			n, err := unix.Getxattr(filepath.Join(merged, "attrs.txt"), "user.k", v)
			require.NoError(t, err)
			assert.Equal(t, "v", string(v[:n]))
			_, err = unix.Getxattr(filepath.Join(merged, "opq"), "trusted.overlay.opaque", v)
			assert.True(t, errors.Is(err, unix.ENODATA) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EPERM),
				"overlay's own xattrs stay private: %v", err)

			if !tc.upper {
				assert.ErrorIs(t, os.WriteFile(filepath.Join(merged, "top.txt"), []byte("x"), 0o644), unix.EROFS)
				return
			}
			// Copy-up reads the file through the FUSE layer; the layer itself
			// does not change.
			f, err := os.OpenFile(filepath.Join(merged, "top.txt"), os.O_WRONLY|os.O_APPEND, 0)
			require.NoError(t, err)
			_, err = f.WriteString(", appended")
			require.NoError(t, err)
			require.NoError(t, f.Close())
			got2, err := read("top.txt")
			require.NoError(t, err)
			assert.Equal(t, "from the FUSE layer, appended", got2)
			b, err := os.ReadFile(filepath.Join(upper, "top.txt"))
			require.NoError(t, err)
			assert.Equal(t, "from the FUSE layer, appended", string(b))
			b, err = os.ReadFile(filepath.Join(fuseMnt, "top.txt"))
			require.NoError(t, err)
			assert.Equal(t, "from the FUSE layer", string(b))
			// A metadata change copies up, xattrs included.
			require.NoError(t, os.Chmod(filepath.Join(merged, "attrs.txt"), 0o600))
			assert.Equal(t, "v", listXattrs(t, filepath.Join(upper, "attrs.txt"))["user.k"])
			// Deleting a lower file leaves a whiteout in the upper dir.
			require.NoError(t, os.Remove(filepath.Join(merged, "keep.txt")))
			var st unix.Stat_t
			require.NoError(t, unix.Lstat(filepath.Join(upper, "keep.txt"), &st))
			assert.Equal(t, uint32(unix.S_IFCHR), st.Mode&unix.S_IFMT)
		})
	}
}

// TestUnmountUnderOverlay unmounts the FUSE layer while an overlay still uses
// it: the overlay keeps working, and the server stops once the overlay goes.
func TestUnmountUnderOverlay(t *testing.T) {
	testutil.RequireFUSE(t)
	requireOverlay(t)
	layer := layerOf(t, tarOf(t, sampleFiles()))
	mnt := t.TempDir()
	m, err := Mount(context.Background(), mnt, layer)
	require.NoError(t, err)
	t.Cleanup(func() { _ = m.Unmount() })
	m.wait = time.Millisecond // the overlay holds the layer: do not wait for it
	merged, _ := mountOverlay(t, []string{mnt, t.TempDir()}, false)

	require.NoError(t, m.Unmount())
	b, err := os.ReadFile(filepath.Join(merged, "etc/passwd"))
	require.NoError(t, err)
	assert.Equal(t, "root:x:0:0:root:/root:/bin/sh\n", string(b))
	select {
	case <-m.done:
		t.Fatal("server stopped while the overlay uses the layer")
	default:
	}
	require.NoError(t, unix.Unmount(merged, 0))
	select {
	case <-m.done:
	case <-time.After(time.Minute):
		t.Fatal("server still running after the overlay went away")
	}
}
