package zenodotest

import "net/http"

// routes registers Zenodo's routes. GET patterns also answer HEAD.
func (s *Server) routes() *http.ServeMux {
	m := http.NewServeMux()
	// Legacy deposit API.
	m.HandleFunc("POST /api/deposit/depositions", s.createDeposition)
	m.HandleFunc("GET /api/deposit/depositions", s.listDepositions)
	m.HandleFunc("GET /api/deposit/depositions/{id}", s.getDeposition)
	m.HandleFunc("PUT /api/deposit/depositions/{id}", s.putDeposition)
	m.HandleFunc("DELETE /api/deposit/depositions/{id}", s.discard)
	m.HandleFunc("GET /api/deposit/depositions/{id}/files", s.listDepositionFiles)
	m.HandleFunc("POST /api/deposit/depositions/{id}/files", s.postDepositionFile)
	m.HandleFunc("GET /api/deposit/depositions/{id}/files/{fid}", s.getDepositionFile)
	m.HandleFunc("DELETE /api/deposit/depositions/{id}/files/{fid}", s.deleteDepositionFile)
	m.HandleFunc("POST /api/deposit/depositions/{id}/actions/{action}", s.action)
	// Legacy files REST (buckets).
	m.HandleFunc("GET /api/files/{bucket}", s.listBucket)
	m.HandleFunc("PUT /api/files/{bucket}/{key}", s.putBucketObject)
	m.HandleFunc("GET /api/files/{bucket}/{key}", s.getBucketObject)
	m.HandleFunc("DELETE /api/files/{bucket}/{key}", s.deleteBucketObject)
	// Records API.
	m.HandleFunc("GET /api/records", s.searchRecords)
	m.HandleFunc("GET /api/records/{$}", s.searchRecords)
	m.HandleFunc("GET /api/records/{id}", s.getRecord)
	m.HandleFunc("GET /api/records/{id}/versions", s.versions)
	m.HandleFunc("GET /api/records/{id}/versions/latest", s.versionsLatest)
	m.HandleFunc("GET /api/records/{id}/files", s.recordFiles)
	m.HandleFunc("GET /api/records/{id}/files/{key}", s.recordFile)
	m.HandleFunc("GET /api/records/{id}/files/{key}/content", s.recordFileContent)
	m.HandleFunc("GET /api/records/{id}/draft/files/{key}/content", s.draftFileContent)
	// Web routes serving files.
	m.HandleFunc("GET /records/{id}/files/{key}", s.recordFileUI)
	m.HandleFunc("GET /record/{id}/files/{key}", s.oldRecordFile)
	m.HandleFunc("/", s.notFound(m))
	return m
}

// notFound answers unknown routes with Flask's 404, or 405 when the path
// exists for another method.
func (s *Server) notFound(m *http.ServeMux) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		for _, method := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete} {
			if method == r.Method {
				continue
			}
			probe := r.Clone(r.Context())
			probe.Method = method
			if _, pattern := m.Handler(probe); pattern != "/" && pattern != "" {
				writeLegacyError(w, http.StatusMethodNotAllowed, msgMethodNotAllowed)
				return
			}
		}
		writeLegacyError(w, http.StatusNotFound, msgRouteNotFound)
	}
}
