package zenodotest

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"time"
)

// Error messages, each from a recording or from Zenodo's sources.
const (
	// Fixtures 80 and 82 (Flask's Unauthorized description).
	msgUnauthorized = "The server could not verify that you are authorized to access the URL requested. You either supplied the wrong credentials (e.g. a bad password), or your browser doesn't understand how to supply the credentials required."
	// Fixture 81.
	msgPIDNotFound = "PID does not exist."
	// invenio-rdm-records: PIDUnregistered (a draft's id on a records route).
	msgPIDUnregistered = "The persistent identifier is not registered."
	// Flask's NotFound / MethodNotAllowed / BadRequest descriptions.
	msgRouteNotFound    = "The requested URL was not found on the server. If you entered the URL manually please check your spelling and try again."
	msgMethodNotAllowed = "The method is not allowed for the requested URL."
	msgBadRequest       = "The browser (or proxy) sent a request that this server could not understand."
	msgUnavailable      = "The server is temporarily unable to service your request due to maintenance downtime or capacity problems. Please try again later."
	// Fixture 83.
	msgInternal = "The server encountered an internal error and was unable to complete your request. Either the server is overloaded or there is an error in the application."
	// invenio-files-rest BucketLockedError (403).
	msgBucketLocked = "Bucket is locked for modifications."
	// invenio-files-rest FileSizeError-style quota message (400).
	msgQuotaExceeded = "Bucket quota exceeded."
	// invenio-records-resources commit_file with
	// RECORDS_RESOURCES_ALLOW_EMPTY_FILES = False (zenodo-rdm invenio.cfg).
	msgEmptyFile = "Empty files are not accepted."
	// invenio-files-rest UnexpectedFileSizeError.
	msgSizeMismatch = "Content-Length does not match file size."
	// invenio-records-resources permission denied.
	msgPermissionDenied = "Permission denied."
	// flask-resources HTTPJSONValidationException.
	msgValidation = "A validation error occurred."
	// Unknown field values in a query string.
	msgBadQuery = "Invalid query string syntax."
)

// legacyError is the error body of fixtures 80-82.
type legacyError struct {
	Status  int    `json:"status"`
	Message string `json:"message"`
}

// fieldError is one entry of an RDM validation error.
type fieldError struct {
	Field    string   `json:"field"`
	Messages []string `json:"messages"`
}

// validationError is the RDM-era 400 body: {"status":400,"message":"A
// validation error occurred.","errors":[{"field":..,"messages":[..]}]}.
type validationError struct {
	Status  int          `json:"status"`
	Message string       `json:"message"`
	Errors  []fieldError `json:"errors"`
}

// rdmServerError is the RDM-era 500 body of fixture 83.
type rdmServerError struct {
	ErrorID string `json:"error_id"`
	Message string `json:"message"`
	Status  int    `json:"status"`
}

func writeLegacyError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, legacyError{Status: status, Message: msg})
}

func writeValidationError(w http.ResponseWriter, errs ...fieldError) {
	writeJSON(w, http.StatusBadRequest, validationError{Status: http.StatusBadRequest, Message: msgValidation, Errors: errs})
}

func internalErrorBody() []byte {
	b, _ := json.Marshal(rdmServerError{ErrorID: randomHex(16), Message: msgInternal, Status: http.StatusInternalServerError})
	return b
}

func writeInternalError(w http.ResponseWriter) {
	writeBody(w, http.StatusInternalServerError, "application/json", internalErrorBody())
}

// writeFaultStatus answers an injected status the way Zenodo's stack would:
// 500 with the RDM body of fixture 83; 502/504 with nginx's HTML page and
// without the application's rate-limit headers (nginx answers them, not
// Flask); 429 with Retry-After (default 1 minute); others with the legacy
// JSON body. A positive retryAfter sets Retry-After on any status; without
// it, the status keeps the Retry-After every response carries (seconds to
// the rate-limit window's reset, as Zenodo).
func writeFaultStatus(w http.ResponseWriter, status int, retryAfter time.Duration) {
	if retryAfter > 0 {
		w.Header().Set("Retry-After", fmt.Sprint(int64(math.Ceil(retryAfter.Seconds()))))
	}
	switch status {
	case http.StatusInternalServerError:
		writeInternalError(w)
	case http.StatusBadGateway, http.StatusGatewayTimeout:
		for _, h := range []string{"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset", "Access-Control-Allow-Origin", "Access-Control-Expose-Headers"} {
			w.Header().Del(h)
		}
		if retryAfter <= 0 {
			w.Header().Del("Retry-After")
		}
		text := fmt.Sprintf("%d %s", status, http.StatusText(status))
		page := "<html>\r\n<head><title>" + text + "</title></head>\r\n<body>\r\n<center><h1>" + text + "</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
		writeBody(w, status, "text/html", []byte(page))
	case http.StatusTooManyRequests:
		if retryAfter <= 0 {
			w.Header().Set("Retry-After", "60")
		}
		writeLegacyError(w, status, "100 per 1 minute")
	default:
		msg := http.StatusText(status)
		switch status {
		case http.StatusServiceUnavailable:
			msg = msgUnavailable
		case http.StatusNotFound:
			msg = msgPIDNotFound
		case http.StatusUnauthorized:
			msg = msgUnauthorized
		case http.StatusBadRequest:
			msg = msgBadRequest
		}
		writeLegacyError(w, status, msg)
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// newUUID returns a random (version 4) UUID, as Zenodo's bucket and file ids.
func newUUID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}
