package bench

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/archive"
)

// rootfsTar is a small root filesystem as mmdebstrap writes one: with
// device nodes under ./dev.
func rootfsTar(t testing.TB) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	entries := []tar.Header{
		{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "./dev/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "./dev/null", Typeflag: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 3},
		{Name: "./dev/sda", Typeflag: tar.TypeBlock, Mode: 0o660, Devmajor: 8},
		{Name: "./dev/initctl", Typeflag: tar.TypeFifo, Mode: 0o600},
		{Name: "./dev/fd", Typeflag: tar.TypeSymlink, Linkname: "/proc/self/fd"},
		{Name: "./usr/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "./usr/bin/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "./usr/bin/python3", Typeflag: tar.TypeReg, Mode: 0o755, Size: 6},
		{Name: "./usr/bin/python3.11", Typeflag: tar.TypeLink, Linkname: "./usr/bin/python3"},
		{Name: "./etc/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "./etc/hostname", Typeflag: tar.TypeReg, Mode: 0o644, Size: 5},
	}
	for _, h := range entries {
		require.NoError(t, tw.WriteHeader(&h))
		if h.Size > 0 {
			_, err := tw.Write(bytes.Repeat([]byte("x"), int(h.Size)))
			require.NoError(t, err)
		}
	}
	require.NoError(t, tw.Close())
	return buf.Bytes()
}

func tarNames(t *testing.T, r io.Reader) map[string]byte {
	names := map[string]byte{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return names
		}
		require.NoError(t, err)
		names[h.Name] = h.Typeflag
	}
}

func TestFilterLayer(t *testing.T) {
	var out bytes.Buffer
	files, err := FilterLayer(context.Background(), &out, bytes.NewReader(rootfsTar(t)))
	require.NoError(t, err)
	assert.Equal(t, 2, files)
	names := tarNames(t, &out)
	for _, gone := range []string{"./dev/null", "./dev/sda", "./dev/initctl"} {
		assert.NotContains(t, names, gone)
	}
	for _, kept := range []string{"./", "./dev/", "./dev/fd", "./usr/bin/python3", "./usr/bin/python3.11", "./etc/hostname"} {
		assert.Contains(t, names, kept)
	}

	_, err = FilterLayer(context.Background(), io.Discard, bytes.NewReader([]byte("not a tar, but long enough to fail the header check ....")))
	assert.Error(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = FilterLayer(ctx, io.Discard, bytes.NewReader(rootfsTar(t)))
	assert.ErrorIs(t, err, context.Canceled)
}

func TestSpecs(t *testing.T) {
	quick, err := Specs("quick")
	require.NoError(t, err)
	assert.Equal(t, []Spec{Python()}, quick)
	full, err := Specs("full")
	require.NoError(t, err)
	assert.Equal(t, []Spec{Python(), SciPy()}, full)
	_, err = Specs("slow")
	assert.ErrorIs(t, err, errdefs.ErrInvalidArgument)

	assert.Equal(t, []string{"--variant=apt", "--format=tar", "--include=python3", "bookworm", "out.tar"}, Python().MmdebstrapArgs("out.tar"))
}

// TestPrepare derives an image from a cached root filesystem (no
// mmdebstrap) and reads it back as containerd and donodo would.
func TestPrepare(t *testing.T) {
	ctx := context.Background()
	cache := t.TempDir()
	spec := Spec{Name: "tiny", Suite: "bookworm", Packages: []string{"python3"}, Command: []string{"python3", "-c", "print(42)"}}
	rootfs := rootfsTar(t)
	require.NoError(t, os.WriteFile(filepath.Join(cache, "tiny-rootfs.tar"), rootfs, 0o644))

	img, err := Prepare(ctx, cache, spec, t.Logf)
	require.NoError(t, err)
	assert.Equal(t, "zenodo-bench.example/tiny:1.0", img.Name)
	assert.Equal(t, 2, img.Files)

	layer, err := os.ReadFile(img.LayerTar)
	require.NoError(t, err)
	assert.Equal(t, img.DiffID, digest.FromBytes(layer))
	assert.Equal(t, int64(len(layer)), img.LayerSize)

	// The OCI layout: the manifest, its config and gzipped layer.
	root, names, err := archive.LayoutRoot(img.Layout)
	require.NoError(t, err)
	assert.Equal(t, img.Manifest.Digest, root.Digest)
	assert.Contains(t, names, img.Name)
	p := archive.LayoutProvider(img.Layout)
	mb, err := content.ReadBlob(ctx, p, img.Manifest)
	require.NoError(t, err)
	var m ocispec.Manifest
	require.NoError(t, json.Unmarshal(mb, &m))
	require.Len(t, m.Layers, 1)
	assert.Equal(t, img.Layer, m.Layers[0])
	cb, err := content.ReadBlob(ctx, p, m.Config)
	require.NoError(t, err)
	var cfg ocispec.Image
	require.NoError(t, json.Unmarshal(cb, &cfg))
	assert.Equal(t, []digest.Digest{img.DiffID}, cfg.RootFS.DiffIDs)
	assert.Equal(t, []string{"python3"}, cfg.Config.Cmd)
	assert.Contains(t, cfg.Config.Env[0], "PATH=")
	assert.NotEmpty(t, cfg.Config.Labels["org.opencontainers.image.authors"])
	_, err = content.ReadBlob(ctx, p, img.Layer) // verified against its digest
	require.NoError(t, err)

	// image.tar.gz: a docker save archive the readers of foreign archives
	// accept, with the same image.
	f, err := os.Open(img.DockerArchiveGz)
	require.NoError(t, err)
	defer f.Close()
	a, err := archive.OpenStream(ctx, f, t.TempDir())
	require.NoError(t, err)
	defer a.Close()
	assert.Contains(t, a.Names(), img.Name)
	mans, err := a.Manifests(ctx)
	require.NoError(t, err)
	require.Len(t, mans, 1)
	require.NoError(t, a.Verify(ctx))

	// A second call reuses what is cached.
	st, err := os.Stat(filepath.Join(img.Dir, "image.json"))
	require.NoError(t, err)
	again, err := Prepare(ctx, cache, spec, func(format string, args ...any) {
		t.Errorf("rebuilt: "+format, args...)
	})
	require.NoError(t, err)
	assert.Equal(t, img, again)
	st2, err := os.Stat(filepath.Join(img.Dir, "image.json"))
	require.NoError(t, err)
	assert.Equal(t, st.ModTime(), st2.ModTime())

	// A changed command is a new derivation.
	spec.Command = []string{"python3", "-V"}
	rebuilt := false
	img3, err := Prepare(ctx, cache, spec, func(string, ...any) { rebuilt = true })
	require.NoError(t, err)
	assert.True(t, rebuilt)
	assert.Equal(t, spec.Command, img3.Spec.Command)
	assert.NoDirExists(t, img.Dir+".tmp")
}

func TestLoadImageIncomplete(t *testing.T) {
	dir := t.TempDir()
	_, err := loadImage(dir)
	assert.ErrorIs(t, err, os.ErrNotExist)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "image.json"), []byte("{}"), 0o644))
	_, err = loadImage(dir)
	assert.ErrorIs(t, err, os.ErrNotExist, "files missing")
	require.NoError(t, os.WriteFile(filepath.Join(dir, "image.json"), []byte("{"), 0o644))
	_, err = loadImage(dir)
	assert.Error(t, err)
}
