package lazy

import (
	"context"
	"fmt"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/fs"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/remote"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/zenodo"
)

// Layer is one lazily read layer: what the FUSE filesystem reads from, plus
// its background fill and its end. *remote.Layer is one.
type Layer interface {
	fs.Layer
	// StartFill starts streaming the layer into the on-disk cache in the
	// background; it returns at once and does nothing when a fill was
	// started before.
	StartFill(ctx context.Context)
	// Close stops the fill and fails later reads.
	Close() error
}

var _ Layer = (*remote.Layer)(nil)

// Opener finds the layer whose descriptor carries the TOC digest toc in the
// image archived in the record doi names. Errors wrap errdefs kinds
// (ErrNotFound when the record or the layer does not exist).
type Opener interface {
	OpenLayer(ctx context.Context, doi string, toc digest.Digest) (Layer, error)
}

// OpenerFunc adapts a function to an Opener.
type OpenerFunc func(ctx context.Context, doi string, toc digest.Digest) (Layer, error)

// OpenLayer calls f.
func (f OpenerFunc) OpenLayer(ctx context.Context, doi string, toc digest.Digest) (Layer, error) {
	return f(ctx, doi, toc)
}

// RemoteOpener returns the Opener of store/remote: op.OpenByDOI then
// Image.LayerByTOC (no request at all for a version DOI op has in its state
// directory).
func RemoteOpener(op *remote.Opener) Opener {
	return OpenerFunc(func(ctx context.Context, doi string, toc digest.Digest) (Layer, error) {
		img, err := op.OpenByDOI(ctx, doi)
		if err != nil {
			return nil, fmt.Errorf("opening record %s: %w", doi, err)
		}
		l, err := img.LayerByTOC(ctx, toc)
		if err != nil {
			return nil, fmt.Errorf("finding layer with TOC %s in record %s: %w", toc, doi, err)
		}
		return l, nil
	})
}

// Hosts returns an Opener that opens a DOI with the Opener of its Zenodo
// instance (zenodo.org, or sandbox.zenodo.org for the sandbox's 10.5072
// DOIs). A DOI of an instance missing from openers is an error wrapping
// errdefs.ErrNotFound; one that does not parse wraps
// errdefs.ErrInvalidArgument.
func Hosts(openers map[zenodo.Host]Opener) Opener {
	return OpenerFunc(func(ctx context.Context, doi string, toc digest.Digest) (Layer, error) {
		ref, err := zenodo.ParseReference(doi)
		if err != nil {
			return nil, fmt.Errorf("parsing DOI label %q: %w", doi, err)
		}
		op, ok := openers[ref.Host]
		if !ok || op == nil {
			return nil, fmt.Errorf("record %s: no Zenodo instance %s configured: %w", doi, ref.Host, errdefs.ErrNotFound)
		}
		return op.OpenLayer(ctx, doi, toc)
	})
}
