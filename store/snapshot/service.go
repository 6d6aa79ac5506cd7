//go:build linux

package snapshot

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"google.golang.org/grpc"

	"github.com/containerd/containerd/v2/contrib/snapshotservice"
	"github.com/containerd/containerd/v2/core/snapshots"
)

// gracePeriod bounds how long Serve waits for in-flight calls on shutdown.
const gracePeriod = 10 * time.Second

// ServeOpt configures Serve.
type ServeOpt func(*serveConfig)

type serveConfig struct {
	onListening func(net.Addr)
}

// OnListening makes Serve call fn once the socket accepts connections (for
// readiness notification). The default is no call.
func OnListening(fn func(net.Addr)) ServeOpt {
	return func(c *serveConfig) { c.onListening = fn }
}

// Serve exposes sn as a containerd proxy snapshotter: containerd's snapshots
// gRPC API on the unix socket socketPath, to be named in containerd's
// config as
//
//	[proxy_plugins.zenodo]
//	  type = "snapshot"
//	  address = "<socketPath>"
//
// (with no "rebase" capability). A stale socket file left by a dead process is
// replaced; a socket someone still serves on is an error wrapping
// errdefs.ErrAlreadyExists, and a non-socket file at socketPath is never
// removed. Serve returns nil once ctx is cancelled and in-flight calls have
// finished (or after a grace period), removing the socket; it does not close
// sn.
func Serve(ctx context.Context, sn snapshots.Snapshotter, socketPath string, opts ...ServeOpt) error {
	var cfg serveConfig
	for _, o := range opts {
		if o != nil {
			o(&cfg)
		}
	}
	if sn == nil || socketPath == "" {
		return fmt.Errorf("serving snapshotter: nil snapshotter or empty socket path: %w", errdefs.ErrInvalidArgument)
	}
	if err := os.MkdirAll(filepath.Dir(socketPath), 0o711); err != nil {
		return fmt.Errorf("creating directory of %s: %w", socketPath, err)
	}
	if err := removeStaleSocket(ctx, socketPath); err != nil {
		return err
	}
	l, err := net.Listen("unix", socketPath)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", socketPath, err)
	}
	if err := os.Chmod(socketPath, 0o600); err != nil {
		l.Close()
		return fmt.Errorf("restricting %s: %w", socketPath, err)
	}

	srv := grpc.NewServer()
	snapshotsapi.RegisterSnapshotsServer(srv, snapshotservice.FromSnapshotter(sn))
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	log.G(ctx).WithField("socket", socketPath).Info("serving snapshotter")
	if cfg.onListening != nil {
		cfg.onListening(l.Addr())
	}

	select {
	case err := <-served:
		return fmt.Errorf("serving snapshotter on %s: %w", socketPath, err)
	case <-ctx.Done():
	}
	stopped := make(chan struct{})
	go func() {
		srv.GracefulStop()
		close(stopped)
	}()
	timer := time.NewTimer(gracePeriod)
	defer timer.Stop()
	select {
	case <-stopped:
	case <-timer.C:
		log.G(ctx).Warn("snapshotter calls still running after grace period, stopping them")
		srv.Stop()
		<-stopped
	}
	<-served
	return nil
}

// removeStaleSocket removes the socket at path unless something answers on
// it. Anything else at path is left alone and reported.
func removeStaleSocket(ctx context.Context, path string) error {
	st, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("checking %s: %w", path, err)
	}
	if st.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("%s exists and is not a socket: %w", path, errdefs.ErrAlreadyExists)
	}
	d := net.Dialer{Timeout: time.Second}
	if c, err := d.DialContext(ctx, "unix", path); err == nil {
		c.Close()
		return fmt.Errorf("%s is in use by another process: %w", path, errdefs.ErrAlreadyExists)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing stale socket %s: %w", path, err)
	}
	log.G(ctx).WithField("socket", path).Info("removed stale socket")
	return nil
}
