package fs

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/internal/testutil"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/seekable"
)

const busybox = "/bin/busybox"

// requireBusybox skips (or fails with CI=true) when the static busybox the
// project installs is missing.
func requireBusybox(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(busybox)
	if err == nil {
		return b
	}
	msg := "!!! SKIPPING: this test runs " + busybox + " (Debian busybox-static): " + err.Error()
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + " — CI=true, so this is a failure")
	}
	t.Skip(msg)
	return nil
}

// run runs busybox from the host with the given credentials. The child never
// touches the FUSE mount before exec (see go-fuse's notes on deadlocks).
func run(t *testing.T, cred *syscall.Credential, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(busybox, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// TestExecFromLayer runs a program stored in the lazy layer, directly and
// through an overlay, as a container would.
func TestExecFromLayer(t *testing.T) {
	testutil.RequireFUSE(t)
	bb := requireBusybox(t)
	mnt := mountLayer(t, layerOf(t, tarOf(t, []file{
		dir("bin/", 0o755, 0, mt1),
		reg("bin/busybox", 0o755, 0, bb),
		link(tar.TypeSymlink, "bin/sh", "busybox"),
		link(tar.TypeSymlink, "bin/cat", "/bin/busybox"),
		reg("etc/hello", 0o644, 0, []byte("hello from the layer\n")),
		dev(tar.TypeChar, "dev/null", 0o666, 1, 3),
	})))
	roots := map[string]string{"fuse": mnt}
	if b, err := os.ReadFile("/proc/filesystems"); err == nil && bytes.Contains(b, []byte("\toverlay\n")) {
		roots["overlay"], _ = mountOverlay(t, []string{mnt, t.TempDir()}, true)
	}
	for name, root := range roots {
		t.Run(name, func(t *testing.T) {
			out, err := run(t, nil, "chroot", root, "/bin/sh", "-c", "cat /etc/hello; echo discarded > /dev/null && echo devices work")
			require.NoError(t, err, out)
			assert.Equal(t, "hello from the layer\ndevices work\n", out)
		})
	}
}

// TestMountPermissions checks that the kernel enforces the layer's modes and
// owners for other users (default_permissions, allow_other).
func TestMountPermissions(t *testing.T) {
	testutil.RequireFUSE(t)
	requireBusybox(t)
	mnt := mountLayer(t, layerOf(t, tarOf(t, []file{
		dir("secret/", 0o755, 0, mt1),
		reg("secret/key", 0o600, 1000, []byte("the key")),
		reg("secret/public", 0o644, 0, []byte("public")),
	})))
	require.NoError(t, os.Chmod(filepath.Dir(mnt), 0o755)) // t.TempDir's own dir is 0700
	owner := &syscall.Credential{Uid: 1000, Gid: 1001}
	other := &syscall.Credential{Uid: 2000, Gid: 2000}
	key := filepath.Join(mnt, "secret/key")

	out, err := run(t, owner, "cat", key)
	require.NoError(t, err, out)
	assert.Equal(t, "the key", out)
	out, err = run(t, other, "cat", filepath.Join(mnt, "secret/public"))
	require.NoError(t, err, out)
	assert.Equal(t, "public", out)
	out, err = run(t, other, "cat", key)
	assert.Error(t, err)
	assert.Contains(t, out, "Permission denied")
}

// TestReadInterrupted kills a process blocked in a read of a layer that never
// answers: it goes away at once instead of waiting for the read timeout. A
// buffered read waits for kernel readahead, which is asynchronous: the
// process dies, the request runs on until the timeout. A direct read is
// synchronous: the kernel interrupts it and the Layer's context is cancelled.
func TestReadInterrupted(t *testing.T) {
	testutil.RequireFUSE(t)
	requireBusybox(t)
	for _, tc := range []struct {
		name            string
		args            []string
		wantInterrupted bool
	}{
		{"buffered", []string{"cat", "%s"}, false},
		{"direct", []string{"dd", "if=%s", "bs=4096", "iflag=direct"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			layer := layerOf(t, tarOf(t, []file{reg("f", 0o644, 0, bytes.Repeat([]byte("x"), 4096))}))
			entered := make(chan struct{}, 1)
			release := make(chan struct{})
			layer.readAt = func(ctx context.Context, e *seekable.Entry, p []byte, off int64) (int, error) {
				select {
				case entered <- struct{}{}:
				default:
				}
				select {
				case <-ctx.Done():
					return 0, ctx.Err()
				case <-release:
					return 0, errors.New("released")
				}
			}
			events := make(chan Event, 16)
			mnt := mountLayer(t, layer, WithReadTimeout(time.Hour), WithObserver(func(e Event) {
				select {
				case events <- e:
				default:
				}
			}))
			t.Cleanup(func() { close(release) })

			args := slices.Clone(tc.args)
			args[1] = fmt.Sprintf(args[1], filepath.Join(mnt, "f"))
			cmd := exec.Command(busybox, args...)
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			require.NoError(t, cmd.Start())
			waited := make(chan error, 1)
			go func() { waited <- cmd.Wait() }()
			select {
			case <-entered:
			case err := <-waited:
				t.Fatalf("%s ended before reading: %v: %s", tc.args[0], err, out.String())
			}
			require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
			select {
			case err := <-waited:
				assert.Error(t, err, "killed")
			case <-time.After(time.Minute):
				t.Fatal("the killed reader is still blocked in the read")
			}
			if !tc.wantInterrupted {
				return
			}
			select {
			case e := <-events:
				assert.ErrorIs(t, e.Err, ErrInterrupted)
			case <-time.After(time.Minute):
				t.Fatal("the interrupted read never ended")
			}
		})
	}
}
