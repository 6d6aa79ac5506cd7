package zenodo

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestFixturesDecode decodes every recorded response through the client's
// types and checks the fields the client relies on.
func TestFixturesDecode(t *testing.T) {
	checkDeposition := func(t *testing.T, d *Deposition) {
		assert.Equal(t, ID("412011"), d.ID)
		assert.Equal(t, ID("412010"), d.ConceptRecID)
		assert.Equal(t, "10.5281/zenodo.412011", d.ReservedDOI())
		assert.NotEmpty(t, d.Links["latest_draft"])
		assert.NotEmpty(t, d.Links["newversion"])
		assert.False(t, d.Published())
		assert.Equal(t, "unsubmitted", d.State)
		assert.False(t, d.Created.IsZero())
	}
	checkRecord := func(t *testing.T, r *Record) {
		assert.NotEmpty(t, r.RecordID())
		assert.NotEmpty(t, r.ConceptRecID)
		assert.NotEmpty(t, r.Links["self"])
		for _, f := range r.Files {
			assert.NotEmpty(t, f.Key)
			assert.Positive(t, f.Size)
			assert.Len(t, f.MD5(), 32, f.Checksum)
		}
	}
	checkFile := func(t *testing.T, f *File) {
		assert.NotEmpty(t, f.Key)
		assert.Positive(t, f.Size)
		assert.Len(t, f.MD5(), 32)
	}
	decoders := map[string]func(t *testing.T, b []byte){
		"01-deposit-create.json": func(t *testing.T, b []byte) {
			var d Deposition
			require.NoError(t, json.Unmarshal(b, &d))
			checkDeposition(t, &d)
			assert.Equal(t, "10.5281/zenodo.412011", d.Metadata.PrereserveDOI.DOI)
			assert.Equal(t, ID("412011"), d.Metadata.PrereserveDOI.RecID)
			assert.Equal(t, "sbapi/files/f04aa88e-ee6b-4fd2-af38-9fe9bf54710b", d.Links["bucket"])
			assert.Equal(t, "New Title", d.Metadata.Title)
			assert.Len(t, d.Metadata.Creators, 2)
			assert.Contains(t, d.Metadata.Extra, "imprint_publisher")
		},
		"02-deposit-get-with-files.json": func(t *testing.T, b []byte) {
			var d Deposition
			require.NoError(t, json.Unmarshal(b, &d))
			checkDeposition(t, &d)
			require.Len(t, d.Files, 2)
			f, ok := d.File("data.csv")
			require.True(t, ok)
			assert.Equal(t, "2a2a2aa5-0428-4d03-bfba-5da0fb600688", f.ID)
			assert.Equal(t, int64(625), f.Size)
			assert.Equal(t, "cc624d72ede85ef061afa494d9951f6f", f.MD5())
		},
		"03-deposit-list.json": func(t *testing.T, b []byte) {
			var ds []Deposition
			require.NoError(t, json.Unmarshal(b, &ds))
			require.Len(t, ds, 1)
			checkDeposition(t, &ds[0])
			assert.Equal(t, "cc-by-4.0", ds[0].Metadata.License)
		},
		"03b-deposit-list-fresh-draft.json": func(t *testing.T, b []byte) {
			var ds []Deposition
			require.NoError(t, json.Unmarshal(b, &ds))
			require.Len(t, ds, 1)
			checkDeposition(t, &ds[0])
			assert.Empty(t, ds[0].DOI)
		},
		"04-deposit-put-metadata.json": func(t *testing.T, b []byte) {
			var d Deposition
			require.NoError(t, json.Unmarshal(b, &d))
			checkDeposition(t, &d)
			assert.Equal(t, "Modified Title", d.Title)
		},
		"04b-deposit-put-metadata-embargo.json": func(t *testing.T, b []byte) {
			var d Deposition
			require.NoError(t, json.Unmarshal(b, &d))
			checkDeposition(t, &d)
			assert.Equal(t, "embargoed", d.Metadata.AccessRight)
		},
		"05-bucket-put-file.json":            func(t *testing.T, b []byte) { var f File; require.NoError(t, json.Unmarshal(b, &f)); checkFile(t, &f) },
		"05b-bucket-put-file-limit133.json":  func(t *testing.T, b []byte) { var f File; require.NoError(t, json.Unmarshal(b, &f)); checkFile(t, &f) },
		"33-rdm-draft-file-content-put.json": func(t *testing.T, b []byte) { var f File; require.NoError(t, json.Unmarshal(b, &f)); checkFile(t, &f) },
		"34-rdm-draft-file-commit.json":      func(t *testing.T, b []byte) { var f File; require.NoError(t, json.Unmarshal(b, &f)); checkFile(t, &f) },
		"10-record-get-published-sandbox.json": func(t *testing.T, b []byte) {
			var r Record
			require.NoError(t, json.Unmarshal(b, &r))
			checkRecord(t, &r)
			assert.Equal(t, "145250", r.RecordID())
			assert.Equal(t, "10.5072/zenodo.145248", r.ConceptDOI)
			assert.Equal(t, 1, r.VersionIndex())
			assert.True(t, isLast(&r))
			f, ok := r.File("codecheck.yml")
			require.True(t, ok)
			assert.Equal(t, int64(568), f.Size)
			assert.Equal(t, "cc-by-4.0", r.Metadata.License)
			assert.Equal(t, "https://sandbox.zenodo.org/api/records/145250/versions/latest", r.Links["latest"])
		},
		"20-legacy-records-search-sandbox-2022.json": func(t *testing.T, b []byte) {
			var h recordHits
			require.NoError(t, json.Unmarshal(b, &h))
			assert.Equal(t, hitsTotal(826), h.Hits.Total)
			require.Len(t, h.Hits.Hits, 5)
			for i := range h.Hits.Hits {
				checkRecord(t, &h.Hits.Hits[i])
			}
			assert.NotEmpty(t, h.Links["next"])
		},
		"30-rdm-create-draft.json": func(t *testing.T, b []byte) {
			var r Record
			require.NoError(t, json.Unmarshal(b, &r))
			checkRecord(t, &r)
		},
		"31-rdm-reserve-doi.json": func(t *testing.T, b []byte) {
			var r Record
			require.NoError(t, json.Unmarshal(b, &r))
			checkRecord(t, &r)
		},
		"35-rdm-draft-update-metadata.json": func(t *testing.T, b []byte) {
			var r Record
			require.NoError(t, json.Unmarshal(b, &r))
			checkRecord(t, &r)
			assert.NotEmpty(t, r.Version())
		},
		"36-rdm-draft-publish.json": func(t *testing.T, b []byte) {
			var r Record
			require.NoError(t, json.Unmarshal(b, &r))
			checkRecord(t, &r)
			assert.Equal(t, "published", r.Status)
		},
		"37-rdm-new-version.json": func(t *testing.T, b []byte) {
			var r Record
			require.NoError(t, json.Unmarshal(b, &r))
			checkRecord(t, &r)
		},
		"39-rdm-new-version-publish.json": func(t *testing.T, b []byte) {
			var r Record
			require.NoError(t, json.Unmarshal(b, &r))
			checkRecord(t, &r)
			assert.Equal(t, "4.0.0", r.Version())
			assert.Equal(t, "393401", r.ConceptRecID.String())
			assert.NotContains(t, r.Links, "thumbnails", "non-string links are dropped")
		},
		"32-rdm-draft-files-init.json": func(t *testing.T, b []byte) {
			var v struct{ Entries []File }
			require.NoError(t, json.Unmarshal(b, &v))
			require.Len(t, v.Entries, 2)
			for i := range v.Entries {
				checkFile(t, &v.Entries[i])
			}
		},
		"38-rdm-new-version-files-init-with-inherited-files.json": func(t *testing.T, b []byte) {
			var v struct{ Entries []File }
			require.NoError(t, json.Unmarshal(b, &v))
			require.Len(t, v.Entries, 8)
		},
		"80-legacy-error-401-deposit-create-no-token.json": func(t *testing.T, b []byte) {
			assert.Contains(t, errorMessage(b), "could not verify that you are authorized")
		},
		"81-legacy-error-404-record-not-found.json": func(t *testing.T, b []byte) {
			assert.Equal(t, "PID does not exist.", errorMessage(b))
		},
		"82-legacy-error-401-bad-token.json": func(t *testing.T, b []byte) {
			assert.Contains(t, errorMessage(b), "could not verify")
		},
		"83-error-500-deposit-publish.json": func(t *testing.T, b []byte) {
			assert.Contains(t, errorMessage(b), "internal error")
		},
	}
	names, err := filepath.Glob(filepath.Join(fixtureDir, "*.json"))
	require.NoError(t, err)
	require.NotEmpty(t, names)
	for _, p := range names {
		name := filepath.Base(p)
		t.Run(name, func(t *testing.T) {
			dec, ok := decoders[name]
			require.True(t, ok, "fixture %s has no decoder in this test: add one", name)
			dec(t, fixture(t, name))
		})
	}
	// Every .headers.txt parses and carries the rate-limit headers (91 is cut short).
	headers, err := filepath.Glob(filepath.Join(fixtureDir, "*.headers.txt"))
	require.NoError(t, err)
	for _, p := range headers {
		name := strings.TrimSuffix(filepath.Base(p), ".headers.txt")
		status, h := fixtureHeaders(t, name)
		assert.NotZero(t, status, name)
		if !strings.HasPrefix(name, "91-") {
			_, ok := headerInt(h, "X-RateLimit-Limit")
			assert.True(t, ok, "%s has X-RateLimit-Limit", name)
		}
	}
}

func TestMetadataRoundTrip(t *testing.T) {
	var ds []Deposition
	require.NoError(t, json.Unmarshal(fixture(t, "03-deposit-list.json"), &ds))
	md := ds[0].Metadata
	md.Version = "1.2"
	b, err := json.Marshal(md)
	require.NoError(t, err)
	var back map[string]any
	require.NoError(t, json.Unmarshal(b, &back))
	assert.Equal(t, "1.2", back["version"])
	assert.Equal(t, "cc-by-4.0", back["license"])
	assert.Equal(t, "2022-01-01", back["embargo_date"], "unknown fields survive")
	assert.Equal(t, "Zenodo", back["imprint_publisher"])
	assert.Equal(t, map[string]any{"doi": "10.5281/zenodo.412011", "recid": float64(412011)}, back["prereserve_doi"])

	// Record-style license object is kept as an object unless changed.
	var rec Record
	require.NoError(t, json.Unmarshal(fixture(t, "10-record-get-published-sandbox.json"), &rec))
	b, err = json.Marshal(rec.Metadata)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &back))
	assert.Equal(t, map[string]any{"id": "cc-by-4.0"}, back["license"])
	rec.Metadata.License = "mit"
	b, err = json.Marshal(rec.Metadata)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &back))
	assert.Equal(t, "mit", back["license"])

	// A typed field of the wrong type goes to Extra instead of failing.
	var m Metadata
	require.NoError(t, json.Unmarshal([]byte(`{"version": 1.5, "title": "x", "keywords": "a"}`), &m))
	assert.Equal(t, "x", m.Title)
	assert.Empty(t, m.Version)
	assert.JSONEq(t, `1.5`, string(m.Extra["version"]))
	assert.Nil(t, m.Keywords)
	require.NoError(t, json.Unmarshal([]byte(`null`), &m))
	assert.Equal(t, Metadata{}, m)

	// IDs and times.
	var id ID
	require.NoError(t, json.Unmarshal([]byte(`"abc"`), &id))
	b, _ = json.Marshal(id)
	assert.Equal(t, `"abc"`, string(b))
	require.NoError(t, json.Unmarshal([]byte(`42`), &id))
	b, _ = json.Marshal(id)
	assert.Equal(t, `42`, string(b))
	require.NoError(t, json.Unmarshal([]byte(`null`), &id))
	assert.Equal(t, ID(""), id)
	assert.Error(t, json.Unmarshal([]byte(`true`), &id))
	var tm Time
	require.NoError(t, json.Unmarshal([]byte(`"2022-01-01"`), &tm))
	assert.Equal(t, 2022, tm.Year())
	require.NoError(t, json.Unmarshal([]byte(`"garbage"`), &tm))
	assert.True(t, tm.IsZero())
	b, _ = json.Marshal(tm)
	assert.Equal(t, "null", string(b))
	var tot hitsTotal
	require.NoError(t, json.Unmarshal([]byte(`{"value": 7}`), &tot))
	assert.Equal(t, hitsTotal(7), tot)
}

// TestFixtureReplay runs the client's calls against handlers that answer
// with the recorded responses, headers included.
func TestFixtureReplay(t *testing.T) {
	var (
		mu      sync.Mutex
		queries []string
		bodies  = map[string][]byte{}
		deleted []string
	)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/deposit/depositions", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies["create"] = b
		mu.Unlock()
		replay(t, w, r, "01-deposit-create.json", 0)
	})
	mux.HandleFunc("GET /api/deposit/depositions", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		queries = append(queries, r.URL.RawQuery)
		mu.Unlock()
		replay(t, w, r, "03-deposit-list.json", http.StatusOK)
	})
	mux.HandleFunc("GET /api/deposit/depositions/412011", func(w http.ResponseWriter, r *http.Request) {
		replay(t, w, r, "02-deposit-get-with-files.json", http.StatusOK)
	})
	mux.HandleFunc("GET /api/deposit/depositions/412011/files", func(w http.ResponseWriter, r *http.Request) {
		var d Deposition
		require.NoError(t, json.Unmarshal(fixture(t, "02-deposit-get-with-files.json"), &d))
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(d.Files)
	})
	mux.HandleFunc("DELETE /api/deposit/depositions/412011/files/{id}", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		deleted = append(deleted, r.PathValue("id"))
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("PUT /api/deposit/depositions/412011", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies["put"] = b
		mu.Unlock()
		replay(t, w, r, "04-deposit-put-metadata.json", http.StatusOK)
	})
	mux.HandleFunc("PUT /api/files/f04aa88e-ee6b-4fd2-af38-9fe9bf54710b/{key}", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies["upload:"+r.PathValue("key")] = b
		mu.Unlock()
		replay(t, w, r, "05-bucket-put-file.json", 0)
	})
	mux.HandleFunc("POST /api/deposit/depositions/412011/actions/publish", func(w http.ResponseWriter, r *http.Request) {
		replay(t, w, r, "36-rdm-draft-publish.json", 0)
	})
	mux.HandleFunc("GET /api/records/145250", func(w http.ResponseWriter, r *http.Request) {
		replay(t, w, r, "10-record-get-published-sandbox.json", http.StatusOK)
	})
	mux.HandleFunc("GET /api/records/145250/versions", func(w http.ResponseWriter, r *http.Request) {
		replay(t, w, r, "20-legacy-records-search-sandbox-2022.json", http.StatusOK)
	})
	mux.HandleFunc("GET /api/records/68358988", func(w http.ResponseWriter, r *http.Request) {
		replay(t, w, r, "81-legacy-error-404-record-not-found.json", 0)
	})
	mux.HandleFunc("GET /api/records/68358988/versions/latest", func(w http.ResponseWriter, r *http.Request) {
		replay(t, w, r, "81-legacy-error-404-record-not-found.json", 0)
	})
	srv := newServer(t, mux)
	ctx := context.Background()
	c := newClient(t, srv.URL, WithToken(testToken))

	dep, err := c.CreateDeposition(ctx, Metadata{Title: "New Title", UploadType: "other"})
	require.NoError(t, err)
	assert.Equal(t, "10.5281/zenodo.412011", dep.ReservedDOI())
	assert.Equal(t, srv.URL+"/api/files/f04aa88e-ee6b-4fd2-af38-9fe9bf54710b", dep.Links["bucket"])
	assert.JSONEq(t, `{"metadata":{"title":"New Title","upload_type":"other","prereserve_doi":true}}`, string(bodies["create"]))

	got, err := c.GetDeposition(ctx, "412011")
	require.NoError(t, err)
	assert.Len(t, got.Files, 2)

	found, err := c.SearchDepositions(ctx, "New Title")
	require.NoError(t, err)
	require.Len(t, found, 1)
	none, err := c.SearchDepositions(ctx, "New")
	require.NoError(t, err)
	assert.Empty(t, none, "search results are filtered to the exact title")
	require.NotEmpty(t, queries)
	assert.Contains(t, queries[0], "allversions=true")
	assert.NotContains(t, queries[0], "all_versions")
	assert.Contains(t, queries[0], "q=title%3A%22New+Title%22")

	md := got.Metadata
	md.Title = "Modified Title"
	upd, err := c.UpdateMetadata(ctx, "412011", md)
	require.NoError(t, err)
	assert.Equal(t, "Modified Title", upd.Metadata.Title)
	var sent struct{ Metadata map[string]any }
	require.NoError(t, json.Unmarshal(bodies["put"], &sent))
	assert.Equal(t, "Modified Title", sent.Metadata["title"])
	assert.Equal(t, "Zenodo", sent.Metadata["imprint_publisher"])

	// The recorded upload answers md5 cc624d72…, which these bytes do not
	// have: the client must notice, delete the file and say so.
	var progress []int64
	_, err = c.Upload(ctx, dep, "data.csv", strings.NewReader("not the recorded data"), 21, func(n int64) { progress = append(progress, n) })
	require.Error(t, err)
	assert.ErrorIs(t, err, ErrChecksumMismatch)
	assert.True(t, errdefs.IsDataLoss(err))
	assert.Equal(t, []string{"2a2a2aa5-0428-4d03-bfba-5da0fb600688"}, deleted)
	assert.Equal(t, "not the recorded data", string(bodies["upload:data.csv"]))
	require.NotEmpty(t, progress)
	assert.Equal(t, int64(21), progress[len(progress)-1])

	pub, err := c.Publish(ctx, "412011")
	require.NoError(t, err)
	assert.Equal(t, "done", pub.State)

	rec, err := c.GetRecord(ctx, "145250")
	require.NoError(t, err)
	assert.Equal(t, "10.5072/zenodo.145250", rec.DOI)
	files, err := c.Files(ctx, "145250")
	require.NoError(t, err)
	require.Len(t, files, 1)
	assert.Equal(t, "codecheck.yml", files[0].Key)

	versions, err := c.Versions(ctx, "145250")
	require.NoError(t, err)
	assert.Len(t, versions, 5)

	_, err = c.GetRecord(ctx, "68358988")
	require.Error(t, err)
	assert.ErrorIs(t, err, ErrNotFound)
	assert.True(t, errdefs.IsNotFound(err))
	var ze *Error
	require.True(t, errors.As(err, &ze))
	assert.Equal(t, http.StatusNotFound, ze.StatusCode)
	assert.Equal(t, "PID does not exist.", ze.Message)
	assert.False(t, ze.Temporary())
	assert.Contains(t, err.Error(), "PID does not exist.")

	_, err = c.Latest(ctx, "68358988")
	assert.ErrorIs(t, err, ErrNotFound)
}

// TestFixtureErrors replays the recorded error responses.
func TestFixtureErrors(t *testing.T) {
	tests := []struct {
		fixture   string
		status    int
		kind      error
		temporary bool
	}{
		{"80-legacy-error-401-deposit-create-no-token.json", 0, ErrUnauthorized, false},
		{"82-legacy-error-401-bad-token.json", 0, ErrUnauthorized, false},
		{"81-legacy-error-404-record-not-found.json", 0, ErrNotFound, false},
		{"83-error-500-deposit-publish.json", http.StatusInternalServerError, errdefs.ErrInternal, true},
	}
	for _, tt := range tests {
		t.Run(tt.fixture, func(t *testing.T) {
			var n int
			var mu sync.Mutex
			srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				n++
				mu.Unlock()
				replay(t, w, r, tt.fixture, tt.status)
			}))
			rec := &recorder{}
			c := newClient(t, srv.URL, WithObserver(rec.observe))
			_, err := c.CreateDeposition(context.Background(), Metadata{})
			require.Error(t, err)
			assert.ErrorIs(t, err, tt.kind)
			var ze *Error
			require.True(t, errors.As(err, &ze))
			assert.Equal(t, tt.temporary, ze.Temporary())
			assert.NotEmpty(t, ze.Message)
			assert.Equal(t, 1, n, "a POST is not retried after the server may have acted")
			assert.Equal(t, 1, rec.count(EventRequest))
		})
	}
	// The recorded 401 says the limit is 60/min: an authenticated client
	// (100/min by default) lowers its own budget to it.
	srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		replay(t, w, r, "80-legacy-error-401-deposit-create-no-token.json", 0)
	}))
	c := newClient(t, srv.URL, WithToken(testToken))
	assert.Equal(t, AuthenticatedPerMinute, c.budget.perMinute)
	_, err := c.GetDeposition(context.Background(), "1")
	require.ErrorIs(t, err, ErrUnauthorized)
	assert.Equal(t, 60, c.budget.perMinute)
	assert.Equal(t, 60, c.budget.minute.n)

	// 133 (05b) is above our default: nothing changes.
	srv2 := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		replay(t, w, r, "05b-bucket-put-file-limit133.json", http.StatusOK)
	}))
	c2 := newClient(t, srv2.URL, WithToken(testToken))
	_, err = c2.GetDeposition(context.Background(), "1")
	require.NoError(t, err)
	assert.Equal(t, AuthenticatedPerMinute, c2.budget.perMinute)
}

func TestFixtureDirIsComplete(t *testing.T) {
	entries, err := os.ReadDir(fixtureDir)
	require.NoError(t, err)
	assert.GreaterOrEqual(t, len(entries), 44)
}
