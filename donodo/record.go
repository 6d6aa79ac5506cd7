package donodo

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/archive"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/remote"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/zenodo"
)

// Format says how an image archive in a record is read.
type Format string

const (
	// FormatV1 is image.tar with its image.tar.index.json: read by range,
	// all metadata in one request.
	FormatV1 Format = "v1"
	// FormatTar is another uncompressed archive (docker save, OCI archive):
	// read by range, walking its tar headers.
	FormatTar Format = "tar"
	// FormatCompressed is a compressed archive (the Python donodo's
	// image.tar.gz): streamed once into a spool file.
	FormatCompressed Format = "compressed"
)

// ChooseArchive picks the image archive among a record's files, as the
// Python donodo (and store/remote) do: the file image.tar (with
// image.tar.index.json, format v1), else the one file whose name starts
// with "image.tar", else the one file whose name contains ".tar". index is
// the format v1 index file, or nil. No candidate is ErrNoImage; several are
// ErrAmbiguous.
func ChooseArchive(files []zenodo.File) (arch zenodo.File, index *zenodo.File, err error) {
	byKey := map[string]zenodo.File{}
	var keys []string
	for _, f := range files {
		byKey[f.Key] = f
		keys = append(keys, f.Key)
	}
	if a, ok := byKey[archive.ArchiveFileName]; ok {
		if idx, ok := byKey[archive.IndexFileName]; ok {
			return a, &idx, nil
		}
		return a, nil, nil
	}
	isIndex := func(k string) bool { return strings.HasSuffix(k, ".index.json") }
	for _, rule := range []func(string) bool{
		func(k string) bool { return strings.HasPrefix(k, "image.tar") && !isIndex(k) },
		func(k string) bool { return strings.Contains(k, ".tar") && !isIndex(k) },
	} {
		var found []string
		for _, k := range keys {
			if rule(k) {
				found = append(found, k)
			}
		}
		switch len(found) {
		case 0:
			continue
		case 1:
			return byKey[found[0]], nil, nil
		}
		slices.Sort(found)
		return zenodo.File{}, nil, fmt.Errorf("%w: %s (donodo reads one image per record)", ErrAmbiguous, quoteList(found))
	}
	if len(keys) == 0 {
		return zenodo.File{}, nil, fmt.Errorf("%w: the record has no files", ErrNoImage)
	}
	slices.Sort(keys)
	return zenodo.File{}, nil, fmt.Errorf("%w: no file named image.tar… or containing .tar among %s", ErrNoImage, quoteList(keys))
}

// quoteList formats names for a message (bounded).
func quoteList(names []string) string {
	const maxShown = 10
	var parts []string
	for i, n := range names {
		if i == maxShown {
			parts = append(parts, fmt.Sprintf("and %d more", len(names)-maxShown))
			break
		}
		parts = append(parts, fmt.Sprintf("%q", clip(n, 80)))
	}
	return strings.Join(parts, ", ")
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// OpenOption configures OpenImage.
type OpenOption func(*openOptions) error

type openOptions struct {
	opener *remote.Opener
}

// WithOpener opens the image through op (shared, say, with a resolver), which
// the Image then leaves open. By default OpenImage uses an Opener of its own
// (no background fill, no state directory), closed with the Image.
func WithOpener(op *remote.Opener) OpenOption {
	return func(o *openOptions) error {
		o.opener = op
		return nil
	}
}

// Image is the image archive of a Zenodo record, opened for reading through
// store/remote. It is a content.Provider of the archive's blobs, every blob
// verified against its digest when read whole. Close it when done.
type Image struct {
	// Ref is the reference the image was opened by.
	Ref zenodo.Reference
	// Record is the record version Ref resolved to.
	Record *zenodo.Record
	// File is the archive file in the record, Index its format v1 index
	// file (nil for other formats).
	File  zenodo.File
	Index *zenodo.File
	// Format says how the archive is read.
	Format Format

	img     *remote.Image
	arch    *archive.Archive
	closers []func() error
}

var _ content.Provider = (*Image)(nil)

// OpenImage resolves ref (DESIGN §3: a version, a concept's latest version,
// a tag) and opens the image archive of that record version with
// store/remote: a format v1 archive costs the record, its index and one
// ranged request for all the metadata; another uncompressed archive is read
// by walking its tar headers by range; a compressed one is downloaded once
// into a spool file. A pinned digest (ref.Digest) must be the archive's
// root or one of its manifests.
func OpenImage(ctx context.Context, zc *zenodo.Client, ref zenodo.Reference, opts ...OpenOption) (_ *Image, retErr error) {
	o := &openOptions{}
	for _, opt := range opts {
		if err := opt(o); err != nil {
			return nil, err
		}
	}
	im := &Image{Ref: ref}
	op := o.opener
	if op == nil {
		op = remote.NewOpener(zc, remote.WithBackgroundFill(false))
		im.closers = append(im.closers, op.Close)
	}
	defer func() {
		if retErr != nil {
			im.Close()
		}
	}()
	img, err := op.Open(ctx, ref)
	if err != nil {
		return nil, openError(ref, err)
	}
	im.img, im.arch, im.Record, im.File = img, img.Archive(), img.Record(), img.File()
	switch img.Mode() {
	case remote.ModeIndex, remote.ModeState:
		im.Format = FormatV1
		if f, ok := im.Record.File(archive.IndexFileName); ok {
			im.Index = &f
		}
	default:
		im.Format = FormatCompressed
		if strings.HasSuffix(im.File.Key, ".tar") {
			im.Format = FormatTar
		}
	}
	log.G(ctx).WithFields(log.Fields{"record": im.Record.RecordID(), "file": im.File.Key, "mode": img.Mode()}).Debug("donodo: opened image archive")
	return im, nil
}

// openError keeps the kinds of a failed open meaningful for the command's
// exit codes: a malformed archive is ErrCorruptArchive (not the invalid
// argument the archive reader calls it, which would read as a usage error).
func openError(ref zenodo.Reference, err error) error {
	// store/remote's errors name the reference already, except a record's
	// absence.
	switch {
	case errors.Is(err, ErrCorruptArchive), errors.Is(err, zenodo.ErrInvalidReference), errdefs.IsNotFound(err),
		errors.Is(err, ErrAmbiguous), errdefs.IsUnauthorized(err), errdefs.IsPermissionDenied(err):
	case errdefs.IsInvalidArgument(err) || errdefs.IsDataLoss(err):
		var ze *zenodo.Error
		if !errors.As(err, &ze) {
			return fmt.Errorf("%s: %w", strings.ReplaceAll(err.Error(), "\n", "; "), ErrCorruptArchive)
		}
	}
	var ze *zenodo.Error
	if errors.As(err, &ze) && ze.StatusCode == http.StatusNotFound {
		return fmt.Errorf("%s: no such record on Zenodo: %w", ref, err)
	}
	return err
}

// archiveError reports a malformed archive as ErrCorruptArchive (not as the
// invalid argument the archive reader calls it, which would read as a usage
// error).
func archiveError(recID, key string, err error) error {
	if errors.Is(err, ErrCorruptArchive) {
		return fmt.Errorf("reading %s of record %s: %w", key, recID, err)
	}
	if errdefs.IsInvalidArgument(err) || errdefs.IsDataLoss(err) || errdefs.IsNotFound(err) {
		return fmt.Errorf("reading %s of record %s: %v: %w", key, recID, err, ErrCorruptArchive)
	}
	return fmt.Errorf("reading %s of record %s: %w", key, recID, err)
}

// md5Check fails the read that reaches EOF when the md5 of what was read
// differs from want ("" = unknown, not checked).
type md5Check struct {
	r    io.Reader
	h    interface{ Sum([]byte) []byte }
	want string
	name string
}

func (m *md5Check) Read(p []byte) (int, error) {
	n, err := m.r.Read(p)
	if err == io.EOF && m.want != "" {
		if got := hex.EncodeToString(m.h.Sum(nil)); got != m.want {
			return n, fmt.Errorf("%s: downloaded content has md5 %s, Zenodo lists %s: %w", m.name, got, m.want, zenodo.ErrChecksumMismatch)
		}
	}
	return n, err
}

// Close releases the archive and its connections or spool file (with the
// Opener, if it is the Image's own).
func (im *Image) Close() error {
	var errs []error
	for i := len(im.closers) - 1; i >= 0; i-- {
		errs = append(errs, im.closers[i]())
	}
	im.closers = nil
	return errors.Join(errs...)
}

// Archive is the opened archive.
func (im *Image) Archive() *archive.Archive { return im.arch }

// ReaderAt implements content.Provider: a verified reader of a blob.
func (im *Image) ReaderAt(ctx context.Context, desc ocispec.Descriptor) (content.ReaderAt, error) {
	return im.arch.ReaderAt(ctx, desc)
}

// Name is the image's name on Zenodo, "<host>/<version DOI>[:<tag>]",
// tagged with the record's version when that is a valid tag.
func (im *Image) Name() string {
	r := zenodo.Reference{Host: im.Ref.Host, DOI: im.Record.DOI}
	if r.DOI == "" {
		r.DOI = im.Ref.DOI
	}
	if t := im.Record.Version(); validTag(t) {
		r.Tag = t
	}
	return r.String()
}

// Names are the image names the archive carries (its original names,
// normalized), without names on Zenodo.
func (im *Image) Names() []string {
	var out []string
	for _, n := range im.arch.Names() {
		if !strings.HasPrefix(n, string(zenodo.HostProduction)+"/") && !strings.HasPrefix(n, string(zenodo.HostSandbox)+"/") {
			out = append(out, n)
		}
	}
	return out
}

// Root returns the descriptor to import: the archive's root, or, when the
// reference pins a digest, the root or manifest with that digest. A pinned
// digest found nowhere is errdefs.ErrNotFound. The content behind the
// descriptor is verified when read.
func (im *Image) Root(ctx context.Context) (ocispec.Descriptor, error) {
	root := im.arch.Root()
	if im.Ref.Digest == "" || root.Digest == im.Ref.Digest {
		return root, nil
	}
	manifests, err := im.arch.Manifests(ctx)
	if err != nil {
		return ocispec.Descriptor{}, archiveError(im.Record.RecordID(), im.File.Key, err)
	}
	var have []string
	for _, m := range manifests {
		if m.Digest == im.Ref.Digest {
			return m, nil
		}
		have = append(have, m.Digest.String())
	}
	return ocispec.Descriptor{}, fmt.Errorf("record %s (%s) has no manifest %s: its root is %s, its manifests %s: %w",
		im.Record.RecordID(), im.Record.DOI, im.Ref.Digest, root.Digest, strings.Join(have, ", "), errdefs.ErrNotFound)
}

// Platform is one image of an archive: a manifest and its config.
type Platform struct {
	// Manifest is the manifest's descriptor, with its platform.
	Manifest ocispec.Descriptor
	// Parsed manifest and config.
	ManifestData ocispec.Manifest
	Config       ocispec.Image
}

// Platforms reads the manifests (under Root) and configs of the archive.
func (im *Image) Platforms(ctx context.Context) ([]Platform, error) {
	root, err := im.Root(ctx)
	if err != nil {
		return nil, err
	}
	descs := []ocispec.Descriptor{root}
	if images.IsIndexType(root.MediaType) {
		if descs, err = im.arch.Manifests(ctx); err != nil {
			return nil, archiveError(im.Record.RecordID(), im.File.Key, err)
		}
	}
	var out []Platform
	for _, d := range descs {
		p, err := readPlatform(ctx, im, d)
		if err != nil {
			return nil, archiveError(im.Record.RecordID(), im.File.Key, err)
		}
		out = append(out, p)
	}
	return out, nil
}

// readPlatform reads a manifest and its config from provider.
func readPlatform(ctx context.Context, provider content.Provider, desc ocispec.Descriptor) (Platform, error) {
	p := Platform{Manifest: desc}
	if err := readJSONBlob(ctx, provider, desc, &p.ManifestData); err != nil {
		return p, fmt.Errorf("reading manifest %s: %w", desc.Digest, err)
	}
	if err := readJSONBlob(ctx, provider, p.ManifestData.Config, &p.Config); err != nil {
		return p, fmt.Errorf("reading config %s: %w", p.ManifestData.Config.Digest, err)
	}
	if p.Manifest.Platform == nil {
		pl := ocispec.Platform{OS: p.Config.OS, Architecture: p.Config.Architecture, Variant: p.Config.Variant, OSVersion: p.Config.OSVersion}
		p.Manifest.Platform = &pl
	}
	return p, nil
}

// maxJSONBlob bounds the JSON blobs read whole.
const maxJSONBlob = 16 << 20

// readJSONBlob reads a small blob, checks its digest and decodes it.
func readJSONBlob(ctx context.Context, provider content.Provider, desc ocispec.Descriptor, v any) error {
	if desc.Size > maxJSONBlob || desc.Size < 0 {
		return fmt.Errorf("blob %s of %d bytes: %w", desc.Digest, desc.Size, errdefs.ErrInvalidArgument)
	}
	data, err := content.ReadBlob(ctx, provider, desc)
	if err != nil {
		return err
	}
	if digest.FromBytes(data) != desc.Digest && desc.Digest.Algorithm() == digest.SHA256 {
		return fmt.Errorf("blob %s: content digest %s: %w", desc.Digest, digest.FromBytes(data), ErrCorruptArchive)
	}
	return jsonUnmarshal(data, v)
}
