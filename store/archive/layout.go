package archive

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/internal/fsutil"
)

// layoutProvider serves the blobs of an OCI image layout directory.
type layoutProvider struct {
	dir string
}

var _ content.Provider = (*layoutProvider)(nil)

// LayoutProvider returns a content.Provider of the blobs of the OCI image
// layout in dir (blobs/<alg>/<encoded>). It also serves the layout's
// index.json by its digest, which is the root LayoutRoot returns when the
// layout holds several images. A missing blob is errdefs.ErrNotFound.
func LayoutProvider(dir string) content.Provider {
	return &layoutProvider{dir: dir}
}

// ReaderAt opens a blob of the layout.
func (p *layoutProvider) ReaderAt(ctx context.Context, desc ocispec.Descriptor) (content.ReaderAt, error) {
	if err := desc.Digest.Validate(); err != nil {
		return nil, fmt.Errorf("blob %q: %v: %w", desc.Digest, err, errdefs.ErrInvalidArgument)
	}
	name := filepath.Join(p.dir, ocispec.ImageBlobsDir, desc.Digest.Algorithm().String(), desc.Digest.Encoded())
	f, err := os.Open(name)
	if errors.Is(err, fs.ErrNotExist) {
		if ra, ok := p.indexJSON(desc.Digest); ok {
			return ra, nil
		}
		return nil, fmt.Errorf("blob %s in layout %s: %w", desc.Digest, p.dir, errdefs.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("opening blob %s: %w", desc.Digest, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("opening blob %s: %w", desc.Digest, err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("blob %s in layout %s is not a regular file: %w", desc.Digest, p.dir, errdefs.ErrInvalidArgument)
	}
	return &fileReaderAt{File: f, size: fi.Size()}, nil
}

// indexJSON serves index.json if dgst is its digest.
func (p *layoutProvider) indexJSON(dgst digest.Digest) (content.ReaderAt, bool) {
	data, err := fsutil.ReadFileLimit(filepath.Join(p.dir, ocispec.ImageIndexFile), maxJSONSize)
	if err != nil || digest.FromBytes(data) != dgst {
		return nil, false
	}
	return nopCloser{bytes.NewReader(data)}, true
}

// LayoutRoot returns the root descriptor of the OCI image layout in dir and
// the image names its index.json carries: the one image it lists (under
// however many names), else index.json itself as an image index.
func LayoutRoot(dir string) (ocispec.Descriptor, []string, error) {
	data, err := fsutil.ReadFileLimit(filepath.Join(dir, ocispec.ImageIndexFile), maxJSONSize)
	if errors.Is(err, fs.ErrNotExist) {
		err = fmt.Errorf("%w: %w", err, errdefs.ErrNotFound)
	}
	if err != nil {
		return ocispec.Descriptor{}, nil, fmt.Errorf("reading OCI layout %s: %w", dir, err)
	}
	var idx ocispec.Index
	if err := json.Unmarshal(data, &idx); err != nil {
		return ocispec.Descriptor{}, nil, fmt.Errorf("parsing %s/index.json: %v: %w", dir, err, errdefs.ErrInvalidArgument)
	}
	root, names, err := chooseRoot(data, &idx)
	if err != nil {
		return ocispec.Descriptor{}, nil, fmt.Errorf("OCI layout %s: %w", dir, err)
	}
	if names, err = normalizeNames(names); err != nil {
		return ocispec.Descriptor{}, nil, fmt.Errorf("OCI layout %s: %w", dir, err)
	}
	return root, names, nil
}

// fileReaderAt is a content.ReaderAt over an open file.
type fileReaderAt struct {
	*os.File
	size int64
}

// Size returns the file's size when it was opened.
func (f *fileReaderAt) Size() int64 { return f.size }

// nopCloser is a content.ReaderAt over bytes.
type nopCloser struct{ *bytes.Reader }

// Close does nothing.
func (nopCloser) Close() error { return nil }
