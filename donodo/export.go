package donodo

import (
	"context"
	"crypto/md5"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/containerd/containerd/v2/pkg/archive/compression"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/opencontainers/go-digest"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/archive"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/zenodo"
)

// ExportResult says what Export wrote.
type ExportResult struct {
	// Path is the file written.
	Path string `json:"path"`
	// Size is its size in bytes.
	Size int64 `json:"size"`
	// Record is the record version exported, File its archive file.
	Record RecordInfo `json:"record"`
	File   string     `json:"file"`
	// Decompressed is true when the record's archive was compressed and
	// Path holds it decompressed.
	Decompressed bool `json:"decompressed,omitempty"`
	// Names are the image names the archive carries.
	Names []string `json:"names,omitempty"`
	// RootDigest is the archive's root (index or manifest) digest.
	RootDigest digest.Digest `json:"root_digest"`
	// Reference is the image's name on Zenodo.
	Reference string `json:"reference"`
}

// Export writes the image archive of the record ref names to the file path,
// in a form `docker load`, `podman load` and `ctr import` accept: a format v1
// image.tar or another uncompressed archive as it is, a compressed one (the
// Python donodo's image.tar.gz) decompressed. The download is one request,
// checked against the md5 Zenodo lists; the file written is then opened and
// every blob verified (and a pinned digest looked up) before it is renamed
// into place, so path never holds a partial or corrupt archive.
//
// Progress shows through the client's HTTP client (NewHTTPClient).
func Export(ctx context.Context, zc *zenodo.Client, ref zenodo.Reference, path string) (_ *ExportResult, retErr error) {
	if path == "" {
		return nil, fmt.Errorf("exporting %s: no output file: %w", ref, errdefs.ErrInvalidArgument)
	}
	rec, err := zc.Resolve(ctx, ref)
	if err != nil {
		return nil, fmt.Errorf("finding record %s: %w", ref, err)
	}
	arch, _, err := ChooseArchive(rec.Files)
	if err != nil {
		return nil, fmt.Errorf("record %s (%s): %w", rec.RecordID(), rec.DOI, err)
	}
	recID := rec.RecordID()

	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".part-*")
	if err != nil {
		return nil, fmt.Errorf("exporting %s: %w", ref, err)
	}
	tmp := f.Name()
	defer func() {
		if f != nil {
			f.Close()
		}
		if retErr != nil {
			if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
				log.G(ctx).WithError(err).Warn("donodo: removing partial export")
			}
		}
	}()

	rc, err := zc.Open(ctx, recID, arch.Key)
	if err != nil {
		return nil, fmt.Errorf("downloading %s of record %s: %w", arch.Key, recID, err)
	}
	defer rc.Close()
	h := md5.New()
	var src io.Reader = &md5Check{r: io.TeeReader(rc, h), h: h, want: arch.MD5(), name: arch.Key}
	dr, err := compression.DecompressStream(src)
	if err != nil {
		return nil, fmt.Errorf("reading %s of record %s: %v: %w", arch.Key, recID, err, ErrCorruptArchive)
	}
	n, err := io.Copy(f, &ctxReader{ctx: ctx, r: dr})
	if err == nil {
		// Read the rest of the compressed stream (trailer) for the md5.
		_, err = io.Copy(io.Discard, src)
	}
	dr.Close()
	if err != nil {
		if errors.Is(err, zenodo.ErrChecksumMismatch) || errdefs.IsDataLoss(err) {
			return nil, fmt.Errorf("downloading %s of record %s: %w", arch.Key, recID, err)
		}
		var pe *os.PathError
		if !errors.As(err, &pe) && dr.GetCompression() != compression.Uncompressed && ctx.Err() == nil {
			return nil, fmt.Errorf("decompressing %s of record %s: %v: %w", arch.Key, recID, err, ErrCorruptArchive)
		}
		return nil, fmt.Errorf("downloading %s of record %s to %s: %w", arch.Key, recID, path, err)
	}
	res := &ExportResult{Path: path, Size: n, Record: recordInfo(zc, rec), File: arch.Key,
		Decompressed: dr.GetCompression() != compression.Uncompressed}

	a, err := archive.Open(ctx, f, n)
	if err != nil {
		return nil, archiveError(recID, arch.Key, err)
	}
	if err := a.Verify(ctx); err != nil {
		return nil, archiveError(recID, arch.Key, err)
	}
	im := &Image{Ref: ref, Record: rec, File: arch, arch: a}
	root, err := im.Root(ctx)
	if err != nil {
		return nil, err
	}
	res.RootDigest, res.Names, res.Reference = root.Digest, im.Names(), im.Name()
	if err := f.Sync(); err != nil {
		return nil, fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("writing %s: %w", path, err)
	}
	f = nil
	if err := os.Chmod(tmp, 0o644); err != nil {
		return nil, fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return nil, fmt.Errorf("writing %s: %w", path, err)
	}
	return res, nil
}
