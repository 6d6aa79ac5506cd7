package zenodotest

import (
	"bytes"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestDepositLifecycle(t *testing.T) {
	s, ts := NewTestServer(t, WithDOIPrefix("10.5072"))
	c := newAPI(t, ts.URL)

	// Create: ids, reserved DOI, absolute links from the request's host.
	dep := c.create(imageMetadata("Docker image example/tool", "1.0"))
	id := idOf(t, dep)
	concept := dep["conceptrecid"].(string)
	assert.Equal(t, "unsubmitted", dep["state"])
	assert.Equal(t, false, dep["submitted"])
	assert.NotContains(t, dep, "doi")
	md := dep["metadata"].(map[string]any)
	assert.Equal(t, map[string]any{"doi": "10.5072/zenodo." + id, "recid": dep["id"]}, md["prereserve_doi"])
	assert.True(t, strings.HasPrefix(link(t, dep, "bucket"), ts.URL+"/api/files/"), link(t, dep, "bucket"))
	assert.Equal(t, ts.URL+"/api/deposit/depositions/"+id, link(t, dep, "latest_draft"))
	assert.Less(t, concept, id)

	// Upload two files; the answer's checksum is the md5 of what was sent.
	layer, manifest := pattern(300<<10), []byte(`{"schemaVersion":2}`)
	r := c.put(dep, "layer.tar", layer)
	require.Equal(t, http.StatusCreated, r.status, "%s", r.body)
	up := r.json(t)
	assert.Equal(t, "md5:"+md5hex(layer), up["checksum"])
	assert.EqualValues(t, len(layer), up["size"])
	assert.Equal(t, "layer.tar", up["key"])
	require.Equal(t, http.StatusCreated, c.put(dep, "manifest.json", manifest).status)
	// Re-uploading a key replaces it.
	require.Equal(t, http.StatusCreated, c.put(dep, "manifest.json", manifest).status)

	got := c.do(http.MethodGet, link(t, dep, "self"), nil).json(t)
	files := got["files"].([]any)
	require.Len(t, files, 2)
	f0 := files[0].(map[string]any)
	assert.Equal(t, "layer.tar", f0["filename"])
	assert.Equal(t, md5hex(layer), f0["checksum"], "deposit files have no md5: prefix")
	assert.Equal(t, ts.URL+"/api/records/"+id+"/draft/files/layer.tar/content", link(t, f0, "download"))
	dl := c.do(http.MethodGet, link(t, f0, "download"), nil)
	require.Equal(t, http.StatusOK, dl.status)
	assert.Equal(t, layer, dl.body)

	// Drafts are not public records.
	assert.Equal(t, http.StatusNotFound, c.do(http.MethodGet, "/api/records/"+id, nil).status)

	// Publish: 202, DOI minted, bucket locked.
	r = c.action(dep, "publish")
	require.Equal(t, http.StatusAccepted, r.status, "%s", r.body)
	pub := r.json(t)
	assert.Equal(t, "done", pub["state"])
	assert.Equal(t, true, pub["submitted"])
	assert.Equal(t, "10.5072/zenodo."+id, pub["doi"])
	assert.Equal(t, "10.5072/zenodo."+concept, pub["conceptdoi"])
	r = c.put(dep, "late.txt", []byte("too late"))
	assert.Equal(t, http.StatusForbidden, r.status)
	assert.Equal(t, msgBucketLocked, r.json(t)["message"])
	r = c.do(http.MethodDelete, link(t, dep, "bucket")+"/layer.tar", nil)
	assert.Equal(t, http.StatusForbidden, r.status)
	assert.Equal(t, http.StatusForbidden, c.do(http.MethodDelete, link(t, dep, "self"), nil).status)
	r = c.action(dep, "publish")
	assert.Equal(t, http.StatusBadRequest, r.status)

	// The record: files with md5: checksums and absolute content links.
	rec := c.do(http.MethodGet, "/api/records/"+id, nil)
	require.Equal(t, http.StatusOK, rec.status)
	assert.Equal(t, `"2"`, rec.header.Get("ETag"))
	rj := rec.json(t)
	rf := rj["files"].([]any)[0].(map[string]any)
	assert.Equal(t, "md5:"+md5hex(layer), rf["checksum"])
	assert.Equal(t, ts.URL+"/api/records/"+id+"/files/layer.tar/content", link(t, rf, "self"))
	assert.Equal(t, ts.URL+"/api/records/"+concept, link(t, rj, "parent"))
	assert.Equal(t, "1.0", rj["metadata"].(map[string]any)["version"])
	assert.Equal(t, map[string]any{"title": "Software", "type": "software"}, rj["metadata"].(map[string]any)["resource_type"])

	// A concept recid is not a record (after the migration).
	r = c.do(http.MethodGet, "/api/records/"+concept, nil)
	assert.Equal(t, http.StatusNotFound, r.status)
	assert.Equal(t, map[string]any{"status": float64(404), "message": "PID does not exist."}, r.json(t))

	// New version: a new draft that inherits the files and drops the version.
	r = c.action(dep, "newversion")
	require.Equal(t, http.StatusCreated, r.status, "%s", r.body)
	nv := r.json(t)
	draftURL := link(t, nv, "latest_draft")
	draft := c.do(http.MethodGet, draftURL, nil).json(t)
	id2 := idOf(t, draft)
	assert.NotEqual(t, id, id2)
	assert.Equal(t, concept, draft["conceptrecid"])
	assert.NotContains(t, draft["metadata"], "version")
	assert.Contains(t, draft["metadata"], "publication_date")
	assert.NotContains(t, draft, "doi")
	assert.Len(t, draft["files"], 2)
	// The old version's links.latest_draft now names the draft.
	assert.Equal(t, draftURL, link(t, c.do(http.MethodGet, link(t, dep, "self"), nil).json(t), "latest_draft"))

	// Only one open draft per concept: its files block a second newversion.
	r = c.action(dep, "newversion")
	assert.Equal(t, http.StatusBadRequest, r.status)
	assert.Contains(t, string(r.body), "Please remove all files first.")

	// Replace the files of the draft, set the version, publish.
	for _, f := range draft["files"].([]any) {
		r := c.do(http.MethodDelete, link(t, f.(map[string]any), "self"), nil)
		require.Equal(t, http.StatusNoContent, r.status)
	}
	layer2 := pattern(1000)
	require.Equal(t, http.StatusCreated, c.put(draft, "layer.tar", layer2).status)
	md2 := imageMetadata("Docker image example/tool", "2.0")
	r = c.doJSON(http.MethodPut, draftURL, map[string]any{"metadata": md2})
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	require.Equal(t, http.StatusAccepted, c.action(draft, "publish").status)

	// The old version's files did not change.
	old := c.do(http.MethodGet, "/records/"+id+"/files/layer.tar", nil)
	assert.Equal(t, layer, old.body)

	// versions/latest redirects to the newest version, from either id.
	for _, from := range []string{id, concept} {
		r := c.noRedirect().do(http.MethodGet, "/api/records/"+from+"/versions/latest", nil)
		require.Equal(t, http.StatusFound, r.status)
		assert.Equal(t, ts.URL+"/api/records/"+id2, r.header.Get("Location"))
		followed := c.do(http.MethodGet, "/api/records/"+from+"/versions/latest", nil).json(t)
		assert.Equal(t, "2.0", followed["metadata"].(map[string]any)["version"])
	}

	// Versions, newest first, paged.
	vs := c.do(http.MethodGet, "/api/records/"+id+"/versions?size=1&page=2&sort=version", nil).json(t)
	hits := vs["hits"].(map[string]any)
	assert.EqualValues(t, 2, hits["total"])
	require.Len(t, hits["hits"], 1)
	assert.Equal(t, "1.0", hits["hits"].([]any)[0].(map[string]any)["metadata"].(map[string]any)["version"])
	assert.Contains(t, vs["links"], "prev")
	assert.NotContains(t, vs["links"], "next")
	rv := c.do(http.MethodGet, "/api/records/"+id2, nil).json(t)
	rel := rv["metadata"].(map[string]any)["relations"].(map[string]any)["version"].([]any)[0].(map[string]any)
	assert.Equal(t, map[string]any{"index": float64(1), "is_last": true, "parent": map[string]any{"pid_type": "recid", "pid_value": concept}}, rel)

	// Discarding a fresh draft deletes it.
	fresh := c.create(imageMetadata("scratch", ""))
	assert.Equal(t, http.StatusNoContent, c.do(http.MethodDelete, link(t, fresh, "self"), nil).status)
	assert.Equal(t, http.StatusNotFound, c.do(http.MethodGet, link(t, fresh, "self"), nil).status)

	// Another user sees none of it.
	s.ResetRequests()
	other := newAPI(t, ts.URL)
	other.token = "nobody"
	r = other.do(http.MethodGet, "/api/deposit/depositions/"+id, nil)
	assert.Equal(t, http.StatusUnauthorized, r.status)
	assert.Equal(t, msgUnauthorized, r.json(t)["message"])
	assert.Equal(t, []Request{{Method: "GET", Path: "/api/deposit/depositions/" + id, Status: 401, Bytes: int64(len(r.body))}}, withoutTime(s.Requests()))
}

func withoutTime(rs []Request) []Request {
	out := make([]Request, len(rs))
	for i, r := range rs {
		r.Time = time.Time{}
		out[i] = r
	}
	return out
}

func TestEditPublished(t *testing.T) {
	_, ts := NewTestServer(t)
	c := newAPI(t, ts.URL)
	dep := c.create(imageMetadata("editable", "1"))
	require.Equal(t, http.StatusCreated, c.put(dep, "a", []byte("a")).status)
	require.Equal(t, http.StatusAccepted, c.action(dep, "publish").status)
	id := idOf(t, dep)

	assert.Equal(t, http.StatusForbidden, c.doJSON(http.MethodPut, link(t, dep, "self"), map[string]any{"metadata": imageMetadata("changed", "1")}).status)
	r := c.action(dep, "edit")
	require.Equal(t, http.StatusCreated, r.status)
	assert.Equal(t, "inprogress", r.json(t)["state"])
	require.Equal(t, http.StatusOK, c.doJSON(http.MethodPut, link(t, dep, "self"), map[string]any{"metadata": imageMetadata("changed", "1")}).status)
	assert.Equal(t, "editable", c.do(http.MethodGet, "/api/records/"+id, nil).json(t)["title"], "edits are not public before publish")
	assert.Equal(t, http.StatusForbidden, c.put(dep, "b", []byte("b")).status, "files stay locked while editing")
	require.Equal(t, http.StatusAccepted, c.action(dep, "publish").status)
	assert.Equal(t, "changed", c.do(http.MethodGet, "/api/records/"+id, nil).json(t)["title"])

	// Discarding an edit reverts the metadata.
	require.Equal(t, http.StatusCreated, c.action(dep, "edit").status)
	require.Equal(t, http.StatusOK, c.doJSON(http.MethodPut, link(t, dep, "self"), map[string]any{"metadata": imageMetadata("discarded", "1")}).status)
	require.Equal(t, http.StatusNoContent, c.action(dep, "discard").status)
	got := c.do(http.MethodGet, link(t, dep, "self"), nil).json(t)
	assert.Equal(t, "changed", got["title"])
	assert.Equal(t, "done", got["state"])
}

func TestNewVersionReturnsEmptyOpenDraft(t *testing.T) {
	s, ts := NewTestServer(t)
	pub, err := s.Publish(SeedRecord{Title: "seeded", Version: "1", Files: []SeedFile{{Name: "a", Data: []byte("aaa")}}})
	require.NoError(t, err)
	c := newAPI(t, ts.URL)
	r := c.do(http.MethodPost, "/api/deposit/depositions/"+pub.RecID+"/actions/newversion", nil)
	require.Equal(t, http.StatusCreated, r.status, "%s", r.body)
	draft := r.json(t)
	for _, f := range draft["files"].([]any) {
		require.Equal(t, http.StatusNoContent, c.do(http.MethodDelete, link(t, f.(map[string]any), "self"), nil).status)
	}
	// With no files in it, newversion answers the same draft and imports
	// the files again, as Zenodo's legacy API.
	r = c.do(http.MethodPost, "/api/deposit/depositions/"+pub.RecID+"/actions/newversion", nil)
	require.Equal(t, http.StatusCreated, r.status, "%s", r.body)
	again := r.json(t)
	assert.Equal(t, draft["id"], again["id"])
	assert.Len(t, again["files"], 1)

	// Seeding a version while a draft is open is a conflict.
	_, err = s.Publish(SeedRecord{Title: "v2", ConceptRecID: pub.ConceptRecID, Files: []SeedFile{{Name: "a", Data: []byte("b")}}})
	require.Error(t, err)
}

func TestPublishValidation(t *testing.T) {
	_, ts := NewTestServer(t)
	c := newAPI(t, ts.URL)
	dep := c.create(map[string]any{"title": "no files"})
	r := c.action(dep, "publish")
	require.Equal(t, http.StatusBadRequest, r.status)
	body := r.json(t)
	assert.Equal(t, msgValidation, body["message"])
	var fields []string
	for _, e := range body["errors"].([]any) {
		fields = append(fields, e.(map[string]any)["field"].(string))
		assert.NotEmpty(t, e.(map[string]any)["messages"])
	}
	assert.ElementsMatch(t, []string{"metadata.upload_type", "metadata.creators", "files.enabled"}, fields)

	r = c.doJSON(http.MethodPut, link(t, dep, "self"), map[string]any{"metadata": map[string]any{"upload_type": "container"}})
	assert.Equal(t, http.StatusBadRequest, r.status)
	r = c.do(http.MethodPut, link(t, dep, "self"), strings.NewReader("{not json"))
	assert.Equal(t, http.StatusBadRequest, r.status)
}

func TestUploadLimits(t *testing.T) {
	_, ts := NewTestServer(t, WithMaxRecordSize(1000), WithMaxFiles(3))
	c := newAPI(t, ts.URL)
	dep := c.create(imageMetadata("limits", ""))

	r := c.put(dep, "empty", nil)
	assert.Equal(t, http.StatusBadRequest, r.status)
	assert.Equal(t, msgEmptyFile, r.json(t)["message"])

	require.Equal(t, http.StatusCreated, c.put(dep, "a", pattern(600)).status)
	// Over the record size: refused from Content-Length...
	r = c.put(dep, "b", pattern(600))
	assert.Equal(t, http.StatusBadRequest, r.status)
	assert.Equal(t, msgQuotaExceeded, r.json(t)["message"])
	// ...and while streaming when there is none.
	r = c.do(http.MethodPut, link(t, dep, "bucket")+"/b", io.MultiReader(bytes.NewReader(pattern(300)), bytes.NewReader(pattern(300))))
	assert.Equal(t, http.StatusBadRequest, r.status)
	assert.Equal(t, msgQuotaExceeded, r.json(t)["message"])
	// Replacing a key counts its new size only.
	require.Equal(t, http.StatusCreated, c.put(dep, "a", pattern(900)).status)

	require.Equal(t, http.StatusCreated, c.put(dep, "a", pattern(10)).status)
	require.Equal(t, http.StatusCreated, c.put(dep, "b", pattern(10)).status)
	require.Equal(t, http.StatusCreated, c.put(dep, "c", pattern(10)).status)
	r = c.put(dep, "d", pattern(10))
	assert.Equal(t, http.StatusBadRequest, r.status)
	assert.Equal(t, "Uploading the selected files would result in 4 files (max is 3).", r.json(t)["message"])

	for _, key := range []string{"a%5Cb", "a%2Fb", strings.Repeat("k", 256)} {
		assert.Equal(t, http.StatusBadRequest, c.put(dep, key, []byte("x")).status, key)
	}
	got := c.do(http.MethodGet, link(t, dep, "self"), nil).json(t)
	assert.Len(t, got["files"], 3)
}

func TestMultipartUpload(t *testing.T) {
	_, ts := NewTestServer(t)
	c := newAPI(t, ts.URL)
	dep := c.create(imageMetadata("multipart", ""))
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	require.NoError(t, mw.WriteField("name", "renamed.bin"))
	fw, err := mw.CreateFormFile("file", "orig.bin")
	require.NoError(t, err)
	_, _ = fw.Write([]byte("hello"))
	require.NoError(t, mw.Close())
	r := c.do(http.MethodPost, link(t, dep, "files"), &buf, "Content-Type", mw.FormDataContentType())
	require.Equal(t, http.StatusCreated, r.status, "%s", r.body)
	f := r.json(t)
	assert.Equal(t, "renamed.bin", f["filename"])
	assert.Equal(t, md5hex([]byte("hello")), f["checksum"])
	l := c.do(http.MethodGet, link(t, dep, "files"), nil).list(t)
	assert.Len(t, l, 1)
}

func TestSearch(t *testing.T) {
	s, ts := NewTestServer(t)
	c := newAPI(t, ts.URL)
	v1, err := s.Publish(SeedRecord{Title: "Docker image example/tool", Version: "1.0", Files: []SeedFile{{Name: "a", Data: []byte("1")}}})
	require.NoError(t, err)
	_, err = s.Publish(SeedRecord{Title: "Docker image example/tool", Version: "2.0", ConceptRecID: v1.ConceptRecID, Files: []SeedFile{{Name: "a", Data: []byte("2")}}})
	require.NoError(t, err)
	_, err = s.Publish(SeedRecord{Title: "Docker image example/other", Version: "1.0", Files: []SeedFile{{Name: "a", Data: []byte("3")}}})
	require.NoError(t, err)
	draft := c.create(imageMetadata("Docker image example/tool draft", ""))
	_ = draft

	q := url.QueryEscape(`title:"Docker image example/tool"`)
	for _, tc := range []struct {
		name, params string
		deposits     int
		records      int
	}{
		{"latest only", "q=" + q, 2, 1},
		{"allversions", "q=" + q + "&allversions=true", 3, 2},
		{"all_versions is not a parameter", "q=" + q + "&all_versions=true", 2, 1},
		{"phrase order matters", "q=" + url.QueryEscape(`title:"tool example"`), 0, 0},
		{"words", "q=" + url.QueryEscape(`title:example title:other`), 0, 1},
		{"negation", "q=" + url.QueryEscape(`example -other`) + "&allversions=1", 3, 2},
		{"or", "q=" + url.QueryEscape(`metadata.version:"2.0" OR title:other`), 0, 2},
		{"concept", "q=conceptrecid:" + v1.ConceptRecID + "&allversions=true", 0, 2},
		{"everything", "", 3, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := c.do(http.MethodGet, "/api/records?"+tc.params, nil)
			require.Equal(t, http.StatusOK, r.status, "%s", r.body)
			hits := r.json(t)["hits"].(map[string]any)
			assert.EqualValues(t, tc.records, hits["total"])
			if tc.deposits > 0 || strings.Contains(tc.params, "tool") {
				r = c.do(http.MethodGet, "/api/deposit/depositions?"+tc.params, nil)
				require.Equal(t, http.StatusOK, r.status, "%s", r.body)
				assert.Len(t, r.list(t), tc.deposits)
			}
		})
	}
	r := c.do(http.MethodGet, "/api/deposit/depositions?status=draft", nil)
	assert.Len(t, r.list(t), 1)
	r = c.do(http.MethodGet, "/api/records?q="+url.QueryEscape(`title:"unterminated`), nil)
	assert.Equal(t, http.StatusBadRequest, r.status)
	r = c.do(http.MethodGet, "/api/records?size=10001", nil)
	assert.Equal(t, http.StatusBadRequest, r.status)
	r = c.do(http.MethodGet, "/api/records?size=1", nil)
	assert.Contains(t, r.json(t)["links"], "next")
}

func TestIndexDelay(t *testing.T) {
	clock := newFakeClock()
	s, ts := NewTestServer(t, WithClock(clock.Now), WithIndexDelay(2*time.Second))
	c := newAPI(t, ts.URL)
	_, err := s.Publish(SeedRecord{Title: "lagging", Files: []SeedFile{{Name: "a", Data: []byte("a")}}})
	require.NoError(t, err)
	count := func() (records, deposits int) {
		r := c.do(http.MethodGet, "/api/records?q=lagging", nil)
		records = int(r.json(t)["hits"].(map[string]any)["total"].(float64))
		return records, len(c.do(http.MethodGet, "/api/deposit/depositions?q=lagging", nil).list(t))
	}
	rs, ds := count()
	assert.Equal(t, [2]int{0, 0}, [2]int{rs, ds}, "not indexed yet")
	clock.Advance(2 * time.Second)
	rs, ds = count()
	assert.Equal(t, [2]int{1, 1}, [2]int{rs, ds})
}

func TestRouting(t *testing.T) {
	_, ts := NewTestServer(t)
	c := newAPI(t, ts.URL)
	r := c.do(http.MethodGet, "/nothing/here", nil)
	assert.Equal(t, http.StatusNotFound, r.status)
	assert.Equal(t, msgRouteNotFound, r.json(t)["message"])
	r = c.do(http.MethodPatch, "/api/deposit/depositions", nil)
	assert.Equal(t, http.StatusMethodNotAllowed, r.status)
	r = c.do(http.MethodGet, "/api/records/abc", nil)
	assert.Equal(t, http.StatusNotFound, r.status)
	r = c.do(http.MethodPost, "/api/deposit/depositions/1/actions/frobnicate", nil)
	assert.Equal(t, http.StatusNotFound, r.status)
	assert.Equal(t, fmt.Sprint(http.StatusNotFound), fmt.Sprint(r.json(t)["status"]))
}
