package donodo

import (
	"context"
	"fmt"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/errdefs"
	"github.com/containerd/platforms"
	"github.com/opencontainers/go-digest"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/resolver"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/remote"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/zenodo"
)

// PullOption configures Pull.
type PullOption func(*pullOptions) error

type pullOptions struct {
	snapshotter string
	platform    platforms.MatchComparer
}

// WithSnapshotter unpacks the image with the named snapshotter ("zenodo"
// for a lazy pull through zenodo-snapshotter). The default is the
// namespace's default snapshotter.
func WithSnapshotter(name string) PullOption {
	return func(o *pullOptions) error {
		o.snapshotter = name
		return nil
	}
}

// WithPlatform pulls and unpacks the platform m matches best. The default
// is the client's platform.
func WithPlatform(m platforms.MatchComparer) PullOption {
	return func(o *pullOptions) error {
		if m == nil {
			return fmt.Errorf("nil platform matcher: %w", errdefs.ErrInvalidArgument)
		}
		o.platform = m
		return nil
	}
}

// PullResult says what Pull imported.
type PullResult struct {
	// Reference is the name the image was stored under on Zenodo's
	// side: <host>/<version DOI>[:<tag>].
	Reference string `json:"reference"`
	// Names are all names the image was stored under: Reference and the
	// image's original names from the archive.
	Names []string `json:"names"`
	// Record is the record version pulled.
	Record RecordInfo `json:"record"`
	// Target is the image's root (what @sha256: pins).
	Target digest.Digest `json:"target"`
	// Platform, ManifestDigest and ConfigDigest (image ID) describe the
	// platform unpacked.
	Platform       string        `json:"platform"`
	ManifestDigest digest.Digest `json:"manifest_digest"`
	ConfigDigest   digest.Digest `json:"config_digest"`
	// Snapshotter unpacked it ("" = the default).
	Snapshotter string `json:"snapshotter,omitempty"`
}

// Pull imports the image ref names into the containerd namespace of ctx
// (or the client's default) with containerd's client Pull, through a
// resolver.NewResolver over store/remote, and unpacks it. The image is
// stored as <host>/<version DOI>:<tag> and under its original names (from
// the archive's index). Every blob is verified against its digest; a pinned
// digest (ref.Digest) must be the archive's root or one of its manifests.
//
// Layers are read from the record by range (one request each), so with a
// lazy snapshotter (WithSnapshotter("zenodo")) only the archive's metadata
// is downloaded. Progress shows through the client's HTTP client
// (NewHTTPClient).
func Pull(ctx context.Context, zc *zenodo.Client, cc *client.Client, ref zenodo.Reference, opts ...PullOption) (*PullResult, error) {
	o := &pullOptions{}
	for _, opt := range opts {
		if err := opt(o); err != nil {
			return nil, err
		}
	}
	op := remote.NewOpener(zc, remote.WithBackgroundFill(false))
	defer op.Close()
	im, err := OpenImage(ctx, zc, ref, WithOpener(op))
	if err != nil {
		return nil, err
	}
	defer im.Close()
	root, err := im.Root(ctx)
	if err != nil {
		return nil, err
	}
	// Read the metadata now: a bad archive fails before containerd is
	// touched, and the result names the platform.
	plats, err := im.Platforms(ctx)
	if err != nil {
		return nil, err
	}
	if len(plats) == 0 {
		return nil, fmt.Errorf("record %s: the image has no manifests: %w", im.Record.RecordID(), ErrCorruptArchive)
	}
	match := o.platform
	if match == nil {
		match = platforms.Default()
	}
	if !anyMatch(plats, match) {
		return nil, fmt.Errorf("record %s holds no image for this platform (it has %v): %w",
			im.Record.RecordID(), platformNames(plats), errdefs.ErrNotFound)
	}

	// The name the resolver resolves: this version, by DOI and tag, pinned
	// when the reference pins a digest.
	name := im.Name()
	pull := name
	if ref.Digest != "" {
		pull = name + "@" + root.Digest.String()
	}
	remoteOpts := []client.RemoteOpt{
		client.WithResolver(resolver.NewResolver(resolver.NewRemoteSource(zc, op))),
		client.WithPullUnpack,
		client.WithPlatformMatcher(match),
	}
	if o.snapshotter != "" {
		remoteOpts = append(remoteOpts, client.WithPullSnapshotter(o.snapshotter))
	}
	img, err := cc.Pull(ctx, pull, remoteOpts...)
	if err != nil {
		if errdefs.IsDataLoss(err) {
			return nil, fmt.Errorf("pulling %s: %v: %w", pull, err, ErrCorruptArchive)
		}
		return nil, fmt.Errorf("pulling %s into containerd: %w", pull, err)
	}
	is := cc.ImageService()
	names := []string{img.Name()}
	if pull != name {
		// Also name it by the tag, as a pull of the tag would.
		names = append(names, name)
	}
	names = append(names, im.Names()...)
	chosen := ChoosePlatform(plats, match)
	res := &PullResult{
		Reference:      name,
		Names:          []string{img.Name()},
		Record:         recordInfo(zc, im.Record),
		Target:         img.Target().Digest,
		Platform:       platforms.FormatAll(*chosen.Manifest.Platform),
		ManifestDigest: chosen.Manifest.Digest,
		ConfigDigest:   chosen.ManifestData.Config.Digest,
		Snapshotter:    o.snapshotter,
	}
	if cfg, err := img.Config(ctx); err == nil {
		res.ConfigDigest = cfg.Digest
	}
	for _, n := range names[1:] {
		meta := images.Image{Name: n, Target: img.Target(), Labels: img.Metadata().Labels}
		if _, err := is.Create(ctx, meta); err != nil {
			if !errdefs.IsAlreadyExists(err) {
				return res, fmt.Errorf("naming the image %s: %w", n, err)
			}
			if _, err := is.Update(ctx, meta); err != nil {
				return res, fmt.Errorf("naming the image %s: %w", n, err)
			}
		}
		res.Names = append(res.Names, n)
	}
	return res, nil
}

func anyMatch(plats []Platform, m platforms.Matcher) bool {
	for _, p := range plats {
		if p.Manifest.Platform != nil && m.Match(*p.Manifest.Platform) {
			return true
		}
	}
	return false
}
