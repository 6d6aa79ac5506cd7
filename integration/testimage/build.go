package testimage

import ocispec "github.com/opencontainers/image-spec/specs-go/v1"

// Build is Busybox for programs (the demo's image builder): it writes the
// OCI layout into dir and returns its root descriptor, or an error.
func Build(dir string, opts ...Option) (ocispec.Descriptor, error) {
	return build(dir, opts...)
}
