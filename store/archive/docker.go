package archive

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/internal/ctxio"
)

const (
	// dockerManifestFile is docker save's list of images.
	dockerManifestFile = "manifest.json"
	// dockerRepositoriesFile is docker save's legacy name → top layer map.
	dockerRepositoriesFile = "repositories"
	// maxIndexDepth bounds how deeply image indexes may nest.
	maxIndexDepth = 8
	// annotationReferenceType marks buildx attestation manifests in an index.
	annotationReferenceType = "vnd.docker.reference.type"
	attestationManifest     = "attestation-manifest"
	// annotationReferenceDigest names the manifest an attestation is about.
	annotationReferenceDigest = "vnd.docker.reference.digest"
)

// dockerManifest is one entry of a docker save manifest.json.
type dockerManifest struct {
	Config       string
	RepoTags     []string
	Layers       []string
	LayerSources map[digest.Digest]ocispec.Descriptor `json:",omitempty"`
}

// readDockerManifest reads and parses manifest.json.
func (a *Archive) readDockerManifest(entries map[string]entry) ([]dockerManifest, error) {
	data, _, err := a.readEntry(entries, dockerManifestFile, maxJSONSize)
	if err != nil {
		return nil, err
	}
	var mf []dockerManifest
	if err := json.Unmarshal(data, &mf); err != nil {
		return nil, fmt.Errorf("parsing manifest.json: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	return mf, nil
}

// openDocker sets the archive up from a docker-save archive without an OCI
// layout: its configs and layers become blobs, and a docker schema 2
// manifest per image (and an index if there are several) is synthesized.
func (a *Archive) openDocker(ctx context.Context, entries map[string]entry) error {
	mf, err := a.readDockerManifest(entries)
	if err != nil {
		return err
	}
	if len(mf) == 0 {
		return fmt.Errorf("manifest.json lists no images: %w", errdefs.ErrNotFound)
	}
	layers := map[string]ocispec.Descriptor{} // by resolved file name
	var (
		manifests []ocispec.Descriptor
		names     []string
	)
	for i, m := range mf {
		desc, err := a.synthesizeManifest(ctx, entries, m, layers)
		if err != nil {
			return fmt.Errorf("manifest.json entry %d: %w", i, err)
		}
		tags, err := normalizeNames(m.RepoTags)
		if err != nil {
			return fmt.Errorf("manifest.json entry %d: %w", i, err)
		}
		names = append(names, tags...)
		if len(mf) == 1 {
			a.root = desc
			break
		}
		if len(tags) == 0 {
			manifests = append(manifests, desc)
		}
		for _, t := range tags {
			d := desc
			d.Annotations = map[string]string{
				images.AnnotationImageName: t,
				ocispec.AnnotationRefName:  ociReferenceName(t),
			}
			manifests = append(manifests, d)
		}
	}
	if a.names, err = normalizeNames(names); err != nil {
		return err
	}
	if len(mf) > 1 {
		idx := ocispec.Index{
			Versioned: specs.Versioned{SchemaVersion: 2},
			MediaType: ocispec.MediaTypeImageIndex,
			Manifests: manifests,
		}
		if a.root, err = a.addSynthesized(ocispec.MediaTypeImageIndex, idx); err != nil {
			return err
		}
	}
	return nil
}

// synthesizeManifest makes the docker schema 2 manifest of one manifest.json
// entry and registers its config and layers as blobs.
func (a *Archive) synthesizeManifest(ctx context.Context, entries map[string]entry, m dockerManifest, layers map[string]ocispec.Descriptor) (ocispec.Descriptor, error) {
	cfgName, err := cleanName(m.Config)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("config: %w", err)
	}
	cfgData, cfgEntry, err := a.readEntry(entries, cfgName, maxJSONSize)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("config: %w", err)
	}
	var img ocispec.Image
	if err := json.Unmarshal(cfgData, &img); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("parsing config %s: %v: %w", m.Config, err, errdefs.ErrInvalidArgument)
	}
	if len(img.RootFS.DiffIDs) != len(m.Layers) {
		return ocispec.Descriptor{}, fmt.Errorf("config %s has %d diff_ids for %d layers: %w", m.Config, len(img.RootFS.DiffIDs), len(m.Layers), errdefs.ErrInvalidArgument)
	}
	cfg := ocispec.Descriptor{
		MediaType: images.MediaTypeDockerSchema2Config,
		Digest:    digest.FromBytes(cfgData),
		Size:      int64(len(cfgData)),
	}
	a.blobs[cfg.Digest] = blobLoc{offset: cfgEntry.offset, size: cfgEntry.size, mediaType: cfg.MediaType}

	manifest := ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: images.MediaTypeDockerSchema2Manifest,
		Config:    cfg,
		Layers:    make([]ocispec.Descriptor, 0, len(m.Layers)),
	}
	for _, l := range m.Layers {
		name, err := cleanName(l)
		if err != nil {
			return ocispec.Descriptor{}, fmt.Errorf("layer: %w", err)
		}
		e, file, err := resolve(entries, name)
		if err != nil {
			return ocispec.Descriptor{}, fmt.Errorf("layer: %w", err)
		}
		desc, ok := layers[file]
		if !ok {
			if desc, err = a.layerDescriptor(ctx, file, e); err != nil {
				return ocispec.Descriptor{}, err
			}
			layers[file] = desc
			a.blobs[desc.Digest] = blobLoc{offset: e.offset, size: e.size, mediaType: desc.MediaType}
		}
		manifest.Layers = append(manifest.Layers, desc)
	}
	desc, err := a.addSynthesized(manifest.MediaType, manifest)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	p := img.Platform
	desc.Platform = &p
	return desc, nil
}

// layerDescriptor describes a docker-save layer file: its digest from its
// name (blobs/<alg>/<hex>, checked when read) or else by reading it once, its
// media type from its first bytes.
func (a *Archive) layerDescriptor(ctx context.Context, name string, e entry) (ocispec.Descriptor, error) {
	r := io.NewSectionReader(a.ra, e.offset, e.size)
	d, known := blobDigest(name)
	var magic [4]byte
	if known {
		if _, err := io.ReadFull(r, magic[:min(e.size, 4)]); err != nil {
			return ocispec.Descriptor{}, fmt.Errorf("reading layer %s: %w", name, err)
		}
	} else {
		h := digest.SHA256.Digester()
		n, err := ctxio.Copy(ctx, h.Hash(), io.TeeReader(r, &prefixWriter{buf: magic[:0]}))
		if err != nil {
			return ocispec.Descriptor{}, fmt.Errorf("reading layer %s: %w", name, err)
		}
		if n != e.size {
			return ocispec.Descriptor{}, fmt.Errorf("reading layer %s: %d of %d bytes: %w", name, n, e.size, ErrCorrupt)
		}
		d = h.Digest()
	}
	return ocispec.Descriptor{MediaType: layerMediaType(magic[:min(e.size, 4)]), Digest: d, Size: e.size}, nil
}

// prefixWriter keeps the first cap(buf) bytes written to it.
type prefixWriter struct{ buf []byte }

func (w *prefixWriter) Write(p []byte) (int, error) {
	if n := cap(w.buf) - len(w.buf); n > 0 {
		w.buf = append(w.buf, p[:min(n, len(p))]...)
	}
	return len(p), nil
}

// layerMediaType returns the docker media type for a layer starting with
// magic: gzip, zstd (an OCI type; docker has none) or uncompressed.
func layerMediaType(magic []byte) string {
	switch compressionOf(magic) {
	case compGzip:
		return images.MediaTypeDockerSchema2LayerGzip
	case compZstd:
		return ocispec.MediaTypeImageLayerZstd
	}
	return images.MediaTypeDockerSchema2Layer
}

// addSynthesized encodes v as an in-memory blob and returns its descriptor.
func (a *Archive) addSynthesized(mediaType string, v any) (ocispec.Descriptor, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("encoding %s: %w", mediaType, err)
	}
	d := digest.FromBytes(data)
	a.blobs[d] = blobLoc{data: data, size: int64(len(data)), mediaType: mediaType}
	return ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(data))}, nil
}

// ociReferenceName returns the org.opencontainers.image.ref.name for an
// image name, as containerd's exporter does: the tag, or the whole name if
// it has none.
func ociReferenceName(name string) string {
	ref, err := reference.ParseDockerRef(name)
	if err != nil {
		return name
	}
	if t, ok := ref.(reference.Tagged); ok {
		if _, digested := ref.(reference.Digested); !digested {
			return t.Tag()
		}
	}
	return ref.String()
}

// familiarName returns the short form of a normalized name, as docker
// writes RepoTags (busybox:latest).
func familiarName(name string) string {
	ref, err := reference.ParseDockerRef(name)
	if err != nil {
		return name
	}
	return reference.FamiliarString(ref)
}
