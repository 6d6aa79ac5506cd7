package seekable

import "github.com/containerd/errdefs"

// Errors returned by this package, checkable with errors.Is. Each also matches
// the errdefs kind named in its comment.
var (
	// ErrInvalidTOC means a TOC failed validation (errdefs.ErrInvalidArgument).
	ErrInvalidTOC error = &kindError{msg: "invalid TOC", kind: errdefs.ErrInvalidArgument}
	// ErrInvalidTar means Convert was given a malformed tar stream
	// (errdefs.ErrInvalidArgument).
	ErrInvalidTar error = &kindError{msg: "invalid layer tar", kind: errdefs.ErrInvalidArgument}
	// ErrUnsupported means a well-formed tar uses something a seekable layer
	// cannot describe, such as sparse files or hardlinks to files outside the
	// layer (errdefs.ErrNotImplemented). Such a layer can still be stored as
	// it is.
	ErrUnsupported error = &kindError{msg: "unsupported in a seekable layer", kind: errdefs.ErrNotImplemented}
	// ErrDigestMismatch means data read from a layer does not match the
	// digest its TOC gives (errdefs.ErrDataLoss).
	ErrDigestMismatch error = &kindError{msg: "digest mismatch", kind: errdefs.ErrDataLoss}
	// ErrCorrupt means a member whose digest matched does not decompress to
	// what its TOC says (errdefs.ErrDataLoss).
	ErrCorrupt error = &kindError{msg: "corrupt member", kind: errdefs.ErrDataLoss}
)

// kindError is a sentinel error that also matches an errdefs kind.
type kindError struct {
	msg  string
	kind error
}

func (e *kindError) Error() string { return e.msg }
func (e *kindError) Unwrap() error { return e.kind }
