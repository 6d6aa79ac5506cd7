package main

import (
	"context"

	"github.com/containerd/containerd/v2/core/content"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/resolver"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/remote"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/zenodo"
)

// newSource is the registry endpoint's Source over op, which the lazy
// filesystem shares, so a pull and the mounts that follow open each record
// once.
// TODO: resolver.NewRemoteSource(client, op) once it lands.
func newSource(client *zenodo.Client, op *remote.Opener) resolver.Source {
	return remoteSource{client: client, op: op}
}

type remoteSource struct {
	client *zenodo.Client
	op     *remote.Opener
}

func (s remoteSource) Open(ctx context.Context, ref zenodo.Reference) (resolver.Image, error) {
	ref.Digest = ""
	img, err := s.op.Open(ctx, ref)
	if err != nil {
		return nil, err
	}
	return remoteImage{img}, nil
}

func (s remoteSource) Versions(ctx context.Context, ref zenodo.Reference) ([]zenodo.Record, error) {
	return s.client.Versions(ctx, ref.RecID)
}

type remoteImage struct{ img *remote.Image }

func (i remoteImage) ReaderAt(ctx context.Context, desc ocispec.Descriptor) (content.ReaderAt, error) {
	return i.img.Archive().ReaderAt(ctx, desc)
}
func (i remoteImage) Root() ocispec.Descriptor { return i.img.Root() }
func (i remoteImage) Record() *zenodo.Record   { return i.img.Record() }
