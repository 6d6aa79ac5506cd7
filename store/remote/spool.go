package remote

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/containerd/errdefs"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/internal/ctxio"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/archive"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/zenodo"
)

// spool downloads file of record recID once, decompressing it (gzip or zstd,
// by magic; a plain tar is kept as it is) into path, through a temporary
// file renamed into place when the download is complete and its md5 matches
// the record's checksum. It returns the decompressed size.
func (op *Opener) spool(ctx context.Context, recID string, file zenodo.File, path string) (_ int64, retErr error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return 0, fmt.Errorf("creating spool directory: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-spool-*")
	if err != nil {
		return 0, fmt.Errorf("creating spool file: %w", err)
	}
	defer func() {
		if retErr != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	rc, err := op.client.Open(ctx, recID, file.Key)
	if err != nil {
		return 0, fmt.Errorf("downloading %s of record %s: %w", file.Key, recID, err)
	}
	defer rc.Close()
	h := md5.New()
	raw := io.TeeReader(rc, h)
	dr, err := archive.Decompress(raw)
	if err != nil {
		return 0, fmt.Errorf("downloading %s of record %s: %w", file.Key, recID, err)
	}
	n, err := ctxio.Copy(ctx, tmp, io.LimitReader(dr, op.o.maxSpool+1))
	dr.Close()
	if err != nil {
		return 0, fmt.Errorf("downloading %s of record %s: %w", file.Key, recID, err)
	}
	if n > op.o.maxSpool {
		return 0, fmt.Errorf("downloading %s of record %s: more than %d bytes decompressed: %w", file.Key, recID, op.o.maxSpool, errdefs.ErrInvalidArgument)
	}
	// The md5 covers the whole file, including anything after the stream.
	if _, err := io.Copy(io.Discard, raw); err != nil {
		return 0, fmt.Errorf("downloading %s of record %s: %w", file.Key, recID, err)
	}
	if want := file.MD5(); want != "" {
		if got := hex.EncodeToString(h.Sum(nil)); got != want {
			return 0, fmt.Errorf("downloading %s of record %s: md5 %s, the record says %s: %w", file.Key, recID, got, want, zenodo.ErrChecksumMismatch)
		}
	}
	if err := tmp.Sync(); err != nil {
		return 0, fmt.Errorf("writing spool file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return 0, fmt.Errorf("writing spool file: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return 0, fmt.Errorf("writing spool file: %w", err)
	}
	return n, nil
}
