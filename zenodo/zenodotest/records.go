package zenodotest

import (
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
)

// maxResultWindow is OpenSearch's index.max_result_window behind Zenodo:
// page*size past it is refused.
const maxResultWindow = 10000

// getRecord is GET /api/records/<id> (fixtures 10, 81). A concept recid is
// 404 by default (see WithConceptRedirect); a draft's id is 404 too.
func (s *Server) getRecord(w http.ResponseWriter, r *http.Request) {
	id, ok := parseID(r.PathValue("id"))
	s.mu.Lock()
	defer s.mu.Unlock()
	rec := s.st.byID[id]
	switch {
	case ok && rec != nil && rec.Published:
		s.write(w, answer{status: http.StatusOK, body: s.recordView(baseURL(r), rec), etag: rec.Revision})
	case ok && rec != nil:
		writeLegacyError(w, http.StatusNotFound, msgPIDUnregistered)
	case ok && s.conceptRedirect && s.st.latest(id) != nil:
		http.Redirect(w, r, fmt.Sprintf("/api/records/%d", s.st.latest(id).ID), http.StatusFound)
	default:
		writeLegacyError(w, http.StatusNotFound, msgPIDNotFound)
	}
}

// versionsLatest is GET /api/records/<id>/versions/latest, for a version or
// a concept recid: 302 to the newest published version, as
// invenio-drafts-resources' read_latest (which resolves a parent id too).
func (s *Server) versionsLatest(w http.ResponseWriter, r *http.Request) {
	id, ok := parseID(r.PathValue("id"))
	s.mu.Lock()
	defer s.mu.Unlock()
	concept := id
	if rec := s.st.byID[id]; rec != nil {
		if !rec.Published {
			writeLegacyError(w, http.StatusNotFound, msgPIDUnregistered)
			return
		}
		concept = rec.ConceptID
	}
	latest := s.st.latest(concept)
	if !ok || latest == nil {
		writeLegacyError(w, http.StatusNotFound, msgPIDNotFound)
		return
	}
	http.Redirect(w, r, fmt.Sprintf("%s/api/records/%d", baseURL(r), latest.ID), http.StatusFound)
}

// paging reads page and size (defaults 1 and 10).
func paging(w http.ResponseWriter, q url.Values) (page, size int, ok bool) {
	page, size = 1, 10
	for _, p := range []struct {
		name string
		v    *int
	}{{"page", &page}, {"size", &size}} {
		if s := q.Get(p.name); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 1 {
				writeValidationError(w, fieldError{Field: p.name, Messages: []string{"Must be greater than or equal to 1."}})
				return 0, 0, false
			}
			*p.v = n
		}
	}
	if page > maxResultWindow || size > maxResultWindow || page*size > maxResultWindow {
		writeLegacyError(w, http.StatusBadRequest, fmt.Sprintf("Maximum number of %d results have been reached.", maxResultWindow))
		return 0, 0, false
	}
	return page, size, true
}

// pageOf slices one page out of n items.
func pageOf(n, page, size int) (lo, hi int) {
	lo = min((page-1)*size, n)
	return lo, min(lo+size, n)
}

// pageLinks builds self/prev/next links of a paged listing.
func pageLinks(base, path string, q url.Values, page, size, total int) map[string]string {
	link := func(p int) string {
		v := url.Values{}
		for k, vs := range q {
			v[k] = append([]string(nil), vs...)
		}
		v.Set("page", strconv.Itoa(p))
		v.Set("size", strconv.Itoa(size))
		return base + path + "?" + v.Encode()
	}
	links := map[string]string{"self": link(page)}
	if page > 1 {
		links["prev"] = link(page - 1)
	}
	if page*size < total {
		links["next"] = link(page + 1)
	}
	return links
}

// versions is GET /api/records/<id>/versions?size=&page=&sort=: the
// published versions of the record's concept, newest first (sort=version,
// the default) or oldest first (sort=oldest).
func (s *Server) versions(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	page, size, ok := paging(w, q)
	if !ok {
		return
	}
	sortBy := q.Get("sort")
	if sortBy == "" {
		sortBy = "version"
	}
	if sortBy != "version" && sortBy != "oldest" && sortBy != "newest" && sortBy != "mostrecent" {
		writeValidationError(w, fieldError{Field: "sort", Messages: []string{"Invalid sort option."}})
		return
	}
	id, idOK := parseID(r.PathValue("id"))
	s.mu.Lock()
	defer s.mu.Unlock()
	rec := s.st.byID[id]
	if !idOK || rec == nil || !rec.Published {
		writeLegacyError(w, http.StatusNotFound, msgPIDNotFound)
		return
	}
	vs := s.st.versions(rec.ConceptID)
	if sortBy != "oldest" {
		sort.Slice(vs, func(i, j int) bool { return vs[i].Index > vs[j].Index })
	}
	lo, hi := pageOf(len(vs), page, size)
	base := baseURL(r)
	hits := make([]recordJSON, 0, hi-lo)
	for _, v := range vs[lo:hi] {
		hits = append(hits, s.recordView(base, v))
	}
	s.write(w, answer{status: http.StatusOK, body: map[string]any{
		"hits":   map[string]any{"hits": hits, "total": len(vs)},
		"links":  pageLinks(base, r.URL.Path, q, page, size, len(vs)),
		"sortBy": sortBy,
	}})
}

// recordFiles is GET /api/records/<id>/files (RDM files listing).
func (s *Server) recordFiles(w http.ResponseWriter, r *http.Request) {
	id, ok := parseID(r.PathValue("id"))
	s.mu.Lock()
	defer s.mu.Unlock()
	rec := s.st.byID[id]
	if !ok || rec == nil || !rec.Published {
		writeLegacyError(w, http.StatusNotFound, msgPIDNotFound)
		return
	}
	base := baseURL(r)
	entries := make([]map[string]any, 0, len(rec.Files))
	for _, f := range rec.Files {
		entries = append(entries, recordFileEntry(base, rec, f))
	}
	api := fmt.Sprintf("%s/api/records/%d", base, rec.ID)
	s.write(w, answer{status: http.StatusOK, body: map[string]any{
		"enabled":         true,
		"links":           map[string]string{"self": api + "/files", "archive": api + "/files-archive"},
		"entries":         entries,
		"default_preview": nil,
		"order":           []string{},
	}})
}

// recordFile is GET /api/records/<id>/files/<key> (one entry's metadata).
func (s *Server) recordFile(w http.ResponseWriter, r *http.Request) {
	id, ok := parseID(r.PathValue("id"))
	s.mu.Lock()
	defer s.mu.Unlock()
	rec := s.st.byID[id]
	if !ok || rec == nil || !rec.Published || rec.file(r.PathValue("key")) == nil {
		writeLegacyError(w, http.StatusNotFound, msgPIDNotFound)
		return
	}
	s.write(w, answer{status: http.StatusOK, body: recordFileEntry(baseURL(r), rec, rec.file(r.PathValue("key")))})
}
