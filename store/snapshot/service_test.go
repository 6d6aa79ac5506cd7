//go:build linux

package snapshot

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/proxy"
)

// startServe runs Serve in the background until the test ends and returns
// once it listens.
func startServe(t *testing.T, sn snapshots.Snapshotter, sock string) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(testContext(t))
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, sn, sock, OnListening(func(net.Addr) { close(ready) }))
	}()
	select {
	case <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("Serve returned before listening: %v", err)
	}
	stopped := false
	stop = func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		return <-done
	}
	t.Cleanup(func() { require.NoError(t, stop()) })
	return stop
}

func dialSnapshotter(t *testing.T, sock string) snapshots.Snapshotter {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	return proxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), "zenodo")
}

func TestServe(t *testing.T) {
	ctx := testContext(t)
	fs := newDirFS()
	sn, _ := newTestSnapshotter(t, t.TempDir(), fs)
	sock := filepath.Join(t.TempDir(), "run", "zenodo.sock")

	// A socket left by a dead process.
	require.NoError(t, os.MkdirAll(filepath.Dir(sock), 0o700))
	l, err := net.Listen("unix", sock)
	require.NoError(t, err)
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	require.NoError(t, l.Close())
	require.FileExists(t, sock)

	stop := startServe(t, sn, sock)
	client := dialSnapshotter(t, sock)

	// The remote-snapshot protocol survives gRPC.
	_, err = client.Prepare(ctx, "extract-1 l1", "", snapshots.WithLabels(layerLabels("l1", testDOI)))
	require.ErrorIs(t, err, errdefs.ErrAlreadyExists)
	info, err := client.Stat(ctx, "l1")
	require.NoError(t, err)
	assert.Equal(t, snapshots.KindCommitted, info.Kind)
	assert.Equal(t, RemoteLabelValue, info.Labels[LabelRemote])
	assert.Equal(t, testDOI, info.Labels[LabelDOI])
	assert.NotContains(t, info.Labels, upperdirLabel)

	mounts, err := client.Prepare(ctx, "container", "l1")
	require.NoError(t, err)
	require.Len(t, mounts, 1)
	assert.Equal(t, []string{fs.mountCalls()[0].Mountpoint}, lowerdirs(t, mounts[0]))

	_, err = client.Stat(ctx, "missing")
	require.ErrorIs(t, err, errdefs.ErrNotFound)
	require.ErrorIs(t, client.Remove(ctx, "l1"), errdefs.ErrFailedPrecondition)
	require.NoError(t, client.Remove(ctx, "container"))
	require.NoError(t, client.Remove(ctx, "l1"))
	assert.Len(t, fs.unmountCalls(), 1)

	// Nobody can take a socket that is served.
	err = Serve(ctx, sn, sock)
	require.ErrorIs(t, err, errdefs.ErrAlreadyExists)

	// Cancelling stops the server and removes the socket.
	require.NoError(t, stop())
	assert.NoFileExists(t, sock)
}

func TestServeRefuses(t *testing.T) {
	ctx := testContext(t)
	sn, _ := newTestSnapshotter(t, t.TempDir(), newDirFS())
	notSocket := filepath.Join(t.TempDir(), "file")
	require.NoError(t, os.WriteFile(notSocket, []byte("keep me"), 0o600))

	for _, tc := range []struct {
		name string
		sn   snapshots.Snapshotter
		path string
		want error
	}{
		{name: "not a socket", sn: sn, path: notSocket, want: errdefs.ErrAlreadyExists},
		{name: "no path", sn: sn, want: errdefs.ErrInvalidArgument},
		{name: "no snapshotter", path: filepath.Join(t.TempDir(), "s.sock"), want: errdefs.ErrInvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.ErrorIs(t, Serve(ctx, tc.sn, tc.path), tc.want)
		})
	}
	data, err := os.ReadFile(notSocket)
	require.NoError(t, err)
	assert.Equal(t, "keep me", string(data))
}
