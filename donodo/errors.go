package donodo

import (
	"context"
	"errors"
	"net/http"

	"github.com/containerd/errdefs"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/remote"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/zenodo"
)

// Error kinds of this package. Errors returned here wrap one of these, or
// an errdefs kind, or an error of package zenodo; test with errors.Is.
var (
	// ErrNoImage: the record holds no image archive (no file named like
	// image.tar…, nor a single file with ".tar" in its name). It is
	// store/remote's, and wraps errdefs.ErrNotFound.
	ErrNoImage error = remote.ErrNoImage
	// ErrAmbiguous: the record holds several files that could be its image
	// archive. It is store/remote's (an errdefs.ErrInvalidArgument, which
	// ExitCode counts as an error, not a usage error).
	ErrAmbiguous error = remote.ErrAmbiguous
	// ErrCorruptArchive: the archive's content does not match what it
	// claims (digests, sizes, tar structure). Wraps errdefs.ErrDataLoss.
	ErrCorruptArchive error = &kindError{"image archive corrupt", errdefs.ErrDataLoss}
	// ErrNoToken: an operation needing a Zenodo token has none. Wraps
	// zenodo.ErrUnauthorized (and so errdefs.ErrUnauthenticated).
	ErrNoToken error = &kindError{"no Zenodo token: set ZENODO_TOKEN or use --token-file (scopes deposit:write and deposit:actions)", zenodo.ErrUnauthorized}
	// ErrTagExists: the record already has a published version with the
	// image's tag; published files cannot change. Wraps
	// errdefs.ErrAlreadyExists.
	ErrTagExists error = &kindError{"tag already published", errdefs.ErrAlreadyExists}
)

// kindError is a sentinel that also matches an errdefs kind.
type kindError struct {
	msg  string
	kind error
}

func (e *kindError) Error() string { return e.msg }
func (e *kindError) Unwrap() error { return e.kind }

// Exit codes of the donodo command, from ExitCode.
const (
	// ExitOK: success.
	ExitOK = 0
	// ExitError: any other failure (Zenodo unreachable, corrupt archive,
	// several candidate archives, an interrupted transfer…).
	ExitError = 1
	// ExitUsage: bad command line or input (a malformed reference, a tag
	// missing or "latest", a bad templates file, no creators).
	ExitUsage = 2
	// ExitNotFound: something named does not exist (record, tag, digest,
	// image in the namespace, content, image archive in the record).
	ExitNotFound = 3
	// ExitAuth: the Zenodo token is missing, or Zenodo rejected it.
	ExitAuth = 4
)

// ExitCode maps an error onto the command's exit codes: ExitOK for nil,
// ExitAuth for missing or rejected credentials, ExitNotFound for
// errdefs.ErrNotFound, ExitUsage for errdefs.ErrInvalidArgument that is not
// Zenodo's own 400 answer, ExitError for everything else.
func ExitCode(err error) int {
	var ze *zenodo.Error
	switch {
	case err == nil:
		return ExitOK
	case errors.Is(err, context.Canceled), errors.Is(err, ErrAmbiguous):
		return ExitError
	case errdefs.IsUnauthorized(err) || errdefs.IsPermissionDenied(err):
		return ExitAuth
	case errdefs.IsNotFound(err):
		return ExitNotFound
	case errdefs.IsInvalidArgument(err):
		if errors.As(err, &ze) && ze.StatusCode == http.StatusBadRequest {
			return ExitError
		}
		return ExitUsage
	}
	return ExitError
}

// Hint returns one sentence of advice for an error of a known kind (what to
// do about a missing token, an unreachable Zenodo…), or "".
func Hint(err error) string {
	var ze *zenodo.Error
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrNoToken):
		return "create a token at https://zenodo.org/account/settings/applications/ with the deposit:write and deposit:actions scopes"
	case errdefs.IsUnauthorized(err):
		return "Zenodo rejected the token: check ZENODO_TOKEN or --token-file, its scopes (deposit:write, deposit:actions), and --sandbox (sandbox tokens differ)"
	case errdefs.IsPermissionDenied(err):
		return "the token may lack the deposit:write and deposit:actions scopes, or the deposition belongs to another user"
	case errors.As(err, &ze) && ze.StatusCode == 0 && !errors.Is(err, context.Canceled):
		return "Zenodo could not be reached: check the network, or --zenodo-url"
	case errors.Is(err, zenodo.ErrRateLimited):
		return "Zenodo's rate limit was reached: try again in a minute"
	}
	return ""
}
