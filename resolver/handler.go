package resolver

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/log"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/zenodo"
)

const (
	// apiVersionHeader is sent with every response, as registries do.
	apiVersionHeader = "Docker-Distribution-API-Version"
	apiVersion       = "registry/2.0"
	// contentDigestHeader carries a manifest's or blob's digest.
	contentDigestHeader = "Docker-Content-Digest"
	// nsQuery is the query parameter containerd adds when a mirror serves
	// another host's names (hosts.toml).
	nsQuery = "ns"
)

var (
	// tagRE is the distribution spec's tag grammar.
	tagRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)
	// numericRepoRE matches the short repository forms "zenodo.123" and "123".
	numericRepoRE = regexp.MustCompile(`^(?:zenodo\.)?([1-9][0-9]{0,18})$`)
)

func validTag(s string) bool { return tagRE.MatchString(s) }

// handler is the read-only OCI distribution endpoint.
type handler struct {
	cat  *catalog
	opts *options
}

// NewHandler returns the read-only OCI distribution endpoint (the pull side
// of the distribution spec) for the images of Zenodo records in src:
//
//	GET|HEAD /v2/                               200, Docker-Distribution-API-Version
//	GET|HEAD /v2/<name>/manifests/<tag|digest>  the record's image root, or a manifest by digest
//	GET|HEAD /v2/<name>/blobs/<digest>          configs, layers (Range: one range, 206)
//	GET      /v2/<name>/tags/list               the versions' metadata.version, and "latest" (n, last)
//
// <name> is a record's DOI ("10.5281/zenodo.123"), or "zenodo.123" or
// "123" on the host the ns= query names (zenodo.org when absent, or when
// the DOI has the sandbox's prefix, sandbox.zenodo.org); it may start with
// the host instead ("sandbox.zenodo.org/10.5072/zenodo.5"). Errors are
// distribution-spec JSON bodies: NAME_UNKNOWN (no such record),
// MANIFEST_UNKNOWN (no such tag or digest, no image in the record),
// BLOB_UNKNOWN, DIGEST_INVALID, NAME_INVALID, UNSUPPORTED (405: anything but
// GET and HEAD), and 429 TOOMANYREQUESTS with Retry-After when Zenodo's rate
// limit stops a look-up. Every request is logged at debug level via log.G.
//
// Served blobs are verified: a blob whose content does not match its digest
// is cut short before its last bytes.
func NewHandler(src Source, opts ...Option) http.Handler {
	o := makeOptions(opts)
	return &handler{cat: newCatalog(src, o), opts: o}
}

// ServeHTTP implements http.Handler.
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	sw := &statusWriter{ResponseWriter: w}
	ctx := log.WithLogger(r.Context(), log.G(r.Context()).WithFields(log.Fields{
		"method": r.Method,
		"path":   r.URL.Path,
	}))
	sw.Header().Set(apiVersionHeader, apiVersion)
	h.serve(ctx, sw, r)
	entry := log.G(ctx).WithFields(log.Fields{
		"status":   sw.status,
		"bytes":    sw.bytes,
		"duration": time.Since(start),
	})
	if ns := r.URL.Query().Get(nsQuery); ns != "" {
		entry = entry.WithField("ns", ns)
	}
	if rg := r.Header.Get("Range"); rg != "" {
		entry = entry.WithField("range", rg)
	}
	entry.Debug("registry request")
}

func (h *handler) serve(ctx context.Context, w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	if p == "/v2" || p == "/v2/" {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			h.fail(ctx, w, r, &regError{Status: http.StatusMethodNotAllowed, Code: codeUnsupported, Message: "this registry is read-only: only GET and HEAD are supported"})
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", "2")
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodGet {
			io.WriteString(w, "{}")
		}
		return
	}
	rest, ok := strings.CutPrefix(p, "/v2/")
	if !ok {
		h.fail(ctx, w, r, &regError{Status: http.StatusNotFound, Code: codeUnsupported, Message: fmt.Sprintf("no such endpoint %q: this is an OCI distribution endpoint under /v2/", clip(p, 200))})
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		h.fail(ctx, w, r, &regError{Status: http.StatusMethodNotAllowed, Code: codeUnsupported,
			Message: fmt.Sprintf("%s is not supported: this registry serves Zenodo records read-only (GET and HEAD)", r.Method)})
		return
	}
	ns := r.URL.Query().Get(nsQuery)
	switch {
	case strings.HasSuffix(rest, "/tags/list"):
		h.tags(ctx, w, r, strings.TrimSuffix(rest, "/tags/list"), ns)
	case strings.Contains(rest, "/manifests/"):
		i := strings.LastIndex(rest, "/manifests/")
		h.manifest(ctx, w, r, rest[:i], rest[i+len("/manifests/"):], ns)
	case strings.Contains(rest, "/blobs/"):
		i := strings.LastIndex(rest, "/blobs/")
		h.blob(ctx, w, r, rest[:i], rest[i+len("/blobs/"):], ns)
	default:
		h.fail(ctx, w, r, &regError{Status: http.StatusNotFound, Code: codeUnsupported,
			Message: fmt.Sprintf("no such endpoint %q: this registry serves manifests, blobs and tags/list", clip(p, 200))})
	}
}

func (h *handler) fail(ctx context.Context, w http.ResponseWriter, r *http.Request, e *regError) {
	log.G(ctx).WithFields(log.Fields{"code": e.Code, "status": e.Status}).Debugf("registry error: %s", e.Message)
	e.write(w, r)
}

// failErr answers err, a failed look-up or read.
func (h *handler) failErr(ctx context.Context, w http.ResponseWriter, r *http.Request, err error, notFoundCode string, detail any) {
	e := toRegError(err, notFoundCode, detail, h.opts.retryAfter)
	log.G(ctx).WithError(err).WithFields(log.Fields{"code": e.Code, "status": e.Status}).Debug("registry error")
	e.write(w, r)
}

// repository parses a repository name into the reference of its record;
// see NewHandler.
func repository(name, ns string) (zenodo.Reference, *regError) {
	invalid := func(format string, args ...any) (zenodo.Reference, *regError) {
		return zenodo.Reference{}, &regError{Status: http.StatusBadRequest, Code: codeNameInvalid,
			Message: fmt.Sprintf(format, args...) + "; repository names are Zenodo DOIs: zenodo.org/10.5281/zenodo.<id> or sandbox.zenodo.org/10.5072/zenodo.<id>",
			Detail:  map[string]string{"name": clip(name, 200)}}
	}
	if name == "" || len(name) > 512 {
		return invalid("bad repository name %q", clip(name, 200))
	}
	var host zenodo.Host
	switch strings.ToLower(ns) {
	case "":
	case string(zenodo.HostProduction), "www.zenodo.org":
		host = zenodo.HostProduction
	case string(zenodo.HostSandbox), "www.sandbox.zenodo.org":
		host = zenodo.HostSandbox
	default:
		return zenodo.Reference{}, &regError{Status: http.StatusNotFound, Code: codeNameUnknown,
			Message: fmt.Sprintf("this endpoint serves the images of zenodo.org and sandbox.zenodo.org records, not of %q", clip(ns, 100)),
			Detail:  map[string]string{"ns": clip(ns, 100)}}
	}
	p := name
	for _, hh := range []zenodo.Host{zenodo.HostSandbox, zenodo.HostProduction} {
		if rest, ok := strings.CutPrefix(strings.ToLower(p), string(hh)+"/"); ok {
			if host != "" && host != hh {
				return invalid("repository %q names %s, but ns=%s", clip(name, 200), hh, ns)
			}
			host, p = hh, rest
			break
		}
	}
	if m := numericRepoRE.FindStringSubmatch(strings.ToLower(p)); m != nil {
		h := host
		if h == "" {
			h = zenodo.HostProduction
		}
		return zenodo.Reference{Host: h, RecID: m[1], DOI: doiPrefix(h) + "/zenodo." + m[1]}, nil
	}
	s := p
	if host != "" {
		s = string(host) + "/" + p
	}
	ref, err := zenodo.ParseReference(s)
	if err != nil {
		return invalid("%v", err)
	}
	if ref.Tag != "" || ref.Digest != "" {
		return invalid("repository %q carries a tag or digest", clip(name, 200))
	}
	if !strings.HasPrefix(ref.DOI, doiPrefix(ref.Host)+"/") {
		return invalid("DOI %s is not a %s DOI (its records have DOIs %s/zenodo.<id>)", ref.DOI, ref.Host, doiPrefix(ref.Host))
	}
	return ref, nil
}

// parseDigest parses a digest from a URL, answering DIGEST_INVALID.
func parseDigest(s string) (digest.Digest, *regError) {
	d, err := digest.Parse(s)
	if err != nil || !d.Algorithm().Available() {
		if err == nil {
			err = fmt.Errorf("algorithm %q unavailable", d.Algorithm())
		}
		return "", &regError{Status: http.StatusBadRequest, Code: codeDigestInvalid,
			Message: fmt.Sprintf("invalid digest %q: %v", clip(s, 200), err), Detail: map[string]string{"digest": clip(s, 200)}}
	}
	return d, nil
}

// setContentHeaders sets the headers of a manifest or blob response.
func setContentHeaders(w http.ResponseWriter, d ocispec.Descriptor, mediaType string) {
	hd := w.Header()
	hd.Set("Content-Type", mediaType)
	hd.Set(contentDigestHeader, d.Digest.String())
	hd.Set("ETag", `"`+d.Digest.String()+`"`)
	hd.Set("Cache-Control", "max-age=31536000")
}

func (h *handler) manifest(ctx context.Context, w http.ResponseWriter, r *http.Request, name, reference, ns string) {
	ref, rerr := repository(name, ns)
	if rerr != nil {
		h.fail(ctx, w, r, rerr)
		return
	}
	detail := map[string]string{"repository": ref.Name(), "reference": clip(reference, 200)}
	var (
		im *image
		d  ocispec.Descriptor
	)
	switch {
	case strings.Contains(reference, ":"):
		dgst, rerr := parseDigest(reference)
		if rerr != nil {
			h.fail(ctx, w, r, rerr)
			return
		}
		var err error
		if im, d, err = h.cat.find(ctx, ref, dgst); err != nil {
			h.failErr(ctx, w, r, err, codeManifestUnknown, detail)
			return
		}
		if _, ok := im.raw[dgst]; !ok {
			h.fail(ctx, w, r, &regError{Status: http.StatusNotFound, Code: codeManifestUnknown,
				Message: fmt.Sprintf("%s in %s is a blob (%s), not a manifest; fetch it from /blobs/", dgst, ref.Name(), d.MediaType), Detail: detail})
			return
		}
	case validTag(reference):
		ref.Tag = reference
		var err error
		if im, err = h.cat.open(ctx, ref); err != nil {
			h.failErr(ctx, w, r, err, codeManifestUnknown, detail)
			return
		}
		d = im.root
	default:
		h.fail(ctx, w, r, &regError{Status: http.StatusNotFound, Code: codeManifestUnknown,
			Message: fmt.Sprintf("%q is neither a tag nor a digest", clip(reference, 200)), Detail: detail})
		return
	}
	b := im.raw[d.Digest]
	setContentHeaders(w, d, d.MediaType)
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		w.Write(b)
	}
}

func (h *handler) blob(ctx context.Context, w http.ResponseWriter, r *http.Request, name, dgstStr, ns string) {
	ref, rerr := repository(name, ns)
	if rerr != nil {
		h.fail(ctx, w, r, rerr)
		return
	}
	dgst, rerr := parseDigest(dgstStr)
	if rerr != nil {
		h.fail(ctx, w, r, rerr)
		return
	}
	detail := map[string]string{"repository": ref.Name(), "digest": dgst.String()}
	im, d, err := h.cat.find(ctx, ref, dgst)
	if err != nil {
		h.failErr(ctx, w, r, err, codeBlobUnknown, detail)
		return
	}
	mt := d.MediaType
	if mt == "" {
		mt = "application/octet-stream"
	}
	setContentHeaders(w, d, mt)
	w.Header().Set("Accept-Ranges", "bytes")

	offset, length, status := int64(0), d.Size, http.StatusOK
	if rg := r.Header.Get("Range"); rg != "" && r.Method == http.MethodGet && ifRangeMatches(r, d) {
		start, n, ok, satisfiable := parseRange(rg, d.Size)
		switch {
		case ok && !satisfiable:
			w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", d.Size))
			h.fail(ctx, w, r, &regError{Status: http.StatusRequestedRangeNotSatisfiable, Code: codeBlobUnknown,
				Message: fmt.Sprintf("range %q is outside blob %s of %d bytes", clip(rg, 100), dgst, d.Size), Detail: detail})
			return
		case ok:
			offset, length, status = start, n, http.StatusPartialContent
			w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, start+n-1, d.Size))
		}
	}
	w.Header().Set("Content-Length", strconv.FormatInt(length, 10))
	if r.Method == http.MethodHead {
		w.WriteHeader(status)
		return
	}
	rc, err := openBlob(ctx, im, d, offset, length, h.opts.readSize)
	if err != nil {
		for _, k := range []string{"Content-Type", "Content-Length", "Content-Range", contentDigestHeader, "ETag", "Accept-Ranges", "Cache-Control"} {
			w.Header().Del(k)
		}
		h.failErr(ctx, w, r, err, codeBlobUnknown, detail)
		return
	}
	defer rc.Close()
	w.WriteHeader(status)
	buf := make([]byte, 256<<10)
	n, err := io.CopyBuffer(w, rc, buf)
	if err != nil {
		// The headers are gone: the short body (the server closes the
		// connection) tells the client.
		log.G(ctx).WithError(err).WithFields(log.Fields{"digest": dgst, "sent": n, "want": length}).Warn("registry: blob stream failed")
	}
}

// ifRangeMatches reports whether a Range applies: no If-Range, or one
// naming the blob's ETag (content addressed, so dates never match).
func ifRangeMatches(r *http.Request, d ocispec.Descriptor) bool {
	ir := r.Header.Get("If-Range")
	return ir == "" || ir == `"`+d.Digest.String()+`"`
}

// parseRange parses a Range header of one byte range (RFC 9110) against a
// blob of size bytes. ok is false when the header is not one range in
// bytes (the whole blob is then served, as RFC 9110 allows); satisfiable is
// false when the range starts past the end.
func parseRange(s string, size int64) (start, n int64, ok, satisfiable bool) {
	spec, found := strings.CutPrefix(strings.TrimSpace(s), "bytes=")
	if !found || strings.Contains(spec, ",") {
		return 0, 0, false, false
	}
	first, last, found := strings.Cut(strings.TrimSpace(spec), "-")
	if !found {
		return 0, 0, false, false
	}
	if first == "" { // suffix range: the last N bytes
		k, err := strconv.ParseInt(last, 10, 64)
		if err != nil || k < 0 {
			return 0, 0, false, false
		}
		if k == 0 || size == 0 {
			return 0, 0, true, false
		}
		k = min(k, size)
		return size - k, k, true, true
	}
	a, err := strconv.ParseInt(first, 10, 64)
	if err != nil || a < 0 {
		return 0, 0, false, false
	}
	end := size - 1
	if last != "" {
		b, err := strconv.ParseInt(last, 10, 64)
		if err != nil || b < a {
			return 0, 0, false, false
		}
		end = min(b, size-1)
	}
	if a >= size {
		return 0, 0, true, false
	}
	return a, end - a + 1, true, true
}

// tagList is the body of tags/list.
type tagList struct {
	Name string   `json:"name"`
	Tags []string `json:"tags"`
}

func (h *handler) tags(ctx context.Context, w http.ResponseWriter, r *http.Request, name, ns string) {
	ref, rerr := repository(name, ns)
	if rerr != nil {
		h.fail(ctx, w, r, rerr)
		return
	}
	tags, err := h.cat.tags(ctx, ref)
	if err != nil {
		h.failErr(ctx, w, r, err, codeNameUnknown, map[string]string{"repository": ref.Name()})
		return
	}
	q := r.URL.Query()
	if last := q.Get("last"); last != "" {
		i := 0
		for i < len(tags) && tags[i] <= last {
			i++
		}
		tags = tags[i:]
	}
	if ns := q.Get("n"); ns != "" {
		n, err := strconv.Atoi(ns)
		if err != nil || n < 0 {
			h.fail(ctx, w, r, &regError{Status: http.StatusBadRequest, Code: codeUnsupported, Message: fmt.Sprintf("bad n=%q", clip(ns, 20))})
			return
		}
		if n < len(tags) {
			tags = tags[:n]
			if n > 0 {
				next := url.Values{"n": {strconv.Itoa(n)}, "last": {tags[n-1]}}
				if v := q.Get(nsQuery); v != "" {
					next.Set(nsQuery, v)
				}
				w.Header().Set("Link", fmt.Sprintf(`<%s?%s>; rel="next"`, r.URL.Path, next.Encode()))
			}
		}
	}
	// The repository as the client named it.
	b, _ := json.Marshal(tagList{Name: name, Tags: tags})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		w.Write(b)
	}
}

// statusWriter records the status and body size for the request log.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	n, err := s.ResponseWriter.Write(b)
	s.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// clip shortens s for messages.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
