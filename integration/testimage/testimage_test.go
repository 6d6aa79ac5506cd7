package testimage

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Layouts are checked with go-containerregistry's validator (digests, sizes,
// diff IDs, config/manifest agreement): an independent reader.
func TestBusyboxIsValid(t *testing.T) {
	arm := ocispec.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}
	tests := []struct {
		name       string
		opts       []Option
		wantLayers int
		wantIndex  bool
		wantType   string
		// Only the manifests and configs are validated, plus every blob's
		// digest: a full validation reads each layer many times, which
		// takes seconds under -race. The default image gets the full one.
		// (go-containerregistry's layout also takes every layer for gzip,
		// so it could not read the uncompressed image's layers anyway.)
		fast bool
	}{
		{name: "default", wantLayers: 1, wantType: ocispec.MediaTypeImageManifest},
		{name: "all layers", opts: []Option{WithRandomLayer(2, 7), WithDpkgStatus(), WithFile(File{Path: "/a/b", Content: []byte("x")})},
			wantLayers: 4, wantType: ocispec.MediaTypeImageManifest, fast: true},
		{name: "uncompressed", opts: []Option{WithUncompressedLayers()}, wantLayers: 1, wantType: ocispec.MediaTypeImageManifest, fast: true},
		{name: "docker", opts: []Option{WithDockerMediaTypes()}, wantLayers: 1, wantType: mediaTypeDockerManifest, fast: true},
		{name: "multi-platform", opts: []Option{WithPlatform(arm, true)}, wantLayers: 1, wantIndex: true, wantType: ocispec.MediaTypeImageIndex, fast: true},
		{name: "docker multi-platform", opts: []Option{WithDockerMediaTypes(), WithPlatform(arm, true)}, wantLayers: 1, wantIndex: true, wantType: mediaTypeDockerManifestList, fast: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			root := Busybox(t, dir, tt.opts...)
			assert.Equal(t, tt.wantType, root.MediaType)
			assert.Equal(t, DefaultName, root.Annotations[AnnotationImageName])
			assert.Equal(t, "1.0", root.Annotations[ocispec.AnnotationRefName])

			checkBlobDigests(t, dir)
			var vopts []validate.Option
			if tt.fast {
				vopts = append(vopts, validate.Fast)
			}
			idx, err := layout.ImageIndexFromPath(dir)
			require.NoError(t, err)
			var imgs []v1.Image
			if tt.wantIndex {
				child, err := idx.ImageIndex(v1.Hash{Algorithm: "sha256", Hex: root.Digest.Encoded()})
				require.NoError(t, err)
				require.NoError(t, validate.Index(child, vopts...))
				m, err := child.IndexManifest()
				require.NoError(t, err)
				require.Len(t, m.Manifests, 2)
				for _, d := range m.Manifests {
					img, err := child.Image(d.Digest)
					require.NoError(t, err)
					imgs = append(imgs, img)
				}
			} else {
				img, err := idx.Image(v1.Hash{Algorithm: "sha256", Hex: root.Digest.Encoded()})
				require.NoError(t, err)
				imgs = append(imgs, img)
			}
			for _, img := range imgs {
				require.NoError(t, validate.Image(img, vopts...))
				layers, err := img.Layers()
				require.NoError(t, err)
				assert.Len(t, layers, tt.wantLayers)
				cfg, err := img.ConfigFile()
				require.NoError(t, err)
				assert.Equal(t, []string{"/bin/sh", "-c", "echo " + Hello}, cfg.Config.Cmd)
			}
		})
	}
}

// checkBlobDigests checks that every blob's content matches its name.
func checkBlobDigests(t *testing.T, dir string) {
	t.Helper()
	blobs, err := filepath.Glob(filepath.Join(dir, "blobs", "sha256", "*"))
	require.NoError(t, err)
	require.NotEmpty(t, blobs)
	for _, b := range blobs {
		f, err := os.Open(b)
		require.NoError(t, err)
		d, err := digest.SHA256.FromReader(f)
		f.Close()
		require.NoError(t, err)
		assert.Equal(t, filepath.Base(b), d.Encoded())
	}
}

func TestBusyboxIsDeterministic(t *testing.T) {
	opts := []Option{WithRandomLayer(1, 3), WithLabels(map[string]string{"a": "b"})}
	a := Busybox(t, t.TempDir(), opts...)
	b := Busybox(t, t.TempDir(), opts...)
	assert.Equal(t, a.Digest, b.Digest)
	c := Busybox(t, t.TempDir(), WithRandomLayer(1, 4), WithLabels(map[string]string{"a": "b"}))
	assert.NotEqual(t, a.Digest, c.Digest, "another seed gives other data")
}

func TestRandomLayerSize(t *testing.T) {
	entries, err := randomEntries(5, 1)
	require.NoError(t, err)
	var total int64
	var sums []byte
	for _, e := range entries {
		if e.open != nil {
			total += e.size
		}
		if e.name == "data/SHA256SUMS" {
			sums = e.content
		}
	}
	assert.Equal(t, int64(5<<20), total)
	assert.Equal(t, len(entries)-2, bytes.Count(sums, []byte("\n")), "one sum per file")
}

func TestForeignPlatformWithoutContent(t *testing.T) {
	dir := t.TempDir()
	root := Busybox(t, dir, WithPlatform(ocispec.Platform{OS: "linux", Architecture: "s390x"}, false))
	b, err := os.ReadFile(filepath.Join(dir, "blobs", "sha256", root.Digest.Encoded()))
	require.NoError(t, err)
	var idx ocispec.Index
	require.NoError(t, json.Unmarshal(b, &idx))
	require.Len(t, idx.Manifests, 2)
	_, err = os.Stat(filepath.Join(dir, "blobs", "sha256", idx.Manifests[0].Digest.Encoded()))
	assert.NoError(t, err, "host platform present")
	_, err = os.Stat(filepath.Join(dir, "blobs", "sha256", idx.Manifests[1].Digest.Encoded()))
	assert.ErrorIs(t, err, os.ErrNotExist, "foreign platform absent")
	assert.Equal(t, "s390x", idx.Manifests[1].Platform.Architecture)
}

func TestTagOf(t *testing.T) {
	for name, want := range map[string]string{
		"a/b:1.0":                  "1.0",
		"host:5000/a/b":            "",
		"host:5000/a/b:t":          "t",
		"a/b@sha256:abcd":          "",
		"a/b:t@sha256:abcd":        "t",
		"zenodo.org/10.5281/z.1:x": "x",
	} {
		assert.Equal(t, want, tagOf(name), name)
	}
}

func TestArchive(t *testing.T) {
	dir := t.TempDir()
	Busybox(t, dir)
	var a, b bytes.Buffer
	require.NoError(t, WriteArchive(&a, dir))
	require.NoError(t, WriteArchive(&b, dir))
	assert.Equal(t, a.Bytes(), b.Bytes())
	p := Archive(t, dir)
	st, err := os.Stat(p)
	require.NoError(t, err)
	assert.Equal(t, int64(a.Len()), st.Size())
}
