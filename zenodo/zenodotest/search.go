package zenodotest

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"sort"
	"strconv"
	"strings"
	"unicode"
)

// The query language is a small subset of the OpenSearch query_string syntax
// Zenodo passes q to: terms (word, "a phrase", field:word, field:"a
// phrase", field:*), optional +/- prefixes and NOT, implicit AND, the AND
// and OR operators (AND binds tighter), and parentheses ignored. Text is
// matched on lower-cased tokens that approximate OpenSearch's standard
// analyzer: runs of letters and digits, with '.', ':', '\'' and '_' kept
// between two of them. Identifier fields (doi, conceptdoi, recid, id,
// conceptrecid) match whole values.

const (
	maxQueryLen   = 4096
	maxQueryTerms = 64
)

var errQuery = errors.New("invalid query")

type term struct {
	field  string
	value  string
	phrase bool
	neg    bool
}

// query is an OR of ANDs.
type query [][]term

func parseQuery(q string) (query, error) {
	if len(q) > maxQueryLen {
		return nil, fmt.Errorf("%w: longer than %d bytes", errQuery, maxQueryLen)
	}
	var (
		out     query
		clause  []term
		pending term // field and sign of the term being read
		nterms  int
		negNext bool
	)
	flush := func() {
		if len(clause) > 0 {
			out = append(out, clause)
		}
		clause = nil
	}
	i := 0
	for i < len(q) {
		c := q[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '(' || c == ')':
			i++
			continue
		case c == '"':
			end := strings.IndexByte(q[i+1:], '"')
			if end < 0 {
				return nil, fmt.Errorf("%w: unterminated quote", errQuery)
			}
			pending.value, pending.phrase = q[i+1:i+1+end], true
			i += end + 2
		default:
			j := i
			for j < len(q) && !strings.ContainsRune(" \t\r\n()\"", rune(q[j])) {
				j++
			}
			word := q[i:j]
			i = j
			switch {
			case word == "AND" && pending.field == "":
				continue
			case word == "OR" && pending.field == "":
				flush()
				continue
			case word == "NOT" && pending.field == "":
				negNext = true
				continue
			}
			if pending.field == "" && (word[0] == '+' || word[0] == '-') {
				pending.neg = word[0] == '-'
				word = word[1:]
				if word == "" {
					continue
				}
			}
			if f, v, ok := strings.Cut(word, ":"); ok && pending.field == "" && f != "" && isFieldName(f) {
				pending.field = f
				if v == "" {
					if i < len(q) && q[i] == '"' {
						continue // field:"phrase"
					}
					return nil, fmt.Errorf("%w: no value for field %q", errQuery, f)
				}
				word = v
			}
			pending.value = word
		}
		nterms++
		if nterms > maxQueryTerms {
			return nil, fmt.Errorf("%w: more than %d terms", errQuery, maxQueryTerms)
		}
		pending.neg = pending.neg != negNext
		negNext = false
		clause = append(clause, pending)
		pending = term{}
	}
	if pending.field != "" {
		return nil, fmt.Errorf("%w: no value for field %q", errQuery, pending.field)
	}
	flush()
	return out, nil
}

func isFieldName(s string) bool {
	for _, c := range s {
		if !(unicode.IsLetter(c) || unicode.IsDigit(c) || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// tokens lower-cases s and splits it into analyzer-like tokens.
func tokens(s string) []string {
	rs := []rune(strings.ToLower(s))
	alnum := func(i int) bool {
		return i >= 0 && i < len(rs) && (unicode.IsLetter(rs[i]) || unicode.IsDigit(rs[i]))
	}
	var out []string
	var cur []rune
	for i, c := range rs {
		switch {
		case alnum(i):
			cur = append(cur, c)
		case (c == '.' || c == ':' || c == '\'' || c == '_') && alnum(i-1) && alnum(i+1):
			cur = append(cur, c)
		default:
			if len(cur) > 0 {
				out = append(out, string(cur))
				cur = cur[:0]
			}
		}
	}
	if len(cur) > 0 {
		out = append(out, string(cur))
	}
	return out
}

// doc is a searchable record: field name -> values.
type doc map[string][]string

var exactFields = map[string]bool{"doi": true, "conceptdoi": true, "recid": true, "id": true, "conceptrecid": true}

// fieldAliases maps query field names to doc fields.
var fieldAliases = map[string]string{
	"metadata.title": "title", "metadata.description": "description", "metadata.version": "version",
	"metadata.doi": "doi", "metadata.keywords": "keywords", "metadata.creators.name": "creators.name",
	"metadata.creators.person_or_org.name": "creators.name", "creators.person_or_org.name": "creators.name",
	"parent.id": "conceptrecid", "pids.doi.identifier": "doi", "parent.pids.doi.identifier": "conceptdoi",
	"metadata.upload_type": "upload_type", "metadata.resource_type.id": "upload_type", "resource_type.type": "upload_type",
}

// allFields are searched by terms without a field.
var allFields = []string{"title", "description", "keywords", "creators.name", "version", "doi", "conceptdoi"}

func (s *Server) searchDoc(r *record, md map[string]any) doc {
	d := doc{}
	flatten("", md, d)
	for k, vs := range d {
		d["metadata."+k] = vs
	}
	d["id"] = []string{strconv.FormatInt(r.ID, 10)}
	d["recid"] = d["id"]
	d["conceptrecid"] = []string{strconv.FormatInt(r.ConceptID, 10)}
	d["doi"] = nil
	if r.DOI != "" {
		d["doi"] = []string{r.DOI}
	}
	if r.Published {
		d["conceptdoi"] = []string{s.doi(r.ConceptID)}
	}
	return d
}

func flatten(prefix string, v any, d doc) {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			p := k
			if prefix != "" {
				p = prefix + "." + k
			}
			flatten(p, e, d)
		}
	case []any:
		for _, e := range x {
			flatten(prefix, e, d)
		}
	case nil:
	case string:
		d[prefix] = append(d[prefix], x)
	case json.Number:
		d[prefix] = append(d[prefix], x.String())
	default:
		d[prefix] = append(d[prefix], fmt.Sprint(x))
	}
}

func (q query) match(d doc) bool {
	if len(q) == 0 {
		return true
	}
	for _, clause := range q {
		ok := true
		for _, t := range clause {
			if t.matches(d) == t.neg {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

func (t term) matches(d doc) bool {
	fields := allFields
	if t.field != "" {
		f := t.field
		if a, ok := fieldAliases[f]; ok {
			f = a
		}
		fields = []string{f}
	}
	for _, f := range fields {
		for _, v := range d[f] {
			if matchValue(f, v, t) {
				return true
			}
		}
	}
	return false
}

func matchValue(field, v string, t term) bool {
	if t.value == "*" {
		return true
	}
	if exactFields[field] {
		return strings.EqualFold(v, t.value)
	}
	vt := tokens(v)
	if !t.phrase && strings.ContainsAny(t.value, "*?") {
		pat := strings.ToLower(t.value)
		for _, tok := range vt {
			if ok, _ := path.Match(pat, tok); ok {
				return true
			}
		}
		return false
	}
	qt := tokens(t.value)
	if len(qt) == 0 {
		return false
	}
	if t.phrase {
		return containsSeq(vt, qt)
	}
	for _, w := range qt {
		if !containsSeq(vt, []string{w}) {
			return false
		}
	}
	return true
}

func containsSeq(hay, needle []string) bool {
	for i := 0; i+len(needle) <= len(hay); i++ {
		ok := true
		for j := range needle {
			if hay[i+j] != needle[j] {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

// truthy parses Zenodo's boolean query parameters.
func truthy(s string) bool {
	switch strings.ToLower(s) {
	case "1", "true", "yes", "on":
		return true
	}
	return false
}

// searchParams are the parameters both searches take. all_versions (the
// Python donodo spelling) is not one of them: it is ignored, as Zenodo does,
// so only latest versions come back.
type searchParams struct {
	q           query
	allVersions bool
	page, size  int
	sort        string
}

func readSearchParams(w http.ResponseWriter, v url.Values) (searchParams, bool) {
	var p searchParams
	var ok bool
	if p.page, p.size, ok = paging(w, v); !ok {
		return p, false
	}
	q, err := parseQuery(v.Get("q"))
	if err != nil {
		writeLegacyError(w, http.StatusBadRequest, msgBadQuery)
		return p, false
	}
	p.q = q
	p.allVersions = truthy(v.Get("allversions"))
	p.sort = v.Get("sort")
	switch p.sort {
	case "", "bestmatch", "mostrecent", "newest", "-mostrecent", "oldest", "version", "-version":
	default:
		writeValidationError(w, fieldError{Field: "sort", Messages: []string{"Invalid sort option."}})
		return p, false
	}
	return p, true
}

// sortRecords orders hits: oldest first for "oldest"/"-mostrecent", else
// most recently updated first (bestmatch has no score here).
func sortRecords(rs []*record, how string) {
	sort.SliceStable(rs, func(i, j int) bool {
		a, b := rs[i], rs[j]
		if !a.Updated.Equal(b.Updated) {
			return a.Updated.After(b.Updated)
		}
		return a.ID > b.ID
	})
	if how == "oldest" || how == "-mostrecent" {
		for i, j := 0, len(rs)-1; i < j; i, j = i+1, j-1 {
			rs[i], rs[j] = rs[j], rs[i]
		}
	}
}

// listDepositions is GET /api/deposit/depositions: the caller's drafts and
// published versions. Without allversions only each concept's newest one
// (its open draft, else its latest version) is listed (fixture 03).
func (s *Server) listDepositions(w http.ResponseWriter, r *http.Request) {
	owner, ok := s.auth(w, r)
	if !ok {
		return
	}
	v := r.URL.Query()
	p, ok := readSearchParams(w, v)
	if !ok {
		return
	}
	status := v.Get("status")
	if status != "" && status != "draft" && status != "published" {
		writeValidationError(w, fieldError{Field: "status", Messages: []string{"Must be one of: draft, published."}})
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	var hits []*record
	for _, rec := range s.st.Records {
		if rec.Owner != owner || rec.IndexedAt.After(now) {
			continue
		}
		if !p.allVersions {
			newest := s.st.openDraft(rec.ConceptID)
			if newest == nil {
				newest = s.st.latest(rec.ConceptID)
			}
			if newest != rec {
				continue
			}
		}
		if status == "draft" && rec.Published && !rec.Editing || status == "published" && !rec.Published {
			continue
		}
		if !p.q.match(s.searchDoc(rec, rec.Metadata)) {
			continue
		}
		hits = append(hits, rec)
	}
	sortRecords(hits, p.sort)
	lo, hi := pageOf(len(hits), p.page, p.size)
	base := baseURL(r)
	out := make([]depositionJSON, 0, hi-lo)
	for _, rec := range hits[lo:hi] {
		out = append(out, s.deposition(base, rec))
	}
	s.write(w, answer{status: http.StatusOK, body: out})
}

// searchRecords is GET /api/records?q=&allversions=&page=&size=&sort=, the
// public search over published records (fixture 20's envelope).
func (s *Server) searchRecords(w http.ResponseWriter, r *http.Request) {
	v := r.URL.Query()
	p, ok := readSearchParams(w, v)
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	var hits []*record
	for _, rec := range s.st.Records {
		if !rec.Published || rec.IndexedAt.After(now) {
			continue
		}
		if !p.allVersions && s.st.latest(rec.ConceptID) != rec {
			continue
		}
		if !p.q.match(s.searchDoc(rec, rec.PublishedMetadata)) {
			continue
		}
		hits = append(hits, rec)
	}
	sortRecords(hits, p.sort)
	lo, hi := pageOf(len(hits), p.page, p.size)
	base := baseURL(r)
	out := make([]recordJSON, 0, hi-lo)
	for _, rec := range hits[lo:hi] {
		out = append(out, s.recordView(base, rec))
	}
	sortBy := p.sort
	if sortBy == "" {
		sortBy = "bestmatch"
		if v.Get("q") == "" {
			sortBy = "newest"
		}
	}
	s.write(w, answer{status: http.StatusOK, body: map[string]any{
		"hits":         map[string]any{"hits": out, "total": len(hits)},
		"links":        pageLinks(base, "/api/records", v, p.page, p.size, len(hits)),
		"aggregations": map[string]any{},
		"sortBy":       sortBy,
	}})
}
