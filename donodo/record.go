package donodo

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/archive"
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
// Python donodo does: image.tar with image.tar.index.json (format v1) if
// present, else the one file whose name starts with "image.tar", else the
// one file whose name contains ".tar". index is the format v1 index file,
// or nil. No candidate is ErrNoImage; several are ErrAmbiguous.
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
	spoolDir string
	chunk    int64
	progress Progress
	stream   bool
}

// WithSpoolDir sets where compressed archives are decompressed to while
// open. The default is os.TempDir().
func WithSpoolDir(dir string) OpenOption {
	return func(o *openOptions) error {
		o.spoolDir = dir
		return nil
	}
}

// WithChunkSize sets the size of the ranged requests that read blobs; the
// metadata of a format v1 archive is always one request. The default is
// 8 MiB.
func WithChunkSize(n int64) OpenOption {
	return func(o *openOptions) error {
		if n < 4096 {
			return fmt.Errorf("chunk size %d: at least 4096: %w", n, errdefs.ErrInvalidArgument)
		}
		o.chunk = n
		return nil
	}
}

// WithOpenProgress reports the download of archives that are streamed
// whole (compressed ones). The default is NoProgress.
func WithOpenProgress(p Progress) OpenOption {
	return func(o *openOptions) error {
		if p == nil {
			p = NoProgress
		}
		o.progress = p
		return nil
	}
}

// WithDownload downloads the archive whole, in one request, into a spool
// file and reads it from there, instead of reading it by range: for
// commands that read all of it anyway. By default only compressed archives
// (and servers that refuse ranges) are downloaded.
func WithDownload() OpenOption {
	return func(o *openOptions) error {
		o.stream = true
		return nil
	}
}

func makeOpenOptions(opts []OpenOption) (*openOptions, error) {
	o := &openOptions{spoolDir: os.TempDir(), chunk: 8 << 20, progress: NoProgress}
	for _, opt := range opts {
		if err := opt(o); err != nil {
			return nil, err
		}
	}
	return o, nil
}

// Image is the image archive of a Zenodo record, opened for reading. It is
// a content.Provider of the archive's blobs, every blob verified against
// its digest when read whole. Close it when done.
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

	arch    *archive.Archive
	closers []func() error
}

var _ content.Provider = (*Image)(nil)

// OpenImage resolves ref (DESIGN §3: a version, a concept's latest version,
// a tag) and opens the image archive of that record version. A pinned
// digest (ref.Digest) is checked by Root.
func OpenImage(ctx context.Context, zc *zenodo.Client, ref zenodo.Reference, opts ...OpenOption) (_ *Image, retErr error) {
	o, err := makeOpenOptions(opts)
	if err != nil {
		return nil, err
	}
	rec, err := zc.Resolve(ctx, ref)
	if err != nil {
		return nil, fmt.Errorf("finding record %s: %w", ref, err)
	}
	arch, idxFile, err := ChooseArchive(rec.Files)
	if err != nil {
		return nil, fmt.Errorf("record %s (%s): %w", rec.RecordID(), rec.DOI, err)
	}
	im := &Image{Ref: ref, Record: rec, File: arch, Index: idxFile}
	defer func() {
		if retErr != nil {
			im.Close()
		}
	}()
	recID := rec.RecordID()
	log.G(ctx).WithFields(log.Fields{"record": recID, "file": arch.Key, "size": arch.Size}).Debug("donodo: opening image archive")

	compressed := !strings.HasSuffix(arch.Key, ".tar")
	if compressed || o.stream {
		im.Format = FormatCompressed
		if !compressed {
			im.Format = FormatTar
			if idxFile != nil {
				im.Format = FormatV1
			}
		}
		return im, im.openStream(ctx, zc, o)
	}

	var idx *archive.Index
	if idxFile != nil {
		if idx, err = fetchIndex(ctx, zc, recID, *idxFile); err != nil {
			return nil, err
		}
		im.Format = FormatV1
	} else {
		im.Format = FormatTar
	}
	rr, err := zc.NewReaderAt(ctx, recID, arch.Key, arch.Size)
	if errors.Is(err, zenodo.ErrRangeUnsupported) {
		log.G(ctx).WithError(err).Info("donodo: Zenodo refused a range request; downloading the archive whole")
		return im, im.openStream(ctx, zc, o)
	}
	if err != nil {
		return nil, fmt.Errorf("opening %s of record %s: %w", arch.Key, recID, err)
	}
	var pin int64
	if idx != nil {
		pin = idx.MetadataEnd
	}
	ra := newRemoteReaderAt(ctx, rr, o.chunk, pin)
	im.closers = append(im.closers, ra.Close)
	var aopts []archive.OpenOption
	if idx != nil {
		aopts = append(aopts, archive.WithIndex(idx))
	}
	a, err := archive.Open(ctx, ra, ra.Size(), aopts...)
	if err != nil {
		return nil, archiveError(recID, arch.Key, err)
	}
	im.arch = a
	im.closers = append(im.closers, a.Close)
	return im, nil
}

// fetchIndex downloads and parses image.tar.index.json.
func fetchIndex(ctx context.Context, zc *zenodo.Client, recID string, f zenodo.File) (*archive.Index, error) {
	if f.Size > archive.MaxIndexSize {
		return nil, fmt.Errorf("%s of record %s is %d bytes, more than %d: %w", f.Key, recID, f.Size, archive.MaxIndexSize, ErrCorruptArchive)
	}
	rc, err := zc.Open(ctx, recID, f.Key)
	if err != nil {
		return nil, fmt.Errorf("downloading %s of record %s: %w", f.Key, recID, err)
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, archive.MaxIndexSize+1))
	if err != nil {
		return nil, fmt.Errorf("downloading %s of record %s: %w", f.Key, recID, err)
	}
	idx, err := archive.ParseIndex(data)
	if err != nil {
		return nil, fmt.Errorf("%s of record %s: %v: %w", f.Key, recID, err, ErrCorruptArchive)
	}
	return idx, nil
}

// archiveError reports a malformed archive as ErrCorruptArchive (not as the
// invalid argument archive.Open calls it, which would read as a usage error).
func archiveError(recID, key string, err error) error {
	if errors.Is(err, ErrCorruptArchive) {
		return fmt.Errorf("reading %s of record %s: %w", key, recID, err)
	}
	if errdefs.IsInvalidArgument(err) || errdefs.IsDataLoss(err) || errdefs.IsNotFound(err) {
		return fmt.Errorf("reading %s of record %s: %v: %w", key, recID, err, ErrCorruptArchive)
	}
	return fmt.Errorf("reading %s of record %s: %w", key, recID, err)
}

// openStream downloads the archive once, checking its md5, into a spool
// file (decompressed), and opens that.
func (im *Image) openStream(ctx context.Context, zc *zenodo.Client, o *openOptions) error {
	recID := im.Record.RecordID()
	rc, err := zc.Open(ctx, recID, im.File.Key)
	if err != nil {
		return fmt.Errorf("downloading %s of record %s: %w", im.File.Key, recID, err)
	}
	defer rc.Close()
	t := o.progress.Track(im.File.Key, im.File.Size)
	h := md5.New()
	r := &countingReader{r: io.TeeReader(rc, h), t: t}
	a, err := archive.OpenStream(ctx, &md5Check{r: r, h: h, want: im.File.MD5(), name: im.File.Key}, o.spoolDir)
	t.Done(err)
	if err != nil {
		return archiveError(recID, im.File.Key, err)
	}
	im.arch = a
	im.closers = append(im.closers, a.Close)
	return nil
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

// Close releases the archive and its connections or spool file.
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
