package archive

import (
	"context"
	"fmt"
	"io"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/seekable"
)

// maxCachedTOCs bounds how many parsed TOCs an Archive keeps.
const maxCachedTOCs = 16

// TOC returns the TOC of a seekable layer, named by the layer descriptor's
// seekable.AnnotationTOCDigest annotation, read from the archive, verified
// and parsed (and cached). A layer without the annotation (not seekable, or
// written with WithPreserveLayers) is errdefs.ErrNotFound.
func (a *Archive) TOC(ctx context.Context, layer ocispec.Descriptor) (*seekable.TOC, error) {
	v, ok := layer.Annotations[seekable.AnnotationTOCDigest]
	if !ok {
		return nil, fmt.Errorf("layer %s: %w: %w", layer.Digest, errNoTOC, errdefs.ErrNotFound)
	}
	tocDigest, err := digest.Parse(v)
	if err != nil {
		return nil, fmt.Errorf("layer %s: TOC digest %q: %v: %w", layer.Digest, v, err, errdefs.ErrInvalidArgument)
	}
	layerLoc, ok := a.blobs[layer.Digest]
	if !ok {
		return nil, fmt.Errorf("layer %s: %w", layer.Digest, errdefs.ErrNotFound)
	}
	key := [2]digest.Digest{layer.Digest, tocDigest}
	a.mu.Lock()
	toc, ok := a.tocs[key]
	a.mu.Unlock()
	if ok {
		return toc, nil
	}
	loc, ok := a.blobs[tocDigest]
	if !ok {
		return nil, fmt.Errorf("TOC %s of layer %s: %w", tocDigest, layer.Digest, errdefs.ErrNotFound)
	}
	if loc.size > seekable.MaxTOCSize {
		return nil, fmt.Errorf("TOC %s of layer %s is %d bytes, more than %d: %w", tocDigest, layer.Digest, loc.size, seekable.MaxTOCSize, errdefs.ErrInvalidArgument)
	}
	data, err := content.ReadBlob(ctx, a, ocispec.Descriptor{MediaType: seekable.MediaTypeTOC, Digest: tocDigest, Size: loc.size})
	if err != nil {
		return nil, fmt.Errorf("reading TOC %s of layer %s: %w", tocDigest, layer.Digest, err)
	}
	toc, err = seekable.ParseTOC(data, layerLoc.size)
	if err != nil {
		return nil, fmt.Errorf("parsing TOC %s of layer %s: %w", tocDigest, layer.Digest, err)
	}
	a.mu.Lock()
	if len(a.tocs) >= maxCachedTOCs {
		for k := range a.tocs {
			delete(a.tocs, k)
			break
		}
	}
	a.tocs[key] = toc
	a.mu.Unlock()
	return toc, nil
}

// OpenFile returns the content of the regular file name (or hardlink to
// one) in a seekable layer, read through the layer's TOC: only the gzip
// members holding the bytes asked for are read, and each is verified against
// the TOC before use. Symlinks are not followed (their target may be in
// another layer). A missing file is errdefs.ErrNotFound, any other type of
// entry errdefs.ErrInvalidArgument.
func (a *Archive) OpenFile(ctx context.Context, layer ocispec.Descriptor, name string) (*io.SectionReader, error) {
	toc, err := a.TOC(ctx, layer)
	if err != nil {
		return nil, err
	}
	e, ok := toc.Lookup(name)
	if !ok {
		return nil, fmt.Errorf("layer %s has no file %q: %w", layer.Digest, name, errdefs.ErrNotFound)
	}
	switch r := toc.Resolve(e); r.Type {
	case seekable.TypeReg:
	case seekable.TypeSymlink:
		return nil, fmt.Errorf("%q in layer %s is a symlink to %q: %w", name, layer.Digest, r.Linkname, errdefs.ErrInvalidArgument)
	default:
		return nil, fmt.Errorf("%q in layer %s is not a regular file (%s): %w", name, layer.Digest, r.Type, errdefs.ErrInvalidArgument)
	}
	loc := a.blobs[layer.Digest]
	if loc.data != nil {
		return nil, fmt.Errorf("layer %s is not in the archive: %w", layer.Digest, errdefs.ErrNotFound)
	}
	return seekable.NewFileReader(io.NewSectionReader(a.ra, loc.offset, loc.size), toc, e), nil
}
