package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/integration/containerdtest"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/integration/testimage"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/resolver"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/archive"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/remote"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/zenodo"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/zenodo/zenodotest"
)

// endpointRecords are records in a fake Zenodo: two versions of one image
// (tags 1.0 and 2.0, each printing its own line), and a record without an
// image.
type endpointRecords struct {
	fake     *zenodotest.Server
	zenodo   *httptest.Server
	v1, v2   zenodotest.Published
	noImage  zenodotest.Published
	idx1     *archive.Index
	tarSize1 int64
	layers1  int
}

const endpointV2Output = "version two of the image"

// archiveLayout writes the OCI layout in dir as a format v1 image.tar.
func archiveLayout(t *testing.T, dir string) ([]byte, *archive.Index, []byte) {
	t.Helper()
	root, _, err := archive.LayoutRoot(dir)
	require.NoError(t, err)
	var buf bytes.Buffer
	idx, err := archive.Write(context.Background(), &buf, archive.LayoutProvider(dir), root, archive.WithTempDir(t.TempDir()))
	require.NoError(t, err)
	ib, err := archive.MarshalIndex(idx)
	require.NoError(t, err)
	return buf.Bytes(), idx, ib
}

func newEndpointRecords(t *testing.T) *endpointRecords {
	t.Helper()
	l1, l2 := t.TempDir(), t.TempDir()
	// Three layers: busybox, 4 MiB of random files, a small file.
	testimage.Busybox(t, l1, testimage.WithRandomLayer(4, 1),
		testimage.WithFile(testimage.File{Path: "/etc/zenodo-test", Content: []byte("archived\n")}))
	testimage.Busybox(t, l2, testimage.WithCmd("/bin/echo", endpointV2Output))
	tar1, idx1, ib1 := archiveLayout(t, l1)
	tar2, _, ib2 := archiveLayout(t, l2)

	fake, ts := zenodotest.NewTestServer(t, zenodotest.WithLogf(func(string, ...any) {}))
	r := &endpointRecords{fake: fake, zenodo: ts, idx1: idx1, tarSize1: int64(len(tar1))}
	var err error
	r.v1, err = fake.Publish(zenodotest.SeedRecord{Title: "Docker image busybox", Version: "1.0", Files: []zenodotest.SeedFile{
		{Name: archive.ArchiveFileName, Data: tar1}, {Name: archive.IndexFileName, Data: ib1}}})
	require.NoError(t, err)
	r.v2, err = fake.Publish(zenodotest.SeedRecord{Title: "Docker image busybox", Version: "2.0", ConceptRecID: r.v1.ConceptRecID, Files: []zenodotest.SeedFile{
		{Name: archive.ArchiveFileName, Data: tar2}, {Name: archive.IndexFileName, Data: ib2}}})
	require.NoError(t, err)
	r.noImage, err = fake.Publish(zenodotest.SeedRecord{Title: "A paper", Version: "1.0", Files: []zenodotest.SeedFile{{Name: "paper.pdf", Data: []byte("%PDF-1.4")}}})
	require.NoError(t, err)
	for _, b := range idx1.Blobs {
		if strings.Contains(b.MediaType, "layer") {
			r.layers1++
		}
	}
	return r
}

// serve starts a fresh endpoint (nothing cached) over the fake Zenodo on
// loopback and returns its URL.
func (r *endpointRecords) serve(t *testing.T) string {
	t.Helper()
	client, err := zenodo.New(r.zenodo.URL, zenodo.WithRateLimit(0, 0), zenodo.WithHourlyLimit(0))
	require.NoError(t, err)
	op := remote.NewOpener(client)
	t.Cleanup(func() { op.Close() })
	ts := httptest.NewServer(resolver.NewHandler(resolver.NewRemoteSource(client, op)))
	t.Cleanup(ts.Close)
	return ts.URL
}

// logRequests logs the fake's requests since the last reset and returns
// their count and the bytes read of image.tar.
func (r *endpointRecords) logRequests(t *testing.T, what string) (int, int64) {
	t.Helper()
	reqs := r.fake.Requests()
	var all, tarBytes int64
	for _, q := range reqs {
		all += q.Bytes
		if strings.HasSuffix(q.Path, "/"+archive.ArchiveFileName) {
			tarBytes += q.Bytes
		}
		t.Logf("  %s %s %s -> %d, %d bytes", q.Method, q.Path, q.Range, q.Status, q.Bytes)
	}
	t.Logf("%s: %d Zenodo requests, %d bytes in all, %d of image.tar (%d bytes, %d layers)",
		what, len(reqs), all, tarBytes, r.tarSize1, r.layers1)
	return len(reqs), tarBytes
}

// TestEndpointCtr pulls zenodo.org/<doi>:<tag> and by digest with ctr
// through hosts.toml and the endpoint, runs it with ctr, on every
// containerd, then with nerdctl; and shows how ctr reports the failures.
func TestEndpointCtr(t *testing.T) {
	containerdtest.RequiresRoot(t)
	recs := newEndpointRecords(t)
	root := recs.idx1.Root.Digest.String()

	for _, v := range containerdtest.Versions(t) {
		t.Run(v.Name, func(t *testing.T) {
			certs := t.TempDir()
			require.NoError(t, resolver.InstallHosts(certs, recs.serve(t)))
			d := containerdtest.Start(t, containerdtest.WithVersion(v))

			t.Run("pull tag and run", func(t *testing.T) {
				ref := "zenodo.org/" + recs.v1.DOI + ":1.0"
				recs.fake.ResetRequests()
				d.Ctr(t, "images", "pull", "--hosts-dir", certs, ref)
				n, tarBytes := recs.logRequests(t, v.Name+" ctr pull")
				assert.LessOrEqual(t, n, 3+recs.layers1, "O(layers) requests")
				assert.LessOrEqual(t, tarBytes, recs.tarSize1, "no more of image.tar than it holds")

				out := d.Ctr(t, "images", "ls", "-q")
				assert.Contains(t, out, ref)
				out = d.Ctr(t, "run", "--rm", ref, "endpoint-tag")
				assert.Equal(t, testimage.Hello+"\n", out)
				// The random files arrived intact.
				d.Ctr(t, "run", "--rm", ref, "endpoint-check", "sha256sum", "-c", "-s", testimage.RandomDir+"/SHA256SUMS")
			})

			t.Run("pull concept by tag and run", func(t *testing.T) {
				ref := "zenodo.org/" + recs.v1.ConceptDOI + ":2.0"
				d.Ctr(t, "images", "pull", "--hosts-dir", certs, ref)
				out := d.Ctr(t, "run", "--rm", ref, "endpoint-concept")
				assert.Equal(t, endpointV2Output+"\n", out)
			})

			t.Run("pull digest and run", func(t *testing.T) {
				ref := "zenodo.org/" + recs.v1.ConceptDOI + "@" + root
				d.Ctr(t, "images", "pull", "--hosts-dir", certs, ref)
				out := d.Ctr(t, "run", "--rm", ref, "endpoint-digest")
				assert.Equal(t, testimage.Hello+"\n", out)
			})

			t.Run("errors", func(t *testing.T) {
				tests := []struct{ name, ref, want string }{
					{"unknown DOI", "zenodo.org/10.5281/zenodo.99999999:1.0", "not found"},
					{"unknown tag", "zenodo.org/" + recs.v1.DOI + ":9.9", "not found"},
					{"record without image", "zenodo.org/" + recs.noImage.DOI + ":1.0", "not found"},
					{"wrong digest", "zenodo.org/" + recs.v1.DOI + "@sha256:" + strings.Repeat("0", 64), "not found"},
				}
				for _, tt := range tests {
					t.Run(tt.name, func(t *testing.T) {
						ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
						defer cancel()
						out, err := d.CtrCommand(ctx, "images", "pull", "--hosts-dir", certs, tt.ref).CombinedOutput()
						require.Error(t, err, "%s", out)
						t.Logf("ctr pull %s:\n%s", tt.ref, out)
						assert.Contains(t, string(out), tt.want)
					})
				}
			})

			t.Run("nerdctl", func(t *testing.T) {
				containerdtest.NerdctlPath(t)
				ref := "zenodo.org/" + recs.v1.DOI + ":1.0"
				// Its own pull, not the image ctr pulled.
				d.Ctr(t, "images", "rm", "--sync", ref)
				d.Nerdctl(t, "--hosts-dir", certs, "pull", "--quiet", ref)
				out := d.Nerdctl(t, "--hosts-dir", certs, "run", "--rm", "--net", "none", "--pull", "never", ref)
				assert.Equal(t, testimage.Hello+"\n", out)
				out = d.Nerdctl(t, "--hosts-dir", certs, "run", "--rm", "--net", "none", "zenodo.org/"+recs.v1.ConceptDOI+":2.0")
				assert.Equal(t, endpointV2Output+"\n", out)
			})
		})
	}
}

// TestEndpointSkopeo inspects and copies zenodo.org/<doi> images with skopeo,
// pointed at the endpoint by a registries.conf.
func TestEndpointSkopeo(t *testing.T) {
	skopeo, err := exec.LookPath("skopeo")
	if err != nil {
		containerdtest.Skipf(t, "skopeo is not installed (apt-get install skopeo): %v", err)
	}
	recs := newEndpointRecords(t)
	endpoint := strings.TrimPrefix(recs.serve(t), "http://")
	conf := filepath.Join(t.TempDir(), "registries.conf")
	require.NoError(t, os.WriteFile(conf, []byte(fmt.Sprintf(`
[[registry]]
prefix = "zenodo.org"
location = %q
insecure = true
`, endpoint)), 0o644))
	skopeoRun := func(t *testing.T, args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, skopeo, append([]string{"--registries-conf", conf}, args...)...)
		// No credentials or policy from the host.
		cmd.Env = append(os.Environ(), "REGISTRY_AUTH_FILE="+filepath.Join(t.TempDir(), "auth.json"))
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	policy := filepath.Join(t.TempDir(), "policy.json")
	require.NoError(t, os.WriteFile(policy, []byte(`{"default":[{"type":"insecureAcceptAnything"}]}`), 0o644))

	t.Run("inspect", func(t *testing.T) {
		// The tag list goes to the name's own registry, which skopeo does
		// not rewrite: --no-tags, then list-tags on the endpoint.
		out, err := skopeoRun(t, "inspect", "--no-tags", "docker://zenodo.org/"+recs.v1.DOI+":1.0")
		require.NoError(t, err, out)
		var info struct {
			Digest string
			Layers []string
			Labels map[string]string
		}
		require.NoError(t, json.Unmarshal([]byte(out), &info), out)
		assert.Equal(t, recs.idx1.Root.Digest.String(), info.Digest)
		assert.Len(t, info.Layers, recs.layers1)

		out, err = skopeoRun(t, "list-tags", "--tls-verify=false", "docker://"+endpoint+"/"+recs.v1.DOI)
		require.NoError(t, err, out)
		var tags struct{ Tags []string }
		require.NoError(t, json.Unmarshal([]byte(out), &tags), out)
		assert.Equal(t, []string{"1.0", "2.0", "latest"}, tags.Tags)
	})

	t.Run("inspect unknown tag", func(t *testing.T) {
		out, err := skopeoRun(t, "inspect", "docker://zenodo.org/"+recs.v1.DOI+":9.9")
		require.Error(t, err)
		t.Logf("skopeo inspect of an unknown tag:\n%s", out)
		assert.Contains(t, out, "manifest unknown")
	})

	t.Run("copy to oci", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "oci")
		out, err := skopeoRun(t, "--policy", policy, "copy", "docker://zenodo.org/"+recs.v1.ConceptDOI+":2.0", "oci:"+dir+":copied")
		require.NoError(t, err, out)
		b, err := os.ReadFile(filepath.Join(dir, "index.json"))
		require.NoError(t, err)
		var index ocispec.Index
		require.NoError(t, json.Unmarshal(b, &index))
		require.Len(t, index.Manifests, 1)
		root := index.Manifests[0]
		assert.Equal(t, "copied", root.Annotations[ocispec.AnnotationRefName])
		// skopeo verified every blob as it copied; they are all there.
		_, err = content.ReadBlob(context.Background(), archive.LayoutProvider(dir), root)
		require.NoError(t, err)

		resp, err := http.Get("http://" + endpoint + "/v2/" + recs.v1.ConceptDOI + "/manifests/2.0")
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, resp.Header.Get("Docker-Content-Digest"), root.Digest.String())
	})
}
