package zenodotest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// maxJSONBody bounds metadata request bodies.
const maxJSONBody = 8 << 20

// uploadTypes are the legacy metadata.upload_type values.
var uploadTypes = map[string]bool{
	"publication": true, "poster": true, "presentation": true, "dataset": true, "image": true,
	"video": true, "software": true, "lesson": true, "physicalobject": true, "other": true,
	"workflow": true, "model": true,
}

var accessRights = map[string]bool{"open": true, "embargoed": true, "restricted": true, "closed": true}

func parseID(s string) (int64, bool) {
	id, err := strconv.ParseInt(s, 10, 64)
	return id, err == nil && id > 0
}

// readMetadata decodes {"metadata": {...}} from a request body. An empty
// body is an empty metadata (as POST /api/deposit/depositions with {}).
func readMetadata(w http.ResponseWriter, r *http.Request) (map[string]any, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxJSONBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeLegacyError(w, http.StatusRequestEntityTooLarge, http.StatusText(http.StatusRequestEntityTooLarge))
		} else {
			writeLegacyError(w, http.StatusBadRequest, msgBadRequest)
		}
		return nil, false
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return map[string]any{}, true
	}
	var doc map[string]any
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil || doc == nil {
		writeLegacyError(w, http.StatusBadRequest, msgBadRequest)
		return nil, false
	}
	raw, ok := doc["metadata"]
	if !ok || raw == nil {
		return map[string]any{}, true
	}
	md, ok := raw.(map[string]any)
	if !ok {
		writeValidationError(w, fieldError{Field: "metadata", Messages: []string{"Not a valid mapping type."}})
		return nil, false
	}
	if errs := checkMetadata(md); len(errs) > 0 {
		writeValidationError(w, errs...)
		return nil, false
	}
	delete(md, "prereserve_doi")
	return md, true
}

// checkMetadata validates the few fields whose values Zenodo constrains.
func checkMetadata(md map[string]any) []fieldError {
	var errs []fieldError
	if v, ok := md["upload_type"]; ok {
		if t, _ := v.(string); !uploadTypes[t] {
			errs = append(errs, fieldError{Field: "metadata.upload_type", Messages: []string{"Invalid value."}})
		}
	}
	if v, ok := md["access_right"]; ok {
		if a, _ := v.(string); !accessRights[a] {
			errs = append(errs, fieldError{Field: "metadata.access_right", Messages: []string{"Invalid value."}})
		}
	}
	if v, ok := md["creators"]; ok {
		list, ok := v.([]any)
		if !ok {
			errs = append(errs, fieldError{Field: "metadata.creators", Messages: []string{"Not a valid list."}})
		}
		for i, c := range list {
			m, ok := c.(map[string]any)
			if !ok || stringField(m, "name") == "" {
				errs = append(errs, fieldError{Field: fmt.Sprintf("metadata.creators.%d.name", i), Messages: []string{"Missing data for required field."}})
			}
		}
	}
	if v, ok := md["doi"]; ok {
		if _, ok := v.(string); !ok {
			errs = append(errs, fieldError{Field: "metadata.doi", Messages: []string{"Not a valid string."}})
		}
	}
	return errs
}

// takeDOI moves metadata.doi into r.DOI (pids.doi in Zenodo).
func takeDOI(r *record, md map[string]any) *fieldError {
	d, _ := md["doi"].(string)
	delete(md, "doi")
	if r.Published {
		if d != "" && d != r.DOI {
			return &fieldError{Field: "metadata.doi", Messages: []string{"The DOI of a published record cannot be changed."}}
		}
		return nil
	}
	r.DOI = d
	return nil
}

// lookup finds the caller's deposition, or answers 404/403. Called with
// s.mu held.
func (s *Server) lookup(w http.ResponseWriter, r *http.Request, owner int) *record {
	id, ok := parseID(r.PathValue("id"))
	rec := s.st.byID[id]
	if !ok || rec == nil {
		writeLegacyError(w, http.StatusNotFound, msgPIDNotFound)
		return nil
	}
	if rec.Owner != owner {
		writeLegacyError(w, http.StatusForbidden, msgPermissionDenied)
		return nil
	}
	return rec
}

// lockedRecord authenticates r, locks s.mu and looks up the caller's
// deposition named by the path. On success the caller holds s.mu and must
// unlock it; on failure the error response is written and s.mu is not held.
func (s *Server) lockedRecord(w http.ResponseWriter, r *http.Request) *record {
	owner, ok := s.auth(w, r)
	if !ok {
		return nil
	}
	s.mu.Lock()
	rec := s.lookup(w, r, owner)
	if rec == nil {
		s.mu.Unlock()
	}
	return rec
}

// answer is a response computed under s.mu and written after unlocking.
type answer struct {
	status int
	body   any
	etag   int
	err    error
}

func (s *Server) write(w http.ResponseWriter, a answer) {
	if a.err != nil {
		s.logf("zenodotest: %v", a.err)
		writeInternalError(w)
		return
	}
	if a.status == http.StatusNoContent {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if a.etag > 0 {
		w.Header().Set("ETag", fmt.Sprintf("%q", strconv.Itoa(a.etag)))
	}
	writeJSON(w, a.status, a.body)
}

func (s *Server) createDeposition(w http.ResponseWriter, r *http.Request) {
	owner, ok := s.auth(w, r)
	if !ok {
		return
	}
	md, ok := readMetadata(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	now := s.now()
	rec := &record{
		ConceptID: s.st.newID(),
		ID:        s.st.newID(),
		Owner:     owner,
		Bucket:    newUUID(),
		Metadata:  md,
		Files:     []*file{},
		Revision:  1,
		Created:   now,
		Updated:   now,
		IndexedAt: now.Add(s.indexDelay),
	}
	_ = takeDOI(rec, md)
	s.st.add(rec)
	a := answer{status: http.StatusCreated, body: s.deposition(baseURL(r), rec), etag: rec.Revision, err: s.save()}
	s.mu.Unlock()
	s.write(w, a)
}

func (s *Server) getDeposition(w http.ResponseWriter, r *http.Request) {
	rec := s.lockedRecord(w, r)
	if rec == nil {
		return
	}
	a := answer{status: http.StatusOK, body: s.deposition(baseURL(r), rec), etag: rec.Revision}
	s.mu.Unlock()
	s.write(w, a)
}

func (s *Server) putDeposition(w http.ResponseWriter, r *http.Request) {
	owner, ok := s.auth(w, r)
	if !ok {
		return
	}
	md, ok := readMetadata(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rec := s.lookup(w, r, owner)
	if rec == nil {
		return
	}
	if rec.Published && !rec.Editing {
		writeLegacyError(w, http.StatusForbidden, msgPermissionDenied)
		return
	}
	if fe := takeDOI(rec, md); fe != nil {
		writeValidationError(w, *fe)
		return
	}
	rec.Metadata = md
	rec.Updated = s.now()
	rec.Revision++
	a := answer{status: http.StatusOK, body: s.deposition(baseURL(r), rec), etag: rec.Revision, err: s.save()}
	s.write(w, a)
}

// deleteRecord removes an unpublished draft and its unshared blobs. Called
// with s.mu held.
func (s *Server) deleteRecord(rec *record) {
	s.st.remove(rec)
	for _, f := range rec.Files {
		s.gcBlob(f.Blob)
	}
}

// discard deletes a draft or reverts an edit; answers 204.
func (s *Server) discard(w http.ResponseWriter, r *http.Request) {
	rec := s.lockedRecord(w, r)
	if rec == nil {
		return
	}
	defer s.mu.Unlock()
	switch {
	case !rec.Published:
		s.deleteRecord(rec)
	case rec.Editing:
		rec.Editing = false
		rec.Metadata = copyMap(rec.PublishedMetadata)
		rec.Updated = s.now()
		rec.Revision++
	default:
		writeLegacyError(w, http.StatusForbidden, msgPermissionDenied)
		return
	}
	s.write(w, answer{status: http.StatusNoContent, err: s.save()})
}

func (s *Server) action(w http.ResponseWriter, r *http.Request) {
	switch r.PathValue("action") {
	case "publish":
		s.publish(w, r)
	case "newversion":
		s.newVersion(w, r)
	case "edit":
		s.edit(w, r)
	case "discard":
		s.discard(w, r)
	default:
		writeLegacyError(w, http.StatusNotFound, msgRouteNotFound)
	}
}

// checkPublishable lists what Zenodo's publish validation would reject.
func checkPublishable(rec *record) []fieldError {
	var errs []fieldError
	missing := []string{"Missing data for required field."}
	if stringField(rec.Metadata, "title") == "" {
		errs = append(errs, fieldError{Field: "metadata.title", Messages: missing})
	}
	if stringField(rec.Metadata, "upload_type") == "" {
		errs = append(errs, fieldError{Field: "metadata.upload_type", Messages: missing})
	}
	if c, _ := rec.Metadata["creators"].([]any); len(c) == 0 {
		errs = append(errs, fieldError{Field: "metadata.creators", Messages: missing})
	}
	if len(rec.Files) == 0 {
		errs = append(errs, fieldError{Field: "files.enabled", Messages: []string{"Missing uploaded files. To disable files for this record please mark it as metadata-only."}})
	}
	return errs
}

func (s *Server) publish(w http.ResponseWriter, r *http.Request) {
	rec := s.lockedRecord(w, r)
	if rec == nil {
		return
	}
	defer s.mu.Unlock()
	if rec.Published && !rec.Editing {
		writeLegacyError(w, http.StatusBadRequest, "The deposition is already published.")
		return
	}
	if errs := checkPublishable(rec); len(errs) > 0 {
		writeValidationError(w, errs...)
		return
	}
	now := s.now()
	if !rec.Published {
		if rec.DOI == "" {
			rec.DOI = s.doi(rec.ID)
		}
		if stringField(rec.Metadata, "publication_date") == "" {
			rec.Metadata["publication_date"] = now.UTC().Format(time.DateOnly)
		}
		rec.Index = len(s.st.versions(rec.ConceptID))
		rec.Published = true
		rec.PublishedAt = now
		rec.IndexedAt = now.Add(s.indexDelay)
	}
	rec.Editing = false
	rec.PublishedMetadata = copyMap(rec.Metadata)
	rec.Updated = now
	rec.Revision++
	s.write(w, answer{status: http.StatusAccepted, body: s.deposition(baseURL(r), rec), etag: rec.Revision, err: s.save()})
}

// newVersion follows invenio-rdm-records: an open draft of the concept is
// returned instead of a new one, and the legacy API then imports the files
// of the latest version into it, which fails with "Please remove all files
// first." when the draft already has files.
func (s *Server) newVersion(w http.ResponseWriter, r *http.Request) {
	rec := s.lockedRecord(w, r)
	if rec == nil {
		return
	}
	defer s.mu.Unlock()
	if !rec.Published {
		writeLegacyError(w, http.StatusNotFound, msgPIDUnregistered)
		return
	}
	latest := s.st.latest(rec.ConceptID)
	now := s.now()
	draft := s.st.openDraft(rec.ConceptID)
	if draft != nil && len(draft.Files) > 0 {
		writeValidationError(w, fieldError{Field: "files.enabled", Messages: []string{"Please remove all files first."}})
		return
	}
	if draft == nil {
		md := copyMap(latest.PublishedMetadata)
		delete(md, "version")
		md["publication_date"] = now.UTC().Format(time.DateOnly)
		draft = &record{
			ID:        s.st.newID(),
			ConceptID: rec.ConceptID,
			Owner:     rec.Owner,
			Bucket:    newUUID(),
			Metadata:  md,
			Index:     latest.Index + 1,
			Revision:  1,
			Created:   now,
			Updated:   now,
			IndexedAt: now.Add(s.indexDelay),
		}
		s.st.add(draft)
	}
	draft.Files = make([]*file, 0, len(latest.Files))
	for _, f := range latest.Files {
		c := *f
		c.VersionID = newUUID()
		draft.Files = append(draft.Files, &c)
	}
	draft.Updated = now
	s.write(w, answer{status: http.StatusCreated, body: s.deposition(baseURL(r), draft), etag: draft.Revision, err: s.save()})
}

func (s *Server) edit(w http.ResponseWriter, r *http.Request) {
	rec := s.lockedRecord(w, r)
	if rec == nil {
		return
	}
	defer s.mu.Unlock()
	if !rec.Published {
		writeLegacyError(w, http.StatusNotFound, msgPIDUnregistered)
		return
	}
	if !rec.Editing {
		rec.Editing = true
		rec.Metadata = copyMap(rec.PublishedMetadata)
		rec.Updated = s.now()
		rec.Revision++
	}
	s.write(w, answer{status: http.StatusCreated, body: s.deposition(baseURL(r), rec), etag: rec.Revision, err: s.save()})
}

func (s *Server) listDepositionFiles(w http.ResponseWriter, r *http.Request) {
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
	base := baseURL(r)
	list := make([]depositFileJSON, 0, len(rec.Files))
	for _, f := range rec.Files {
		list = append(list, s.depositFile(base, rec, f))
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, list)
}

func (s *Server) getDepositionFile(w http.ResponseWriter, r *http.Request) {
	rec := s.lockedRecord(w, r)
	if rec == nil {
		return
	}
	defer s.mu.Unlock()
	f := rec.fileByID(r.PathValue("fid"))
	if f == nil {
		writeLegacyError(w, http.StatusNotFound, msgRouteNotFound)
		return
	}
	s.write(w, answer{status: http.StatusOK, body: s.depositFile(baseURL(r), rec, f)})
}

func (s *Server) deleteDepositionFile(w http.ResponseWriter, r *http.Request) {
	rec := s.lockedRecord(w, r)
	if rec == nil {
		return
	}
	defer s.mu.Unlock()
	f := rec.fileByID(r.PathValue("fid"))
	if f == nil {
		writeLegacyError(w, http.StatusNotFound, msgRouteNotFound)
		return
	}
	if rec.Published {
		writeLegacyError(w, http.StatusForbidden, msgBucketLocked)
		return
	}
	s.removeFile(rec, f)
	s.write(w, answer{status: http.StatusNoContent, err: s.save()})
}

// removeFile drops f from a draft. Called with s.mu held.
func (s *Server) removeFile(rec *record, f *file) {
	for i, x := range rec.Files {
		if x == f {
			rec.Files = append(rec.Files[:i], rec.Files[i+1:]...)
			break
		}
	}
	rec.Updated = s.now()
	s.gcBlob(f.Blob)
}
