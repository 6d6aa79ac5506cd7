package remote

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/archive"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/seekable"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/zenodo"
)

// maxManifestSize bounds the manifests LayerByTOC reads.
const maxManifestSize = 4 << 20

// Image is an image archive in a Zenodo record, opened for lazy reads. It
// lives as long as the Opener that opened it (Opener.Close closes it); it
// is safe for concurrent use.
type Image struct {
	op     *Opener
	o      *options
	ctx    context.Context // cancelled when the image is closed
	cancel context.CancelFunc
	rec    *zenodo.Record
	file   zenodo.File
	mode   string
	arch   *archive.Archive
	src    source
	af     *archiveFile // nil when the archive is local
	closer func() error // releases the spool file, if any

	mu     sync.Mutex
	layers map[digest.Digest]*Layer
	byTOC  map[digest.Digest]ocispec.Descriptor
}

// Record returns the record the image was found in. Do not modify it.
func (i *Image) Record() *zenodo.Record { return i.rec }

// File returns the record's archive file the image is read from.
func (i *Image) File() zenodo.File { return i.file }

// Mode says how the archive is read: ModeIndex (format v1, by range),
// ModeWalk (by range, without index), ModeSpool (downloaded whole), or
// ModeState (opened from the state directory without a request: format v1
// by range, or a spool file kept there).
func (i *Image) Mode() string { return i.mode }

// Archive returns the opened archive: a content.Provider of the image's
// blobs, each verified against its digest when read in full. Metadata blobs
// come from memory; other blobs read in order are streamed by one request
// each.
func (i *Image) Archive() *archive.Archive { return i.arch }

// Root returns the image's root descriptor (an image index or manifest).
func (i *Image) Root() ocispec.Descriptor { return i.arch.Root() }

// Layer returns the lazy reader of a seekable layer of the image: desc must
// carry the seekable.AnnotationTOCDigest annotation (else the error wraps
// ErrNoTOC) and name a blob of the archive, with its size. Its TOC is read (from the
// metadata range, so without a request), verified against that digest and
// parsed. Layers are shared: the same descriptor gives the same Layer until
// it is closed.
func (i *Image) Layer(ctx context.Context, desc ocispec.Descriptor) (*Layer, error) {
	if err := i.ctx.Err(); err != nil {
		return nil, fmt.Errorf("layer %s: image closed: %w", desc.Digest, errdefs.ErrUnavailable)
	}
	if _, ok := desc.Annotations[seekable.AnnotationTOCDigest]; !ok {
		return nil, fmt.Errorf("layer %s: %w", desc.Digest, ErrNoTOC)
	}
	i.mu.Lock()
	if l := i.layers[desc.Digest]; l != nil && l.ctx.Err() == nil && l.desc.Annotations[seekable.AnnotationTOCDigest] == desc.Annotations[seekable.AnnotationTOCDigest] {
		i.mu.Unlock()
		return l, nil
	}
	i.mu.Unlock()
	off, size, ok := i.arch.Blob(desc.Digest)
	if !ok {
		return nil, fmt.Errorf("layer %s is not in %s of record %s: %w", desc.Digest, i.file.Key, i.rec.RecordID(), errdefs.ErrNotFound)
	}
	if desc.Size != size {
		return nil, fmt.Errorf("layer %s is %d bytes in the archive, its descriptor says %d: %w", desc.Digest, size, desc.Size, archive.ErrCorrupt)
	}
	toc, err := i.arch.TOC(ctx, desc)
	if err != nil {
		return nil, fmt.Errorf("opening layer %s of record %s: %w", desc.Digest, i.rec.RecordID(), err)
	}
	l := newLayer(i, desc, toc, off)
	i.mu.Lock()
	defer i.mu.Unlock()
	if old := i.layers[desc.Digest]; old != nil && old.ctx.Err() == nil && old.desc.Annotations[seekable.AnnotationTOCDigest] == desc.Annotations[seekable.AnnotationTOCDigest] {
		l.Close()
		return old, nil
	}
	i.layers[desc.Digest] = l
	return l, nil
}

// LayerByTOC returns the Layer of the image whose descriptor carries the TOC
// digest tocDigest, as the snapshotter finds it in a snapshot's labels. The
// manifests are read from the metadata (verified); a digest no layer
// carries is errdefs.ErrNotFound.
func (i *Image) LayerByTOC(ctx context.Context, tocDigest digest.Digest) (*Layer, error) {
	i.mu.Lock()
	desc, ok := i.byTOC[tocDigest]
	i.mu.Unlock()
	if ok {
		return i.Layer(ctx, desc)
	}
	descs, err := i.layerDescriptors(ctx)
	if err != nil {
		return nil, err
	}
	i.mu.Lock()
	for _, d := range descs {
		if v, err := digest.Parse(d.Annotations[seekable.AnnotationTOCDigest]); err == nil {
			i.byTOC[v] = d
		}
	}
	desc, ok = i.byTOC[tocDigest]
	i.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("no layer of record %s has TOC %s: %w", i.rec.RecordID(), tocDigest, errdefs.ErrNotFound)
	}
	return i.Layer(ctx, desc)
}

// layerDescriptors lists the layers of every manifest of the image.
func (i *Image) layerDescriptors(ctx context.Context) ([]ocispec.Descriptor, error) {
	mans, err := i.arch.Manifests(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading manifests of record %s: %w", i.rec.RecordID(), err)
	}
	var out []ocispec.Descriptor
	for _, md := range mans {
		if md.Size > maxManifestSize {
			return nil, fmt.Errorf("manifest %s is %d bytes: %w", md.Digest, md.Size, errdefs.ErrInvalidArgument)
		}
		data, err := content.ReadBlob(ctx, i.arch, md)
		if err != nil {
			return nil, fmt.Errorf("reading manifest %s of record %s: %w", md.Digest, i.rec.RecordID(), err)
		}
		var m ocispec.Manifest
		if err := json.Unmarshal(data, &m); err != nil {
			return nil, fmt.Errorf("parsing manifest %s: %v: %w", md.Digest, err, errdefs.ErrInvalidArgument)
		}
		out = append(out, m.Layers...)
	}
	return out, nil
}

// checkPin checks that a pinned digest names the root or one of its
// manifests.
func (i *Image) checkPin(ctx context.Context, pin digest.Digest) error {
	if pin == "" || i.arch.Root().Digest == pin {
		return nil
	}
	if images.IsIndexType(i.arch.Root().MediaType) {
		mans, err := i.arch.Manifests(ctx)
		if err != nil {
			return err
		}
		for _, m := range mans {
			if m.Digest == pin {
				return nil
			}
		}
	}
	return fmt.Errorf("record %s holds no manifest %s (its root is %s): %w", i.rec.RecordID(), pin, i.arch.Root().Digest, errdefs.ErrNotFound)
}

// close closes the image's layers (stopping their fills), streams and spool.
func (i *Image) close() error {
	i.cancel()
	i.mu.Lock()
	layers := i.layers
	i.layers = map[digest.Digest]*Layer{}
	i.mu.Unlock()
	for _, l := range layers {
		l.Close()
	}
	var errs []error
	if i.af != nil {
		errs = append(errs, i.af.Close())
	}
	errs = append(errs, i.arch.Close())
	if i.closer != nil {
		errs = append(errs, i.closer())
	}
	return errors.Join(errs...)
}

// removeFile is a closer for temporary spool files.
func removeFile(f *os.File) func() error {
	return func() error {
		return errors.Join(f.Close(), os.Remove(f.Name()))
	}
}
