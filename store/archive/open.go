package archive

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/seekable"
)

const (
	// maxJSONSize bounds the JSON files and blobs the reader parses
	// (index.json, manifest.json, manifests, indexes, configs).
	maxJSONSize = 16 << 20
	// defaultMaxEntries is the default of WithMaxEntries.
	defaultMaxEntries = 100_000
	// defaultMaxSpoolSize is the default of WithMaxSpoolSize.
	defaultMaxSpoolSize = 64 << 30
)

// OpenOption configures Open and OpenStream.
type OpenOption func(*openOptions) error

type openOptions struct {
	index        *Index
	maxEntries   int
	maxSpoolSize int64
}

// WithIndex opens a format v1 archive with its image.tar.index.json: no tar
// header is read, blobs are found by the index (and verified when read). By
// default the reader walks the tar headers.
func WithIndex(idx *Index) OpenOption {
	return func(o *openOptions) error {
		if err := idx.validate(); err != nil {
			return err
		}
		o.index = idx
		return nil
	}
}

// WithMaxEntries bounds the number of tar entries a header walk accepts.
// The default is 100000.
func WithMaxEntries(n int) OpenOption {
	return func(o *openOptions) error {
		if n <= 0 {
			return fmt.Errorf("max entries %d: %w", n, errdefs.ErrInvalidArgument)
		}
		o.maxEntries = n
		return nil
	}
}

// WithMaxSpoolSize bounds the bytes OpenStream writes to its spool file (the
// decompressed archive): larger streams, gzip bombs included, fail with
// errdefs.ErrInvalidArgument. The default is 64 GiB.
func WithMaxSpoolSize(n int64) OpenOption {
	return func(o *openOptions) error {
		if n <= 0 {
			return fmt.Errorf("max spool size %d: %w", n, errdefs.ErrInvalidArgument)
		}
		o.maxSpoolSize = n
		return nil
	}
}

func makeOpenOptions(opts []OpenOption) (*openOptions, error) {
	o := &openOptions{maxEntries: defaultMaxEntries, maxSpoolSize: defaultMaxSpoolSize}
	for _, opt := range opts {
		if err := opt(o); err != nil {
			return nil, err
		}
	}
	return o, nil
}

// Archive is an opened image archive. It is a content.Provider of the
// archive's blobs; reads are verified (see ReaderAt). It is safe for
// concurrent use.
type Archive struct {
	ra    io.ReaderAt
	size  int64
	blobs map[digest.Digest]blobLoc
	root  ocispec.Descriptor
	names []string
	// closeFn releases what Open or OpenStream acquired.
	closeFn func() error

	mu   sync.Mutex
	tocs map[[2]digest.Digest]*seekable.TOC // by layer and TOC digest
}

var (
	_ content.Provider     = (*Archive)(nil)
	_ content.InfoProvider = (*Archive)(nil)
)

// Open opens the image archive of size bytes in ra: format v1 with
// WithIndex (no header walk), otherwise any OCI image layout or docker-save
// archive, found by walking its tar headers with ranged reads. Archives that
// are only docker-save (no index.json) get an OCI view synthesized from
// manifest.json, reading each layer whose digest is not in its name once.
//
// Errors about malformed input wrap errdefs.ErrInvalidArgument or
// ErrCorrupt, about files the archive lacks (the root, a config or layer
// manifest.json names) errdefs.ErrNotFound. Memory stays bounded whatever
// the input: header sizes, entry counts and the JSON files parsed are
// capped. The caller keeps ra open while the Archive is used.
func Open(ctx context.Context, ra io.ReaderAt, size int64, opts ...OpenOption) (*Archive, error) {
	o, err := makeOpenOptions(opts)
	if err != nil {
		return nil, err
	}
	if size < 0 {
		return nil, fmt.Errorf("opening archive: negative size %d: %w", size, errdefs.ErrInvalidArgument)
	}
	a := &Archive{ra: ra, size: size, blobs: map[digest.Digest]blobLoc{}, tocs: map[[2]digest.Digest]*seekable.TOC{}}
	if o.index != nil {
		if err := a.useIndex(o.index); err != nil {
			return nil, err
		}
		return a, nil
	}
	w, err := walk(ctx, ra, size, o.maxEntries)
	if err != nil {
		return nil, fmt.Errorf("opening archive: %w", err)
	}
	switch {
	case has(w.entries, ocispec.ImageIndexFile):
		err = a.openOCI(ctx, w.entries)
	case has(w.entries, dockerManifestFile):
		err = a.openDocker(ctx, w.entries)
	default:
		err = fmt.Errorf("neither an OCI image layout (no index.json) nor a docker save archive (no manifest.json): %w", errdefs.ErrInvalidArgument)
	}
	if err != nil {
		return nil, fmt.Errorf("opening archive: %w", err)
	}
	return a, nil
}

func has(entries map[string]entry, name string) bool {
	_, ok := entries[name]
	return ok
}

// useIndex sets the archive up from a format v1 index.
func (a *Archive) useIndex(idx *Index) error {
	if idx.ArchiveSize != a.size {
		return fmt.Errorf("opening archive: index is for an archive of %d bytes, this one has %d: %w", idx.ArchiveSize, a.size, errdefs.ErrInvalidArgument)
	}
	for _, b := range idx.Blobs {
		a.blobs[b.Digest] = blobLoc{offset: b.Offset, size: b.Size, mediaType: b.MediaType}
	}
	a.root = idx.Root
	names, err := normalizeNames(idx.Names)
	if err != nil {
		return fmt.Errorf("opening archive: index: %w", err)
	}
	a.names = names
	return nil
}

// readEntry reads a small file of the archive whole.
func (a *Archive) readEntry(entries map[string]entry, name string, limit int64) ([]byte, entry, error) {
	e, _, err := resolve(entries, name)
	if err != nil {
		return nil, entry{}, err
	}
	if e.size > limit {
		return nil, entry{}, fmt.Errorf("%s is %d bytes, more than %d: %w", name, e.size, limit, errdefs.ErrInvalidArgument)
	}
	b := make([]byte, e.size)
	if _, err := a.ra.ReadAt(b, e.offset); err != nil && !(err == io.EOF && e.offset+e.size == a.size) {
		return nil, entry{}, fmt.Errorf("reading %s: %w", name, err)
	}
	return b, e, nil
}

// openOCI sets the archive up from an OCI image layout.
func (a *Archive) openOCI(ctx context.Context, entries map[string]entry) error {
	for name := range entries {
		d, ok := blobDigest(name)
		if !ok {
			continue
		}
		e, _, err := resolve(entries, name)
		if err != nil {
			return fmt.Errorf("blob %s: %w", d, err)
		}
		a.blobs[d] = blobLoc{offset: e.offset, size: e.size}
	}
	data, e, err := a.readEntry(entries, ocispec.ImageIndexFile, maxJSONSize)
	if err != nil {
		return err
	}
	var idx ocispec.Index
	if err := json.Unmarshal(data, &idx); err != nil {
		return fmt.Errorf("parsing index.json: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	root, names, err := chooseRoot(data, &idx)
	if err != nil {
		return fmt.Errorf("index.json: %w", err)
	}
	if root.Digest == digest.FromBytes(data) {
		// Several images: index.json itself is the root.
		a.blobs[root.Digest] = blobLoc{offset: e.offset, size: e.size, mediaType: root.MediaType}
	}
	if len(names) == 0 && has(entries, dockerManifestFile) {
		if mf, err := a.readDockerManifest(entries); err == nil {
			for _, m := range mf {
				names = append(names, m.RepoTags...)
			}
		} else {
			log.G(ctx).WithError(err).Debug("ignoring manifest.json of an OCI archive")
		}
	}
	if a.names, err = normalizeNames(names); err != nil {
		return err
	}
	a.root = root
	if _, ok := a.blobs[root.Digest]; !ok {
		return fmt.Errorf("root %s is not in the archive: %w", root.Digest, errdefs.ErrNotFound)
	}
	return nil
}

// blobDigest parses "blobs/<alg>/<encoded>".
func blobDigest(name string) (digest.Digest, bool) {
	rest, ok := strings.CutPrefix(name, ocispec.ImageBlobsDir+"/")
	if !ok {
		return "", false
	}
	alg, enc, ok := strings.Cut(rest, "/")
	if !ok {
		return "", false
	}
	d := digest.NewDigestFromEncoded(digest.Algorithm(alg), enc)
	if d.Validate() != nil {
		return "", false
	}
	return d, true
}

// chooseRoot picks the root of an OCI layout from its index.json: the one
// image it names (however many names it has), else index.json itself. names
// are the image names found in the annotations.
func chooseRoot(data []byte, idx *ocispec.Index) (ocispec.Descriptor, []string, error) {
	if len(idx.Manifests) == 0 {
		return ocispec.Descriptor{}, nil, fmt.Errorf("no images: %w", errdefs.ErrNotFound)
	}
	var names []string
	distinct := map[digest.Digest]bool{}
	for _, d := range idx.Manifests {
		if err := d.Digest.Validate(); err != nil {
			return ocispec.Descriptor{}, nil, fmt.Errorf("descriptor %q: %v: %w", d.Digest, err, errdefs.ErrInvalidArgument)
		}
		if d.Size < 0 {
			return ocispec.Descriptor{}, nil, fmt.Errorf("descriptor %s: negative size: %w", d.Digest, errdefs.ErrInvalidArgument)
		}
		distinct[d.Digest] = true
		if n := nameOf(d); n != "" {
			names = append(names, n)
		}
	}
	if len(distinct) > 1 {
		return ocispec.Descriptor{
			MediaType: ocispec.MediaTypeImageIndex,
			Digest:    digest.FromBytes(data),
			Size:      int64(len(data)),
		}, names, nil
	}
	root := idx.Manifests[0]
	root.Annotations = stripNameAnnotations(root.Annotations)
	return root, names, nil
}

// nameOf returns the image name an index.json entry carries: containerd's
// io.containerd.image.name, else an org.opencontainers.image.ref.name that
// is a full reference (not only a tag).
func nameOf(d ocispec.Descriptor) string {
	if n := d.Annotations[images.AnnotationImageName]; n != "" {
		return n
	}
	n := d.Annotations[ocispec.AnnotationRefName]
	if strings.ContainsAny(n, "/:@") {
		if _, err := reference.ParseDockerRef(n); err == nil {
			return n
		}
	}
	return ""
}

func stripNameAnnotations(in map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range in {
		if k != images.AnnotationImageName && k != ocispec.AnnotationRefName {
			out[k] = v
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// normalizeNames parses and normalizes image names, dropping duplicates.
func normalizeNames(in []string) ([]string, error) {
	var out []string
	for _, n := range in {
		ref, err := reference.ParseDockerRef(n)
		if err != nil {
			return nil, fmt.Errorf("image name %q: %v: %w", n, err, errdefs.ErrInvalidArgument)
		}
		if s := ref.String(); !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out, nil
}

// Root returns the archive's root descriptor: an image index or manifest.
func (a *Archive) Root() ocispec.Descriptor { return a.root }

// Names returns the image names the archive carries, normalized
// (docker.io/library/busybox:latest).
func (a *Archive) Names() []string { return slices.Clone(a.names) }

// Size returns the archive's size in bytes.
func (a *Archive) Size() int64 { return a.size }

// Blob returns where a blob's data is in the archive. ok is false if the
// archive has no such blob, or if the blob was synthesized (the manifests
// and index of a docker-save archive) and so has no place in it.
func (a *Archive) Blob(dgst digest.Digest) (offset, size int64, ok bool) {
	loc, ok := a.blobs[dgst]
	if !ok || loc.data != nil {
		return 0, 0, false
	}
	return loc.offset, loc.size, true
}

// Digests returns the digests of all blobs in the archive, synthesized ones
// included, in no particular order.
func (a *Archive) Digests() []digest.Digest {
	out := make([]digest.Digest, 0, len(a.blobs))
	for d := range a.blobs {
		out = append(out, d)
	}
	return out
}

// ReaderAt returns a reader of the blob desc names. The read that completes
// an in-order read of the whole blob (content.ReadBlob, content.NewReader,
// io.Copy) fails with ErrCorrupt if the content does not match the digest.
// A missing blob is errdefs.ErrNotFound.
func (a *Archive) ReaderAt(ctx context.Context, desc ocispec.Descriptor) (content.ReaderAt, error) {
	loc, ok := a.blobs[desc.Digest]
	if !ok {
		return nil, fmt.Errorf("blob %s: %w", desc.Digest, errdefs.ErrNotFound)
	}
	if desc.Size != 0 && desc.Size != loc.size {
		return nil, fmt.Errorf("blob %s is %d bytes in the archive, the descriptor says %d: %w", desc.Digest, loc.size, desc.Size, ErrCorrupt)
	}
	return newVerifiedReaderAt(a.section(loc), loc.size, desc.Digest), nil
}

func (a *Archive) section(loc blobLoc) io.ReaderAt {
	if loc.data != nil {
		return bytes.NewReader(loc.data)
	}
	return io.NewSectionReader(a.ra, loc.offset, loc.size)
}

// Info returns a blob's digest and size. A missing blob is
// errdefs.ErrNotFound.
func (a *Archive) Info(ctx context.Context, dgst digest.Digest) (content.Info, error) {
	loc, ok := a.blobs[dgst]
	if !ok {
		return content.Info{}, fmt.Errorf("blob %s: %w", dgst, errdefs.ErrNotFound)
	}
	return content.Info{Digest: dgst, Size: loc.size}, nil
}

// readJSON reads a small blob whole, verified, and decodes it into v.
func (a *Archive) readJSON(ctx context.Context, desc ocispec.Descriptor, v any) ([]byte, error) {
	if desc.Size > maxJSONSize {
		return nil, fmt.Errorf("blob %s is %d bytes, more than %d: %w", desc.Digest, desc.Size, maxJSONSize, errdefs.ErrInvalidArgument)
	}
	if loc, ok := a.blobs[desc.Digest]; ok && loc.size > maxJSONSize {
		return nil, fmt.Errorf("blob %s is %d bytes, more than %d: %w", desc.Digest, loc.size, maxJSONSize, errdefs.ErrInvalidArgument)
	}
	data, err := content.ReadBlob(ctx, a, desc)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return nil, fmt.Errorf("parsing %s: %v: %w", desc.Digest, err, errdefs.ErrInvalidArgument)
	}
	return data, nil
}

// Manifests returns the image manifests under the root, each with its
// platform (from the index, else from its config). Attestation manifests
// (buildx's "unknown/unknown" entries) are left out.
func (a *Archive) Manifests(ctx context.Context) ([]ocispec.Descriptor, error) {
	var out []ocispec.Descriptor
	seen := map[digest.Digest]bool{}
	var visit func(desc ocispec.Descriptor, depth int) error
	visit = func(desc ocispec.Descriptor, depth int) error {
		if depth > maxIndexDepth {
			return fmt.Errorf("indexes nested more than %d deep: %w", maxIndexDepth, errdefs.ErrInvalidArgument)
		}
		switch {
		case images.IsIndexType(desc.MediaType):
			if seen[desc.Digest] {
				return nil
			}
			seen[desc.Digest] = true
			var idx ocispec.Index
			if _, err := a.readJSON(ctx, desc, &idx); err != nil {
				return fmt.Errorf("reading index %s: %w", desc.Digest, err)
			}
			for _, m := range idx.Manifests {
				if m.Annotations[annotationReferenceType] == attestationManifest {
					continue
				}
				if err := visit(m, depth+1); err != nil {
					return err
				}
			}
		case images.IsManifestType(desc.MediaType):
			if seen[desc.Digest] {
				return nil
			}
			seen[desc.Digest] = true
			if desc.Platform == nil {
				var m ocispec.Manifest
				if _, err := a.readJSON(ctx, desc, &m); err != nil {
					return fmt.Errorf("reading manifest %s: %w", desc.Digest, err)
				}
				if images.IsConfigType(m.Config.MediaType) {
					p, err := a.configPlatform(ctx, m.Config)
					if err != nil {
						return err
					}
					desc.Platform = p
				}
			}
			out = append(out, desc)
		default:
			log.G(ctx).WithField("digest", desc.Digest).WithField("mediaType", desc.MediaType).Debug("skipping non-manifest descriptor")
		}
		return nil
	}
	if err := visit(a.root, 0); err != nil {
		return nil, fmt.Errorf("listing manifests: %w", err)
	}
	return out, nil
}

// configPlatform reads an image config's platform.
func (a *Archive) configPlatform(ctx context.Context, desc ocispec.Descriptor) (*ocispec.Platform, error) {
	var img ocispec.Image
	if _, err := a.readJSON(ctx, desc, &img); err != nil {
		return nil, fmt.Errorf("reading config %s: %w", desc.Digest, err)
	}
	p := img.Platform
	return &p, nil
}

// Verify reads every blob of the archive and checks it against its digest,
// then checks that every blob the root references (and every layer's TOC)
// is present with the size it is referenced with.
func (a *Archive) Verify(ctx context.Context) error {
	digests := a.Digests()
	slices.SortFunc(digests, func(x, y digest.Digest) int {
		return int(min(max(a.blobs[x].offset-a.blobs[y].offset, -1), 1))
	})
	for _, d := range digests {
		loc := a.blobs[d]
		r := io.NewSectionReader(a.section(loc), 0, loc.size)
		if err := verifyStream(ctx, r, loc.size, d); err != nil {
			return fmt.Errorf("verifying archive: %w", err)
		}
	}
	if err := a.checkTree(ctx); err != nil {
		return fmt.Errorf("verifying archive: %w", err)
	}
	return nil
}

// checkTree checks every descriptor reachable from the root is present.
func (a *Archive) checkTree(ctx context.Context) error {
	present := func(d ocispec.Descriptor, parent digest.Digest) error {
		loc, ok := a.blobs[d.Digest]
		if !ok {
			return fmt.Errorf("blob %s referenced by %s is missing: %w", d.Digest, parent, errdefs.ErrNotFound)
		}
		if loc.size != d.Size {
			return fmt.Errorf("blob %s referenced by %s with size %d is %d bytes: %w", d.Digest, parent, d.Size, loc.size, ErrCorrupt)
		}
		return nil
	}
	seen := map[digest.Digest]bool{}
	var visit func(desc ocispec.Descriptor, depth int) error
	visit = func(desc ocispec.Descriptor, depth int) error {
		if depth > maxIndexDepth {
			return fmt.Errorf("indexes nested more than %d deep: %w", maxIndexDepth, errdefs.ErrInvalidArgument)
		}
		if seen[desc.Digest] {
			return nil
		}
		seen[desc.Digest] = true
		switch {
		case images.IsIndexType(desc.MediaType):
			var idx ocispec.Index
			if _, err := a.readJSON(ctx, desc, &idx); err != nil {
				return err
			}
			for _, m := range idx.Manifests {
				if err := present(m, desc.Digest); err != nil {
					return err
				}
				if err := visit(m, depth+1); err != nil {
					return err
				}
			}
		case images.IsManifestType(desc.MediaType):
			var m ocispec.Manifest
			if _, err := a.readJSON(ctx, desc, &m); err != nil {
				return err
			}
			if err := present(m.Config, desc.Digest); err != nil {
				return err
			}
			for _, l := range m.Layers {
				if err := present(l, desc.Digest); err != nil {
					return err
				}
				if _, ok := l.Annotations[seekable.AnnotationTOCDigest]; ok {
					if _, err := a.TOC(ctx, l); err != nil {
						return err
					}
				}
			}
		}
		return nil
	}
	if err := present(a.root, "the archive's root"); err != nil {
		return err
	}
	return visit(a.root, 0)
}

// Close releases what the archive holds: with OpenStream, the spool file.
func (a *Archive) Close() error {
	if a.closeFn == nil {
		return nil
	}
	fn := a.closeFn
	a.closeFn = nil
	return fn()
}

// errNoTOC is returned for layers without a TOC annotation.
var errNoTOC = errors.New("layer has no TOC")
