package integration

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/donodo"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/integration/containerdtest"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/integration/testimage"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/zenodo"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/zenodo/zenodotest"
)

// donodoCLI runs the donodo command against one containerd and one fake
// Zenodo.
type donodoCLI struct {
	bin  string
	d    *containerdtest.Daemon
	url  string
	zc   *zenodo.Client
	srv  *zenodotest.Server
	temp string
}

// buildDonodo builds cmd/donodo into dir.
func buildDonodo(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "donodo")
	cmd := exec.Command("go", "build", "-o", bin, "../cmd/donodo")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "building donodo: %s", out)
	return bin
}

// run runs donodo with the daemon's address, namespace ns and the fake
// Zenodo, and returns its stdout; a failure fails t.
func (c *donodoCLI) run(t *testing.T, ns string, args ...string) string {
	t.Helper()
	out, errOut, err := c.try(t, ns, args...)
	require.NoError(t, err, "donodo %v: %s", args, errOut)
	return out
}

// try runs donodo and returns its outputs and error.
func (c *donodoCLI) try(t *testing.T, ns string, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.bin, append([]string{"--address", c.d.Address(), "--namespace", ns, "--zenodo-url", c.url}, args...)...)
	cmd.Env = append(os.Environ(), "ZENODO_TOKEN="+zenodotest.DefaultToken, "TMPDIR="+c.temp, "XDG_CACHE_HOME="+c.temp)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

// ctr runs the daemon's ctr in namespace ns.
func ctrIn(t *testing.T, d *containerdtest.Daemon, ns string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, d.Version().Ctr(), append([]string{"--address", d.Address(), "--namespace", ns}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	require.NoError(t, cmd.Run(), "ctr %v: %s%s", args, stdout.String(), stderr.String())
	return stdout.String()
}

// imageConfig returns the config digest and diff_ids of image name in
// namespace ns.
func imageConfig(t *testing.T, d *containerdtest.Daemon, ns, name string) (digest.Digest, []digest.Digest) {
	t.Helper()
	ctx := namespaces.WithNamespace(t.Context(), ns)
	stored, err := d.Client().ImageService().Get(ctx, name)
	require.NoError(t, err, "image %s in namespace %s", name, ns)
	img := client.NewImage(d.Client(), stored)
	cfg, err := img.Config(ctx)
	require.NoError(t, err)
	diffIDs, err := img.RootFS(ctx)
	require.NoError(t, err)
	return cfg.Digest, diffIDs
}

// hostPackages lists a few package names of the host's dpkg database,
// which testimage.WithDpkgStatus copies into the image.
func hostPackages(t *testing.T, n int) []string {
	t.Helper()
	f, err := os.Open("/var/lib/dpkg/status")
	require.NoError(t, err)
	defer f.Close()
	var names []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() && len(names) < n {
		if name, ok := strings.CutPrefix(sc.Text(), "Package: "); ok {
			names = append(names, name)
		}
	}
	require.NotEmpty(t, names)
	return names
}

// TestDonodo pushes a test image from containerd to a fake Zenodo with the
// donodo command and pulls it back, on every available containerd.
func TestDonodo(t *testing.T) {
	containerdtest.RequiresRoot(t)
	if _, err := exec.LookPath("go"); err != nil {
		containerdtest.Skipf(t, "the go command is needed to build donodo: %v", err)
	}
	bin := buildDonodo(t, t.TempDir())

	for _, v := range containerdtest.Versions(t) {
		t.Run(v.Name, func(t *testing.T) {
			t.Parallel()
			d := containerdtest.Start(t, containerdtest.WithVersion(v))
			srv, ts := zenodotest.NewTestServer(t)
			zc, err := zenodo.New(ts.URL, zenodo.WithRateLimit(0, 0))
			require.NoError(t, err)
			c := &donodoCLI{bin: bin, d: d, url: ts.URL, zc: zc, srv: srv, temp: t.TempDir()}
			src := d.Namespace()

			const name = "zenodo-test.example/tool:1.0"
			layout := t.TempDir()
			testimage.Busybox(t, layout, testimage.WithName(name), testimage.WithDpkgStatus(),
				testimage.WithLabels(map[string]string{"org.opencontainers.image.authors": "Jane Smith <jane@example.org>", "topic": "testing"}))
			orig := testimage.Import(t, d, layout, "")
			origConfig, origDiffIDs := imageConfig(t, d, src, orig.Name)

			templates := filepath.Join(t.TempDir(), "templates.json")
			require.NoError(t, os.WriteFile(templates, []byte(`{
				"creators": [{"name": "Smith, Jane", "affiliation": "Zenodo Snapshotter Tests"}],
				"keywords": ["docker image", "{{index .Labels \"topic\"}}"],
				"notes": "built from {{.FullName}}"
			}`), 0o644))

			var first donodo.PushResult
			out := c.run(t, src, "--json", "push", "--auto-publish", "--templates", templates, name)
			require.NoError(t, json.Unmarshal([]byte(out), &first), out)
			require.True(t, first.Published)
			assert.Equal(t, donodo.ActionNewRecord, first.Action)
			assert.Equal(t, origConfig, first.ConfigDigest, "the image ID does not change")
			assert.Equal(t, "zenodo.org/"+first.DOI+":1.0", first.Reference)

			t.Run("templates and build manifest reach the record", func(t *testing.T) {
				rec, err := zc.Resolve(t.Context(), mustParseRef(t, first.DOI))
				require.NoError(t, err)
				md := rec.Metadata
				assert.Equal(t, "Docker image zenodo-test.example/tool", md.Title)
				assert.Equal(t, "1.0", md.Version)
				assert.Equal(t, []zenodo.Creator{{Name: "Smith, Jane", Affiliation: "Zenodo Snapshotter Tests"}}, md.Creators)
				assert.Equal(t, []string{"docker image", "testing"}, md.Keywords)
				assert.Equal(t, "built from "+name, md.Notes)
				assert.Contains(t, md.Description, first.ConfigDigest.String())
				assert.Contains(t, md.Description, "dpkg")
				for _, p := range hostPackages(t, 5) {
					assert.Contains(t, md.Description, p, "the build manifest lists the dpkg packages")
				}
			})

			t.Run("pull round trip", func(t *testing.T) {
				ns := d.Namespace() + "-pulled"
				var res donodo.PullResult
				out := c.run(t, ns, "--json", "pull", first.Reference)
				require.NoError(t, json.Unmarshal([]byte(out), &res), out)
				assert.Equal(t, []string{first.Reference, name}, res.Names)
				for _, n := range res.Names {
					config, diffIDs := imageConfig(t, d, ns, n)
					assert.Equal(t, origConfig, config)
					assert.Equal(t, origDiffIDs, diffIDs)
				}
				got := ctrIn(t, d, ns, "run", "--rm", first.Reference, "donodo-pulled")
				assert.Equal(t, testimage.Hello+"\n", got)
			})

			t.Run("every reference form pulls", func(t *testing.T) {
				ns := d.Namespace() + "-refs"
				recID := mustParseRef(t, first.DOI).RecID
				for _, ref := range []string{first.ConceptDOI, "doi:" + first.DOI, "https://zenodo.org/records/" + recID,
					"zenodo.org/" + first.ConceptDOI + ":1.0@" + first.RootDigest.String()} {
					out := c.run(t, ns, "-q", "pull", ref)
					assert.Contains(t, out, first.Reference+"\n", ref)
				}
				_, errOut, err := c.try(t, ns, "pull", "zenodo.org/"+first.DOI+"@sha256:"+strings.Repeat("0", 64))
				var ee *exec.ExitError
				require.ErrorAs(t, err, &ee)
				assert.Equal(t, donodo.ExitNotFound, ee.ExitCode(), errOut)
			})

			t.Run("image.tar imports with ctr", func(t *testing.T) {
				ns := d.Namespace() + "-import"
				file := filepath.Join(t.TempDir(), "image.tar")
				c.run(t, src, "pull", "-o", file, first.Reference)
				ctrIn(t, d, ns, "images", "import", file)
				assert.Contains(t, strings.Fields(ctrIn(t, d, ns, "images", "ls", "-q")), name)
				got := ctrIn(t, d, ns, "run", "--rm", name, "donodo-imported")
				assert.Equal(t, testimage.Hello+"\n", got)
			})

			t.Run("second tag is a new version", func(t *testing.T) {
				const name2 = "zenodo-test.example/tool:1.1"
				layout2 := t.TempDir()
				testimage.Busybox(t, layout2, testimage.WithName(name2), testimage.WithCmd("/bin/echo", "version 1.1"),
					testimage.WithLabels(map[string]string{"org.opencontainers.image.authors": "Jane Smith"}))
				testimage.Import(t, d, layout2, "")
				var second donodo.PushResult
				out := c.run(t, src, "--json", "push", "--auto-publish", "--templates", templates, name2)
				require.NoError(t, json.Unmarshal([]byte(out), &second), out)
				assert.Equal(t, donodo.ActionNewVersion, second.Action)
				assert.Equal(t, first.ConceptDOI, second.ConceptDOI)
				versions, err := zc.Versions(t.Context(), mustParseRef(t, second.DOI).RecID)
				require.NoError(t, err)
				var tags []string
				for _, v := range versions {
					tags = append(tags, v.Version())
				}
				assert.Equal(t, []string{"1.0", "1.1"}, tags)

				ns := d.Namespace() + "-v2"
				out = c.run(t, ns, "-q", "pull", first.ConceptDOI)
				assert.Contains(t, out, second.Reference, "the concept DOI pulls the newest version")
				got := ctrIn(t, d, ns, "run", "--rm", second.Reference, "donodo-v2")
				assert.Equal(t, "version 1.1\n", got)
			})

			t.Run("short names are normalized", func(t *testing.T) {
				ctx := namespaces.WithNamespace(t.Context(), src)
				_, err := d.Client().ImageService().Create(ctx, images.Image{Name: "docker.io/example/short:2.0", Target: orig.Target})
				require.NoError(t, err)
				var res donodo.PushResult
				out := c.run(t, src, "--json", "push", "--auto-publish", "example/short:2.0")
				require.NoError(t, json.Unmarshal([]byte(out), &res), out)
				assert.Equal(t, "Docker image example/short", res.Title)
				assert.Equal(t, donodo.ActionNewRecord, res.Action)
				assert.Equal(t, origConfig, res.ConfigDigest)
			})

			t.Run("gzipped docker save record", func(t *testing.T) {
				skopeo, err := exec.LookPath("skopeo")
				if err != nil {
					containerdtest.Skipf(t, "skopeo is needed to make a docker save archive: %v", err)
				}
				const legacy = "zenodo-test.example/legacy:0.9"
				dir := t.TempDir()
				testimage.Busybox(t, dir, testimage.WithName(legacy))
				saved := filepath.Join(t.TempDir(), "save.tar")
				cmd := exec.Command(skopeo, "--insecure-policy", "copy", "oci:"+dir, "docker-archive:"+saved+":"+legacy)
				cmd.Env = append(os.Environ(), "TMPDIR="+t.TempDir())
				out, err := cmd.CombinedOutput()
				require.NoError(t, err, "skopeo: %s", out)
				data, err := os.ReadFile(saved)
				require.NoError(t, err)
				var gz bytes.Buffer
				zw := gzip.NewWriter(&gz)
				_, err = zw.Write(data)
				require.NoError(t, err)
				require.NoError(t, zw.Close())
				pub, err := srv.Publish(zenodotest.SeedRecord{Title: "Docker image zenodo-test.example/legacy", Version: "0.9",
					Files: []zenodotest.SeedFile{{Name: "image.tar.gz", Data: gz.Bytes()}}})
				require.NoError(t, err)

				ns := d.Namespace() + "-legacy"
				var res donodo.PullResult
				o := c.run(t, ns, "--json", "pull", pub.DOI)
				require.NoError(t, json.Unmarshal([]byte(o), &res), o)
				assert.Equal(t, []string{"zenodo.org/" + pub.DOI + ":0.9", legacy}, res.Names)
				got := ctrIn(t, d, ns, "run", "--rm", res.Reference, "donodo-legacy")
				assert.Equal(t, testimage.Hello+"\n", got)
			})
		})
	}
}

func mustParseRef(t *testing.T, s string) zenodo.Reference {
	t.Helper()
	r, err := zenodo.ParseReference(s)
	require.NoError(t, err)
	return r
}

// TestDonodoLazyPull pulls a pushed image with `donodo pull --snapshotter
// zenodo` through the zenodo-snapshotter daemon (see lazy_test.go): the
// layers are mounted lazily from the DOI in their annotations, so the pull
// and a run download a small part of the archive.
func TestDonodoLazyPull(t *testing.T) {
	containerdtest.RequiresFUSE(t)
	if _, err := exec.LookPath("go"); err != nil {
		containerdtest.Skipf(t, "the go command is needed to build donodo: %v", err)
	}
	bin := buildDonodo(t, t.TempDir())
	snap := buildSnapshotter(t)
	srv, ts := zenodotest.NewTestServer(t)
	zc, err := zenodo.New(ts.URL, zenodo.WithRateLimit(0, 0))
	require.NoError(t, err)

	for _, v := range containerdtest.Versions(t) {
		t.Run(v.Name, func(t *testing.T) {
			// One record per containerd: a tag is published once.
			name := fmt.Sprintf("zenodo-test.example/lazy-donodo-%d:1.0", v.Major)
			layout := t.TempDir()
			testimage.Busybox(t, layout, testimage.WithName(name), testimage.WithRandomLayer(32, 11),
				testimage.WithLabels(map[string]string{"org.opencontainers.image.authors": "Jane Smith"}))
			dir := t.TempDir()
			sd := startSnapshotterDaemon(t, snap, dir, ts.URL)
			d := containerdtest.Start(t, containerdtest.WithVersion(v),
				containerdtest.WithProxySnapshotter("zenodo", sd.socket))
			c := &donodoCLI{bin: bin, d: d, url: ts.URL, zc: zc, srv: srv, temp: t.TempDir()}
			testimage.Import(t, d, layout, "", testimage.UnpackWith("overlayfs"))

			var pushed donodo.PushResult
			out := c.run(t, d.Namespace(), "--json", "push", "--auto-publish", name)
			require.NoError(t, json.Unmarshal([]byte(out), &pushed), out)
			require.Equal(t, donodo.ActionNewRecord, pushed.Action)

			srv.ResetRequests()
			ns := d.Namespace() + "-lazy"
			var res donodo.PullResult
			out = c.run(t, ns, "--json", "pull", "--snapshotter", "zenodo", pushed.Reference)
			require.NoError(t, json.Unmarshal([]byte(out), &res), out)
			assert.Equal(t, "zenodo", res.Snapshotter)
			got := ctrIn(t, d, ns, "run", "--rm", "--snapshotter", "zenodo", pushed.Reference, "donodo-lazy")
			assert.Equal(t, testimage.Hello+"\n", got)

			var fetched int64
			for _, r := range srv.Requests() {
				if strings.HasSuffix(r.Path, "/files/image.tar") {
					fetched += r.Bytes
				}
			}
			t.Logf("MEASURED %s: donodo lazy pull and run fetched %d of %d archive bytes (%.1f%%)",
				v.Name, fetched, pushed.ArchiveSize, 100*float64(fetched)/float64(pushed.ArchiveSize))
			assert.Less(t, fetched, pushed.ArchiveSize/4, "the random layer is not downloaded")
		})
	}
}
