package archive

import "github.com/containerd/errdefs"

// ErrCorrupt is wrapped by errors about archive content that does not match
// what it claims to be: a digest mismatch, a truncated archive, a layer whose
// uncompressed content differs from its diff_id. It also matches
// errdefs.ErrDataLoss.
var ErrCorrupt error = &kindError{msg: "archive content corrupt", kind: errdefs.ErrDataLoss}

// kindError is a sentinel error that also matches an errdefs kind.
type kindError struct {
	msg  string
	kind error
}

func (e *kindError) Error() string { return e.msg }
func (e *kindError) Unwrap() error { return e.kind }
