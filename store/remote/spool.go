package remote

import (
	"bufio"
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/containerd/errdefs"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/zenodo"
)

// zstdMaxMemory bounds the memory a zstd stream may make the decoder use.
const zstdMaxMemory = 256 << 20

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
	raw := bufio.NewReaderSize(io.TeeReader(rc, h), 64<<10)
	dr, err := decompressor(raw)
	if err != nil {
		return 0, fmt.Errorf("downloading %s of record %s: %w", file.Key, recID, err)
	}
	n, err := copyCtx(ctx, tmp, io.LimitReader(dr, op.o.maxSpool+1))
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

// decompressor returns a reader of r decompressed by its magic number.
func decompressor(r *bufio.Reader) (io.ReadCloser, error) {
	magic, err := r.Peek(4)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("reading gzip header: %w", errors.Join(err, errdefs.ErrInvalidArgument))
		}
		return zr, nil
	case bytes.HasPrefix(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(zstdMaxMemory))
		if err != nil {
			return nil, fmt.Errorf("reading zstd header: %w", errors.Join(err, errdefs.ErrInvalidArgument))
		}
		return zr.IOReadCloser(), nil
	}
	return io.NopCloser(r), nil
}

// copyCtx is io.Copy that stops when ctx is done.
func copyCtx(ctx context.Context, w io.Writer, r io.Reader) (int64, error) {
	buf := make([]byte, 256<<10)
	var total int64
	for {
		if err := ctx.Err(); err != nil {
			return total, context.Cause(ctx)
		}
		n, err := r.Read(buf)
		if n > 0 {
			m, werr := w.Write(buf[:n])
			total += int64(m)
			if werr != nil {
				return total, werr
			}
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}
