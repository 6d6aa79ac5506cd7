package zenodotest

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// maxKeyLen is invenio-files-rest's key limit ("Filename is too long.").
const maxKeyLen = 255

func mimeType(key string) string {
	t := mime.TypeByExtension(path.Ext(key))
	if t == "" {
		return "application/octet-stream"
	}
	if mt, _, err := mime.ParseMediaType(t); err == nil {
		return mt
	}
	return t
}

func checkKey(key string) *fieldError {
	switch {
	case key == "" || key == "." || key == ".." || strings.ContainsAny(key, "/\\\x00"):
		return &fieldError{Field: "key", Messages: []string{"Invalid file name."}}
	case len(key) > maxKeyLen:
		return &fieldError{Field: "key", Messages: []string{"Filename is too long."}}
	}
	return nil
}

// uploadTarget finds the draft an upload goes to, with s.mu held.
type uploadTarget func() *record

// upload streams body into a new blob for key, enforcing the file count and
// record size limits while it streams, then commits it to the draft that
// target finds. On failure it has answered and returns nil.
func (s *Server) upload(ctx context.Context, w http.ResponseWriter, owner int, target uploadTarget, key string, body io.Reader, contentLength int64) (*record, *file) {
	if fe := checkKey(key); fe != nil {
		writeLegacyError(w, http.StatusBadRequest, fe.Messages[0])
		return nil, nil
	}
	s.mu.Lock()
	room, ok := s.checkUpload(w, owner, target(), key)
	s.mu.Unlock()
	if !ok {
		return nil, nil
	}
	if contentLength > room {
		writeLegacyError(w, http.StatusBadRequest, msgQuotaExceeded)
		return nil, nil
	}

	tmp, err := os.CreateTemp(filepath.Join(s.dir, tmpDir), "upload-*")
	if err != nil {
		s.write(w, answer{err: fmt.Errorf("creating an upload file: %w", err)})
		return nil, nil
	}
	defer func() { _ = os.Remove(tmp.Name()) }()
	h := md5.New()
	src := io.LimitReader(body, room+1)
	if corrupt, _ := ctx.Value(wrongChecksumKey{}).(bool); corrupt {
		src = &flipFirstByte{r: src}
	}
	n, err := io.CopyBuffer(io.MultiWriter(tmp, h), src, make([]byte, 64<<10))
	cerr := tmp.Close()
	switch {
	case err != nil:
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeLegacyError(w, http.StatusBadRequest, msgQuotaExceeded)
		} else {
			writeLegacyError(w, http.StatusBadRequest, msgSizeMismatch)
		}
		return nil, nil
	case n > room:
		writeLegacyError(w, http.StatusBadRequest, msgQuotaExceeded)
		return nil, nil
	case contentLength >= 0 && n != contentLength:
		writeLegacyError(w, http.StatusBadRequest, msgSizeMismatch)
		return nil, nil
	case n == 0:
		writeLegacyError(w, http.StatusBadRequest, msgEmptyFile)
		return nil, nil
	case cerr != nil:
		s.write(w, answer{err: fmt.Errorf("writing an upload: %w", cerr)})
		return nil, nil
	}
	sum := hex.EncodeToString(h.Sum(nil))
	blob := newUUID()
	if err := os.Rename(tmp.Name(), s.blobPath(blob)); err != nil {
		s.write(w, answer{err: fmt.Errorf("storing an upload: %w", err)})
		return nil, nil
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	rec := target()
	room, ok = s.checkUpload(w, owner, rec, key)
	if ok && n > room {
		writeLegacyError(w, http.StatusBadRequest, msgQuotaExceeded)
		ok = false
	}
	if !ok {
		s.gcBlob(blob)
		return nil, nil
	}
	now := s.now()
	f := &file{ID: newUUID(), Key: key, Size: n, MD5: sum, Blob: blob, VersionID: newUUID(), Created: now, Updated: now}
	if old := rec.file(key); old != nil {
		oldBlob := old.Blob
		f.Created = old.Created
		*old = *f
		f = old
		s.gcBlob(oldBlob)
	} else {
		rec.Files = append(rec.Files, f)
	}
	rec.Updated = now
	if err := s.save(); err != nil {
		s.write(w, answer{err: err})
		return nil, nil
	}
	return rec, f
}

// checkUpload checks that key may be written to rec and returns the bytes
// left under the record size limit. Called with s.mu held.
func (s *Server) checkUpload(w http.ResponseWriter, owner int, rec *record, key string) (int64, bool) {
	switch {
	case rec == nil:
		writeLegacyError(w, http.StatusNotFound, msgRouteNotFound)
		return 0, false
	case rec.Owner != owner:
		writeLegacyError(w, http.StatusForbidden, msgPermissionDenied)
		return 0, false
	case rec.Published:
		writeLegacyError(w, http.StatusForbidden, msgBucketLocked)
		return 0, false
	}
	if rec.file(key) == nil && len(rec.Files)+1 > s.maxFiles {
		writeLegacyError(w, http.StatusBadRequest, fmt.Sprintf("Uploading the selected files would result in %d files (max is %d).", len(rec.Files)+1, s.maxFiles))
		return 0, false
	}
	room := s.maxRecordSize - rec.totalSize(key)
	if room <= 0 {
		writeLegacyError(w, http.StatusBadRequest, msgQuotaExceeded)
		return 0, false
	}
	return room, true
}

type flipFirstByte struct {
	r    io.Reader
	done bool
}

func (f *flipFirstByte) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if n > 0 && !f.done {
		p[0] ^= 0xff
		f.done = true
	}
	return n, err
}

// putBucketObject is PUT /api/files/<bucket>/<key> (fixture 05).
func (s *Server) putBucketObject(w http.ResponseWriter, r *http.Request) {
	owner, ok := s.auth(w, r)
	if !ok {
		return
	}
	bucket := r.PathValue("bucket")
	target := func() *record { return s.st.byBucket[bucket] }
	rec, f := s.upload(r.Context(), w, owner, target, r.PathValue("key"), r.Body, r.ContentLength)
	if f == nil {
		return
	}
	s.mu.Lock()
	body := s.bucketObject(baseURL(r), rec, f)
	s.mu.Unlock()
	writeJSON(w, http.StatusCreated, body)
}

// postDepositionFile is the old multipart upload, POST
// /api/deposit/depositions/<id>/files with form fields "name" and "file".
func (s *Server) postDepositionFile(w http.ResponseWriter, r *http.Request) {
	owner, ok := s.auth(w, r)
	if !ok {
		return
	}
	id, _ := parseID(r.PathValue("id"))
	target := func() *record { return s.st.byID[id] }
	mr, err := r.MultipartReader()
	if err != nil {
		writeLegacyError(w, http.StatusBadRequest, msgBadRequest)
		return
	}
	name := ""
	for {
		part, err := mr.NextPart()
		if err != nil {
			writeValidationError(w, fieldError{Field: "file", Messages: []string{"Missing data for required field."}})
			return
		}
		switch part.FormName() {
		case "name":
			b, _ := io.ReadAll(io.LimitReader(part, maxKeyLen+1))
			name = string(b)
		case "file":
			key := name
			if key == "" {
				key = part.FileName()
			}
			rec, f := s.upload(r.Context(), w, owner, target, key, part, -1)
			if f == nil {
				return
			}
			s.mu.Lock()
			body := s.depositFile(baseURL(r), rec, f)
			s.mu.Unlock()
			writeJSON(w, http.StatusCreated, body)
			return
		}
	}
}

func (s *Server) deleteBucketObject(w http.ResponseWriter, r *http.Request) {
	owner, ok := s.auth(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rec := s.st.byBucket[r.PathValue("bucket")]
	switch {
	case rec == nil:
		writeLegacyError(w, http.StatusNotFound, msgRouteNotFound)
		return
	case rec.Owner != owner:
		writeLegacyError(w, http.StatusForbidden, msgPermissionDenied)
		return
	case rec.Published:
		writeLegacyError(w, http.StatusForbidden, msgBucketLocked)
		return
	}
	f := rec.file(r.PathValue("key"))
	if f == nil {
		writeLegacyError(w, http.StatusNotFound, msgRouteNotFound)
		return
	}
	s.removeFile(rec, f)
	s.write(w, answer{status: http.StatusNoContent, err: s.save()})
}

// listBucket is GET /api/files/<bucket>.
func (s *Server) listBucket(w http.ResponseWriter, r *http.Request) {
	owner, ok := s.auth(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rec := s.st.byBucket[r.PathValue("bucket")]
	if rec == nil || rec.Owner != owner {
		writeLegacyError(w, http.StatusNotFound, msgRouteNotFound)
		return
	}
	base := baseURL(r)
	contents := make([]bucketObjectJSON, 0, len(rec.Files))
	for _, f := range rec.Files {
		contents = append(contents, s.bucketObject(base, rec, f))
	}
	s.write(w, answer{status: http.StatusOK, body: map[string]any{
		"id":       rec.Bucket,
		"contents": contents,
		"links":    map[string]string{"self": fmt.Sprintf("%s/api/files/%s", base, rec.Bucket)},
	}})
}

// download is what a file route serves, captured under s.mu.
type download struct {
	path    string
	key     string
	size    int64
	updated time.Time
}

func (s *Server) downloadOf(f *file) download {
	return download{path: s.blobPath(f.Blob), key: f.Key, size: f.Size, updated: f.Updated}
}

// publishedFile finds a file of a published record. Called with s.mu held.
func (s *Server) publishedFile(r *http.Request) (download, bool) {
	id, ok := parseID(r.PathValue("id"))
	rec := s.st.byID[id]
	if !ok || rec == nil || !rec.Published {
		return download{}, false
	}
	f := rec.file(r.PathValue("key"))
	if f == nil {
		return download{}, false
	}
	return s.downloadOf(f), true
}

// recordFileUI is GET /records/<id>/files/<key>[?download=1]: the route that
// honours Range (zenodo/zenodo#2593; fixture 90).
func (s *Server) recordFileUI(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	d, ok := s.publishedFile(r)
	s.mu.Unlock()
	if !ok {
		writeBody(w, http.StatusNotFound, "text/html; charset=utf-8", []byte("<!DOCTYPE html>\n<html><head><title>Not found</title></head><body><h1>Not found</h1></body></html>\n"))
		return
	}
	disp := "inline"
	if _, dl := r.URL.Query()["download"]; dl {
		disp = mime.FormatMediaType("attachment", map[string]string{"filename": d.key})
	}
	s.serveFile(w, r, d, true, disp)
}

// recordFileContent is GET /api/records/<id>/files/<key>/content: it
// ignores Range (zenodo/zenodo#2593, #2575).
func (s *Server) recordFileContent(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	d, ok := s.publishedFile(r)
	s.mu.Unlock()
	if !ok {
		writeLegacyError(w, http.StatusNotFound, msgPIDNotFound)
		return
	}
	s.serveFile(w, r, d, false, "inline")
}

// draftFileContent is GET /api/records/<id>/draft/files/<key>/content, the
// links.download of a deposition's files (fixture 02). Owner only.
func (s *Server) draftFileContent(w http.ResponseWriter, r *http.Request) {
	owner, ok := s.auth(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	rec := s.lookup(w, r, owner)
	if rec == nil {
		s.mu.Unlock()
		return
	}
	f := rec.file(r.PathValue("key"))
	var d download
	if f != nil {
		d = s.downloadOf(f)
	}
	s.mu.Unlock()
	if f == nil {
		writeLegacyError(w, http.StatusNotFound, msgRouteNotFound)
		return
	}
	s.serveFile(w, r, d, false, "inline")
}

// getBucketObject is GET /api/files/<bucket>/<key>. Owner only.
func (s *Server) getBucketObject(w http.ResponseWriter, r *http.Request) {
	owner, ok := s.auth(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	rec := s.st.byBucket[r.PathValue("bucket")]
	var f *file
	if rec != nil && rec.Owner == owner {
		f = rec.file(r.PathValue("key"))
	}
	var d download
	if f != nil {
		d = s.downloadOf(f)
	}
	s.mu.Unlock()
	if f == nil {
		writeLegacyError(w, http.StatusNotFound, msgRouteNotFound)
		return
	}
	s.serveFile(w, r, d, false, "inline")
}

// oldRecordFile redirects the pre-2023 singular /record/<id>/files/<key>.
func (s *Server) oldRecordFile(w http.ResponseWriter, r *http.Request) {
	u := "/records/" + r.PathValue("id") + "/files/" + escapeKey(r.PathValue("key"))
	if r.URL.RawQuery != "" {
		u += "?" + r.URL.RawQuery
	}
	http.Redirect(w, r, u, http.StatusMovedPermanently)
}

// serveFile streams a file from disk (never whole in memory). With
// honourRange a single Range is answered 206 (or 416); other Range headers
// (several ranges, bad syntax) get the whole file with 200.
func (s *Server) serveFile(w http.ResponseWriter, r *http.Request, d download, honourRange bool, disposition string) {
	fh, err := os.Open(d.path)
	if err != nil {
		writeLegacyError(w, http.StatusNotFound, msgPIDNotFound)
		return
	}
	defer func() { _ = fh.Close() }()
	h := w.Header()
	h.Set("Content-Type", mimeType(d.key))
	h.Set("Content-Disposition", disposition)
	h.Set("Last-Modified", d.updated.UTC().Format(http.TimeFormat))
	h.Set("X-Download-Options", "noopen")
	h.Set("X-Permitted-Cross-Domain-Policies", "none")

	start, length, status := int64(0), d.size, http.StatusOK
	if rh := r.Header.Get("Range"); honourRange && rh != "" && ifRangeMatches(r, d.updated) {
		br, st := parseRange(rh, d.size)
		switch st {
		case http.StatusPartialContent:
			start, length, status = br.start, br.length, st
			h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", br.start, br.start+br.length-1, d.size))
		case http.StatusRequestedRangeNotSatisfiable:
			h.Set("Content-Range", fmt.Sprintf("bytes */%d", d.size))
			h.Set("Content-Length", "0")
			w.WriteHeader(st)
			return
		}
	}
	if r.Method == http.MethodHead && s.unreliableHEAD {
		h.Del("Content-Length")
	} else {
		h.Set("Content-Length", strconv.FormatInt(length, 10))
	}
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return
	}
	_, err = io.CopyBuffer(w, io.NewSectionReader(fh, start, length), make([]byte, 32<<10))
	if err != nil && !errors.Is(err, errCut) {
		s.logf("zenodotest: sending %s: %v", d.key, err)
	}
}

// ifRangeMatches implements If-Range with the only validator the fake has,
// Last-Modified (no ETag on downloads, as fixture 90).
func ifRangeMatches(r *http.Request, mod time.Time) bool {
	ir := r.Header.Get("If-Range")
	if ir == "" {
		return true
	}
	t, err := http.ParseTime(ir)
	return err == nil && !mod.Truncate(time.Second).After(t)
}

type byteRange struct{ start, length int64 }

// parseRange parses a Range header for a file of size bytes. It returns 206
// and the range for one satisfiable range, 416 for one unsatisfiable range,
// and 200 (serve everything) for anything else: several ranges, another
// unit, or bad syntax, which RFC 9110 lets a server ignore.
func parseRange(h string, size int64) (byteRange, int) {
	unit, spec, ok := strings.Cut(strings.TrimSpace(h), "=")
	if !ok || !strings.EqualFold(strings.TrimSpace(unit), "bytes") {
		return byteRange{}, http.StatusOK
	}
	spec = strings.TrimSpace(spec)
	if strings.Contains(spec, ",") {
		return byteRange{}, http.StatusOK
	}
	first, last, ok := strings.Cut(spec, "-")
	if !ok {
		return byteRange{}, http.StatusOK
	}
	first, last = strings.TrimSpace(first), strings.TrimSpace(last)
	if first == "" {
		n, err := strconv.ParseInt(last, 10, 64)
		if err != nil || n < 0 || !allDigits(last) {
			return byteRange{}, http.StatusOK
		}
		if n == 0 || size == 0 {
			return byteRange{}, http.StatusRequestedRangeNotSatisfiable
		}
		n = min(n, size)
		return byteRange{start: size - n, length: n}, http.StatusPartialContent
	}
	a, err := strconv.ParseInt(first, 10, 64)
	if err != nil || !allDigits(first) {
		return byteRange{}, http.StatusOK
	}
	end := size - 1
	if last != "" {
		b, err := strconv.ParseInt(last, 10, 64)
		if err != nil || !allDigits(last) || b < a {
			return byteRange{}, http.StatusOK
		}
		end = min(b, size-1)
	}
	if a >= size {
		return byteRange{}, http.StatusRequestedRangeNotSatisfiable
	}
	return byteRange{start: a, length: end - a + 1}, http.StatusPartialContent
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
