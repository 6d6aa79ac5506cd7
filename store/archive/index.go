package archive

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

const (
	// FormatVersion is the version of the image.tar format this package
	// writes, recorded in [Index.Version].
	FormatVersion = 1

	// MediaTypeIndex is the media type of image.tar.index.json.
	MediaTypeIndex = "application/vnd.zenodo-snapshotter.archive.index.v1+json"

	// ArchiveFileName is the name of the archive in a record.
	ArchiveFileName = "image.tar"

	// IndexFileName is the name of the archive's index file in a record.
	IndexFileName = "image.tar.index.json"

	// MaxIndexSize is the largest image.tar.index.json [ParseIndex] accepts.
	MaxIndexSize = 16 << 20

	// maxIndexBlobs bounds the number of blobs an index may list.
	maxIndexBlobs = 1 << 16
	// maxNames bounds the number of image names an index may list.
	maxNames = 1 << 10
)

// Index is the content of image.tar.index.json: where every blob of an
// image.tar is. Nothing in it is trusted: every blob it points to is checked
// against its digest when read.
type Index struct {
	// MediaType is [MediaTypeIndex].
	MediaType string `json:"mediaType"`
	// Version is the archive format version, [FormatVersion].
	Version int `json:"version"`
	// ArchiveSize is the size of image.tar in bytes.
	ArchiveSize int64 `json:"archiveSize"`
	// MetadataEnd is the offset in image.tar where the metadata blobs
	// (indexes, manifests, configs, TOCs) end: [0, MetadataEnd) holds them
	// all, so one ranged read fetches everything but the layers.
	MetadataEnd int64 `json:"metadataEnd"`
	// Root is the image's root descriptor: an image index or a manifest.
	Root ocispec.Descriptor `json:"root"`
	// Names are the image's names, normalized (docker.io/library/x:tag).
	Names []string `json:"names,omitempty"`
	// Manifests are the image manifests written, with their platforms. It
	// reports what was archived (after [WithSkipMissing]); readers should
	// take the manifests from the verified Root instead.
	Manifests []ocispec.Descriptor `json:"manifests,omitempty"`
	// Blobs are the blobs in image.tar, in archive order.
	Blobs []BlobEntry `json:"blobs"`
}

// BlobEntry is one blob inside image.tar.
type BlobEntry struct {
	// Digest is the blob's digest; its data is blobs/<alg>/<encoded>.
	Digest digest.Digest `json:"digest"`
	// MediaType is the media type the blob is referenced with, if known.
	MediaType string `json:"mediaType,omitempty"`
	// Offset is where the blob's data starts in image.tar.
	Offset int64 `json:"offset"`
	// Size is the blob's size in bytes.
	Size int64 `json:"size"`
}

// MarshalIndex encodes idx as image.tar.index.json.
func MarshalIndex(idx *Index) ([]byte, error) {
	if err := idx.validate(); err != nil {
		return nil, err
	}
	b, err := json.MarshalIndent(idx, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encoding archive index: %w", err)
	}
	return append(b, '\n'), nil
}

// ParseIndex decodes and checks an image.tar.index.json. Errors wrap
// errdefs.ErrInvalidArgument.
func ParseIndex(data []byte) (*Index, error) {
	if len(data) > MaxIndexSize {
		return nil, fmt.Errorf("archive index is %d bytes, more than %d: %w", len(data), MaxIndexSize, errdefs.ErrInvalidArgument)
	}
	var idx Index
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&idx); err != nil {
		return nil, fmt.Errorf("decoding archive index: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	if dec.More() {
		return nil, fmt.Errorf("decoding archive index: trailing data: %w", errdefs.ErrInvalidArgument)
	}
	if err := idx.validate(); err != nil {
		return nil, err
	}
	return &idx, nil
}

// validate checks the index is self-consistent: known version, valid
// digests, blobs inside the archive and not overlapping, root among them.
func (idx *Index) validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("archive index: %s: %w", fmt.Sprintf(format, a...), errdefs.ErrInvalidArgument)
	}
	if idx == nil {
		return bad("nil index")
	}
	if idx.MediaType != MediaTypeIndex {
		return bad("media type %q, want %q", idx.MediaType, MediaTypeIndex)
	}
	if idx.Version != FormatVersion {
		return bad("unsupported format version %d (this reader knows %d)", idx.Version, FormatVersion)
	}
	if idx.ArchiveSize < 0 {
		return bad("negative archive size %d", idx.ArchiveSize)
	}
	if idx.MetadataEnd < 0 || idx.MetadataEnd > idx.ArchiveSize {
		return bad("metadata end %d outside the archive (%d bytes)", idx.MetadataEnd, idx.ArchiveSize)
	}
	if len(idx.Blobs) > maxIndexBlobs {
		return bad("%d blobs, more than %d", len(idx.Blobs), maxIndexBlobs)
	}
	if len(idx.Names) > maxNames {
		return bad("%d names, more than %d", len(idx.Names), maxNames)
	}
	if len(idx.Manifests) > maxIndexBlobs {
		return bad("%d manifests, more than %d", len(idx.Manifests), maxIndexBlobs)
	}
	seen := make(map[digest.Digest]int64, len(idx.Blobs))
	byOffset := make([]BlobEntry, 0, len(idx.Blobs))
	for _, b := range idx.Blobs {
		if err := b.Digest.Validate(); err != nil {
			return bad("blob %q: %v", b.Digest, err)
		}
		if _, dup := seen[b.Digest]; dup {
			return bad("blob %s listed twice", b.Digest)
		}
		if b.Offset < 0 || b.Size < 0 || b.Offset > idx.ArchiveSize || b.Size > idx.ArchiveSize-b.Offset {
			return bad("blob %s at [%d, +%d) lies outside the archive (%d bytes)", b.Digest, b.Offset, b.Size, idx.ArchiveSize)
		}
		seen[b.Digest] = b.Size
		byOffset = append(byOffset, b)
	}
	slices.SortFunc(byOffset, func(a, b BlobEntry) int {
		switch {
		case a.Offset < b.Offset:
			return -1
		case a.Offset > b.Offset:
			return 1
		}
		return 0
	})
	for i := 1; i < len(byOffset); i++ {
		prev, cur := byOffset[i-1], byOffset[i]
		if prev.Offset+prev.Size > cur.Offset {
			return bad("blobs %s and %s overlap", prev.Digest, cur.Digest)
		}
	}
	if err := idx.Root.Digest.Validate(); err != nil {
		return bad("root %q: %v", idx.Root.Digest, err)
	}
	size, ok := seen[idx.Root.Digest]
	if !ok {
		return bad("root %s is not among the blobs", idx.Root.Digest)
	}
	if idx.Root.Size != size {
		return bad("root %s has size %d, its blob %d", idx.Root.Digest, idx.Root.Size, size)
	}
	return nil
}
