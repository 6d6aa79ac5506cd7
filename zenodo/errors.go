package zenodo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/containerd/errdefs"
)

// kindError is a package sentinel that is also an errdefs kind, so both
// errors.Is(err, zenodo.ErrUnauthorized) and errdefs.IsUnauthorized(err) hold.
type kindError struct {
	msg  string
	kind error
}

func (e *kindError) Error() string { return e.msg }
func (e *kindError) Unwrap() error { return e.kind }

// Error kinds. Errors returned by this package wrap one of these (or another
// errdefs kind); test with errors.Is.
var (
	// ErrNotFound: the record, deposition, file or tag does not exist (404).
	ErrNotFound = errdefs.ErrNotFound
	// ErrUnauthorized: the token is missing or rejected (401). Wraps
	// errdefs.ErrUnauthenticated.
	ErrUnauthorized error = &kindError{"unauthorized", errdefs.ErrUnauthenticated}
	// ErrRateLimited: Zenodo answered 429, or the client's own request budget
	// cannot admit the request before the context's deadline. Wraps
	// errdefs.ErrResourceExhausted.
	ErrRateLimited error = &kindError{"rate limited", errdefs.ErrResourceExhausted}
	// ErrChecksumMismatch: uploaded or downloaded bytes do not match the
	// checksum or size Zenodo reports. Wraps errdefs.ErrDataLoss.
	ErrChecksumMismatch error = &kindError{"checksum mismatch", errdefs.ErrDataLoss}
	// ErrInvalidReference: ParseReference rejected its input. Wraps
	// errdefs.ErrInvalidArgument.
	ErrInvalidReference error = &kindError{"invalid Zenodo reference", errdefs.ErrInvalidArgument}
	// ErrRangeUnsupported: the server answered a ranged GET with the whole
	// file (200); callers fall back to a sequential stream. Wraps
	// errdefs.ErrNotImplemented.
	ErrRangeUnsupported error = &kindError{"range requests not supported", errdefs.ErrNotImplemented}
)

// Error is a failed Zenodo API call: an HTTP error status, or a transport
// failure (StatusCode 0). It never contains the access token.
type Error struct {
	// Method is the HTTP method.
	Method string
	// URL is the request URL, without credentials.
	URL string
	// StatusCode is the HTTP status, or 0 when no response arrived.
	StatusCode int
	// Message is Zenodo's error message (from the JSON body), if any.
	Message string
	// RetryAfter is the server's Retry-After, if it sent one.
	RetryAfter time.Duration

	kind error // one of the sentinels above or an errdefs kind
	err  error // the transport error, if any
}

// Error implements error.
func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "zenodo: %s %s: ", e.Method, e.URL)
	if e.StatusCode != 0 {
		fmt.Fprintf(&b, "%d %s", e.StatusCode, http.StatusText(e.StatusCode))
		if e.Message != "" {
			b.WriteString(": ")
			b.WriteString(e.Message)
		}
		if e.RetryAfter > 0 {
			fmt.Fprintf(&b, " (retry after %s)", e.RetryAfter)
		}
	} else if e.err != nil {
		b.WriteString(e.err.Error())
	} else {
		b.WriteString(e.Message)
	}
	return b.String()
}

// Unwrap returns the error's kind and, for transport failures, the cause.
func (e *Error) Unwrap() []error {
	errs := make([]error, 0, 2)
	if e.kind != nil {
		errs = append(errs, e.kind)
	}
	if e.err != nil {
		errs = append(errs, e.err)
	}
	return errs
}

// Temporary reports whether repeating the request later may succeed:
// connection failures, stalls, 408, 429 and 5xx other than 501.
func (e *Error) Temporary() bool {
	switch {
	case e.StatusCode == http.StatusTooManyRequests, e.StatusCode == http.StatusRequestTimeout:
		return true
	case e.StatusCode >= 500:
		return e.StatusCode != http.StatusNotImplemented
	case e.StatusCode != 0:
		return false
	}
	var se *stallError
	if errors.As(e.err, &se) {
		return true
	}
	if errors.Is(e.err, context.Canceled) {
		return false
	}
	return e.err != nil
}

// kindForStatus maps an HTTP status to an error kind.
func kindForStatus(code int) error {
	switch code {
	case http.StatusBadRequest, http.StatusUnprocessableEntity:
		return errdefs.ErrInvalidArgument
	case http.StatusUnauthorized:
		return ErrUnauthorized
	case http.StatusForbidden:
		return errdefs.ErrPermissionDenied
	case http.StatusNotFound, http.StatusGone:
		return ErrNotFound
	case http.StatusConflict:
		return errdefs.ErrConflict
	case http.StatusPreconditionFailed:
		return errdefs.ErrFailedPrecondition
	case http.StatusRequestEntityTooLarge:
		return errdefs.ErrResourceExhausted
	case http.StatusRequestedRangeNotSatisfiable:
		return errdefs.ErrOutOfRange
	case http.StatusTooManyRequests:
		return ErrRateLimited
	case http.StatusNotImplemented:
		return errdefs.ErrNotImplemented
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout, http.StatusRequestTimeout:
		return errdefs.ErrUnavailable
	}
	if code >= 500 {
		return errdefs.ErrInternal
	}
	return errdefs.ErrUnknown
}

// apiError is Zenodo's JSON error body, legacy and InvenioRDM shapes.
type apiError struct {
	Status  json.RawMessage `json:"status"`
	Message string          `json:"message"`
	ErrorID string          `json:"error_id"`
	Errors  []struct {
		Field    string   `json:"field"`
		Message  string   `json:"message"`
		Messages []string `json:"messages"`
	} `json:"errors"`
}

// errorMessage extracts a short human message from an error response body.
func errorMessage(body []byte) string {
	var ae apiError
	if err := json.Unmarshal(body, &ae); err == nil && (ae.Message != "" || len(ae.Errors) > 0) {
		msg := ae.Message
		var details []string
		for _, fe := range ae.Errors {
			m := fe.Message
			if m == "" {
				m = strings.Join(fe.Messages, "; ")
			}
			if fe.Field != "" {
				m = fe.Field + ": " + m
			}
			details = append(details, m)
		}
		if len(details) > 0 {
			msg += " (" + strings.Join(details, ", ") + ")"
		}
		return clip(strings.TrimSpace(msg), 1024)
	}
	s := strings.TrimSpace(string(body))
	if !utf8.ValidString(s) || strings.HasPrefix(s, "<") {
		// Binary or an HTML error page: not worth repeating.
		return ""
	}
	return clip(s, 256)
}

// clip bounds s to n bytes (on a rune boundary).
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
