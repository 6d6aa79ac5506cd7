package archive

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/internal/ctxio"
)

// OpenStream opens an archive that can only be read once from start to end,
// such as a download of a .tar.gz: it decompresses r (gzip or zstd,
// detected by magic; an uncompressed tar is taken as it is) into a spool
// file in spoolDir, then opens that as Open does. This reads the Python
// donodo's image.tar.gz and any .tar, .tar.gz or .tar.zst docker-save or OCI
// archive. The spool is bounded by WithMaxSpoolSize. Close the Archive to
// remove the spool file.
func OpenStream(ctx context.Context, r io.Reader, spoolDir string, opts ...OpenOption) (_ *Archive, retErr error) {
	o, err := makeOpenOptions(opts)
	if err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(spoolDir, "archive-spool-*.tar")
	if err != nil {
		return nil, fmt.Errorf("creating spool file: %w", err)
	}
	cleanup := func() error {
		return errors.Join(f.Close(), os.Remove(f.Name()))
	}
	defer func() {
		if retErr != nil {
			if err := cleanup(); err != nil {
				log.G(ctx).WithError(err).Warn("removing spool file")
			}
		}
	}()
	dr, comp, err := decompress(r)
	if err != nil {
		return nil, fmt.Errorf("opening archive stream: %w", err)
	}
	defer dr.Close()
	n, err := ctxio.Copy(ctx, f, io.LimitReader(dr, o.maxSpoolSize+1))
	if err != nil {
		if comp != compNone && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) && !isWriteError(err) {
			err = fmt.Errorf("%v: %w", err, ErrCorrupt)
		}
		return nil, fmt.Errorf("spooling archive stream: %w", err)
	}
	if n > o.maxSpoolSize {
		return nil, fmt.Errorf("spooling archive stream: more than %d bytes: %w", o.maxSpoolSize, errdefs.ErrInvalidArgument)
	}
	a, err := Open(ctx, f, n, opts...)
	if err != nil {
		return nil, err
	}
	a.closeFn = cleanup
	return a, nil
}

// isWriteError tells whether err came from writing the spool file.
func isWriteError(err error) bool {
	var pe *os.PathError
	return errors.As(err, &pe)
}
