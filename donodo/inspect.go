package donodo

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/errdefs"
	"github.com/containerd/platforms"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/seekable"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/zenodo"
)

// Inspection describes a record's image, read from the archive's metadata
// only (no layer is downloaded from a format v1 or uncompressed archive).
type Inspection struct {
	// Reference is the image's name on Zenodo (<host>/<version DOI>:<tag>).
	Reference string `json:"reference"`
	// Record is the record version the reference resolved to.
	Record RecordInfo `json:"record"`
	// Versions are the published versions of the record, oldest first.
	Versions []VersionInfo `json:"versions,omitempty"`
	// Archive is the image archive file.
	Archive ArchiveInfo `json:"archive"`
	// Names are the image's original names carried by the archive.
	Names []string `json:"names,omitempty"`
	// RootDigest and RootMediaType describe the archive's root (what
	// "@sha256:…" pins).
	RootDigest    digest.Digest `json:"root_digest"`
	RootMediaType string        `json:"root_media_type"`
	// Images are the image's platforms.
	Images []ImageInfo `json:"images"`
}

// RecordInfo describes a record version.
type RecordInfo struct {
	ID              string     `json:"id"`
	ConceptID       string     `json:"concept_id,omitempty"`
	DOI             string     `json:"doi"`
	ConceptDOI      string     `json:"concept_doi,omitempty"`
	Title           string     `json:"title"`
	Version         string     `json:"version,omitempty"`
	PublicationDate string     `json:"publication_date,omitempty"`
	URL             string     `json:"url"`
	Files           []FileInfo `json:"files"`
}

// FileInfo is a file of a record.
type FileInfo struct {
	Key      string `json:"key"`
	Size     int64  `json:"size"`
	Checksum string `json:"checksum,omitempty"`
}

// VersionInfo is one published version of a record.
type VersionInfo struct {
	// Tag is the version's metadata.version, the image tag.
	Tag             string `json:"tag"`
	DOI             string `json:"doi"`
	RecordID        string `json:"record_id"`
	PublicationDate string `json:"publication_date,omitempty"`
	URL             string `json:"url"`
	// Reference pulls this version.
	Reference string `json:"reference"`
	// Size is the total size of the version's files.
	Size int64 `json:"size"`
	// Selected marks the version the reference resolved to.
	Selected bool `json:"selected,omitempty"`
}

// ArchiveInfo describes the image archive file of a record.
type ArchiveInfo struct {
	File   string `json:"file"`
	Size   int64  `json:"size"`
	Format Format `json:"format"`
	// Index is the format v1 index file, if any.
	Index string `json:"index,omitempty"`
}

// ImageInfo describes one platform of an image.
type ImageInfo struct {
	Platform       string        `json:"platform"`
	ManifestDigest digest.Digest `json:"manifest_digest"`
	// ConfigDigest is the image ID.
	ConfigDigest digest.Digest     `json:"config_digest"`
	Created      *time.Time        `json:"created,omitempty"`
	Entrypoint   []string          `json:"entrypoint,omitempty"`
	Cmd          []string          `json:"cmd,omitempty"`
	WorkingDir   string            `json:"working_dir,omitempty"`
	Env          []string          `json:"env,omitempty"`
	Labels       map[string]string `json:"labels,omitempty"`
	Layers       []LayerInfo       `json:"layers"`
	// Size is the stored size of the config and layers.
	Size int64 `json:"size"`
	// UncompressedSize is the size of the layers' tars, when known.
	UncompressedSize int64 `json:"uncompressed_size,omitempty"`
}

// LayerInfo describes one layer.
type LayerInfo struct {
	Digest    digest.Digest `json:"digest"`
	MediaType string        `json:"media_type"`
	Size      int64         `json:"size"`
	DiffID    digest.Digest `json:"diff_id,omitempty"`
	// UncompressedSize is the tar's size, known for seekable layers.
	UncompressedSize int64 `json:"uncompressed_size,omitempty"`
	// Seekable layers can be read lazily, file by file.
	Seekable bool `json:"seekable"`
}

// recordURL is the human page of a record.
func recordURL(zc *zenodo.Client, rec *zenodo.Record) string {
	for _, k := range []string{"self_html", "html", "record_html"} {
		if u := rec.Links[k]; u != "" {
			return u
		}
	}
	return zc.BaseURL() + "/records/" + rec.RecordID()
}

func recordInfo(zc *zenodo.Client, rec *zenodo.Record) RecordInfo {
	ri := RecordInfo{
		ID:              rec.RecordID(),
		ConceptID:       rec.ConceptRecID.String(),
		DOI:             rec.DOI,
		ConceptDOI:      rec.ConceptDOI,
		Title:           rec.Title,
		Version:         rec.Version(),
		PublicationDate: rec.Metadata.PublicationDate,
		URL:             recordURL(zc, rec),
		Files:           []FileInfo{},
	}
	if ri.Title == "" {
		ri.Title = rec.Metadata.Title
	}
	for _, f := range rec.Files {
		ri.Files = append(ri.Files, FileInfo{Key: f.Key, Size: f.Size, Checksum: f.Checksum})
	}
	return ri
}

// Inspect describes the image ref names, and the versions of its record,
// reading only metadata: the record, its versions, the archive index and
// one range holding every manifest and config (format v1), or the tar
// headers and metadata blobs (other uncompressed archives). Compressed
// archives are downloaded whole, into a spool file removed by Close.
func Inspect(ctx context.Context, zc *zenodo.Client, ref zenodo.Reference, opts ...OpenOption) (*Inspection, error) {
	im, err := OpenImage(ctx, zc, ref, opts...)
	if err != nil {
		return nil, err
	}
	defer im.Close()
	return im.Inspect(ctx, zc)
}

// Inspect describes the image and the versions of its record (zc lists
// the versions; nil leaves them out).
func (im *Image) Inspect(ctx context.Context, zc *zenodo.Client) (*Inspection, error) {
	root, err := im.Root(ctx)
	if err != nil {
		return nil, err
	}
	ins := &Inspection{
		Reference:     im.Name(),
		Names:         im.Names(),
		RootDigest:    root.Digest,
		RootMediaType: root.MediaType,
		Archive:       ArchiveInfo{File: im.File.Key, Size: im.File.Size, Format: im.Format},
		Images:        []ImageInfo{},
	}
	if im.Index != nil {
		ins.Archive.Index = im.Index.Key
	}
	if zc != nil {
		ins.Record = recordInfo(zc, im.Record)
		versions, err := listVersions(ctx, zc, im.Ref, im.Record)
		if err != nil {
			return nil, err
		}
		ins.Versions = versions
	}
	plats, err := im.Platforms(ctx)
	if err != nil {
		return nil, err
	}
	for _, p := range plats {
		ins.Images = append(ins.Images, imageInfo(p))
	}
	return ins, nil
}

func imageInfo(p Platform) ImageInfo {
	cfg := p.Config
	ii := ImageInfo{
		Platform:       platforms.FormatAll(*p.Manifest.Platform),
		ManifestDigest: p.Manifest.Digest,
		ConfigDigest:   p.ManifestData.Config.Digest,
		Created:        cfg.Created,
		Entrypoint:     cfg.Config.Entrypoint,
		Cmd:            cfg.Config.Cmd,
		WorkingDir:     cfg.Config.WorkingDir,
		Env:            cfg.Config.Env,
		Labels:         cfg.Config.Labels,
		Layers:         []LayerInfo{},
		Size:           p.ManifestData.Config.Size,
	}
	for i, l := range p.ManifestData.Layers {
		li := LayerInfo{Digest: l.Digest, MediaType: l.MediaType, Size: l.Size}
		if i < len(cfg.RootFS.DiffIDs) && len(cfg.RootFS.DiffIDs) == len(p.ManifestData.Layers) {
			li.DiffID = cfg.RootFS.DiffIDs[i]
		}
		if _, ok := l.Annotations[seekable.AnnotationTOCDigest]; ok {
			li.Seekable = true
		}
		if v, err := strconv.ParseInt(l.Annotations[seekable.AnnotationUncompressedSize], 10, 64); err == nil && v >= 0 {
			li.UncompressedSize = v
			ii.UncompressedSize += v
		}
		ii.Size += l.Size
		ii.Layers = append(ii.Layers, li)
	}
	return ii
}

// ListVersions lists the published versions of the record ref names,
// oldest first, marking the one ref resolves to.
func ListVersions(ctx context.Context, zc *zenodo.Client, ref zenodo.Reference) ([]VersionInfo, error) {
	rec, err := zc.Resolve(ctx, ref)
	if err != nil {
		return nil, fmt.Errorf("finding record %s: %w", ref, err)
	}
	return listVersions(ctx, zc, ref, rec)
}

func listVersions(ctx context.Context, zc *zenodo.Client, ref zenodo.Reference, rec *zenodo.Record) ([]VersionInfo, error) {
	recs, err := zc.Versions(ctx, rec.RecordID())
	if err != nil {
		return nil, fmt.Errorf("listing versions of record %s: %w", rec.RecordID(), err)
	}
	out := []VersionInfo{}
	for i := range recs {
		v := &recs[i]
		r := zenodo.Reference{Host: ref.Host, DOI: v.DOI}
		if validTag(v.Version()) {
			r.Tag = v.Version()
		}
		vi := VersionInfo{
			Tag:             v.Version(),
			DOI:             v.DOI,
			RecordID:        v.RecordID(),
			PublicationDate: v.Metadata.PublicationDate,
			URL:             recordURL(zc, v),
			Reference:       r.String(),
			Selected:        v.RecordID() == rec.RecordID(),
		}
		for _, f := range v.Files {
			vi.Size += f.Size
		}
		out = append(out, vi)
	}
	return out, nil
}

// ChoosePlatform returns the platform of plats that m matches best, else
// the first one. plats must not be empty.
func ChoosePlatform(plats []Platform, m platforms.MatchComparer) Platform {
	best := -1
	for i, p := range plats {
		if p.Manifest.Platform == nil || !m.Match(*p.Manifest.Platform) {
			continue
		}
		if best < 0 || m.Less(*p.Manifest.Platform, *plats[best].Manifest.Platform) {
			best = i
		}
	}
	if best < 0 {
		best = 0
	}
	return plats[best]
}

// ConfigDigest returns the image ID (config digest) of the platform m
// matches best (else the first), as dxf's get-digest and
// `docker inspect --format {{.Id}}` give it.
func (im *Image) ConfigDigest(ctx context.Context, m platforms.MatchComparer) (digest.Digest, error) {
	plats, err := im.Platforms(ctx)
	if err != nil {
		return "", err
	}
	if len(plats) == 0 {
		return "", fmt.Errorf("record %s: image has no manifests: %w", im.Record.RecordID(), ErrCorruptArchive)
	}
	return ChoosePlatform(plats, m).ManifestData.Config.Digest, nil
}

// Blob returns a verified reader of the blob dgst of the archive and its
// descriptor. A blob the archive does not hold is errdefs.ErrNotFound.
func (im *Image) Blob(ctx context.Context, dgst digest.Digest) (content.ReaderAt, ocispec.Descriptor, error) {
	if err := dgst.Validate(); err != nil {
		return nil, ocispec.Descriptor{}, fmt.Errorf("digest %q: %v: %w", dgst, err, errdefs.ErrInvalidArgument)
	}
	info, err := im.arch.Info(ctx, dgst)
	if err != nil {
		return nil, ocispec.Descriptor{}, fmt.Errorf("blob %s in record %s: %w", dgst, im.Record.RecordID(), err)
	}
	desc := ocispec.Descriptor{MediaType: "application/octet-stream", Digest: dgst, Size: info.Size}
	ra, err := im.arch.ReaderAt(ctx, desc)
	if err != nil {
		return nil, ocispec.Descriptor{}, fmt.Errorf("blob %s in record %s: %w", dgst, im.Record.RecordID(), err)
	}
	return ra, desc, nil
}

// CopyBlob writes the blob dgst to w, verified, reporting to p (nil: no
// progress). The write of the blob's last bytes is preceded by the check:
// on a digest mismatch CopyBlob fails with ErrCorruptArchive after having
// written all but the failing read.
func (im *Image) CopyBlob(ctx context.Context, w io.Writer, dgst digest.Digest, p Progress) (ocispec.Descriptor, error) {
	ra, desc, err := im.Blob(ctx, dgst)
	if err != nil {
		return desc, err
	}
	defer ra.Close()
	if p == nil {
		p = NoProgress
	}
	t := p.Track(clip(dgst.Encoded(), 12), desc.Size)
	_, err = io.Copy(w, &ctxReader{ctx: ctx, r: &countingReader{r: content.NewReader(ra), t: t}})
	t.Done(err)
	if err != nil {
		return desc, archiveError(im.Record.RecordID(), im.File.Key, fmt.Errorf("copying blob %s: %w", dgst, err))
	}
	return desc, nil
}

// BlobsSize is the total size of the blobs of the platform m matches best
// (else the first): manifest, config and layers, as dxf's blob-size of an
// alias.
func (im *Image) BlobsSize(ctx context.Context, m platforms.MatchComparer) (int64, error) {
	plats, err := im.Platforms(ctx)
	if err != nil {
		return 0, err
	}
	if len(plats) == 0 {
		return 0, fmt.Errorf("record %s: image has no manifests: %w", im.Record.RecordID(), ErrCorruptArchive)
	}
	p := ChoosePlatform(plats, m)
	n := p.Manifest.Size + p.ManifestData.Config.Size
	for _, l := range p.ManifestData.Layers {
		n += l.Size
	}
	return n, nil
}

// ctxReader stops reading when ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
