package cache

import (
	"fmt"
	"io"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
)

// VerifyDigest is a verification function for WithVerify: when key is a
// digest ("sha256:<64 hex>", or another algorithm go-digest supports), data
// must hash to it, or it returns an error wrapping
// errdefs.ErrFailedPrecondition. Other keys (such as
// "<blob digest>/<offset>-<len>") pass unchecked.
func VerifyDigest(key string, data io.Reader) error {
	d, err := digest.Parse(key)
	if err != nil {
		return nil
	}
	v := d.Verifier()
	if _, err := io.Copy(v, data); err != nil {
		return fmt.Errorf("reading value of %s: %w", d, err)
	}
	if !v.Verified() {
		return fmt.Errorf("value does not match digest %s: %w", d, errdefs.ErrFailedPrecondition)
	}
	return nil
}
