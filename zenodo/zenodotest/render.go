package zenodotest

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// Zenodo's timestamps: Python isoformat with microseconds, "+00:00".
const isoTime = "2006-01-02T15:04:05.000000-07:00"

func isoformat(t time.Time) string { return t.UTC().Format(isoTime) }

// escapeKey escapes a file key for a URL path segment, as Zenodo's links
// (quote(key, safe="/!$&'()*+,;=:@")).
func escapeKey(key string) string { return url.PathEscape(key) }

func (s *Server) doi(id int64) string { return fmt.Sprintf("%s/zenodo.%d", s.doiPrefix, id) }

func doiURL(doi string) string { return "https://doi.org/" + doi }

// depositionJSON is the legacy deposit API shape (fixtures 01-04).
type depositionJSON struct {
	Created      string            `json:"created"`
	Modified     string            `json:"modified"`
	ID           int64             `json:"id"`
	ConceptRecID string            `json:"conceptrecid"`
	DOI          string            `json:"doi,omitempty"`
	ConceptDOI   string            `json:"conceptdoi,omitempty"`
	DOIURL       string            `json:"doi_url,omitempty"`
	Metadata     map[string]any    `json:"metadata"`
	Title        string            `json:"title"`
	Links        map[string]string `json:"links"`
	RecordID     int64             `json:"record_id"`
	Owner        int               `json:"owner"`
	Files        []depositFileJSON `json:"files"`
	State        string            `json:"state"`
	Submitted    bool              `json:"submitted"`
}

// depositFileJSON is a deposition's file (fixture 02): no "md5:" prefix.
type depositFileJSON struct {
	ID       string            `json:"id"`
	Filename string            `json:"filename"`
	Filesize int64             `json:"filesize"`
	Checksum string            `json:"checksum"`
	Links    map[string]string `json:"links"`
}

// recordJSON is the records API shape (fixtures 10, 36, 39).
type recordJSON struct {
	Created      string            `json:"created"`
	Modified     string            `json:"modified"`
	ID           int64             `json:"id"`
	ConceptRecID string            `json:"conceptrecid"`
	DOI          string            `json:"doi"`
	ConceptDOI   string            `json:"conceptdoi"`
	DOIURL       string            `json:"doi_url"`
	Metadata     map[string]any    `json:"metadata"`
	Title        string            `json:"title"`
	Links        map[string]string `json:"links"`
	Updated      string            `json:"updated"`
	RecID        string            `json:"recid"`
	Revision     int               `json:"revision"`
	Files        []recordFileJSON  `json:"files"`
	SWH          map[string]any    `json:"swh"`
	Owners       []ownerJSON       `json:"owners"`
	Status       string            `json:"status"`
	Stats        map[string]int    `json:"stats"`
	State        string            `json:"state"`
	Submitted    bool              `json:"submitted"`
}

type recordFileJSON struct {
	ID       string            `json:"id"`
	Key      string            `json:"key"`
	Size     int64             `json:"size"`
	Checksum string            `json:"checksum"`
	Links    map[string]string `json:"links"`
}

type ownerJSON struct {
	ID string `json:"id"`
}

// bucketObjectJSON is the answer to a bucket PUT (fixture 05).
type bucketObjectJSON struct {
	Created      string            `json:"created"`
	Updated      string            `json:"updated"`
	VersionID    string            `json:"version_id"`
	Key          string            `json:"key"`
	Size         int64             `json:"size"`
	Mimetype     string            `json:"mimetype"`
	Checksum     string            `json:"checksum"`
	IsHead       bool              `json:"is_head"`
	DeleteMarker bool              `json:"delete_marker"`
	Links        map[string]string `json:"links"`
}

func (s *Server) depositFile(base string, r *record, f *file) depositFileJSON {
	return depositFileJSON{
		ID:       f.ID,
		Filename: f.Key,
		Filesize: f.Size,
		Checksum: f.MD5,
		Links: map[string]string{
			"self":     fmt.Sprintf("%s/api/deposit/depositions/%d/files/%s", base, r.ID, f.ID),
			"download": fmt.Sprintf("%s/api/records/%d/draft/files/%s/content", base, r.ID, escapeKey(f.Key)),
		},
	}
}

func (s *Server) bucketObject(base string, r *record, f *file) bucketObjectJSON {
	self := fmt.Sprintf("%s/api/files/%s/%s", base, r.Bucket, escapeKey(f.Key))
	return bucketObjectJSON{
		Created:   isoformat(f.Created),
		Updated:   isoformat(f.Updated),
		VersionID: f.VersionID,
		Key:       f.Key,
		Size:      f.Size,
		Mimetype:  mimeType(f.Key),
		Checksum:  "md5:" + f.MD5,
		IsHead:    true,
		Links: map[string]string{
			"self":    self,
			"version": self + "?version_id=" + f.VersionID,
			"uploads": self + "?uploads=1",
		},
	}
}

// deposition renders r in the legacy deposit shape. Called with s.mu held.
func (s *Server) deposition(base string, r *record) depositionJSON {
	id := r.ID
	dep := fmt.Sprintf("%s/api/deposit/depositions/%d", base, id)
	md := copyMap(r.Metadata)
	if r.DOI != "" {
		md["doi"] = r.DOI
	}
	md["prereserve_doi"] = map[string]any{"doi": s.doi(id), "recid": id}
	badge := ""
	if r.DOI != "" {
		badge = url.PathEscape(r.DOI)
	}
	latestDraft := r
	if d := s.st.openDraft(r.ConceptID); d != nil && r.Published {
		latestDraft = d
	}
	ld := fmt.Sprintf("%s/api/deposit/depositions/%d", base, latestDraft.ID)
	links := map[string]string{
		"self":              dep,
		"html":              fmt.Sprintf("%s/deposit/%d", base, id),
		"badge":             fmt.Sprintf("%s/badge/doi/%s.svg", base, badge),
		"files":             dep + "/files",
		"bucket":            fmt.Sprintf("%s/api/files/%s", base, r.Bucket),
		"latest_draft":      ld,
		"latest_draft_html": fmt.Sprintf("%s/deposit/%d", base, latestDraft.ID),
		"publish":           dep + "/actions/publish",
		"edit":              dep + "/actions/edit",
		"discard":           dep + "/actions/discard",
		"newversion":        dep + "/actions/newversion",
	}
	out := depositionJSON{
		Created:      isoformat(r.Created),
		Modified:     isoformat(r.Updated),
		ID:           id,
		ConceptRecID: fmt.Sprint(r.ConceptID),
		DOI:          r.DOI,
		Metadata:     md,
		Title:        stringField(md, "title"),
		Links:        links,
		RecordID:     id,
		Owner:        r.Owner,
		Files:        []depositFileJSON{},
		State:        "unsubmitted",
		Submitted:    r.Published,
	}
	if r.DOI != "" {
		out.DOIURL = doiURL(r.DOI)
		links["doi"] = doiURL(r.DOI)
	}
	if r.Published {
		out.State = "done"
		if r.Editing {
			out.State = "inprogress"
		}
		out.ConceptDOI = s.doi(r.ConceptID)
		links["parent_doi"] = doiURL(out.ConceptDOI)
		links["conceptbadge"] = fmt.Sprintf("%s/badge/doi/%s.svg", base, url.PathEscape(out.ConceptDOI))
		links["record"] = fmt.Sprintf("%s/api/records/%d", base, id)
		links["record_html"] = fmt.Sprintf("%s/records/%d", base, id)
		links["latest"] = fmt.Sprintf("%s/api/records/%d/versions/latest", base, id)
		links["latest_html"] = fmt.Sprintf("%s/records/%d/latest", base, id)
	}
	for _, f := range r.Files {
		out.Files = append(out.Files, s.depositFile(base, r, f))
	}
	return out
}

// recordMetadata maps deposit metadata to the record serialisation: legacy
// upload_type becomes resource_type, a license string becomes {"id": ...},
// and relations.version is added (fixtures 10, 36, 39).
func (s *Server) recordMetadata(r *record, md map[string]any, isLast bool) map[string]any {
	out := copyMap(md)
	delete(out, "prereserve_doi")
	if t := stringField(out, "upload_type"); t != "" {
		rt := map[string]any{"type": t, "title": resourceTitle(t)}
		for _, sub := range []string{"publication_type", "image_type"} {
			if v := stringField(out, sub); v != "" {
				rt["subtype"] = v
			}
		}
		out["resource_type"] = rt
	}
	for _, k := range []string{"upload_type", "publication_type", "image_type"} {
		delete(out, k)
	}
	if l, ok := out["license"].(string); ok {
		out["license"] = map[string]any{"id": l}
	}
	if _, ok := out["access_right"]; !ok {
		out["access_right"] = "open"
	}
	if r.DOI != "" {
		out["doi"] = r.DOI
	}
	out["relations"] = map[string]any{"version": []any{map[string]any{
		"index":   r.Index,
		"is_last": isLast,
		"parent":  map[string]any{"pid_type": "recid", "pid_value": fmt.Sprint(r.ConceptID)},
	}}}
	return out
}

func resourceTitle(t string) string {
	if t == "" {
		return ""
	}
	return strings.ToUpper(t[:1]) + t[1:]
}

// recordView renders a published record (fixtures 10, 36, 39). Called with
// s.mu held.
func (s *Server) recordView(base string, r *record) recordJSON {
	id := r.ID
	api := fmt.Sprintf("%s/api/records/%d", base, id)
	parentAPI := fmt.Sprintf("%s/api/records/%d", base, r.ConceptID)
	conceptDOI := s.doi(r.ConceptID)
	latest := s.st.latest(r.ConceptID)
	md := s.recordMetadata(r, r.PublishedMetadata, latest == r)
	links := map[string]string{
		"self":                    api,
		"self_html":               fmt.Sprintf("%s/records/%d", base, id),
		"preview_html":            fmt.Sprintf("%s/records/%d?preview=1", base, id),
		"doi":                     doiURL(r.DOI),
		"self_doi":                doiURL(r.DOI),
		"self_doi_html":           fmt.Sprintf("%s/doi/%s", base, r.DOI),
		"reserve_doi":             api + "/draft/pids/doi",
		"parent":                  parentAPI,
		"parent_html":             fmt.Sprintf("%s/records/%d", base, r.ConceptID),
		"parent_doi":              doiURL(conceptDOI),
		"parent_doi_html":         fmt.Sprintf("%s/doi/%s", base, conceptDOI),
		"self_iiif_manifest":      fmt.Sprintf("%s/api/iiif/record:%d/manifest", base, id),
		"self_iiif_sequence":      fmt.Sprintf("%s/api/iiif/record:%d/sequence/default", base, id),
		"files":                   api + "/files",
		"media_files":             api + "/media-files",
		"archive":                 api + "/files-archive",
		"archive_media":           api + "/media-files-archive",
		"latest":                  api + "/versions/latest",
		"latest_html":             fmt.Sprintf("%s/records/%d/latest", base, id),
		"versions":                api + "/versions",
		"draft":                   api + "/draft",
		"access_links":            api + "/access/links",
		"access_grants":           api + "/access/grants",
		"access_users":            api + "/access/users",
		"access_request":          api + "/access/request",
		"access":                  api + "/access",
		"communities":             api + "/communities",
		"communities-suggestions": api + "/communities-suggestions",
		"request_deletion":        api + "/request-deletion",
		"file_modification":       api + "/file-modification",
		"requests":                api + "/requests",
	}
	out := recordJSON{
		Created:      isoformat(r.PublishedAt),
		Modified:     isoformat(r.Updated),
		ID:           id,
		ConceptRecID: fmt.Sprint(r.ConceptID),
		DOI:          r.DOI,
		ConceptDOI:   conceptDOI,
		DOIURL:       doiURL(r.DOI),
		Metadata:     md,
		Title:        stringField(md, "title"),
		Links:        links,
		Updated:      isoformat(r.Updated),
		RecID:        fmt.Sprint(id),
		Revision:     r.Revision,
		Files:        []recordFileJSON{},
		SWH:          map[string]any{},
		Owners:       []ownerJSON{{ID: fmt.Sprint(r.Owner)}},
		Status:       "published",
		Stats: map[string]int{
			"downloads": 0, "unique_downloads": 0, "views": 0, "unique_views": 0,
			"version_downloads": 0, "version_unique_downloads": 0, "version_unique_views": 0, "version_views": 0,
		},
		State:     "done",
		Submitted: true,
	}
	for _, f := range r.Files {
		out.Files = append(out.Files, recordFileJSON{
			ID:       f.ID,
			Key:      f.Key,
			Size:     f.Size,
			Checksum: "md5:" + f.MD5,
			Links:    map[string]string{"self": fmt.Sprintf("%s/files/%s/content", api, escapeKey(f.Key))},
		})
	}
	return out
}

// recordFileEntry is a file of GET /api/records/<id>/files (RDM shape of
// fixture 34, "completed").
func recordFileEntry(base string, r *record, f *file) map[string]any {
	api := fmt.Sprintf("%s/api/records/%d/files/%s", base, r.ID, escapeKey(f.Key))
	return map[string]any{
		"created":       isoformat(f.Created),
		"updated":       isoformat(f.Updated),
		"mimetype":      mimeType(f.Key),
		"version_id":    f.VersionID,
		"file_id":       f.ID,
		"bucket_id":     r.Bucket,
		"metadata":      nil,
		"access":        map[string]any{"hidden": false},
		"links":         map[string]string{"self": api, "content": api + "/content"},
		"key":           f.Key,
		"checksum":      "md5:" + f.MD5,
		"size":          f.Size,
		"transfer":      map[string]any{"type": "L"},
		"status":        "completed",
		"storage_class": "L",
	}
}

func stringField(m map[string]any, k string) string {
	switch v := m[k].(type) {
	case string:
		return v
	case json.Number:
		return v.String()
	case nil:
		return ""
	default:
		return fmt.Sprint(v)
	}
}
