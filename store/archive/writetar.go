package archive

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"path"
	"slices"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/internal/ctxio"
)

// countingWriter counts the bytes written through it.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// tarWriter writes archive entries and records where blob data lands.
type tarWriter struct {
	cw      *countingWriter
	tw      *tar.Writer
	blobs   []BlobEntry
	written map[digest.Digest]bool
}

// epoch is the modification time of every entry, for reproducible archives.
var epoch = time.Unix(0, 0)

func (t *tarWriter) header(name string, typ byte, mode, size int64) error {
	return t.tw.WriteHeader(&tar.Header{
		Typeflag: typ,
		Name:     name,
		Mode:     mode,
		Size:     size,
		ModTime:  epoch,
	})
}

func (t *tarWriter) file(name string, data []byte) error {
	if err := t.header(name, tar.TypeReg, 0o644, int64(len(data))); err != nil {
		return fmt.Errorf("writing %s: %w", name, err)
	}
	if _, err := t.tw.Write(data); err != nil {
		return fmt.Errorf("writing %s: %w", name, err)
	}
	return nil
}

func (t *tarWriter) dir(name string) error {
	if err := t.header(name, tar.TypeDir, 0o755, 0); err != nil {
		return fmt.Errorf("writing %s: %w", name, err)
	}
	return nil
}

// blob writes one blob from r, checking it against desc, and records it.
func (t *tarWriter) blob(ctx context.Context, desc ocispec.Descriptor, r io.Reader, progress func(Progress)) error {
	if err := desc.Digest.Validate(); err != nil {
		return fmt.Errorf("writing blob %q: %v: %w", desc.Digest, err, errdefs.ErrInvalidArgument)
	}
	if t.written[desc.Digest] {
		// Two source layers can convert to the same blob.
		return nil
	}
	t.written[desc.Digest] = true
	name := blobPath(desc.Digest)
	if err := t.header(name, tar.TypeReg, 0o444, desc.Size); err != nil {
		return fmt.Errorf("writing blob %s: %w", desc.Digest, err)
	}
	offset := t.cw.n
	h := &hashingReader{r: r, h: desc.Digest.Algorithm().Hash()}
	if progress != nil {
		h.progress = func(n int64) { progress(Progress{Stage: "write", Desc: desc, Done: n}) }
	}
	n, err := ctxio.Copy(ctx, t.tw, io.LimitReader(h, desc.Size))
	if err != nil {
		return fmt.Errorf("writing blob %s: %w", desc.Digest, err)
	}
	if n != desc.Size {
		return fmt.Errorf("writing blob %s: source has %d of %d bytes: %w", desc.Digest, n, desc.Size, ErrCorrupt)
	}
	if got := digest.NewDigest(desc.Digest.Algorithm(), h.h); got != desc.Digest {
		return fmt.Errorf("writing blob %s: source content has digest %s: %w", desc.Digest, got, ErrCorrupt)
	}
	t.blobs = append(t.blobs, BlobEntry{Digest: desc.Digest, MediaType: desc.MediaType, Offset: offset, Size: desc.Size})
	return nil
}

func blobPath(d digest.Digest) string {
	return path.Join(ocispec.ImageBlobsDir, d.Algorithm().String(), d.Encoded())
}

// writeTar writes the archive for the rewritten root.
func (wr *writer) writeTar(ctx context.Context, w io.Writer, root ocispec.Descriptor) (*Index, error) {
	cw := &countingWriter{w: w}
	t := &tarWriter{cw: cw, tw: tar.NewWriter(cw), written: map[digest.Digest]bool{}}
	root.Annotations = stripNameAnnotations(root.Annotations)
	idx := &Index{
		MediaType: MediaTypeIndex,
		Version:   FormatVersion,
		Root:      root,
		Names:     slices.Clone(wr.o.names),
	}
	for _, n := range wr.written {
		idx.Manifests = append(idx.Manifests, n.rewritten)
	}

	layout, err := json.Marshal(ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
	if err != nil {
		return nil, err
	}
	if err := t.file(ocispec.ImageLayoutFile, layout); err != nil {
		return nil, err
	}
	indexJSON, err := json.Marshal(ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: wr.indexEntries(root),
	})
	if err != nil {
		return nil, err
	}
	if err := t.file(ocispec.ImageIndexFile, indexJSON); err != nil {
		return nil, err
	}
	if dm := wr.dockerImage(); dm != nil {
		manifestJSON, repositories, err := wr.dockerFiles(dm)
		if err != nil {
			return nil, err
		}
		if err := t.file(dockerManifestFile, manifestJSON); err != nil {
			return nil, err
		}
		if repositories != nil {
			if err := t.file(dockerRepositoriesFile, repositories); err != nil {
				return nil, err
			}
		}
	}

	metadata := slices.Concat(wr.indexes, wr.manifests, wr.configs, wr.tocs)
	algs := map[digest.Algorithm]bool{}
	if err := t.dir(ocispec.ImageBlobsDir + "/"); err != nil {
		return nil, err
	}
	for _, b := range metadata {
		algs[b.desc.Digest.Algorithm()] = true
	}
	for _, job := range wr.layerList {
		algs[job.src.Digest.Algorithm()] = true
	}
	for _, alg := range slices.Sorted(maps.Keys(algs)) {
		if err := t.dir(path.Join(ocispec.ImageBlobsDir, alg.String()) + "/"); err != nil {
			return nil, err
		}
	}

	for _, b := range metadata {
		var err error
		if b.job != nil {
			err = wr.copyFromProvider(ctx, t, b.desc)
		} else {
			err = t.blob(ctx, b.desc, bytes.NewReader(b.data), wr.o.progress)
		}
		if err != nil {
			return nil, err
		}
	}
	idx.MetadataEnd = cw.n

	for _, job := range wr.layerList {
		if !job.present {
			continue
		}
		if !job.convert {
			if err := wr.copyFromProvider(ctx, t, job.src); err != nil {
				return nil, err
			}
			continue
		}
		if err := wr.copyConverted(ctx, t, job); err != nil {
			return nil, err
		}
	}
	if err := t.tw.Close(); err != nil {
		return nil, fmt.Errorf("finishing tar: %w", err)
	}
	idx.ArchiveSize = cw.n
	idx.Blobs = t.blobs
	if err := idx.validate(); err != nil {
		return nil, fmt.Errorf("archive index: %w", err)
	}
	return idx, nil
}

// indexEntries returns index.json's descriptors: the root once per name, or
// once without a name.
func (wr *writer) indexEntries(root ocispec.Descriptor) []ocispec.Descriptor {
	if len(wr.o.names) == 0 {
		return []ocispec.Descriptor{root}
	}
	var out []ocispec.Descriptor
	for _, name := range wr.o.names {
		d := root
		d.Annotations = map[string]string{}
		for k, v := range root.Annotations {
			d.Annotations[k] = v
		}
		d.Annotations[images.AnnotationImageName] = name
		d.Annotations[ocispec.AnnotationRefName] = ociReferenceName(name)
		out = append(out, d)
	}
	return out
}

// dockerImage picks the manifest for docker's manifest.json, which holds
// one platform: the best match for the docker platform option, else the
// first image manifest.
func (wr *writer) dockerImage() *node {
	var best *node
	for _, n := range wr.written {
		p := n.rewritten.Platform
		if p == nil || !wr.o.dockerPlatform.Match(*p) {
			continue
		}
		if best == nil || wr.o.dockerPlatform.Less(*p, *best.rewritten.Platform) {
			best = n
		}
	}
	if best == nil && len(wr.written) > 0 {
		best = wr.written[0]
	}
	return best
}

// dockerFiles returns manifest.json and (if the image is named) the legacy
// repositories file for n.
func (wr *writer) dockerFiles(n *node) (manifestJSON, repositories []byte, err error) {
	dm := dockerManifest{Config: blobPath(n.manifest.Config.Digest), RepoTags: []string{}}
	var top string
	for _, job := range n.layerJobs {
		d := job.src.Digest
		if job.convert {
			d = job.out.Digest
		}
		dm.Layers = append(dm.Layers, blobPath(d))
		top = d.Encoded()
	}
	repos := map[string]map[string]string{}
	for _, name := range wr.o.names {
		dm.RepoTags = append(dm.RepoTags, familiarName(name))
		ref, err := reference.ParseDockerRef(name)
		if err != nil {
			continue
		}
		if t, ok := ref.(reference.NamedTagged); ok && top != "" {
			repo := reference.FamiliarName(t)
			if repos[repo] == nil {
				repos[repo] = map[string]string{}
			}
			repos[repo][t.Tag()] = top
		}
	}
	if manifestJSON, err = json.Marshal([]dockerManifest{dm}); err != nil {
		return nil, nil, err
	}
	if len(repos) > 0 {
		if repositories, err = json.Marshal(repos); err != nil {
			return nil, nil, err
		}
	}
	return manifestJSON, repositories, nil
}

// copyFromProvider writes a blob as the provider has it.
func (wr *writer) copyFromProvider(ctx context.Context, t *tarWriter, desc ocispec.Descriptor) error {
	ra, err := wr.provider.ReaderAt(ctx, desc)
	if err != nil {
		return fmt.Errorf("opening %s: %w", desc.Digest, err)
	}
	defer ra.Close()
	if ra.Size() != desc.Size {
		return fmt.Errorf("blob %s: provider has %d bytes, descriptor says %d: %w", desc.Digest, ra.Size(), desc.Size, ErrCorrupt)
	}
	return t.blob(ctx, ocispec.Descriptor{MediaType: desc.MediaType, Digest: desc.Digest, Size: desc.Size}, content.NewReader(ra), wr.o.progress)
}

// copyConverted writes a converted layer from its temp file and removes
// the file.
func (wr *writer) copyConverted(ctx context.Context, t *tarWriter, job *layerJob) error {
	f, err := os.Open(job.file)
	if err != nil {
		return fmt.Errorf("opening converted layer %s: %w", job.src.Digest, err)
	}
	defer f.Close()
	mt := ocispec.MediaTypeImageLayerGzip
	if images.IsDockerType(job.src.MediaType) {
		mt = images.MediaTypeDockerSchema2LayerGzip
	}
	if err := t.blob(ctx, ocispec.Descriptor{MediaType: mt, Digest: job.out.Digest, Size: job.out.Size}, f, wr.o.progress); err != nil {
		return err
	}
	if err := os.Remove(job.file); err != nil {
		return fmt.Errorf("removing converted layer %s: %w", job.src.Digest, err)
	}
	return nil
}
