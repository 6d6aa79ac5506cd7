package zenodo

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// versionsServer serves concepts and their versions like Zenodo's records
// API: GET /api/records/<concept> answers 404 (or redirects, if redirect),
// /versions and /versions/latest work for versions, /versions 404s for
// concepts.
type versionsServer struct {
	concepts map[string][]Record // concept id → versions, oldest first
	redirect bool
	requests atomic.Int32
}

func (v *versionsServer) add(concept string, tags ...string) {
	if v.concepts == nil {
		v.concepts = map[string][]Record{}
	}
	base, _ := strconv.Atoi(concept)
	for i, tag := range tags {
		id := strconv.Itoa(base + 1 + i)
		r := Record{
			ID: ID(id), RecID: ID(id), ConceptRecID: ID(concept),
			DOI: "10.5281/zenodo." + id, ConceptDOI: "10.5281/zenodo." + concept,
			Metadata: Metadata{Version: tag, Relations: &Relations{Version: []VersionRelation{{Index: i, IsLast: i == len(tags)-1, Parent: PID{"recid", concept}}}}},
			Files:    []File{{Key: "image.tar", Size: 10, Checksum: "md5:" + strings.Repeat("0", 32)}},
		}
		v.concepts[concept] = append(v.concepts[concept], r)
	}
}

func (v *versionsServer) find(id string) (concept string, rec *Record) {
	for c, recs := range v.concepts {
		if c == id {
			return c, nil
		}
		for i := range recs {
			if recs[i].RecordID() == id {
				return c, &recs[i]
			}
		}
	}
	return "", nil
}

func (v *versionsServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	v.requests.Add(1)
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	if len(parts) < 3 || parts[0] != "api" || parts[1] != "records" {
		http.NotFound(w, r)
		return
	}
	concept, rec := v.find(parts[2])
	notFound := func() {
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprint(w, `{"status": 404, "message": "PID does not exist."}`)
	}
	if concept == "" {
		notFound()
		return
	}
	versions := v.concepts[concept]
	latest := versions[len(versions)-1]
	switch {
	case len(parts) == 3 && rec == nil && v.redirect:
		http.Redirect(w, r, "/api/records/"+latest.RecordID(), http.StatusFound)
	case len(parts) == 3 && rec == nil:
		notFound()
	case len(parts) == 3:
		json.NewEncoder(w).Encode(rec)
	case len(parts) == 5 && parts[3] == "versions" && parts[4] == "latest":
		json.NewEncoder(w).Encode(latest)
	case len(parts) == 4 && parts[3] == "versions" && rec != nil:
		size, _ := strconv.Atoi(r.URL.Query().Get("size"))
		page, _ := strconv.Atoi(r.URL.Query().Get("page"))
		if size <= 0 || page <= 0 || r.URL.Query().Get("sort") != "version" {
			http.Error(w, "bad paging", http.StatusBadRequest)
			return
		}
		var hits recordHits
		hits.Hits.Total = hitsTotal(len(versions))
		// Newest first, as Zenodo sorts by version.
		for i := len(versions) - 1 - (page-1)*size; i >= 0 && i > len(versions)-1-page*size; i-- {
			hits.Hits.Hits = append(hits.Hits.Hits, versions[i])
		}
		json.NewEncoder(w).Encode(hits)
	default:
		notFound()
	}
}

func TestResolve(t *testing.T) {
	for _, redirect := range []bool{false, true} {
		t.Run(fmt.Sprintf("redirect=%v", redirect), func(t *testing.T) {
			vs := &versionsServer{redirect: redirect}
			vs.add("100", "1.0", "1.1", "", "1.1")
			c := newClient(t, newServer(t, vs).URL)
			ctx := context.Background()
			tests := []struct {
				ref      string
				want     string
				requests int32 // 0: don't check
			}{
				{"10.5281/zenodo.102", "102", 1},
				{"10.5281/zenodo.100", "104", 0},
				{"zenodo.org/10.5281/zenodo.100:1.0", "101", 0},
				{"zenodo.org/10.5281/zenodo.100:1.1", "104", 0},
				{"zenodo.org/10.5281/zenodo.100:latest", "104", 0},
				{"zenodo.org/10.5281/zenodo.101:latest", "104", 2},
				{"zenodo.org/10.5281/zenodo.101:1.0", "101", 1},
				{"zenodo.org/10.5281/zenodo.101:1.1", "104", 2},
				{"https://zenodo.org/records/103", "103", 1},
			}
			for _, tt := range tests {
				ref, err := ParseReference(tt.ref)
				require.NoError(t, err)
				before := vs.requests.Load()
				rec, err := c.Resolve(ctx, ref)
				require.NoError(t, err, tt.ref)
				assert.Equal(t, tt.want, rec.RecordID(), tt.ref)
				if tt.requests > 0 {
					assert.Equal(t, tt.requests, vs.requests.Load()-before, "requests for %s", tt.ref)
				}
			}
			ref, _ := ParseReference("zenodo.org/10.5281/zenodo.100:2.0")
			_, err := c.Resolve(ctx, ref)
			require.ErrorIs(t, err, ErrNotFound)
			assert.True(t, errdefs.IsNotFound(err))
			for _, s := range []string{`"2.0"`, "1.0 (10.5281/zenodo.101)", "1.1 (10.5281/zenodo.102)", "(untagged) (10.5281/zenodo.103)", "zenodo.org/10.5281/zenodo.100:2.0"} {
				assert.Contains(t, err.Error(), s)
			}
			ref, _ = ParseReference("10.5281/zenodo.999")
			_, err = c.Resolve(ctx, ref)
			require.ErrorIs(t, err, ErrNotFound)
			_, err = c.Resolve(ctx, Reference{})
			require.ErrorIs(t, err, errdefs.ErrInvalidArgument)
		})
	}
}

func TestVersions(t *testing.T) {
	vs := &versionsServer{}
	tags := make([]string, 150)
	for i := range tags {
		tags[i] = fmt.Sprintf("0.%d", i)
	}
	vs.add("1000", tags...)
	vs.add("5000", "only")
	c := newClient(t, newServer(t, vs).URL)
	ctx := context.Background()

	for _, id := range []string{"1000", "1001", "1150"} {
		before := vs.requests.Load()
		recs, err := c.Versions(ctx, id)
		require.NoError(t, err, id)
		require.Len(t, recs, 150)
		for i, r := range recs {
			assert.Equal(t, tags[i], r.Version(), "oldest first")
		}
		if id != "1000" {
			assert.Equal(t, int32(2), vs.requests.Load()-before, "two pages")
		}
	}
	latest, err := c.Latest(ctx, "1000")
	require.NoError(t, err)
	assert.Equal(t, "1150", latest.RecordID())
	_, err = c.Versions(ctx, "4")
	assert.ErrorIs(t, err, ErrNotFound)
	_, err = c.Versions(ctx, "x")
	assert.ErrorIs(t, err, errdefs.ErrInvalidArgument)
	_, err = c.Latest(ctx, "")
	assert.ErrorIs(t, err, errdefs.ErrInvalidArgument)
	_, err = c.GetRecord(ctx, "1/2")
	assert.ErrorIs(t, err, errdefs.ErrInvalidArgument)
	_, err = c.Files(ctx, "4")
	assert.ErrorIs(t, err, ErrNotFound)
	_, err = c.SearchDepositions(ctx, " ")
	assert.ErrorIs(t, err, errdefs.ErrInvalidArgument)

	// A record without /versions/latest whose GET says it is the last one.
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/records/7", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"id": 7, "metadata": {"relations": {"version": [{"index": 0, "is_last": true}]}}}`)
	})
	c2 := newClient(t, newServer(t, mux).URL)
	l, err := c2.Latest(ctx, "7")
	require.NoError(t, err)
	assert.Equal(t, "7", l.RecordID())

	// Versions ordered by creation time when indexes are missing.
	recs := []Record{
		{ID: "3", Created: Time{time.Unix(30, 0)}},
		{ID: "2", Created: Time{time.Unix(20, 0)}},
		{ID: "10"}, {ID: "9"},
	}
	sortVersions(recs)
	var ids []string
	for _, r := range recs {
		ids = append(ids, r.RecordID())
	}
	assert.Equal(t, []string{"9", "10", "2", "3"}, ids)
	assert.Equal(t, "no published versions", describeVersions(nil))
	many := make([]Record, 25)
	assert.Contains(t, describeVersions(many), "and 5 more")
}

func TestSearchPaging(t *testing.T) {
	var pages []string
	var mu sync.Mutex
	srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		pages = append(pages, r.URL.Query().Get("page"))
		mu.Unlock()
		page, _ := strconv.Atoi(r.URL.Query().Get("page"))
		n := 100
		if page == 2 {
			n = 3
		}
		var deps []Deposition
		for i := range n {
			title := "Docker image foo"
			if i%2 == 1 {
				title = "Docker image foobar"
			}
			deps = append(deps, Deposition{ID: ID(strconv.Itoa(page*1000 + i)), Title: title})
		}
		json.NewEncoder(w).Encode(deps)
	}))
	c := newClient(t, srv.URL, WithToken(testToken))
	deps, err := c.SearchDepositions(context.Background(), "Docker image foo")
	require.NoError(t, err)
	assert.Len(t, deps, 52)
	assert.Equal(t, []string{"1", "2"}, pages)
}

// depositServer is a tiny deposit API for the deposit tests.
type depositServer struct {
	mu        sync.Mutex
	published bool
	publishes int
	uploads   int
	failPub   []int // statuses to answer publish with, in order
	failPut   []int // statuses to answer bucket PUTs with, in order
	noDraft   bool
	deleted   []string
}

func (d *depositServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	d.mu.Lock()
	defer d.mu.Unlock()
	base := "http://" + r.Host
	dep := func(id string, state string) map[string]any {
		return map[string]any{
			"id": json.Number(id), "state": state, "submitted": state == "done",
			"metadata": map[string]any{"title": "t", "prereserve_doi": map[string]any{"doi": "10.5281/zenodo." + id, "recid": json.Number(id)}},
			"links":    map[string]any{"bucket": base + "/api/files/bucket-" + id, "latest_draft": base + "/api/deposit/depositions/" + id, "thumbnails": map[string]string{}},
		}
	}
	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/api/deposit/depositions/5/actions/newversion":
		d5 := dep("5", "done")
		if d.noDraft {
			delete(d5["links"].(map[string]any), "latest_draft")
		} else {
			d5["links"].(map[string]any)["latest_draft"] = base + "/api/deposit/depositions/6"
		}
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(d5)
	case r.Method == http.MethodGet && r.URL.Path == "/api/deposit/depositions/6":
		json.NewEncoder(w).Encode(dep("6", "unsubmitted"))
	case r.Method == http.MethodGet && r.URL.Path == "/api/deposit/depositions/5":
		state := "unsubmitted"
		if d.published {
			state = "done"
		}
		json.NewEncoder(w).Encode(dep("5", state))
	case r.Method == http.MethodPost && r.URL.Path == "/api/deposit/depositions/5/actions/publish":
		d.publishes++
		if len(d.failPub) > 0 {
			status := d.failPub[0]
			d.failPub = d.failPub[1:]
			if status < 0 { // published, but the answer is lost
				d.published = true
				status = -status
			}
			w.WriteHeader(status)
			return
		}
		d.published = true
		w.WriteHeader(http.StatusAccepted)
		json.NewEncoder(w).Encode(dep("5", "done"))
	case r.Method == http.MethodPut && strings.HasPrefix(r.URL.Path, "/api/files/bucket-5/"):
		d.uploads++
		b, _ := io.ReadAll(r.Body)
		if len(d.failPut) > 0 {
			status := d.failPut[0]
			d.failPut = d.failPut[1:]
			w.WriteHeader(status)
			return
		}
		sum := md5.Sum(b)
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, `{"key": %q, "size": %d, "checksum": "md5:%s"}`, strings.TrimPrefix(r.URL.Path, "/api/files/bucket-5/"), len(b), hex.EncodeToString(sum[:]))
	case r.Method == http.MethodGet && r.URL.Path == "/api/deposit/depositions/5/files":
		fmt.Fprint(w, `[{"id": "fid-1", "filename": "other", "filesize": 1, "checksum": "x"}]`)
	case r.Method == http.MethodDelete:
		d.deleted = append(d.deleted, r.URL.Path)
		w.WriteHeader(http.StatusNoContent)
	default:
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprint(w, `{"status": 404, "message": "PID does not exist."}`)
	}
}

func TestDeposits(t *testing.T) {
	ctx := context.Background()
	t.Run("new version follows latest_draft", func(t *testing.T) {
		ds := &depositServer{}
		c := newClient(t, newServer(t, ds).URL, WithToken(testToken))
		draft, err := c.NewVersion(ctx, "5")
		require.NoError(t, err)
		assert.Equal(t, ID("6"), draft.ID)
		assert.Equal(t, "10.5281/zenodo.6", draft.ReservedDOI())
		ds.noDraft = true
		_, err = c.NewVersion(ctx, "5")
		assert.ErrorContains(t, err, "latest_draft")
		_, err = c.NewVersion(ctx, "7")
		assert.ErrorIs(t, err, ErrNotFound)
	})
	t.Run("publish retries only when unpublished", func(t *testing.T) {
		ds := &depositServer{failPub: []int{-http.StatusInternalServerError}}
		rec := &recorder{}
		c := newClient(t, newServer(t, ds).URL, WithToken(testToken), WithObserver(rec.observe))
		dep, err := c.Publish(ctx, "5")
		require.NoError(t, err)
		assert.True(t, dep.Published())
		assert.Equal(t, 1, ds.publishes, "published despite the 500: not sent again")

		ds2 := &depositServer{failPub: []int{http.StatusBadGateway, http.StatusServiceUnavailable}}
		c2 := newClient(t, newServer(t, ds2).URL, WithToken(testToken))
		dep, err = c2.Publish(ctx, "5")
		require.NoError(t, err)
		assert.True(t, dep.Published())
		assert.Equal(t, 3, ds2.publishes)

		ds3 := &depositServer{failPub: []int{http.StatusBadRequest}}
		c3 := newClient(t, newServer(t, ds3).URL, WithToken(testToken))
		_, err = c3.Publish(ctx, "5")
		assert.ErrorIs(t, err, errdefs.ErrInvalidArgument)
		assert.Equal(t, 1, ds3.publishes)

		ds4 := &depositServer{failPub: []int{500, 500, 500, 500, 500}}
		c4 := newClient(t, newServer(t, ds4).URL, WithToken(testToken), WithRetry(3, time.Millisecond))
		_, err = c4.Publish(ctx, "5")
		assert.ErrorIs(t, err, errdefs.ErrInternal)
		assert.Equal(t, 3, ds4.publishes)
	})
	t.Run("upload retries a seekable body", func(t *testing.T) {
		ds := &depositServer{failPut: []int{http.StatusServiceUnavailable}}
		c := newClient(t, newServer(t, ds).URL, WithToken(testToken))
		dep, err := c.GetDeposition(ctx, "5")
		require.NoError(t, err)
		content := []byte("0123456789layer")
		r := bytes.NewReader(content)
		r.Seek(10, io.SeekStart) // upload from where the reader is
		f, err := c.Upload(ctx, dep, "layer one.tar", r, 5, nil)
		require.NoError(t, err)
		assert.Equal(t, "layer one.tar", f.Key)
		assert.Equal(t, int64(5), f.Size)
		sum := md5.Sum(content[10:])
		assert.Equal(t, hex.EncodeToString(sum[:]), f.MD5())
		assert.Equal(t, 2, ds.uploads)
	})
	t.Run("upload does not retry a stream", func(t *testing.T) {
		ds := &depositServer{failPut: []int{http.StatusServiceUnavailable}}
		c := newClient(t, newServer(t, ds).URL, WithToken(testToken))
		dep, err := c.GetDeposition(ctx, "5")
		require.NoError(t, err)
		_, err = c.Upload(ctx, dep, "x", io.MultiReader(strings.NewReader("abc")), 3, nil)
		require.Error(t, err)
		assert.ErrorIs(t, err, errdefs.ErrUnavailable)
		assert.Equal(t, 1, ds.uploads)
	})
	t.Run("upload mismatch when the file is not listed", func(t *testing.T) {
		mux := http.NewServeMux()
		mux.HandleFunc("PUT /api/files/b/{key}", func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			fmt.Fprint(w, `{"key": "f", "size": 2, "checksum": "md5:00000000000000000000000000000000"}`)
		})
		mux.HandleFunc("GET /api/deposit/depositions/1/files", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, `[]`) })
		c := newClient(t, newServer(t, mux).URL)
		_, err := c.Upload(ctx, &Deposition{ID: "1", Links: Links{"bucket": "/api/files/b/"}}, "f", strings.NewReader("ab"), 2, nil)
		assert.ErrorIs(t, err, ErrChecksumMismatch)
		assert.ErrorIs(t, err, ErrNotFound)
	})
	t.Run("bad arguments", func(t *testing.T) {
		c := newClient(t, "http://127.0.0.1:1")
		_, err := c.Upload(ctx, nil, "x", strings.NewReader(""), 0, nil)
		assert.ErrorIs(t, err, errdefs.ErrInvalidArgument)
		for _, name := range []string{"", ".", "..", "a/b", "a\\b"} {
			_, err = c.Upload(ctx, &Deposition{Links: Links{"bucket": "/b"}}, name, strings.NewReader(""), 0, nil)
			assert.ErrorIs(t, err, errdefs.ErrInvalidArgument, name)
		}
		_, err = c.Upload(ctx, &Deposition{ID: "1"}, "x", strings.NewReader(""), 0, nil)
		assert.ErrorIs(t, err, errdefs.ErrFailedPrecondition)
		_, err = c.Upload(ctx, &Deposition{ID: "1", Links: Links{"bucket": "ftp://x/y"}}, "x", strings.NewReader(""), 0, nil)
		assert.ErrorIs(t, err, errdefs.ErrInvalidArgument)
		_, err = c.Upload(ctx, &Deposition{ID: "1", Links: Links{"bucket": "http://[::1"}}, "x", strings.NewReader(""), 0, nil)
		assert.ErrorIs(t, err, errdefs.ErrInvalidArgument)
		for _, f := range []func() error{
			func() error { _, err := c.GetDeposition(ctx, "x"); return err },
			func() error { _, err := c.UpdateMetadata(ctx, "", Metadata{}); return err },
			func() error { _, err := c.NewVersion(ctx, "-1"); return err },
			func() error { _, err := c.Publish(ctx, "1.5"); return err },
			func() error { return c.Discard(ctx, "a") },
			func() error { _, err := c.DepositionFiles(ctx, "a"); return err },
			func() error { return c.DeleteFile(ctx, "a", "b") },
			func() error { return c.DeleteFile(ctx, "1", "b/c") },
		} {
			assert.ErrorIs(t, f(), errdefs.ErrInvalidArgument)
		}
	})
	t.Run("deposition helpers", func(t *testing.T) {
		d := &Deposition{Metadata: Metadata{DOI: "10.5281/zenodo.3"}}
		assert.Equal(t, "10.5281/zenodo.3", d.ReservedDOI())
		assert.Equal(t, "", (&Deposition{}).ReservedDOI())
		d.Files = []File{{Key: "a"}}
		_, ok := d.File("a")
		assert.True(t, ok)
		_, ok = d.File("b")
		assert.False(t, ok)
		r := &Record{}
		_, ok = r.File("a")
		assert.False(t, ok)
		assert.Equal(t, -1, r.VersionIndex())
		assert.Equal(t, "", File{Checksum: "sha256:abc"}.MD5())
	})
}
