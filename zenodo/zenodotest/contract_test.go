package zenodotest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The contract tests replay every fixture of testdata/fixtures (real Zenodo
// responses) against the fake: the fake's answer to the same request must
// have at least the fixture's JSON field names, recursively (objects, and
// the first element of arrays), and at least its header names. Deliberate
// differences are listed with their reason.

const fixtureDir = "testdata/fixtures"

func loadFixture(t *testing.T, name string) any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(fixtureDir, name))
	require.NoError(t, err)
	var v any
	require.NoError(t, json.Unmarshal(b, &v), name)
	return v
}

// missingKeys lists the field paths of want absent from got ("a.b",
// "files[].key"), skipping the paths in ignore (a path ignores its subtree).
func missingKeys(want, got any, path string, ignore map[string]string) []string {
	if _, ok := ignore[path]; ok {
		return nil
	}
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return []string{path + " (not an object)"}
		}
		var out []string
		for k, wv := range w {
			p := k
			if path != "" {
				p = path + "." + k
			}
			if _, ok := ignore[p]; ok {
				continue
			}
			gv, ok := g[k]
			if !ok {
				out = append(out, p)
				continue
			}
			out = append(out, missingKeys(wv, gv, p, ignore)...)
		}
		sort.Strings(out)
		return out
	case []any:
		g, ok := got.([]any)
		if !ok {
			return []string{path + " (not an array)"}
		}
		if len(w) == 0 {
			return nil
		}
		if len(g) == 0 {
			return []string{path + "[] (empty)"}
		}
		return missingKeys(w[0], g[0], path+"[]", ignore)
	}
	return nil
}

func assertShape(t *testing.T, fixture string, want, got any, ignore map[string]string) {
	t.Helper()
	for p, why := range ignore {
		require.NotEmpty(t, why, "ignored path %s needs a reason", p)
	}
	assert.Empty(t, missingKeys(want, got, "", ignore), "fields of %s missing from the fake's answer", fixture)
}

// depositMetadata is a fixture's metadata as a client would send it.
func depositMetadata(t *testing.T, fixture map[string]any) map[string]any {
	t.Helper()
	md := copyMap(fixture["metadata"].(map[string]any))
	delete(md, "prereserve_doi")
	return md
}

// recordAsDeposit turns a record fixture's metadata back into the legacy
// deposit metadata that produces it.
func recordAsDeposit(md map[string]any) map[string]any {
	out := copyMap(md)
	for _, k := range []string{"doi", "relations", "access_right_category", "resource_type", "license"} {
		delete(out, k)
	}
	if rt, ok := md["resource_type"].(map[string]any); ok {
		out["upload_type"] = rt["type"]
		if st, ok := rt["subtype"]; ok {
			out["publication_type"] = st
		}
	}
	if l, ok := md["license"].(map[string]any); ok {
		out["license"] = l["id"]
	}
	return out
}

func TestContractFixtures(t *testing.T) {
	s, ts := NewTestServer(t, WithDOIPrefix("10.5072"))
	c := newAPI(t, ts.URL)
	anon := newAPI(t, ts.URL)
	anon.token = ""
	object := func(name string) map[string]any { return loadFixture(t, name).(map[string]any) }
	covered := map[string]bool{}
	check := func(name string, got any, ignore map[string]string) {
		t.Helper()
		covered[name] = true
		assertShape(t, name, loadFixture(t, name), got, ignore)
	}

	// 01: create. 03b: the list right after.
	f01 := object("01-deposit-create.json")
	dep := c.create(depositMetadata(t, f01))
	check("01-deposit-create.json", dep, nil)
	list := c.do(http.MethodGet, "/api/deposit/depositions", nil).list(t)
	check("03b-deposit-list-fresh-draft.json", list, nil)

	// 04: metadata PUT. 04b, then 02 (two files) and 03, with the reserved
	// DOI sent back in metadata.doi as the recording client did.
	self := link(t, dep, "self")
	r := c.doJSON(http.MethodPut, self, map[string]any{"metadata": depositMetadata(t, object("04-deposit-put-metadata.json"))})
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	check("04-deposit-put-metadata.json", r.json(t), nil)
	reserved := dep["metadata"].(map[string]any)["prereserve_doi"].(map[string]any)["doi"]
	md := depositMetadata(t, object("04b-deposit-put-metadata-embargo.json"))
	md["doi"] = reserved
	r = c.doJSON(http.MethodPut, self, map[string]any{"metadata": md})
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	check("04b-deposit-put-metadata-embargo.json", r.json(t), nil)
	csv := []byte(strings.Repeat("a,b\n", 156) + "x")
	r = c.put(dep, "data.csv", csv)
	require.Equal(t, http.StatusCreated, r.status)
	check("05-bucket-put-file.json", r.json(t), nil)
	r = c.put(dep, "data2.csv", csv)
	check("05b-bucket-put-file-limit133.json", r.json(t), nil)
	check("02-deposit-get-with-files.json", c.do(http.MethodGet, self, nil).json(t), nil)
	check("03-deposit-list.json", c.do(http.MethodGet, "/api/deposit/depositions", nil).list(t), nil)

	// 10, 36, 39: published records, made through the deposit API with the
	// metadata that yields each fixture's.
	publish := func(fixture string, concept map[string]any) map[string]any {
		t.Helper()
		f := object(fixture)
		var d map[string]any
		if concept == nil {
			d = c.create(recordAsDeposit(f["metadata"].(map[string]any)))
		} else {
			r := c.action(concept, "newversion")
			require.Equal(t, http.StatusCreated, r.status, "%s", r.body)
			d = r.json(t)
			r = c.doJSON(http.MethodPut, link(t, d, "self"), map[string]any{"metadata": recordAsDeposit(f["metadata"].(map[string]any))})
			require.Equal(t, http.StatusOK, r.status, "%s", r.body)
		}
		for _, file := range f["files"].([]any) {
			key := file.(map[string]any)["key"].(string)
			require.Equal(t, http.StatusCreated, c.put(d, key, []byte(key)).status)
		}
		r := c.action(d, "publish")
		require.Equal(t, http.StatusAccepted, r.status, "%s", r.body)
		got := c.do(http.MethodGet, "/api/records/"+idOf(t, d), nil)
		require.Equal(t, http.StatusOK, got.status)
		check(fixture, got.json(t), map[string]string{
			"links.thumbnails": "IIIF thumbnails of images are not reproduced",
		})
		return d
	}
	publish("10-record-get-published-sandbox.json", nil)
	first := publish("36-rdm-draft-publish.json", nil)
	publish("39-rdm-new-version-publish.json", first)

	// 20: the records search envelope; its hits are the pre-2023 shape.
	hit := object("20-legacy-records-search-sandbox-2022.json")["hits"].(map[string]any)["hits"].([]any)[0].(map[string]any)
	for i := 0; i < 2; i++ {
		_, err := s.Publish(SeedRecord{Title: hit["metadata"].(map[string]any)["title"].(string), Metadata: recordAsDeposit(hit["metadata"].(map[string]any)), Files: []SeedFile{{Name: "doc.txt", Data: []byte("test")}}})
		require.NoError(t, err)
	}
	r = anon.do(http.MethodGet, "/api/records/?sort=bestmatch&q=random&page=1&size=1", nil)
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	pre := "the pre-InvenioRDM (2022) search hit shape is not reproduced: "
	check("20-legacy-records-search-sandbox-2022.json", r.json(t), map[string]string{
		"aggregations":                                        "facets are not computed (an empty object is sent)",
		"hits.hits[].files[].bucket":                          pre + "files[] has id/key/size/checksum/links as fixture 10",
		"hits.hits[].files[].type":                            pre + "files[] has id/key/size/checksum/links as fixture 10",
		"hits.hits[].links.badge":                             pre + "links as fixture 10",
		"hits.hits[].links.bucket":                            pre + "links as fixture 10",
		"hits.hits[].links.conceptbadge":                      pre + "links as fixture 10",
		"hits.hits[].links.conceptdoi":                        pre + "links as fixture 10",
		"hits.hits[].links.html":                              pre + "links as fixture 10",
		"hits.hits[].owners":                                  pre + "owners are [{id}] as fixture 10",
		"hits.hits[].metadata.access_right_category":          pre + "dropped by InvenioRDM",
		"hits.hits[].metadata.relations.version[].count":      pre + "relations.version as fixture 10",
		"hits.hits[].metadata.relations.version[].last_child": pre + "relations.version as fixture 10",
		"hits.hits[].stats.version_volume":                    pre + "stats as fixture 10",
		"hits.hits[].stats.volume":                            pre + "stats as fixture 10",
	})

	// 80-83: error bodies.
	covered["80-legacy-error-401-deposit-create-no-token.json"] = true
	r = anon.doJSON(http.MethodPost, "/api/deposit/depositions", map[string]any{})
	assert.Equal(t, http.StatusUnauthorized, r.status)
	assert.Equal(t, loadFixture(t, "80-legacy-error-401-deposit-create-no-token.json"), any(r.json(t)))
	covered["82-legacy-error-401-bad-token.json"] = true
	bad := newAPI(t, ts.URL)
	bad.token = "test"
	r = bad.doJSON(http.MethodPost, "/api/deposit/depositions", map[string]any{})
	assert.Equal(t, loadFixture(t, "82-legacy-error-401-bad-token.json"), any(r.json(t)))
	covered["81-legacy-error-404-record-not-found.json"] = true
	r = anon.do(http.MethodGet, "/api/records/68358988", nil)
	assert.Equal(t, http.StatusNotFound, r.status)
	assert.Equal(t, loadFixture(t, "81-legacy-error-404-record-not-found.json"), any(r.json(t)))
	s.InjectFault(Fault{Method: "POST", PathContains: "/actions/publish", Status: 500})
	r = c.action(dep, "publish")
	assert.Equal(t, http.StatusInternalServerError, r.status)
	check("83-error-500-deposit-publish.json", r.json(t), nil)
	assert.Equal(t, object("83-error-500-deposit-publish.json")["message"], r.json(t)["message"])

	// The InvenioRDM draft API is not served: the client uses the legacy
	// deposit API (see ZENODOTEST_API.md). Its record shapes are covered by
	// 36 and 39 above.
	notServed := []string{
		"30-rdm-create-draft.json", "31-rdm-reserve-doi.json", "32-rdm-draft-files-init.json",
		"33-rdm-draft-file-content-put.json", "34-rdm-draft-file-commit.json",
		"35-rdm-draft-update-metadata.json", "37-rdm-new-version.json",
		"38-rdm-new-version-files-init-with-inherited-files.json",
	}
	for _, n := range notServed {
		covered[n] = true
	}
	entries, err := os.ReadDir(fixtureDir)
	require.NoError(t, err)
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".json") {
			assert.True(t, covered[e.Name()], "fixture %s is neither replayed nor listed as not served", e.Name())
		}
	}
}

// headerFixture reads a .headers.txt: status and header names (lower case).
func headerFixture(t *testing.T, name string) (int, map[string]bool) {
	t.Helper()
	fh, err := os.Open(filepath.Join(fixtureDir, name))
	require.NoError(t, err)
	defer fh.Close()
	status, names := 0, map[string]bool{}
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "#") || strings.TrimSpace(line) == "":
		case strings.HasPrefix(line, "HTTP/"):
			fields := strings.Fields(line)
			status, err = strconv.Atoi(fields[1])
			require.NoError(t, err)
		default:
			k, _, ok := strings.Cut(line, ":")
			require.True(t, ok, "%s: %q", name, line)
			names[strings.ToLower(strings.TrimSpace(k))] = true
		}
	}
	require.NoError(t, sc.Err())
	return status, names
}

// headersNotReproduced are response headers of the recordings the fake does
// not send, with the reason.
var headersNotReproduced = map[string]string{
	"server":                    "nginx's banner",
	"set-cookie":                "session and load-balancer cookies",
	"content-security-policy":   "browser security headers, irrelevant to API clients",
	"strict-transport-security": "browser security headers, irrelevant to API clients",
	"permissions-policy":        "browser security headers, irrelevant to API clients",
	"x-frame-options":           "browser security headers, irrelevant to API clients",
	"x-xss-protection":          "browser security headers, irrelevant to API clients",
	"x-content-type-options":    "browser security headers, irrelevant to API clients",
	"referrer-policy":           "browser security headers, irrelevant to API clients",
	"transfer-encoding":         "gzip-encoded chunked JSON (34, 35) is not reproduced; bodies have Content-Length",
	"vary":                      "gzip-encoded chunked JSON (34, 35) is not reproduced",
	"content-encoding":          "gzip-encoded chunked JSON (34, 35) is not reproduced",
	"accept-ranges":             "only the pre-2023 stack sent it (92, both none and bytes); 90 has none",
	"content-md5":               "only the pre-2023 stack sent it (92)",
	"etag":                      "checked per route below: JSON records have one, downloads do not (90)",
}

func TestContractHeaders(t *testing.T) {
	s, ts := NewTestServer(t)
	c := newAPI(t, ts.URL)
	anon := newAPI(t, ts.URL)
	anon.token = ""
	pub, err := s.Publish(SeedRecord{Title: "headers", Files: []SeedFile{{Name: "cover.png", Data: pattern(37572)}}})
	require.NoError(t, err)
	dep := c.create(imageMetadata("headers", "1"))

	answers := map[string]resp{}
	answers["01-deposit-create.headers.txt"] = c.doJSON(http.MethodPost, "/api/deposit/depositions", map[string]any{})
	answers["30-rdm-create-draft.headers.txt"] = answers["01-deposit-create.headers.txt"]
	answers["05-bucket-put-file.headers.txt"] = c.put(dep, "data.csv", []byte("a,b\n"))
	answers["05b-bucket-put-file-limit133.headers.txt"] = answers["05-bucket-put-file.headers.txt"]
	answers["36-rdm-draft-publish.headers.txt"] = c.action(dep, "publish")
	answers["39-rdm-new-version-publish.headers.txt"] = answers["36-rdm-draft-publish.headers.txt"]
	answers["37-rdm-new-version.headers.txt"] = c.action(dep, "newversion")
	answers["80-legacy-error-401-deposit-create-no-token.headers.txt"] = anon.doJSON(http.MethodPost, "/api/deposit/depositions", map[string]any{})
	bad := newAPI(t, ts.URL)
	bad.token = "test"
	answers["82-legacy-error-401-bad-token.headers.txt"] = bad.doJSON(http.MethodPost, "/api/deposit/depositions", map[string]any{})
	answers["81-legacy-error-404-record-not-found.headers.txt"] = anon.do(http.MethodGet, "/api/records/68358988", nil)
	answers["90-download-records-files-ui-route-HEAD.headers.txt"] = anon.do(http.MethodHead, "/records/"+pub.RecID+"/files/cover.png", nil)
	answers["91-download-api-content-HEAD-PARTIAL.headers.txt"] = anon.do(http.MethodHead, "/api/records/"+pub.RecID+"/files/cover.png/content", nil)
	answers["92-legacy-download-range-206.headers.txt"] = anon.do(http.MethodGet, "/records/"+pub.RecID+"/files/cover.png?download=1", nil, "Range", "bytes=-180")
	notServed := map[string]bool{ // the InvenioRDM draft API
		"31-rdm-reserve-doi.headers.txt": true, "32-rdm-draft-files-init.headers.txt": true,
		"33-rdm-draft-file-content-put.headers.txt": true, "34-rdm-draft-file-commit.headers.txt": true,
		"35-rdm-draft-update-metadata.headers.txt": true, "38-rdm-new-version-files-init-with-inherited-files.headers.txt": true,
	}

	entries, err := os.ReadDir(fixtureDir)
	require.NoError(t, err)
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".headers.txt") || notServed[name] {
			continue
		}
		t.Run(name, func(t *testing.T) {
			got, ok := answers[name]
			require.True(t, ok, "header fixture %s is neither replayed nor listed as not served", name)
			status, names := headerFixture(t, name)
			assert.Equal(t, status, got.status, "%s", got.body)
			var missing []string
			for h := range names {
				if _, skip := headersNotReproduced[h]; !skip && got.header.Get(h) == "" {
					missing = append(missing, h)
				}
			}
			sort.Strings(missing)
			assert.Empty(t, missing, "headers of %s missing from the fake's answer", name)
			if names["etag"] && strings.Contains(got.header.Get("Content-Type"), "json") {
				assert.NotEmpty(t, got.header.Get("ETag"), "JSON records carry a revision ETag")
			}
		})
	}
	assert.Empty(t, answers["90-download-records-files-ui-route-HEAD.headers.txt"].header.Get("ETag"))
	r := answers["92-legacy-download-range-206.headers.txt"]
	assert.Equal(t, "bytes 37392-37571/37572", r.header.Get("Content-Range"))
	assert.Equal(t, fmt.Sprint(180), r.header.Get("Content-Length"))
}

func TestMissingKeys(t *testing.T) {
	want := map[string]any{"a": 1.0, "b": map[string]any{"c": 1.0, "d": 1.0}, "l": []any{map[string]any{"x": 1.0}}, "s": "x"}
	got := map[string]any{"a": 2.0, "b": map[string]any{"c": 1.0}, "l": []any{map[string]any{"y": 1.0}}, "s": map[string]any{}}
	assert.Equal(t, []string{"b.d", "l[].x"}, missingKeys(want, got, "", nil))
	assert.Equal(t, []string{"l[].x"}, missingKeys(want, got, "", map[string]string{"b.d": "why"}))
	assert.Equal(t, []string{"l[] (empty)"}, missingKeys(want, map[string]any{"a": 1.0, "b": map[string]any{"c": 1.0, "d": 1.0}, "l": []any{}, "s": ""}, "", nil))
}
