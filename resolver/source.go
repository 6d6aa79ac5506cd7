package resolver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/zenodo"
)

// Source opens the image archived in a Zenodo record.
type Source interface {
	// Open finds the record ref names (version, concept → newest version,
	// tag → the version whose metadata.version is the tag; ref.Digest is
	// ignored, the caller checks it) and opens the image archived in it.
	//
	// Errors wrap errdefs.ErrNotFound when there is no such record
	// (ErrUnknownRecord, or a zenodo.Error with status 404 on a record), no
	// such tag, or no image in the record (ErrNoImage), and
	// zenodo.ErrRateLimited when Zenodo's rate limit stops the look-up.
	Open(ctx context.Context, ref zenodo.Reference) (Image, error)
}

// Image is the image archived in one record.
//
// Its readers must verify what they return: a read that completes an
// in-order read of a whole blob fails if the blob does not match its digest
// (as store/archive's readers do). Blobs are found by digest; the
// descriptor's size, when not 0, must match.
type Image interface {
	content.Provider
	// Root is the descriptor of the image's root, an image index or a
	// manifest, as the archive's index names it. Its content is verified
	// when read.
	Root() ocispec.Descriptor
	// Record is the record the image was read from.
	Record() *zenodo.Record
}

// VersionLister is implemented by Sources that can list a record's
// versions, for the endpoint's tags/list and for finding a digest among the
// versions of a concept. A Source without it serves tags/list with "latest"
// only and looks for digests in the newest version only.
type VersionLister interface {
	// Versions lists every published version of the concept of the record
	// ref names (any version or the concept), oldest first.
	Versions(ctx context.Context, ref zenodo.Reference) ([]zenodo.Record, error)
}

// BlobStreamer is implemented by Images that can stream a range of a blob
// with one upstream request (rather than by ReaderAt calls). Readers of a
// whole blob (offset 0, length -1) must verify it as Image's readers do.
type BlobStreamer interface {
	// OpenBlob streams length bytes (-1: to the end) of blob desc from
	// offset.
	OpenBlob(ctx context.Context, desc ocispec.Descriptor, offset, length int64) (io.ReadCloser, error)
}

var (
	// ErrUnknownRecord is wrapped by Source errors about a record that does
	// not exist. It wraps errdefs.ErrNotFound.
	ErrUnknownRecord error = &kindError{"no such Zenodo record", errdefs.ErrNotFound}
	// ErrNoImage is wrapped by Source errors about a record that exists but
	// holds no container image archive. It wraps errdefs.ErrNotFound.
	ErrNoImage error = &kindError{"record holds no container image", errdefs.ErrNotFound}
)

// kindError is an error kind that also matches its errdefs kind.
type kindError struct {
	msg  string
	kind error
}

func (e *kindError) Error() string { return e.msg }
func (e *kindError) Unwrap() error { return e.kind }

// unknownRecord reports whether err says the record itself does not exist
// (as opposed to a tag, a digest or an image inside it).
func unknownRecord(err error) bool {
	if errors.Is(err, ErrUnknownRecord) {
		return true
	}
	if errors.Is(err, ErrNoImage) {
		return false
	}
	var ze *zenodo.Error
	return errors.As(err, &ze) && ze.StatusCode == 404 && strings.Contains(ze.URL, "/api/records/")
}

// Hosts combines the Sources of several Zenodo instances: a reference is
// opened by the Source of its Host. A reference to another host fails with
// ErrUnknownRecord. The result is a VersionLister when the Sources are.
func Hosts(sources map[zenodo.Host]Source) Source {
	m := make(map[zenodo.Host]Source, len(sources))
	for h, s := range sources {
		if s != nil {
			m[h] = s
		}
	}
	return hostSources(m)
}

type hostSources map[zenodo.Host]Source

var (
	_ Source        = hostSources(nil)
	_ VersionLister = hostSources(nil)
)

func (h hostSources) source(ref zenodo.Reference) (Source, error) {
	s, ok := h[ref.Host]
	if !ok {
		return nil, fmt.Errorf("%s: %s is not served here: %w", ref.Name(), ref.Host, ErrUnknownRecord)
	}
	return s, nil
}

// Open implements Source.
func (h hostSources) Open(ctx context.Context, ref zenodo.Reference) (Image, error) {
	s, err := h.source(ref)
	if err != nil {
		return nil, err
	}
	return s.Open(ctx, ref)
}

// Versions implements VersionLister.
func (h hostSources) Versions(ctx context.Context, ref zenodo.Reference) ([]zenodo.Record, error) {
	s, err := h.source(ref)
	if err != nil {
		return nil, err
	}
	vl, ok := s.(VersionLister)
	if !ok {
		return nil, fmt.Errorf("listing versions of %s: %w", ref.Name(), errdefs.ErrNotImplemented)
	}
	return vl.Versions(ctx, ref)
}
