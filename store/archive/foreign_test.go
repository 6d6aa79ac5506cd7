package archive

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/images/archive"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/stretchr/testify/require"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/internal/testutil"
)

// skopeo runs skopeo with a private TMPDIR and returns its stdout.
func skopeo(t testing.TB, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(requireSkopeo(t), append([]string{"--insecure-policy"}, args...)...)
	cmd.Env = append(os.Environ(), "TMPDIR="+t.TempDir())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, "skopeo %v: %s", args, stderr.String())
	return out
}

// layoutConfigDigest returns the config digest of the one image in an OCI
// layout directory.
func layoutConfigDigest(t testing.TB, dir string) digest.Digest {
	t.Helper()
	ctx := context.Background()
	root, _, err := LayoutRoot(dir)
	require.NoError(t, err)
	p := LayoutProvider(dir)
	if images.IsIndexType(root.MediaType) {
		var idx ocispec.Index
		b, err := content.ReadBlob(ctx, p, root)
		require.NoError(t, err)
		require.NoError(t, json.Unmarshal(b, &idx))
		require.NotEmpty(t, idx.Manifests)
		root = idx.Manifests[0]
	}
	var m ocispec.Manifest
	b, err := content.ReadBlob(ctx, p, root)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &m))
	return m.Config.Digest
}

// TestSkopeoReadsArchive checks that image.tar reads as both an OCI and a
// docker archive with skopeo, and that both give the same image.
func TestSkopeoReadsArchive(t *testing.T) {
	requireSkopeo(t)
	for _, tc := range []struct {
		name string
		img  testImageOpts
		opts []WriteOption
	}{
		{name: "single", opts: []WriteOption{WithImageName("example.org/busy:1.2")}},
		{name: "docker types unnamed", img: testImageOpts{docker: true}},
		{name: "multi-platform", img: testImageOpts{multi: true}, opts: []WriteOption{WithSkipMissing(), WithImageName("busy:2")}},
		{name: "preserved", opts: []WriteOption{WithPreserveLayers(), WithImageName("busy:3")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ti := newTestImage(t, tc.img)
			data, _ := writeArchive(t, LayoutProvider(ti.dir), ti.root, tc.opts...)
			p := filepath.Join(t.TempDir(), "image.tar")
			require.NoError(t, os.WriteFile(p, data, 0o644))
			for _, transport := range []string{"oci-archive:", "docker-archive:"} {
				var inspect struct {
					Digest       digest.Digest
					Architecture string
					Layers       []string
				}
				require.NoError(t, json.Unmarshal(skopeo(t, "inspect", transport+p), &inspect), transport)
				require.Equal(t, ti.platform.Architecture, inspect.Architecture, transport)
				require.Len(t, inspect.Layers, 3, transport)

				var cfg ocispec.Image
				require.NoError(t, json.Unmarshal(skopeo(t, "inspect", "--config", "--raw", transport+p), &cfg), transport)
				require.Len(t, cfg.RootFS.DiffIDs, 3)

				dir := filepath.Join(t.TempDir(), "oci")
				skopeo(t, "copy", "--quiet", transport+p, "oci:"+dir)
				require.Equal(t, ti.config.Digest, layoutConfigDigest(t, dir), "%s: config (image ID) unchanged", transport)
			}
		})
	}
}

// foreignCase is an archive made by another tool.
type foreignCase struct {
	name  string
	data  []byte
	names []string // expected image names
}

// makeForeign builds the test image in the formats of other tools.
func makeForeign(t *testing.T, ti *testImage) []foreignCase {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	var cases []foreignCase
	if _, err := exec.LookPath("skopeo"); err == nil {
		for _, f := range []struct{ name, dest string }{
			{"skopeo docker-archive", "docker-archive:" + filepath.Join(dir, "docker.tar") + ":example.org/busy:1.2"},
			{"skopeo oci-archive", "oci-archive:" + filepath.Join(dir, "oci.tar") + ":example.org/busy:1.2"},
		} {
			skopeo(t, "copy", "--quiet", "oci:"+ti.dir, f.dest)
		}
		docker, err := os.ReadFile(filepath.Join(dir, "docker.tar"))
		require.NoError(t, err)
		oci, err := os.ReadFile(filepath.Join(dir, "oci.tar"))
		require.NoError(t, err)
		cases = append(cases,
			foreignCase{name: "skopeo docker-archive", data: docker, names: []string{"example.org/busy:1.2"}},
			foreignCase{name: "skopeo docker-archive gzipped", data: gzipBytes(t, docker), names: []string{"example.org/busy:1.2"}},
			foreignCase{name: "skopeo oci-archive", data: oci, names: []string{"example.org/busy:1.2"}},
			foreignCase{name: "skopeo oci-archive gzipped", data: gzipBytes(t, oci), names: []string{"example.org/busy:1.2"}},
		)
	} else {
		testutil.SkipOrFail(t, "skopeo is not installed (apt-get install skopeo): %v", err)
	}

	// ctr export (containerd's exporter, also used by nerdctl save).
	var ctrExport bytes.Buffer
	require.NoError(t, archive.Export(ctx, ti.contentStore(t), &ctrExport, archive.WithManifest(ti.root, "example.org/busy:1.2")))
	cases = append(cases, foreignCase{name: "ctr export", data: ctrExport.Bytes(), names: []string{"example.org/busy:1.2"}})

	legacy := legacyDockerSave(t, ti, "busy:1.2")
	cases = append(cases,
		foreignCase{name: "legacy docker save", data: legacy, names: []string{"docker.io/library/busy:1.2"}},
		foreignCase{name: "python donodo image.tar.gz", data: gzipBytes(t, legacy), names: []string{"docker.io/library/busy:1.2"}},
	)
	ours, _ := writeArchive(t, LayoutProvider(ti.dir), ti.root, WithImageName("busy:1.2"))
	cases = append(cases, foreignCase{name: "format v1 gzipped", data: gzipBytes(t, ours), names: []string{"docker.io/library/busy:1.2"}})
	return cases
}

// legacyDockerSave makes a docker save archive as docker before 25 wrote
// them: <id>/layer.tar (uncompressed, one a symlink to another directory),
// <id>/json, <id>/VERSION, <config hex>.json, manifest.json, repositories.
func legacyDockerSave(t testing.TB, ti *testImage, name string) []byte {
	t.Helper()
	return legacyDockerSaveMulti(t, []*testImage{ti}, []string{name})
}

// legacyDockerSaveMulti is legacyDockerSave of several images.
func legacyDockerSaveMulti(t testing.TB, tis []*testImage, names []string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime := time.Unix(1700000000, 0)
	add := func(name string, data []byte) {
		require.NoError(t, tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(data)), ModTime: mtime}))
		_, err := tw.Write(data)
		require.NoError(t, err)
	}
	var mf []dockerManifest
	repos := map[string]map[string]string{}
	for n, ti := range tis {
		var layers []string
		parent := ""
		for i, l := range ti.tars {
			id := digest.FromString(fmt.Sprintf("%d %s %d", n, parent, i)).Encoded()
			require.NoError(t, tw.WriteHeader(&tar.Header{Name: id + "/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mtime}))
			add(id+"/VERSION", []byte("1.0"))
			add(id+"/json", []byte(fmt.Sprintf(`{"id":%q,"parent":%q}`, id, parent)))
			if i == len(ti.tars)-1 {
				shared := fmt.Sprintf("shared%d/layer.tar", n)
				add(shared, l)
				require.NoError(t, tw.WriteHeader(&tar.Header{Name: id + "/layer.tar", Typeflag: tar.TypeSymlink, Linkname: "../" + shared, ModTime: mtime}))
			} else {
				add(id+"/layer.tar", l)
			}
			layers = append(layers, id+"/layer.tar")
			parent = id
		}
		add(ti.config.Digest.Encoded()+".json", ti.blobs[ti.config.Digest])
		mf = append(mf, dockerManifest{Config: ti.config.Digest.Encoded() + ".json", RepoTags: []string{names[n]}, Layers: layers})
		repo, tag, _ := strings.Cut(names[n], ":")
		repos[repo] = map[string]string{tag: parent}
	}
	data, err := json.Marshal(mf)
	require.NoError(t, err)
	add("manifest.json", data)
	data, err = json.Marshal(repos)
	require.NoError(t, err)
	add("repositories", data)
	require.NoError(t, tw.Close())
	return buf.Bytes()
}

func TestOpenForeign(t *testing.T) {
	ctx := context.Background()
	ti := newTestImage(t, testImageOpts{names: []string{"example.org/busy:1.2"}, gzipOnly: true})
	for _, fc := range makeForeign(t, ti) {
		t.Run(fc.name, func(t *testing.T) {
			var a *Archive
			var err error
			if compressionOf(fc.data) == compNone {
				a, err = Open(ctx, bytes.NewReader(fc.data), int64(len(fc.data)))
			} else {
				a, err = OpenStream(ctx, bytes.NewReader(fc.data), t.TempDir())
			}
			require.NoError(t, err)
			defer func() { require.NoError(t, a.Close()) }()
			require.NoError(t, a.Verify(ctx))
			require.Equal(t, fc.names, a.Names())
			checkForeignImage(t, ctx, a, ti)
		})
	}
}

// checkForeignImage checks that a holds the test image: its config, and
// layers that decompress to the config's diff_ids.
func checkForeignImage(t *testing.T, ctx context.Context, a *Archive, ti *testImage) {
	t.Helper()
	ms, err := a.Manifests(ctx)
	require.NoError(t, err)
	require.Len(t, ms, 1)
	require.Equal(t, ti.platform.Architecture, ms[0].Platform.Architecture)
	var m ocispec.Manifest
	b, err := content.ReadBlob(ctx, a, ms[0])
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &m))
	require.Equal(t, ti.config.Digest, m.Config.Digest)
	require.Len(t, m.Layers, len(ti.tars))
	for i, l := range m.Layers {
		ra, err := a.ReaderAt(ctx, l)
		require.NoError(t, err)
		dr, _, err := decompress(content.NewReader(ra))
		require.NoError(t, err)
		got, err := io.ReadAll(dr)
		require.NoError(t, err)
		require.Equal(t, digest.FromBytes(ti.tars[i]), digest.FromBytes(got), "layer %d", i)
		require.True(t, images.IsLayerType(l.MediaType), l.MediaType)
	}
}

// An archive or layout with several images has index.json as its root.
func TestOpenSeveralImages(t *testing.T) {
	ctx := context.Background()
	one := newTestImage(t, testImageOpts{tiny: true})
	two := newTestImage(t, testImageOpts{layers: []tlayer{{comp: compGzip, files: []tfile{{name: "two", typ: tar.TypeReg, data: []byte("2")}}}}})
	cs := one.contentStore(t)
	for d, b := range two.blobs {
		require.NoError(t, content.WriteBlob(ctx, cs, d.String(), bytes.NewReader(b), ocispec.Descriptor{Digest: d, Size: int64(len(b))}))
	}
	var buf bytes.Buffer
	require.NoError(t, archive.Export(ctx, cs, &buf,
		archive.WithManifest(one.root, "example.org/one:1"), archive.WithManifest(two.root, "example.org/two:2")))
	a, err := Open(ctx, bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	require.NoError(t, err)
	require.NoError(t, a.Verify(ctx))
	require.Equal(t, []string{"example.org/one:1", "example.org/two:2"}, a.Names())
	require.Equal(t, ocispec.MediaTypeImageIndex, a.Root().MediaType)
	ms, err := a.Manifests(ctx)
	require.NoError(t, err)
	require.Len(t, ms, 2)

	// The same as an OCI layout directory, and written back as format v1.
	dir := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "blobs", "sha256"), 0o755))
	for _, d := range a.Digests() {
		b, err := content.ReadBlob(ctx, a, ocispec.Descriptor{Digest: d})
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dir, "blobs", "sha256", d.Encoded()), b, 0o644))
	}
	_, files, _ := tarFiles(t, buf.Bytes())
	require.NoError(t, os.WriteFile(filepath.Join(dir, "index.json"), files["index.json"], 0o644))
	root, names, err := LayoutRoot(dir)
	require.NoError(t, err)
	require.Equal(t, a.Root(), root)
	require.Equal(t, a.Names(), names)
	data, idx := writeArchive(t, LayoutProvider(dir), root)
	require.Len(t, idx.Manifests, 2)
	b, err := Open(ctx, bytes.NewReader(data), int64(len(data)), WithIndex(idx))
	require.NoError(t, err)
	require.NoError(t, b.Verify(ctx))
}

// A docker save of several images gets an index naming each.
func TestOpenDockerSaveSeveralImages(t *testing.T) {
	ctx := context.Background()
	one := newTestImage(t, testImageOpts{tiny: true})
	two := newTestImage(t, testImageOpts{layers: []tlayer{{comp: compNone, files: []tfile{{name: "two", typ: tar.TypeReg, data: []byte("2")}}}}})
	data := legacyDockerSaveMulti(t, []*testImage{one, two}, []string{"one:1", "example.org/two:2"})
	a, err := Open(ctx, bytes.NewReader(data), int64(len(data)))
	require.NoError(t, err)
	require.NoError(t, a.Verify(ctx))
	require.Equal(t, []string{"docker.io/library/one:1", "example.org/two:2"}, a.Names())
	require.Equal(t, ocispec.MediaTypeImageIndex, a.Root().MediaType)
	_, _, ok := a.Blob(a.Root().Digest)
	require.False(t, ok, "a synthesized index has no place in the archive")
	var idx ocispec.Index
	b, err := content.ReadBlob(ctx, a, a.Root())
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &idx))
	require.Len(t, idx.Manifests, 2)
	require.Equal(t, "docker.io/library/one:1", idx.Manifests[0].Annotations[images.AnnotationImageName])
	require.Equal(t, "2", idx.Manifests[1].Annotations[ocispec.AnnotationRefName])
	ms, err := a.Manifests(ctx)
	require.NoError(t, err)
	require.Len(t, ms, 2)

	// It writes back as format v1 with both images.
	out, wi := writeArchive(t, a, a.Root())
	require.Len(t, wi.Manifests, 2)
	back, err := Open(ctx, bytes.NewReader(out), int64(len(out)), WithIndex(wi))
	require.NoError(t, err)
	require.NoError(t, back.Verify(ctx))
}
