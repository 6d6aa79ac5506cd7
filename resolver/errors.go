package resolver

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/containerd/errdefs"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/zenodo"
)

// Error codes of the OCI distribution spec (and "UNKNOWN", which
// distribution uses for server-side failures).
const (
	codeBlobUnknown     = "BLOB_UNKNOWN"
	codeDigestInvalid   = "DIGEST_INVALID"
	codeManifestUnknown = "MANIFEST_UNKNOWN"
	codeNameInvalid     = "NAME_INVALID"
	codeNameUnknown     = "NAME_UNKNOWN"
	codeUnsupported     = "UNSUPPORTED"
	codeDenied          = "DENIED"
	codeTooManyRequests = "TOOMANYREQUESTS"
	codeUnknown         = "UNKNOWN"
)

// regError is a distribution-spec error response.
type regError struct {
	Status  int
	Code    string
	Message string
	Detail  any
	// RetryAfter, with status 429, becomes the Retry-After header.
	RetryAfter time.Duration
}

func (e *regError) Error() string { return e.Code + ": " + e.Message }

// write sends e as {"errors":[{"code","message","detail"}]}; the body is left
// out for HEAD.
func (e *regError) write(w http.ResponseWriter, r *http.Request) {
	type diag struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		Detail  any    `json:"detail,omitempty"`
	}
	body, err := json.Marshal(struct {
		Errors []diag `json:"errors"`
	}{Errors: []diag{{Code: e.Code, Message: e.Message, Detail: e.Detail}}})
	if err != nil { // a Detail that does not marshal: drop it
		body, _ = json.Marshal(map[string][]diag{"errors": {{Code: e.Code, Message: e.Message}}})
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	if e.Status == http.StatusTooManyRequests {
		secs := int64((e.RetryAfter + time.Second - 1) / time.Second)
		h.Set("Retry-After", strconv.FormatInt(max(secs, 1), 10))
	}
	if e.Status == http.StatusMethodNotAllowed {
		h.Set("Allow", "GET, HEAD")
	}
	w.WriteHeader(e.Status)
	if r.Method != http.MethodHead {
		w.Write(body)
	}
}

// toRegError maps an error from a look-up or a read onto the response the
// spec wants: notFoundCode (MANIFEST_UNKNOWN, BLOB_UNKNOWN) for things
// missing inside a record, NAME_UNKNOWN for a missing record, 429
// TOOMANYREQUESTS for Zenodo's rate limit, 502 for Zenodo failures.
func toRegError(err error, notFoundCode string, detail any, defaultRetryAfter time.Duration) *regError {
	var re *regError
	if errors.As(err, &re) {
		return re
	}
	msg := err.Error()
	var ze *zenodo.Error
	isZenodo := errors.As(err, &ze)
	switch {
	case errors.Is(err, zenodo.ErrRateLimited) || errdefs.IsResourceExhausted(err):
		ra := defaultRetryAfter
		if isZenodo && ze.RetryAfter > 0 {
			ra = ze.RetryAfter
		}
		return &regError{Status: http.StatusTooManyRequests, Code: codeTooManyRequests,
			Message: "Zenodo's rate limit was reached; retry later: " + msg, Detail: detail, RetryAfter: ra}
	case errdefs.IsNotFound(err) && unknownRecord(err):
		return &regError{Status: http.StatusNotFound, Code: codeNameUnknown, Message: "no such Zenodo record: " + msg, Detail: detail}
	case errors.Is(err, ErrNoImage):
		return &regError{Status: http.StatusNotFound, Code: codeManifestUnknown,
			Message: "the Zenodo record holds no container image (no image.tar): " + msg, Detail: detail}
	case errdefs.IsNotFound(err):
		return &regError{Status: http.StatusNotFound, Code: notFoundCode, Message: msg, Detail: detail}
	case errdefs.IsUnauthorized(err) || errdefs.IsPermissionDenied(err):
		return &regError{Status: http.StatusForbidden, Code: codeDenied, Message: msg, Detail: detail}
	case errors.Is(err, context.Canceled):
		return &regError{Status: http.StatusServiceUnavailable, Code: codeUnknown, Message: msg, Detail: detail}
	case isZenodo || errdefs.IsDataLoss(err) || errdefs.IsInvalidArgument(err) || errors.Is(err, context.DeadlineExceeded):
		return &regError{Status: http.StatusBadGateway, Code: codeUnknown, Message: "reading from Zenodo failed: " + msg, Detail: detail}
	}
	return &regError{Status: http.StatusInternalServerError, Code: codeUnknown, Message: msg, Detail: detail}
}
