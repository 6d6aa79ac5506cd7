package zenodo

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"time"
)

// ID is a Zenodo identifier, which JSON carries as a number (`"id": 412011`)
// or a string (`"recid": "412011"`). It marshals back as it came: digits as
// a number, anything else as a string.
type ID string

// String implements fmt.Stringer.
func (id ID) String() string { return string(id) }

// UnmarshalJSON accepts a number, a string or null.
func (id *ID) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case bytes.Equal(b, []byte("null")):
		*id = ""
		return nil
	case len(b) > 0 && b[0] == '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*id = ID(s)
		return nil
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return err
	}
	*id = ID(n.String())
	return nil
}

// MarshalJSON writes digits as a number, anything else as a string.
func (id ID) MarshalJSON() ([]byte, error) {
	if recIDRE.MatchString(string(id)) {
		return []byte(id), nil
	}
	return json.Marshal(string(id))
}

// Time is a timestamp as Zenodo writes it ("2024-12-20T12:28:35.025592+00:00",
// sometimes without a zone, or a bare date). Unparsable values decode as the
// zero time rather than failing the whole response.
type Time struct{ time.Time }

var timeLayouts = []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999", "2006-01-02"}

// UnmarshalJSON implements json.Unmarshaler.
func (t *Time) UnmarshalJSON(b []byte) error {
	t.Time = time.Time{}
	var s string
	if json.Unmarshal(b, &s) != nil {
		return nil
	}
	for _, l := range timeLayouts {
		if p, err := time.Parse(l, s); err == nil {
			t.Time = p
			return nil
		}
	}
	return nil
}

// MarshalJSON implements json.Marshaler (null for the zero time).
func (t Time) MarshalJSON() ([]byte, error) {
	if t.IsZero() {
		return []byte("null"), nil
	}
	return json.Marshal(t.Format(time.RFC3339Nano))
}

// Links are a response's "links": relation name → URL. Non-string entries
// (such as "thumbnails") are dropped.
type Links map[string]string

// UnmarshalJSON implements json.Unmarshaler.
func (l *Links) UnmarshalJSON(b []byte) error {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	out := make(Links, len(raw))
	for k, v := range raw {
		var s string
		if json.Unmarshal(v, &s) == nil {
			out[k] = s
		}
	}
	*l = out
	return nil
}

// File is a file of a record or deposition, in any of Zenodo's shapes:
// record files (key, size, checksum "md5:…"), bucket uploads (key, size,
// checksum, mimetype, version_id) and deposition files (id, filename,
// filesize, checksum without prefix), normalised to Key and Size.
type File struct {
	// ID is the file id (deposition file id for DeleteFile).
	ID string `json:"id,omitempty"`
	// Key is the file name.
	Key string `json:"key"`
	// Size is the size in bytes.
	Size int64 `json:"size"`
	// Checksum is "md5:<hex>" (or a bare hex md5 for deposition files).
	Checksum string `json:"checksum"`
	// MimeType is the media type, when Zenodo gives one.
	MimeType string `json:"mimetype,omitempty"`
	// VersionID is the object version (bucket uploads).
	VersionID string `json:"version_id,omitempty"`
	// Links are the file's links (self, content, download…).
	Links Links `json:"links,omitempty"`
}

// UnmarshalJSON implements json.Unmarshaler, mapping the deposition shape
// (filename, filesize) onto Key and Size.
func (f *File) UnmarshalJSON(b []byte) error {
	type plain File
	var v struct {
		plain
		Filename string `json:"filename"`
		Filesize int64  `json:"filesize"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*f = File(v.plain)
	if f.Key == "" {
		f.Key = v.Filename
	}
	if f.Size == 0 {
		f.Size = v.Filesize
	}
	return nil
}

// MD5 is the file's md5 as lower-case hex, or "" when its checksum is not
// an md5.
func (f File) MD5() string {
	c := strings.ToLower(strings.TrimSpace(f.Checksum))
	if rest, ok := strings.CutPrefix(c, "md5:"); ok {
		c = rest
	}
	if len(c) != 32 || strings.Trim(c, "0123456789abcdef") != "" {
		return ""
	}
	return c
}

// Creator is an author in deposition metadata.
type Creator struct {
	Name        string `json:"name"`
	Affiliation string `json:"affiliation,omitempty"`
	ORCID       string `json:"orcid,omitempty"`
	GND         string `json:"gnd,omitempty"`
}

// PrereserveDOI is the DOI Zenodo reserves for a draft.
type PrereserveDOI struct {
	DOI   string `json:"doi"`
	RecID ID     `json:"recid"`
}

// Relations are a record's relations; Version[0] places it among the
// versions of its concept.
type Relations struct {
	Version []VersionRelation `json:"version,omitempty"`
}

// VersionRelation places a record among its concept's versions.
type VersionRelation struct {
	Index     int  `json:"index"`
	IsLast    bool `json:"is_last"`
	Count     int  `json:"count,omitempty"`
	Parent    PID  `json:"parent"`
	LastChild *PID `json:"last_child,omitempty"`
}

// PID is a persistent identifier reference.
type PID struct {
	Type  string `json:"pid_type"`
	Value string `json:"pid_value"`
}

// Metadata is a record's or deposition's metadata. The fields the project
// uses are typed; every other field is kept verbatim in Extra, so a
// deposition's metadata can be read, changed and written back without loss.
// A typed field that is empty is not written.
type Metadata struct {
	Title           string
	Description     string
	Version         string
	UploadType      string
	PublicationDate string
	AccessRight     string
	License         string // the license id ("cc-by-4.0"), whether given as a string or {"id": …}
	Creators        []Creator
	Keywords        []string
	Notes           string
	DOI             string
	PrereserveDOI   *PrereserveDOI
	Relations       *Relations
	// Extra holds every other field, as raw JSON.
	Extra map[string]json.RawMessage
}

// metadataFields maps JSON names to the typed fields.
func (m *Metadata) fields() map[string]any {
	return map[string]any{
		"title":            &m.Title,
		"description":      &m.Description,
		"version":          &m.Version,
		"upload_type":      &m.UploadType,
		"publication_date": &m.PublicationDate,
		"access_right":     &m.AccessRight,
		"creators":         &m.Creators,
		"keywords":         &m.Keywords,
		"notes":            &m.Notes,
		"doi":              &m.DOI,
		"prereserve_doi":   &m.PrereserveDOI,
		"relations":        &m.Relations,
	}
}

// UnmarshalJSON implements json.Unmarshaler. A field whose value does not
// fit its typed field is kept in Extra instead of failing.
func (m *Metadata) UnmarshalJSON(b []byte) error {
	*m = Metadata{}
	if bytes.Equal(bytes.TrimSpace(b), []byte("null")) {
		return nil
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	fields := m.fields()
	for k, v := range raw {
		if target, ok := fields[k]; ok {
			if json.Unmarshal(v, target) == nil {
				continue
			}
			reflect.ValueOf(target).Elem().SetZero()
		}
		if k == "license" {
			if id := licenseID(v); id != "" {
				m.License = id
				if bytes.HasPrefix(bytes.TrimSpace(v), []byte("{")) {
					// Keep the object form to write it back as it came.
					m.extra()[k] = v
				}
				continue
			}
		}
		m.extra()[k] = v
	}
	return nil
}

func (m *Metadata) extra() map[string]json.RawMessage {
	if m.Extra == nil {
		m.Extra = map[string]json.RawMessage{}
	}
	return m.Extra
}

// licenseID reads "cc-by-4.0" or {"id": "cc-by-4.0"}.
func licenseID(v json.RawMessage) string {
	var s string
	if json.Unmarshal(v, &s) == nil {
		return s
	}
	var o struct {
		ID string `json:"id"`
	}
	if json.Unmarshal(v, &o) == nil {
		return o.ID
	}
	return ""
}

// MarshalJSON implements json.Marshaler: Extra, overlaid with the non-empty
// typed fields.
func (m Metadata) MarshalJSON() ([]byte, error) {
	out := make(map[string]json.RawMessage, len(m.Extra)+8)
	for k, v := range m.Extra {
		out[k] = v
	}
	for k, target := range m.fields() {
		v := reflect.ValueOf(target).Elem()
		if v.IsZero() || (v.Kind() == reflect.Slice && v.Len() == 0) {
			continue
		}
		b, err := json.Marshal(v.Interface())
		if err != nil {
			return nil, err
		}
		out[k] = b
	}
	if m.License != "" && licenseID(out["license"]) != m.License {
		b, _ := json.Marshal(m.License)
		out["license"] = b
	}
	return json.Marshal(out)
}

// Record is a published record (or a draft) as the records API returns it.
type Record struct {
	ID           ID       `json:"id"`
	RecID        ID       `json:"recid,omitempty"`
	ConceptRecID ID       `json:"conceptrecid,omitempty"`
	DOI          string   `json:"doi,omitempty"`
	ConceptDOI   string   `json:"conceptdoi,omitempty"`
	DOIURL       string   `json:"doi_url,omitempty"`
	Title        string   `json:"title,omitempty"`
	Metadata     Metadata `json:"metadata"`
	Files        []File   `json:"files,omitempty"`
	Links        Links    `json:"links,omitempty"`
	Created      Time     `json:"created"`
	Modified     Time     `json:"modified"`
	Updated      Time     `json:"updated"`
	Revision     int      `json:"revision,omitempty"`
	Status       string   `json:"status,omitempty"`
	State        string   `json:"state,omitempty"`
	Submitted    bool     `json:"submitted,omitempty"`
}

// RecordID is the record's id as a string.
func (r *Record) RecordID() string {
	if r.RecID != "" {
		return string(r.RecID)
	}
	return string(r.ID)
}

// Version is the record's metadata.version (its image tag), or "".
func (r *Record) Version() string { return r.Metadata.Version }

// File returns the file named key.
func (r *Record) File(key string) (File, bool) {
	for _, f := range r.Files {
		if f.Key == key {
			return f, true
		}
	}
	return File{}, false
}

// VersionIndex is the record's position among its concept's versions
// (metadata.relations.version[0].index), or -1 when unknown.
func (r *Record) VersionIndex() int {
	if r.Metadata.Relations == nil || len(r.Metadata.Relations.Version) == 0 {
		return -1
	}
	return r.Metadata.Relations.Version[0].Index
}

// Deposition is a deposition of the legacy deposit API.
type Deposition struct {
	ID           ID       `json:"id"`
	RecordID     ID       `json:"record_id,omitempty"`
	ConceptRecID ID       `json:"conceptrecid,omitempty"`
	DOI          string   `json:"doi,omitempty"`
	ConceptDOI   string   `json:"conceptdoi,omitempty"`
	DOIURL       string   `json:"doi_url,omitempty"`
	Title        string   `json:"title,omitempty"`
	Metadata     Metadata `json:"metadata"`
	Files        []File   `json:"files,omitempty"`
	Links        Links    `json:"links,omitempty"`
	Owner        ID       `json:"owner,omitempty"`
	Created      Time     `json:"created"`
	Modified     Time     `json:"modified"`
	State        string   `json:"state,omitempty"`
	Submitted    bool     `json:"submitted,omitempty"`
}

// ReservedDOI is the deposition's DOI: its doi, or the DOI Zenodo reserved
// when the draft was made (metadata.prereserve_doi).
func (d *Deposition) ReservedDOI() string {
	switch {
	case d.DOI != "":
		return d.DOI
	case d.Metadata.DOI != "":
		return d.Metadata.DOI
	case d.Metadata.PrereserveDOI != nil:
		return d.Metadata.PrereserveDOI.DOI
	}
	return ""
}

// Published reports whether the deposition is published.
func (d *Deposition) Published() bool { return d.Submitted && d.State == "done" }

// File returns the file named key.
func (d *Deposition) File(key string) (File, bool) {
	for _, f := range d.Files {
		if f.Key == key {
			return f, true
		}
	}
	return File{}, false
}

// hitsTotal is a search total, as a number or {"value": n}.
type hitsTotal int

func (t *hitsTotal) UnmarshalJSON(b []byte) error {
	var n int
	if json.Unmarshal(b, &n) == nil {
		*t = hitsTotal(n)
		return nil
	}
	var o struct {
		Value int `json:"value"`
	}
	if err := json.Unmarshal(b, &o); err != nil {
		return err
	}
	*t = hitsTotal(o.Value)
	return nil
}

// recordHits is a page of records (versions or search).
type recordHits struct {
	Hits struct {
		Hits  []Record  `json:"hits"`
		Total hitsTotal `json:"total"`
	} `json:"hits"`
	Links Links `json:"links"`
}
