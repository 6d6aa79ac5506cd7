package resolver

import (
	"context"
	"fmt"
	"io"

	"github.com/containerd/containerd/v2/core/remotes"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/zenodo"
)

// zresolver is the remotes.Resolver of Zenodo references.
type zresolver struct {
	cat  *catalog
	opts *options
}

var _ remotes.Resolver = (*zresolver)(nil)

// NewResolver returns a containerd remotes.Resolver for Zenodo references
// (every form zenodo.ParseReference accepts: zenodo.org/10.5281/zenodo.123:1.0,
// sandbox.zenodo.org/…, bare DOIs, record URLs), reading images from src:
//
//   - Resolve finds the record (a version DOI: that version; a concept DOI
//     or ":latest": the newest version; ":<tag>": the version whose
//     metadata.version is the tag) and returns its image's root descriptor
//     under the canonical name "<host>/<doi>[:<tag>][@<digest>]". With
//     "@sha256:…" it returns that manifest (or index) of the record, or of
//     one of its versions, after checking its content against the digest;
//     the tag, if any, only says where to look first.
//   - Fetcher serves manifests, configs and layers of the record's archive,
//     layers by ranged reads of the record's image.tar (never the whole
//     archive). Its readers are io.Seekers (a resumed download restarts at
//     its offset) and verify whole blobs. It is also a
//     remotes.FetcherByDigest.
//   - Pusher fails with errdefs.ErrNotImplemented: records are made with
//     donodo push.
//
// Errors wrap errdefs kinds: ErrInvalidArgument for a bad reference,
// ErrNotFound for a missing record, tag, digest or image (ErrUnknownRecord,
// ErrNoImage), zenodo.ErrRateLimited when Zenodo's rate limit stops a
// look-up.
func NewResolver(src Source, opts ...Option) remotes.Resolver {
	o := makeOptions(opts)
	return &zresolver{cat: newCatalog(src, o), opts: o}
}

// Resolve implements remotes.Resolver.
func (r *zresolver) Resolve(ctx context.Context, s string) (string, ocispec.Descriptor, error) {
	ref, err := zenodo.ParseReference(s)
	if err != nil {
		return "", ocispec.Descriptor{}, fmt.Errorf("resolving %q: %w", s, err)
	}
	ctx = log.WithLogger(ctx, log.G(ctx).WithField("ref", ref.String()))
	if ref.Digest != "" {
		im, d, err := r.cat.find(ctx, ref, ref.Digest)
		if err != nil {
			return "", ocispec.Descriptor{}, fmt.Errorf("resolving %s: %w", ref, err)
		}
		if _, ok := im.raw[d.Digest]; !ok {
			return "", ocispec.Descriptor{}, fmt.Errorf("resolving %s: %s is a %s blob of %s, not a manifest: %w",
				ref, d.Digest, d.MediaType, im.describe(), errdefs.ErrNotFound)
		}
		log.G(ctx).WithFields(log.Fields{"digest": d.Digest, "record": im.recordID()}).Debug("resolver: resolved digest")
		return ref.String(), plain(d), nil
	}
	im, err := r.cat.open(ctx, ref)
	if err != nil {
		return "", ocispec.Descriptor{}, fmt.Errorf("resolving %s: %w", ref, err)
	}
	log.G(ctx).WithFields(log.Fields{"digest": im.root.Digest, "record": im.recordID()}).Debug("resolver: resolved")
	return ref.String(), plain(im.root), nil
}

// plain is a descriptor's media type, digest and size, as a registry's
// resolve gives them.
func plain(d ocispec.Descriptor) ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: d.MediaType, Digest: d.Digest, Size: d.Size}
}

// Fetcher implements remotes.Resolver.
func (r *zresolver) Fetcher(ctx context.Context, s string) (remotes.Fetcher, error) {
	ref, err := zenodo.ParseReference(s)
	if err != nil {
		return nil, fmt.Errorf("fetcher for %q: %w", s, err)
	}
	return &fetcher{r: r, ref: ref}, nil
}

// Pusher implements remotes.Resolver: Zenodo records are not pushed to.
func (r *zresolver) Pusher(ctx context.Context, s string) (remotes.Pusher, error) {
	return nil, fmt.Errorf("pushing to %q: Zenodo records are read-only here, use donodo push: %w", s, errdefs.ErrNotImplemented)
}

// fetcher fetches the blobs of one reference's record (and its versions).
type fetcher struct {
	r   *zresolver
	ref zenodo.Reference
}

var (
	_ remotes.Fetcher         = (*fetcher)(nil)
	_ remotes.FetcherByDigest = (*fetcher)(nil)
)

// Fetch implements remotes.Fetcher.
func (f *fetcher) Fetch(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error) {
	rc, _, err := f.fetch(ctx, desc.Digest, desc.Size)
	return rc, err
}

// FetchByDigest implements remotes.FetcherByDigest. The descriptor has
// the media type the blob is referenced with in the image.
func (f *fetcher) FetchByDigest(ctx context.Context, dgst digest.Digest, opts ...remotes.FetchByDigestOpts) (io.ReadCloser, ocispec.Descriptor, error) {
	var cfg remotes.FetchByDigestConfig
	for _, o := range opts {
		if err := o(ctx, &cfg); err != nil {
			return nil, ocispec.Descriptor{}, err
		}
	}
	return f.fetch(ctx, dgst, -1)
}

func (f *fetcher) fetch(ctx context.Context, dgst digest.Digest, size int64) (io.ReadCloser, ocispec.Descriptor, error) {
	if err := dgst.Validate(); err != nil {
		return nil, ocispec.Descriptor{}, fmt.Errorf("fetching %q from %s: %v: %w", dgst, f.ref.Name(), err, errdefs.ErrInvalidArgument)
	}
	ctx = log.WithLogger(ctx, log.G(ctx).WithFields(log.Fields{"ref": f.ref.String(), "digest": dgst}))
	im, d, err := f.r.cat.find(ctx, f.ref, dgst)
	if err != nil {
		return nil, ocispec.Descriptor{}, fmt.Errorf("fetching %s from %s: %w", dgst, f.ref, err)
	}
	if size > 0 && size != d.Size {
		return nil, ocispec.Descriptor{}, fmt.Errorf("fetching %s from %s: size %d asked, the image has %d: %w", dgst, f.ref, size, d.Size, errdefs.ErrInvalidArgument)
	}
	log.G(ctx).WithFields(log.Fields{"size": d.Size, "record": im.recordID()}).Debug("resolver: fetch")
	readSize := f.r.opts.readSize
	rc := &seekReader{size: d.Size, open: func(off int64) (io.ReadCloser, error) {
		return openBlob(ctx, im, d, off, -1, readSize)
	}}
	out := plain(d)
	if out.MediaType == "" {
		out.MediaType = "application/octet-stream"
	}
	return rc, out, nil
}
