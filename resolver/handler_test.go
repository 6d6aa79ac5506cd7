package resolver

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/remotes"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/core/remotes/docker/config"
	"github.com/containerd/containerd/v2/plugins/content/local"
	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/name"
	ggcrremote "github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/remote"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/zenodo"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/zenodo/zenodotest"
)

// endpoint serves NewHandler(src) on httptest and returns its host:port.
func endpoint(t testing.TB, src Source, opts ...Option) (*httptest.Server, string) {
	t.Helper()
	ts := httptest.NewServer(NewHandler(src, opts...))
	t.Cleanup(ts.Close)
	return ts, strings.TrimPrefix(ts.URL, "http://")
}

func TestHandlerBase(t *testing.T) {
	ts, _ := endpoint(t, Hosts(nil))
	for _, p := range []string{"/v2/", "/v2"} {
		resp, body := get(t, http.MethodGet, ts.URL+p, nil)
		assert.Equal(t, http.StatusOK, resp.StatusCode)
		assert.Equal(t, "registry/2.0", resp.Header.Get("Docker-Distribution-API-Version"))
		assert.JSONEq(t, "{}", string(body))
	}
	resp, body := get(t, http.MethodHead, ts.URL+"/v2/", nil)
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Empty(t, body)
}

// TestHandlerGGCR pulls through the endpoint with go-containerregistry.
func TestHandlerGGCR(t *testing.T) {
	f := newFixture(t, fixtureOpts{big: 3 << 20})
	_, host := endpoint(t, f.src, WithReadSize(256<<10))
	repo := host + "/" + f.pub1.DOI

	t.Run("image by tag", func(t *testing.T) {
		ref, err := name.ParseReference(repo + ":1.0")
		require.NoError(t, err)
		img, err := ggcrremote.Image(ref)
		require.NoError(t, err)
		dgst, err := img.Digest()
		require.NoError(t, err)
		assert.Equal(t, f.v1.idx.Root.Digest.String(), dgst.String())

		cfg, err := img.ConfigFile()
		require.NoError(t, err)
		assert.Equal(t, "v1", cfg.Config.Labels["test"])

		layers, err := img.Layers()
		require.NoError(t, err)
		require.Len(t, layers, 3)
		got := map[string][]byte{}
		for _, l := range layers {
			// Compressed checks the digest as it reads.
			rc, err := l.Compressed()
			require.NoError(t, err)
			_, err = io.Copy(io.Discard, rc)
			require.NoError(t, err)
			require.NoError(t, rc.Close())
			rc, err = l.Uncompressed()
			require.NoError(t, err)
			tr := tar.NewReader(rc)
			for {
				h, err := tr.Next()
				if err == io.EOF {
					break
				}
				require.NoError(t, err)
				if h.Typeflag == tar.TypeReg {
					b, err := io.ReadAll(tr)
					require.NoError(t, err)
					got[h.Name] = b
				}
			}
			require.NoError(t, rc.Close())
		}
		assert.Equal(t, f.v1.files, got)
	})

	t.Run("get by digest", func(t *testing.T) {
		ref, err := name.NewDigest(repo + "@" + f.v1.idx.Root.Digest.String())
		require.NoError(t, err)
		d, err := ggcrremote.Get(ref)
		require.NoError(t, err)
		assert.Equal(t, f.v1.idx.Root.MediaType, string(d.MediaType))
		assert.Equal(t, f.v1.idx.Root.Size, d.Size)
		assert.Equal(t, f.v1.idx.Root.Digest, digest.Digest(d.Digest.String()))
	})

	t.Run("concept latest", func(t *testing.T) {
		for _, tag := range []string{"latest", "2.0"} {
			ref, err := name.ParseReference(host + "/" + f.pub1.ConceptDOI + ":" + tag)
			require.NoError(t, err)
			d, err := ggcrremote.Get(ref)
			require.NoError(t, err, tag)
			assert.Equal(t, f.v2.idx.Root.Digest.String(), d.Digest.String(), tag)
		}
	})

	t.Run("older version by digest on the concept", func(t *testing.T) {
		// A fresh endpoint: nothing cached, so the versions are searched.
		_, host := endpoint(t, f.src)
		ref, err := name.NewDigest(host + "/" + f.pub1.ConceptDOI + "@" + f.v1.idx.Root.Digest.String())
		require.NoError(t, err)
		img, err := ggcrremote.Image(ref)
		require.NoError(t, err)
		cfg, err := img.ConfigFile()
		require.NoError(t, err)
		assert.Equal(t, "v1", cfg.Config.Labels["test"])
	})

	t.Run("tags list", func(t *testing.T) {
		r, err := name.NewRepository(repo)
		require.NoError(t, err)
		tags, err := ggcrremote.List(r)
		require.NoError(t, err)
		assert.Equal(t, []string{"1.0", "2.0", "latest"}, tags)

		// Paginated.
		tags, err = ggcrremote.List(r, ggcrremote.WithPageSize(1))
		require.NoError(t, err)
		assert.Equal(t, []string{"1.0", "2.0", "latest"}, tags)

		// A record without metadata.version has only "latest".
		r, err = name.NewRepository(host + "/" + f.untagged.DOI)
		require.NoError(t, err)
		tags, err = ggcrremote.List(r)
		require.NoError(t, err)
		assert.Equal(t, []string{"latest"}, tags)
	})

	t.Run("short repository forms", func(t *testing.T) {
		for _, n := range []string{"zenodo." + f.pub1.RecID, f.pub1.RecID, "zenodo.org/" + f.pub1.DOI} {
			ref, err := name.ParseReference(host + "/" + n + ":1.0")
			require.NoError(t, err, n)
			d, err := ggcrremote.Get(ref)
			require.NoError(t, err, n)
			assert.Equal(t, f.v1.idx.Root.Digest.String(), d.Digest.String(), n)
		}
	})
}

// nsRecorder records the ns= query of every request.
type nsRecorder struct {
	h  http.Handler
	mu sync.Mutex
	ns map[string]int
}

func (n *nsRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n.mu.Lock()
	n.ns[r.URL.Query().Get("ns")]++
	n.mu.Unlock()
	n.h.ServeHTTP(w, r)
}

// pullWith pulls ref with a containerd resolver into a fresh content store
// (all platforms) and returns the store and the resolved descriptor.
func pullWith(t testing.TB, r remotes.Resolver, ref string) (content.Store, string, ocispec.Descriptor) {
	t.Helper()
	ctx := context.Background()
	cs, err := local.NewStore(t.TempDir())
	require.NoError(t, err)
	n, desc, err := r.Resolve(ctx, ref)
	require.NoError(t, err)
	fetcher, err := r.Fetcher(ctx, n)
	require.NoError(t, err)
	h := images.Handlers(remotes.FetchHandler(cs, fetcher), images.ChildrenHandler(cs))
	require.NoError(t, images.Dispatch(ctx, h, nil, desc))
	return cs, n, desc
}

// TestHandlerContainerd pulls through the endpoint with containerd's own
// docker resolver, routed by the hosts.toml InstallHosts writes.
func TestHandlerContainerd(t *testing.T) {
	prod := newFixture(t, fixtureOpts{big: 2 << 20})
	sandbox := newFixture(t, fixtureOpts{prefix: zenodo.DOIPrefixSandbox, multi: true})
	rec := &nsRecorder{h: NewHandler(Hosts(map[zenodo.Host]Source{zenodo.HostProduction: prod.src, zenodo.HostSandbox: sandbox.src})), ns: map[string]int{}}
	ts := httptest.NewServer(rec)
	t.Cleanup(ts.Close)

	certs := t.TempDir()
	require.NoError(t, InstallHosts(certs, ts.URL))
	r := docker.NewResolver(docker.ResolverOptions{Hosts: config.ConfigureHosts(context.Background(), config.HostOptions{HostDir: config.HostDirFromRoot(certs)})})

	tests := []struct {
		name string
		ref  string
		want *testImage
		ns   string
	}{
		{"production tag", "zenodo.org/" + prod.pub1.DOI + ":1.0", prod.v1, "zenodo.org"},
		{"production concept latest", "zenodo.org/" + prod.pub1.ConceptDOI + ":latest", prod.v2, "zenodo.org"},
		{"production digest", "zenodo.org/" + prod.pub2.DOI + "@" + prod.v2.idx.Root.Digest.String(), prod.v2, "zenodo.org"},
		{"sandbox tag", "sandbox.zenodo.org/" + sandbox.pub2.DOI + ":2.0", sandbox.v2, "sandbox.zenodo.org"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec.mu.Lock()
			clear(rec.ns)
			rec.mu.Unlock()
			cs, _, desc := pullWith(t, r, tt.ref)
			assert.Equal(t, tt.want.idx.Root.Digest, desc.Digest)
			// Every blob of the archive's tree arrived (content.Copy verified them).
			for _, b := range tt.want.idx.Blobs {
				if b.MediaType == "" || strings.Contains(b.MediaType, "toc") {
					continue
				}
				_, err := cs.Info(context.Background(), b.Digest)
				assert.NoError(t, err, "blob %s (%s)", b.Digest, b.MediaType)
			}
			rec.mu.Lock()
			assert.Equal(t, map[string]int{tt.ns: rec.ns[tt.ns]}, rec.ns, "every request carries ns=%s", tt.ns)
			rec.mu.Unlock()
		})
	}
}

// TestHandlerErrors checks the distribution-spec error of each failure.
func TestHandlerErrors(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	ts, _ := endpoint(t, f.src)
	missing := digest.FromString("not in any image")
	layer := f.v1.idx.Blobs[len(f.v1.idx.Blobs)-1].Digest

	tests := []struct {
		name, method, path string
		status             int
		code               string
		msg                string // a part of the message
	}{
		{"unknown DOI", "GET", "/v2/10.5281/zenodo.99999999/manifests/1.0", 404, codeNameUnknown, "no such Zenodo record"},
		{"unknown DOI blob", "GET", "/v2/10.5281/zenodo.99999999/blobs/" + missing.String(), 404, codeNameUnknown, ""},
		{"unknown DOI tags", "GET", "/v2/10.5281/zenodo.99999999/tags/list", 404, codeNameUnknown, ""},
		{"record without image", "GET", "/v2/" + f.noImage.DOI + "/manifests/1.0", 404, codeManifestUnknown, "holds no container image"},
		{"record without image HEAD", "HEAD", "/v2/" + f.noImage.DOI + "/manifests/latest", 404, codeManifestUnknown, ""},
		{"unknown tag", "GET", "/v2/" + f.pub1.DOI + "/manifests/9.9", 404, codeManifestUnknown, `no version tagged "9.9"`},
		{"unknown manifest digest", "GET", "/v2/" + f.pub1.DOI + "/manifests/" + missing.String(), 404, codeManifestUnknown, "not in this record"},
		{"layer as manifest", "GET", "/v2/" + f.pub1.DOI + "/manifests/" + layer.String(), 404, codeManifestUnknown, "not a manifest"},
		{"unknown blob", "GET", "/v2/" + f.pub1.DOI + "/blobs/" + missing.String(), 404, codeBlobUnknown, ""},
		{"unknown blob HEAD", "HEAD", "/v2/" + f.pub1.DOI + "/blobs/" + missing.String(), 404, codeBlobUnknown, ""},
		{"malformed blob digest", "GET", "/v2/" + f.pub1.DOI + "/blobs/sha256:xyz", 400, codeDigestInvalid, "invalid digest"},
		{"malformed manifest digest", "GET", "/v2/" + f.pub1.DOI + "/manifests/sha256:123", 400, codeDigestInvalid, ""},
		{"bad tag", "GET", "/v2/" + f.pub1.DOI + "/manifests/-x", 404, codeManifestUnknown, "neither a tag nor a digest"},
		{"not a DOI", "GET", "/v2/library/busybox/manifests/latest", 400, codeNameInvalid, "Zenodo DOIs"},
		{"other prefix", "GET", "/v2/10.1234/zenodo.1/manifests/latest", 400, codeNameInvalid, ""},
		{"sandbox DOI with production ns", "GET", "/v2/10.5072/zenodo.1/manifests/latest?ns=zenodo.org", 400, codeNameInvalid, "not a zenodo.org DOI"},
		{"foreign ns", "GET", "/v2/" + f.pub1.DOI + "/manifests/1.0?ns=docker.io", 404, codeNameUnknown, "docker.io"},
		{"unserved host", "GET", "/v2/" + "zenodo." + f.pub1.RecID + "/manifests/1.0?ns=sandbox.zenodo.org", 404, codeNameUnknown, "not served here"},
		{"push", "PUT", "/v2/" + f.pub1.DOI + "/manifests/1.0", 405, codeUnsupported, "read-only"},
		{"upload", "POST", "/v2/" + f.pub1.DOI + "/blobs/uploads/", 405, codeUnsupported, ""},
		{"catalog", "GET", "/v2/_catalog", 404, codeUnsupported, ""},
		{"outside /v2", "GET", "/foo", 404, codeUnsupported, ""},
	}
	src := Hosts(map[zenodo.Host]Source{zenodo.HostProduction: f.src})
	ts2, _ := endpoint(t, src)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := ts.URL
			if tt.name == "unserved host" {
				base = ts2.URL
			}
			resp, body := get(t, tt.method, base+tt.path, nil)
			assert.Equal(t, tt.status, resp.StatusCode, "%s", body)
			assert.Equal(t, "registry/2.0", resp.Header.Get("Docker-Distribution-API-Version"))
			if tt.method == http.MethodHead {
				assert.Empty(t, body)
				return
			}
			assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
			var eb regErrorBody
			require.NoError(t, json.Unmarshal(body, &eb), "%s", body)
			require.Len(t, eb.Errors, 1)
			assert.Equal(t, tt.code, eb.Errors[0].Code, eb.Errors[0].Message)
			assert.Contains(t, eb.Errors[0].Message, tt.msg)
			assert.NotContains(t, string(body), zenodotest.DefaultToken)
		})
	}
}

// TestHandlerRateLimited maps Zenodo's 429 to TOOMANYREQUESTS.
func TestHandlerRateLimited(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	ts, _ := endpoint(t, f.src)
	f.fake.InjectFault(zenodotest.Fault{PathContains: "/api/records/", Status: http.StatusTooManyRequests, RetryAfter: 42 * time.Second})
	resp, body := get(t, http.MethodGet, ts.URL+"/v2/"+f.pub1.DOI+"/manifests/1.0", nil)
	assert.Equal(t, http.StatusTooManyRequests, resp.StatusCode, "%s", body)
	assert.Equal(t, "42", resp.Header.Get("Retry-After"))
	var eb regErrorBody
	require.NoError(t, json.Unmarshal(body, &eb), "%s", body)
	require.Len(t, eb.Errors, 1)
	assert.Equal(t, codeTooManyRequests, eb.Errors[0].Code)
	assert.Contains(t, eb.Errors[0].Message, "rate limit")
}

// limitedSource fails every Open with Zenodo's rate limit.
type limitedSource struct{ opens int }

func (l *limitedSource) Open(ctx context.Context, ref zenodo.Reference) (Image, error) {
	l.opens++
	return nil, fmt.Errorf("resolving %s: %w", ref, zenodo.ErrRateLimited)
}

// TestHandlerRateLimitNotCached checks that a 429 is not remembered, and the
// default Retry-After.
func TestHandlerRateLimitNotCached(t *testing.T) {
	src := &limitedSource{}
	ts, _ := endpoint(t, src)
	for i := 1; i <= 2; i++ {
		resp, _ := get(t, http.MethodHead, ts.URL+"/v2/10.5281/zenodo.1/manifests/1.0", nil)
		assert.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
		assert.Equal(t, "60", resp.Header.Get("Retry-After"))
		assert.Equal(t, i, src.opens)
	}
}

// TestHandlerManifestHeaders checks GET and HEAD of manifests.
func TestHandlerManifestHeaders(t *testing.T) {
	f := newFixture(t, fixtureOpts{multi: true})
	ts, _ := endpoint(t, f.src)
	root := f.v1.idx.Root
	for _, method := range []string{http.MethodGet, http.MethodHead} {
		for _, ref := range []string{"1.0", root.Digest.String()} {
			resp, body := get(t, method, ts.URL+"/v2/"+f.pub1.DOI+"/manifests/"+ref, nil)
			require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
			assert.Equal(t, ocispec.MediaTypeImageIndex, resp.Header.Get("Content-Type"))
			assert.Equal(t, root.Digest.String(), resp.Header.Get("Docker-Content-Digest"))
			assert.Equal(t, fmt.Sprint(root.Size), resp.Header.Get("Content-Length"))
			if method == http.MethodGet {
				assert.Equal(t, root.Digest, digest.FromBytes(body))
			}
		}
	}
	// A platform manifest of the index, by digest.
	md, _ := f.v1.archivedManifest(t)
	resp, body := get(t, http.MethodGet, ts.URL+"/v2/"+f.pub1.DOI+"/manifests/"+md.Digest.String(), nil)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
	assert.Equal(t, ocispec.MediaTypeImageManifest, resp.Header.Get("Content-Type"))
	assert.Equal(t, md.Digest, digest.FromBytes(body))
}

// TestHandlerRange reads parts of a large layer and of a small blob.
func TestHandlerRange(t *testing.T) {
	f := newFixture(t, fixtureOpts{big: 3 << 20})
	ts, _ := endpoint(t, f.src, WithReadSize(100<<10))
	_, m := f.v1.archivedManifest(t)
	big := m.Layers[len(m.Layers)-1]
	require.Greater(t, big.Size, int64(maxSmallBlob))
	a := f.v1.archived(t)
	whole, err := content.ReadBlob(context.Background(), a, big)
	require.NoError(t, err)
	cfg, err := content.ReadBlob(context.Background(), a, m.Config)
	require.NoError(t, err)

	type tc struct {
		name    string
		blob    ocispec.Descriptor
		data    []byte
		rng     string
		ifRange string
		status  int
		want    []byte
		crange  string
	}
	n := big.Size
	tests := []tc{
		{"whole", big, whole, "", "", 200, whole, ""},
		{"first byte", big, whole, "bytes=0-0", "", 206, whole[:1], fmt.Sprintf("bytes 0-0/%d", n)},
		{"middle", big, whole, "bytes=1000-299999", "", 206, whole[1000:300000], fmt.Sprintf("bytes 1000-299999/%d", n)},
		{"open end", big, whole, fmt.Sprintf("bytes=%d-", n-5000), "", 206, whole[n-5000:], fmt.Sprintf("bytes %d-%d/%d", n-5000, n-1, n)},
		{"suffix", big, whole, "bytes=-10", "", 206, whole[n-10:], fmt.Sprintf("bytes %d-%d/%d", n-10, n-1, n)},
		{"past the end clipped", big, whole, fmt.Sprintf("bytes=%d-%d", n-3, n+100), "", 206, whole[n-3:], fmt.Sprintf("bytes %d-%d/%d", n-3, n-1, n)},
		{"unsatisfiable", big, whole, fmt.Sprintf("bytes=%d-", n), "", 416, nil, fmt.Sprintf("bytes */%d", n)},
		{"several ranges: whole", big, whole, "bytes=0-1,5-6", "", 200, whole, ""},
		{"not bytes: whole", big, whole, "items=0-1", "", 200, whole, ""},
		{"if-range matches", big, whole, "bytes=0-9", `"` + big.Digest.String() + `"`, 206, whole[:10], fmt.Sprintf("bytes 0-9/%d", n)},
		{"if-range differs: whole", big, whole, "bytes=0-9", `"other"`, 200, whole, ""},
		{"small blob", m.Config, cfg, "bytes=2-5", "", 206, cfg[2:6], fmt.Sprintf("bytes 2-5/%d", len(cfg))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hdr := map[string]string{}
			if tt.rng != "" {
				hdr["Range"] = tt.rng
			}
			if tt.ifRange != "" {
				hdr["If-Range"] = tt.ifRange
			}
			resp, body := get(t, http.MethodGet, ts.URL+"/v2/"+f.pub1.DOI+"/blobs/"+tt.blob.Digest.String(), hdr)
			require.Equal(t, tt.status, resp.StatusCode)
			assert.Equal(t, tt.crange, resp.Header.Get("Content-Range"))
			if tt.status == 416 {
				return
			}
			assert.Equal(t, "bytes", resp.Header.Get("Accept-Ranges"))
			assert.Equal(t, tt.blob.Digest.String(), resp.Header.Get("Docker-Content-Digest"))
			assert.Equal(t, tt.blob.MediaType, resp.Header.Get("Content-Type"))
			assert.Equal(t, fmt.Sprint(len(tt.want)), resp.Header.Get("Content-Length"))
			assert.True(t, bytes.Equal(tt.want, body), "body differs: %d bytes, want %d", len(body), len(tt.want))
		})
	}

	t.Run("HEAD", func(t *testing.T) {
		f.fake.ResetRequests()
		resp, body := get(t, http.MethodHead, ts.URL+"/v2/"+f.pub1.DOI+"/blobs/"+big.Digest.String(), nil)
		require.Equal(t, 200, resp.StatusCode)
		assert.Empty(t, body)
		assert.Equal(t, fmt.Sprint(big.Size), resp.Header.Get("Content-Length"))
		assert.Empty(t, f.fake.Requests(), "a HEAD of a blob of a cached image costs no Zenodo request")
	})
}

// TestHandlerPullCost counts the fake Zenodo's requests for two pulls in a
// row through the endpoint, with containerd's resolver.
func TestHandlerPullCost(t *testing.T) {
	f := newFixture(t, fixtureOpts{big: 2 << 20})
	ts, _ := endpoint(t, f.src)
	certs := t.TempDir()
	require.NoError(t, InstallHosts(certs, ts.URL))
	r := docker.NewResolver(docker.ResolverOptions{Hosts: config.ConfigureHosts(context.Background(), config.HostOptions{HostDir: config.HostDirFromRoot(certs)})})
	ref := "zenodo.org/" + f.pub1.DOI + ":1.0"
	_, m := f.v1.archivedManifest(t)

	f.fake.ResetRequests()
	pullWith(t, r, ref)
	first := f.fake.Requests()
	t.Logf("first pull: %d Zenodo requests, %d bytes (archive %d bytes, %d layers)", len(first), totalBytes(first), len(f.v1.tar), len(m.Layers))
	for _, q := range first {
		t.Logf("  %s %s %s -> %d, %d bytes", q.Method, q.Path, q.Range, q.Status, q.Bytes)
	}
	// O(layers): the record, the index, the metadata, and one exact range
	// per layer; never more of image.tar than it holds.
	assert.LessOrEqual(t, len(first), 3+len(m.Layers))
	var tarBytes int64
	for _, q := range first {
		if strings.HasSuffix(q.Path, "/image.tar") {
			tarBytes += q.Bytes
		}
	}
	assert.LessOrEqual(t, tarBytes, int64(len(f.v1.tar)))

	f.fake.ResetRequests()
	pullWith(t, r, ref)
	second := f.fake.Requests()
	t.Logf("second pull: %d Zenodo requests, %d bytes", len(second), totalBytes(second))
	assert.Zero(t, recordRequests(second), "no record look-up within the TTL")
	assert.LessOrEqual(t, len(second), len(m.Layers))
}

// TestHandlerTTL checks that look-ups expire, and that a new version is
// seen after the TTL.
func TestHandlerTTL(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	var mu sync.Mutex
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	// store/remote remembers resolutions itself (on the real clock): turn
	// that off to see the endpoint's own TTL.
	op := remote.NewOpener(f.client, remote.WithTTL(time.Nanosecond))
	t.Cleanup(func() { op.Close() })
	cs := &countingSource{Source: NewRemoteSource(f.client, op)}
	ts, _ := endpoint(t, cs, WithClock(clock), WithCacheTTL(time.Minute))
	u := ts.URL + "/v2/" + f.pub1.ConceptDOI + "/manifests/latest"

	resp, _ := get(t, http.MethodHead, u, nil)
	require.Equal(t, 200, resp.StatusCode)
	assert.Equal(t, f.v2.idx.Root.Digest.String(), resp.Header.Get("Docker-Content-Digest"))
	get(t, http.MethodGet, u, nil)
	assert.Equal(t, 1, cs.count())

	// A third version is published: seen once the TTL has passed.
	v3 := newTestImage(t, imageOpts{seed: 3, label: "v3"})
	_, err := f.fake.Publish(zenodotest.SeedRecord{Title: "Docker image test", Version: "3.0", ConceptRecID: f.pub1.ConceptRecID, Files: v3.seedFiles()})
	require.NoError(t, err)
	advance(59 * time.Second)
	resp, _ = get(t, http.MethodHead, u, nil)
	assert.Equal(t, f.v2.idx.Root.Digest.String(), resp.Header.Get("Docker-Content-Digest"))
	assert.Equal(t, 1, cs.count())
	advance(2 * time.Second)
	resp, _ = get(t, http.MethodHead, u, nil)
	assert.Equal(t, v3.idx.Root.Digest.String(), resp.Header.Get("Docker-Content-Digest"))
	assert.Equal(t, 2, cs.count())

	// Not found is remembered only briefly.
	miss := ts.URL + "/v2/" + f.pub1.DOI + "/manifests/9.9"
	get(t, http.MethodHead, miss, nil)
	get(t, http.MethodGet, miss, nil)
	assert.Equal(t, 3, cs.count())
	advance(negativeTTL)
	get(t, http.MethodGet, miss, nil)
	assert.Equal(t, 4, cs.count())
}

// TestHandlerConcurrentOpen checks that concurrent requests for one image
// and one blob share one Open and one read.
func TestHandlerConcurrentOpen(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	cs := &countingSource{Source: f.src, gate: make(chan struct{}), entered: make(chan struct{}, 1)}
	ts, _ := endpoint(t, cs)
	_, m := f.v1.archivedManifest(t)

	const n = 8
	var wg sync.WaitGroup
	results := make([]int, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, _ := get(t, http.MethodGet, ts.URL+"/v2/"+f.pub1.DOI+"/manifests/1.0", nil)
			results[i] = resp.StatusCode
		}()
	}
	<-cs.entered // one Open is under way; the others wait on it (or have yet to arrive)
	close(cs.gate)
	wg.Wait()
	for _, s := range results {
		assert.Equal(t, 200, s)
	}
	assert.Equal(t, 1, cs.count())

	// n concurrent GETs of the config read it once from Zenodo.
	f.fake.ResetRequests()
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, body := get(t, http.MethodGet, ts.URL+"/v2/"+f.pub1.DOI+"/blobs/"+m.Config.Digest.String(), nil)
			results[i] = resp.StatusCode
			assert.Equal(t, m.Config.Digest, digest.FromBytes(body))
		}()
	}
	wg.Wait()
	assert.LessOrEqual(t, len(f.fake.Requests()), 1)
}

// corruptSource serves images whose large blobs have a flipped byte.
type corruptSource struct{ Source }

type corruptImage struct{ Image }

type flippedReaderAt struct{ content.ReaderAt }

func (f flippedReaderAt) ReadAt(p []byte, off int64) (int, error) {
	n, err := f.ReaderAt.ReadAt(p, off)
	if off <= 1000 && off+int64(n) > 1000 {
		p[1000-off] ^= 0xff
	}
	return n, err
}

func (c corruptSource) Open(ctx context.Context, ref zenodo.Reference) (Image, error) {
	img, err := c.Source.Open(ctx, ref)
	if err != nil {
		return nil, err
	}
	return corruptImage{img}, nil
}

func (c corruptImage) ReaderAt(ctx context.Context, d ocispec.Descriptor) (content.ReaderAt, error) {
	ra, err := c.Image.ReaderAt(ctx, d)
	if err != nil || d.Size <= maxSmallBlob {
		return ra, err
	}
	// Flipped after the archive's reader checked them: the endpoint's own
	// check must catch it.
	return flippedReaderAt{ra}, nil
}

// TestHandlerCorruptBlob checks that a blob whose content does not match its
// digest is never delivered whole.
func TestHandlerCorruptBlob(t *testing.T) {
	f := newFixture(t, fixtureOpts{big: 2 << 20})
	ts, _ := endpoint(t, corruptSource{f.src}, WithReadSize(64<<10))
	_, m := f.v1.archivedManifest(t)
	big := m.Layers[len(m.Layers)-1]
	resp, err := http.Get(ts.URL + "/v2/" + f.pub1.DOI + "/blobs/" + big.Digest.String())
	require.NoError(t, err)
	defer resp.Body.Close()
	assert.Equal(t, 200, resp.StatusCode)
	b, err := io.ReadAll(resp.Body)
	assert.Error(t, err, "the body is cut short")
	assert.Less(t, int64(len(b)), big.Size)

	// The resolver's fetcher reports it.
	r := NewResolver(corruptSource{f.src}, WithReadSize(64<<10))
	fe, err := r.Fetcher(context.Background(), "zenodo.org/"+f.pub1.DOI+":1.0")
	require.NoError(t, err)
	rc, err := fe.Fetch(context.Background(), big)
	require.NoError(t, err)
	_, err = io.Copy(io.Discard, rc)
	assert.True(t, errdefs.IsDataLoss(err), "%v", err)
	rc.Close()
	assert.False(t, errors.Is(err, io.EOF))
}

// TestHandlerPlainSource serves a Source without caching, streaming or
// version listing: blobs are read WithReadSize bytes per request, tags/list
// has only "latest", and digests are looked for in the newest version.
func TestHandlerPlainSource(t *testing.T) {
	f := newFixture(t, fixtureOpts{big: 1 << 20})
	plain := struct{ Source }{clientSource{c: f.client}}
	ts, _ := endpoint(t, plain, WithReadSize(64<<10))
	_, m := f.v1.archivedManifest(t)
	big := m.Layers[len(m.Layers)-1]

	resp, _ := get(t, http.MethodHead, ts.URL+"/v2/"+f.pub1.DOI+"/manifests/1.0", nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	f.fake.ResetRequests()
	resp, body := get(t, http.MethodGet, ts.URL+"/v2/"+f.pub1.DOI+"/blobs/"+big.Digest.String(), nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, big.Digest, digest.FromBytes(body))
	assert.Len(t, f.fake.Requests(), int((big.Size+64<<10-1)/(64<<10)), "one request per read")

	resp, body = get(t, http.MethodGet, ts.URL+"/v2/"+f.pub1.DOI+"/tags/list", nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.JSONEq(t, `{"name":"`+f.pub1.DOI+`","tags":["latest"]}`, string(body))

	// An older version's digest on the concept: not found without a lister.
	resp, body = get(t, http.MethodGet, ts.URL+"/v2/"+f.pub1.ConceptDOI+"/manifests/"+f.v1.idx.Root.Digest.String(), nil)
	assert.Equal(t, http.StatusNotFound, resp.StatusCode, "%s", body)
	resp, body = get(t, http.MethodGet, ts.URL+"/v2/"+f.pub1.ConceptDOI+"/manifests/"+f.v2.idx.Root.Digest.String(), nil)
	assert.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
}
