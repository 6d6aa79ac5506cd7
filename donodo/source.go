package donodo

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/distribution/reference"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/archive"
)

// Source is where Push finds images: names and content.
type Source interface {
	content.Provider
	// Image returns the image stored under name exactly; a missing one is
	// errdefs.ErrNotFound.
	Image(ctx context.Context, name string) (images.Image, error)
}

// ContainerdSource is the image and content stores of a containerd client,
// in the namespace of the context (or the client's default namespace).
func ContainerdSource(c *client.Client) Source {
	return &containerdSource{Provider: c.ContentStore(), is: c.ImageService()}
}

type containerdSource struct {
	content.Provider
	is images.Store
}

func (s *containerdSource) Image(ctx context.Context, name string) (images.Image, error) {
	img, err := s.is.Get(ctx, name)
	if err != nil {
		ns, _ := namespaces.Namespace(ctx)
		return images.Image{}, fmt.Errorf("namespace %q: %w", ns, err)
	}
	return img, nil
}

// LayoutSource is an OCI image layout directory (index.json, blobs/),
// whose image is found under the names its index.json annotations give.
func LayoutSource(dir string) (Source, error) {
	root, names, err := archive.LayoutRoot(dir)
	if err != nil {
		return nil, err
	}
	return &layoutSource{Provider: archive.LayoutProvider(dir), dir: dir, img: images.Image{Target: root}, names: names}, nil
}

type layoutSource struct {
	content.Provider
	dir   string
	img   images.Image
	names []string
}

func (s *layoutSource) Image(ctx context.Context, name string) (images.Image, error) {
	if slices.Contains(s.names, name) {
		img := s.img
		img.Name = name
		return img, nil
	}
	return images.Image{}, fmt.Errorf("image %q in layout %s (it has %s): %w", name, s.dir, strings.Join(s.names, ", "), errdefs.ErrNotFound)
}

// ImageName is a parsed image name for Push: a name with a tag.
type ImageName struct {
	// Given is the name as given.
	Given string
	// Named is the normalized reference (docker.io/library/x:tag).
	Named reference.NamedTagged
}

// Familiar is the short name without tag ("my/tool", "busybox"), used in
// the record's title.
func (n ImageName) Familiar() string { return reference.FamiliarName(n.Named) }

// Tag is the image's tag, the record's version.
func (n ImageName) Tag() string { return n.Named.Tag() }

// Full is the normalized name with its tag (docker.io/my/tool:1.2).
func (n ImageName) Full() string { return n.Named.String() }

// ParseImageName parses NAME:TAG for Push. The tag is required and may not
// be "latest": it becomes the record's version, which must name one image
// for good. Errors wrap errdefs.ErrInvalidArgument.
func ParseImageName(s string) (ImageName, error) {
	named, err := reference.ParseNormalizedNamed(s)
	if err != nil {
		return ImageName{}, fmt.Errorf("image name %q: %v: %w", clip(s, 120), err, errdefs.ErrInvalidArgument)
	}
	if _, ok := named.(reference.Digested); ok {
		return ImageName{}, fmt.Errorf("image name %q: give NAME:TAG without a digest (the tag becomes the record's version): %w", clip(s, 120), errdefs.ErrInvalidArgument)
	}
	tagged, ok := named.(reference.NamedTagged)
	if !ok {
		return ImageName{}, fmt.Errorf("image name %q has no tag: give NAME:TAG (the tag becomes the record's version): %w", clip(s, 120), errdefs.ErrInvalidArgument)
	}
	if tagged.Tag() == "latest" {
		return ImageName{}, fmt.Errorf("image name %q: the tag \"latest\" is refused, it would name a different image each time; tag the image with its version: %w", clip(s, 120), errdefs.ErrInvalidArgument)
	}
	return ImageName{Given: s, Named: tagged}, nil
}

// lookupImage finds the image in src by the name as given, then by its
// normalized name.
func lookupImage(ctx context.Context, src Source, n ImageName) (images.Image, error) {
	tried := []string{n.Given}
	if n.Full() != n.Given {
		tried = append(tried, n.Full())
	}
	var last error
	for _, name := range tried {
		img, err := src.Image(ctx, name)
		if err == nil {
			return img, nil
		}
		if !errdefs.IsNotFound(err) {
			return images.Image{}, fmt.Errorf("looking up image %s: %w", name, err)
		}
		last = err
	}
	return images.Image{}, fmt.Errorf("image %s not found (looked for %s): %w", n.Given, strings.Join(tried, " and "), last)
}
