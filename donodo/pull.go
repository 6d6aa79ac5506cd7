package donodo

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/remotes"
	"github.com/containerd/errdefs"
	"github.com/containerd/platforms"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/zenodo"
)

// PullOption configures Pull.
type PullOption func(*pullOptions) error

type pullOptions struct {
	snapshotter string
	platform    platforms.MatchComparer
	progress    Progress
	open        []OpenOption
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

// WithPullProgress reports the download of each blob. The default is
// NoProgress.
func WithPullProgress(p Progress) PullOption {
	return func(o *pullOptions) error {
		if p == nil {
			p = NoProgress
		}
		o.progress = p
		return nil
	}
}

// WithOpenOptions passes options to OpenImage (spool directory, chunk
// size).
func WithOpenOptions(opts ...OpenOption) PullOption {
	return func(o *pullOptions) error {
		o.open = append(o.open, opts...)
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
// (or the client's default) with the client's Pull and unpack: it is
// stored as <host>/<version DOI>:<tag> and under its original names (from
// the archive). Every blob is verified against its digest; a pinned digest
// (ref.Digest) must be the archive's root or one of its manifests.
//
// Layers are read from Zenodo by range, so with a lazy snapshotter
// (WithSnapshotter("zenodo")) only the archive's metadata is downloaded.
func Pull(ctx context.Context, zc *zenodo.Client, cc *client.Client, ref zenodo.Reference, opts ...PullOption) (*PullResult, error) {
	o := &pullOptions{progress: NoProgress}
	for _, opt := range opts {
		if err := opt(o); err != nil {
			return nil, err
		}
	}
	im, err := OpenImage(ctx, zc, ref, append([]OpenOption{WithOpenProgress(o.progress)}, o.open...)...)
	if err != nil {
		return nil, err
	}
	defer im.Close()
	return im.Pull(ctx, zc, cc, opts...)
}

// Pull imports the opened image into containerd; see the function Pull.
// zc, if not nil, fills the result's record links.
func (im *Image) Pull(ctx context.Context, zc *zenodo.Client, cc *client.Client, opts ...PullOption) (*PullResult, error) {
	o := &pullOptions{progress: NoProgress}
	for _, opt := range opts {
		if err := opt(o); err != nil {
			return nil, err
		}
	}
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
	name := im.Name()
	remoteOpts := []client.RemoteOpt{
		client.WithResolver(&archiveResolver{name: name, root: root, provider: im, progress: o.progress}),
		client.WithPullUnpack,
	}
	if o.snapshotter != "" {
		remoteOpts = append(remoteOpts, client.WithPullSnapshotter(o.snapshotter))
	}
	match := o.platform
	if match != nil {
		remoteOpts = append(remoteOpts, client.WithPlatformMatcher(match))
	} else {
		match = platforms.Default()
	}
	if !images.IsIndexType(root.MediaType) {
		// A single manifest is unpacked whatever its platform matcher says;
		// check it here for a clear error.
		if p := plats[0].Manifest.Platform; p != nil && !match.Match(*p) {
			return nil, fmt.Errorf("record %s holds an image for %s only, which cannot run here: %w",
				im.Record.RecordID(), platforms.FormatAll(*p), errdefs.ErrNotFound)
		}
	} else if !anyMatch(plats, match) {
		var have []string
		for _, p := range plats {
			have = append(have, platforms.FormatAll(*p.Manifest.Platform))
		}
		return nil, fmt.Errorf("record %s holds no image for this platform (it has %v): %w", im.Record.RecordID(), have, errdefs.ErrNotFound)
	}

	img, err := cc.Pull(ctx, name, remoteOpts...)
	if err != nil {
		if errdefs.IsDataLoss(err) {
			return nil, fmt.Errorf("pulling %s: %v: %w", name, err, ErrCorruptArchive)
		}
		return nil, fmt.Errorf("pulling %s into containerd: %w", name, err)
	}
	chosen := ChoosePlatform(plats, match)
	res := &PullResult{
		Reference:      name,
		Names:          []string{img.Name()},
		Target:         img.Target().Digest,
		Platform:       platforms.FormatAll(*chosen.Manifest.Platform),
		ManifestDigest: chosen.Manifest.Digest,
		ConfigDigest:   chosen.ManifestData.Config.Digest,
		Snapshotter:    o.snapshotter,
	}
	if zc != nil {
		res.Record = recordInfo(zc, im.Record)
	}
	if cfg, err := img.Config(ctx); err == nil {
		res.ConfigDigest = cfg.Digest
	}
	is := cc.ImageService()
	for _, n := range im.Names() {
		if n == name {
			continue
		}
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

// archiveResolver is a remotes.Resolver serving one image from an archive:
// containerd's Pull fetches its blobs from there.
type archiveResolver struct {
	name     string
	root     ocispec.Descriptor
	provider content.Provider
	progress Progress
}

var _ remotes.Resolver = (*archiveResolver)(nil)

func (r *archiveResolver) Resolve(ctx context.Context, ref string) (string, ocispec.Descriptor, error) {
	if ref != r.name {
		return "", ocispec.Descriptor{}, fmt.Errorf("resolving %q: only %q is served: %w", ref, r.name, errdefs.ErrNotFound)
	}
	return r.name, r.root, nil
}

func (r *archiveResolver) Fetcher(ctx context.Context, ref string) (remotes.Fetcher, error) {
	return remotes.FetcherFunc(func(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error) {
		ra, err := r.provider.ReaderAt(ctx, desc)
		if err != nil {
			return nil, err
		}
		var t Tracker = noTracker{}
		if !images.IsIndexType(desc.MediaType) && !images.IsManifestType(desc.MediaType) && !images.IsConfigType(desc.MediaType) {
			t = r.progress.Track(clip(desc.Digest.Encoded(), 12), desc.Size)
		}
		return &trackedReadCloser{Reader: &countingReader{r: content.NewReader(ra), t: t}, ra: ra, t: t, size: desc.Size}, nil
	}), nil
}

func (r *archiveResolver) Pusher(ctx context.Context, ref string) (remotes.Pusher, error) {
	return nil, fmt.Errorf("pushing to a Zenodo archive: %w", errdefs.ErrNotImplemented)
}

// trackedReadCloser ends its tracker on EOF or Close.
type trackedReadCloser struct {
	io.Reader
	ra   io.Closer
	t    Tracker
	size int64
	n    int64
}

func (t *trackedReadCloser) Read(p []byte) (int, error) {
	n, err := t.Reader.Read(p)
	t.n += int64(n)
	if err == io.EOF {
		t.t.Done(nil)
	} else if err != nil {
		t.t.Done(err)
	}
	return n, err
}

func (t *trackedReadCloser) Close() error {
	if t.n < t.size {
		t.t.Done(errors.New("closed early"))
	}
	return t.ra.Close()
}
