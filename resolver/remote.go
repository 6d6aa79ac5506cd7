package resolver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/archive"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/remote"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/zenodo"
)

// NewRemoteSource returns the Source of one Zenodo instance: images opened
// by opener (store/remote: the record, its index file and one range of
// metadata, then blobs by range, one streamed request per blob read in
// order), versions listed by client, which must be the client opener reads
// through. Combine the Sources of production and sandbox with Hosts; used
// alone, it opens every reference on client's instance.
//
// A record without an image archive fails with an error wrapping
// ErrNoImage. The Images live as long as opener (close it to release them).
func NewRemoteSource(client *zenodo.Client, opener *remote.Opener) Source {
	return &remoteSource{client: client, opener: opener}
}

type remoteSource struct {
	client *zenodo.Client
	opener *remote.Opener
}

var (
	_ Source        = (*remoteSource)(nil)
	_ VersionLister = (*remoteSource)(nil)
)

// Open implements Source.
func (s *remoteSource) Open(ctx context.Context, ref zenodo.Reference) (Image, error) {
	img, err := s.opener.Open(ctx, ref)
	if err != nil {
		if errors.Is(err, remote.ErrNoImage) && !errors.Is(err, ErrNoImage) {
			err = fmt.Errorf("%w: %w", ErrNoImage, err)
		}
		return nil, err
	}
	return &remoteImage{img: img, client: s.client}, nil
}

// Versions implements VersionLister.
func (s *remoteSource) Versions(ctx context.Context, ref zenodo.Reference) ([]zenodo.Record, error) {
	if ref.RecID == "" {
		return nil, fmt.Errorf("listing versions: no record: %w", errdefs.ErrInvalidArgument)
	}
	return s.client.Versions(ctx, ref.RecID)
}

// remoteImage adapts a *remote.Image to Image. It is a BlobStreamer for
// layers: each is read with one ranged request of exactly its bytes (the
// archive's reader would read a small layer as a block of at least
// store/remote's minimum request).
type remoteImage struct {
	img    *remote.Image
	client *zenodo.Client
}

var (
	_ Image        = (*remoteImage)(nil)
	_ BlobStreamer = (*remoteImage)(nil)
)

// OpenBlob implements BlobStreamer for the layers of archives read by range;
// other blobs (the metadata store/remote holds in memory) and spooled
// archives answer errdefs.ErrNotImplemented, and are read through ReaderAt.
func (i *remoteImage) OpenBlob(ctx context.Context, desc ocispec.Descriptor, offset, length int64) (io.ReadCloser, error) {
	switch i.img.Mode() {
	case remote.ModeIndex, remote.ModeWalk, remote.ModeState:
	default:
		return nil, fmt.Errorf("streaming blob %s: archive is local: %w", desc.Digest, errdefs.ErrNotImplemented)
	}
	if !images.IsLayerType(desc.MediaType) {
		return nil, fmt.Errorf("streaming blob %s: not a layer: %w", desc.Digest, errdefs.ErrNotImplemented)
	}
	off, size, ok := i.archive().Blob(desc.Digest)
	if !ok {
		return nil, fmt.Errorf("streaming blob %s: no place in the archive: %w", desc.Digest, errdefs.ErrNotImplemented)
	}
	if desc.Size != 0 && desc.Size != size {
		return nil, fmt.Errorf("blob %s is %d bytes in the archive, the descriptor says %d: %w", desc.Digest, size, desc.Size, errdefs.ErrDataLoss)
	}
	if offset < 0 || offset > size {
		return nil, fmt.Errorf("blob %s: offset %d out of range: %w", desc.Digest, offset, errdefs.ErrInvalidArgument)
	}
	if length < 0 || offset+length > size {
		length = size - offset
	}
	if length == 0 {
		return io.NopCloser(strings.NewReader("")), nil
	}
	rc, err := i.client.OpenRange(ctx, i.img.Record().RecordID(), i.img.File().Key, off+offset, length)
	if err != nil {
		return nil, fmt.Errorf("streaming blob %s: %w", desc.Digest, err)
	}
	return rc, nil
}

func (i *remoteImage) archive() *archive.Archive { return i.img.Archive() }

// ReaderAt implements content.Provider.
func (i *remoteImage) ReaderAt(ctx context.Context, desc ocispec.Descriptor) (content.ReaderAt, error) {
	return i.archive().ReaderAt(ctx, desc)
}

// Root implements Image.
func (i *remoteImage) Root() ocispec.Descriptor { return i.img.Root() }

// Record implements Image.
func (i *remoteImage) Record() *zenodo.Record { return i.img.Record() }
