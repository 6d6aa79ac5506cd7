package donodo

import (
	"context"
	"fmt"
	"io"
	"strconv"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/pkg/archive/compression"
	"github.com/containerd/log"
	"github.com/containerd/platforms"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/donodo/buildinfo"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/seekable"
)

// describe builds the build manifest of platform p, whose blobs provider
// holds: its layer table (with the build history's commands) and the
// packages found in its layers (best effort: a layer that cannot be read
// for packages is logged and leaves the list out).
func describe(ctx context.Context, provider content.Provider, p Platform, name ImageName, ref string, pushed []string) *buildinfo.Manifest {
	cfg := p.Config
	m := &buildinfo.Manifest{
		Name:           name.Familiar(),
		Tag:            name.Tag(),
		Reference:      ref,
		ConfigDigest:   p.ManifestData.Config.Digest.String(),
		ManifestDigest: p.Manifest.Digest.String(),
		Platforms:      pushed,
		Labels:         cfg.Config.Labels,
		Entrypoint:     cfg.Config.Entrypoint,
		Cmd:            cfg.Config.Cmd,
	}
	if cfg.Created != nil {
		m.Created = *cfg.Created
	}
	var createdBy []string
	for _, h := range cfg.History {
		if !h.EmptyLayer {
			createdBy = append(createdBy, h.CreatedBy)
		}
	}
	if len(createdBy) != len(p.ManifestData.Layers) {
		createdBy = nil
	}
	var openers []buildinfo.LayerOpener
	for i, l := range p.ManifestData.Layers {
		row := buildinfo.Layer{Digest: l.Digest.String(), Size: l.Size}
		if len(cfg.RootFS.DiffIDs) == len(p.ManifestData.Layers) {
			row.DiffID = cfg.RootFS.DiffIDs[i].String()
		}
		if v, err := strconv.ParseInt(l.Annotations[seekable.AnnotationUncompressedSize], 10, 64); err == nil {
			row.UncompressedSize = v
		}
		if createdBy != nil {
			row.CreatedBy = createdBy[i]
		}
		m.Layers = append(m.Layers, row)
		openers = append(openers, layerOpener(provider, l))
	}
	pkgs, err := buildinfo.ScanLayers(ctx, openers)
	if err != nil {
		log.G(ctx).WithError(err).Warn("donodo: cannot list the image's packages; the description leaves them out")
	}
	m.Packages = pkgs
	return m
}

// layerOpener opens a layer's uncompressed tar from provider.
func layerOpener(provider content.Provider, desc ocispec.Descriptor) buildinfo.LayerOpener {
	return func(ctx context.Context) (io.ReadCloser, error) {
		ra, err := provider.ReaderAt(ctx, desc)
		if err != nil {
			return nil, fmt.Errorf("opening layer %s: %w", desc.Digest, err)
		}
		dr, err := compression.DecompressStream(content.NewReader(ra))
		if err != nil {
			ra.Close()
			return nil, fmt.Errorf("decompressing layer %s: %w", desc.Digest, err)
		}
		return &multiCloser{Reader: dr, closers: []io.Closer{dr, ra}}, nil
	}
}

type multiCloser struct {
	io.Reader
	closers []io.Closer
}

func (m *multiCloser) Close() error {
	var first error
	for _, c := range m.closers {
		if err := c.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// platformNames formats platforms for messages.
func platformNames(plats []Platform) []string {
	var out []string
	for _, p := range plats {
		if p.Manifest.Platform != nil {
			out = append(out, platforms.FormatAll(*p.Manifest.Platform))
		}
	}
	return out
}
