package archive

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/plugins/content/local"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/stretchr/testify/require"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/internal/testutil"
)

// tfile is one entry of a test layer.
type tfile struct {
	name string
	typ  byte
	data []byte
	link string
}

// tlayer is a test layer: its entries and how its blob is compressed.
type tlayer struct {
	files []tfile
	comp  compression
}

// testImage is an image in an OCI layout directory made by newTestImage.
type testImage struct {
	dir       string
	root      ocispec.Descriptor
	config    ocispec.Descriptor
	manifest  ocispec.Descriptor // the host platform's
	layers    []ocispec.Descriptor
	tars      [][]byte // uncompressed layer tars, by layer
	files     map[string][]byte
	blobs     map[digest.Digest][]byte
	busybox   []byte
	platform  ocispec.Platform
	extraArch string // architecture of the second manifest, if any
}

type testImageOpts struct {
	docker bool // docker media types
	multi  bool // an index with a second platform whose last layer is absent
	names  []string
	// tiny makes a one-layer image of a few bytes (for fuzz seeds and
	// bad-input tests) without busybox.
	tiny bool
	// layers replaces the test layers (busybox is then not needed).
	layers []tlayer
	// gzipOnly compresses every layer with gzip (docker archives have no
	// zstd).
	gzipOnly bool
}

// readBusybox returns /bin/busybox (Debian's busybox-static), skipping the
// test loudly when it is missing (failing under CI=true).
func readBusybox(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile("/bin/busybox")
	if err != nil {
		testutil.SkipOrFail(t, "/bin/busybox (Debian busybox-static) is needed to build the test image: %v", err)
	}
	return b
}

// requireSkopeo returns skopeo's path or skips loudly (fails under CI=true).
func requireSkopeo(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("skopeo")
	if err != nil {
		testutil.SkipOrFail(t, "skopeo is not installed (apt-get install skopeo): %v", err)
	}
	return p
}

func makeTar(t testing.TB, files []tfile) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, f := range files {
		hdr := &tar.Header{Name: f.name, Typeflag: f.typ, ModTime: mtime, Linkname: f.link, Mode: 0o644}
		switch f.typ {
		case tar.TypeDir:
			hdr.Mode = 0o755
		case tar.TypeReg:
			hdr.Size = int64(len(f.data))
			if filepath.Base(f.name) == "busybox" {
				hdr.Mode = 0o755
			}
		}
		require.NoError(t, tw.WriteHeader(hdr))
		if f.typ == tar.TypeReg {
			_, err := tw.Write(f.data)
			require.NoError(t, err)
		}
	}
	require.NoError(t, tw.Close())
	return buf.Bytes()
}

func compress(t testing.TB, data []byte, c compression) []byte {
	t.Helper()
	var buf bytes.Buffer
	switch c {
	case compGzip:
		zw := gzip.NewWriter(&buf)
		_, err := zw.Write(data)
		require.NoError(t, err)
		require.NoError(t, zw.Close())
	case compZstd:
		zw, err := zstd.NewWriter(&buf)
		require.NoError(t, err)
		_, err = zw.Write(data)
		require.NoError(t, err)
		require.NoError(t, zw.Close())
	default:
		return data
	}
	return buf.Bytes()
}

func layerType(docker bool, c compression) string {
	switch {
	case docker && c == compGzip:
		return images.MediaTypeDockerSchema2LayerGzip
	case docker && c == compZstd:
		return images.MediaTypeDockerSchema2LayerZstd
	case docker:
		return images.MediaTypeDockerSchema2Layer
	case c == compGzip:
		return ocispec.MediaTypeImageLayerGzip
	case c == compZstd:
		return ocispec.MediaTypeImageLayerZstd
	}
	return ocispec.MediaTypeImageLayer
}

// testLayers returns the layers of the test image: busybox and a few files
// (gzip), a 1 MiB file and 50 small ones (zstd), links (uncompressed).
func testLayers(busybox []byte) []tlayer {
	small := []tfile{{name: "usr/", typ: tar.TypeDir}, {name: "usr/share/", typ: tar.TypeDir}, {name: "usr/share/data/", typ: tar.TypeDir},
		{name: "usr/share/data/big.bin", typ: tar.TypeReg, data: testutil.PseudoRandom(1, 1<<20)}}
	for i := range 50 {
		small = append(small, tfile{name: fmt.Sprintf("usr/share/data/f%02d.txt", i), typ: tar.TypeReg,
			data: bytes.Repeat([]byte(fmt.Sprintf("file %d\n", i)), 100+i*37)})
	}
	return []tlayer{
		{comp: compGzip, files: []tfile{
			{name: "bin/", typ: tar.TypeDir},
			{name: "bin/busybox", typ: tar.TypeReg, data: busybox},
			{name: "bin/sh", typ: tar.TypeSymlink, link: "busybox"},
			{name: "etc/", typ: tar.TypeDir},
			{name: "etc/hostname", typ: tar.TypeReg, data: []byte("zenodo\n")},
		}},
		{comp: compZstd, files: small},
		{comp: compNone, files: []tfile{
			{name: "etc/", typ: tar.TypeDir},
			{name: "etc/motd", typ: tar.TypeReg, data: []byte("archived on Zenodo\n")},
			{name: "etc/motd.link", typ: tar.TypeLink, link: "etc/motd"},
			{name: "etc/.wh.hostname", typ: tar.TypeReg},
		}},
	}
}

// newTestImage builds the test image as an OCI layout in a temp dir.
func newTestImage(t testing.TB, o testImageOpts) *testImage {
	t.Helper()
	var busybox []byte
	layers := []tlayer{{comp: compGzip, files: []tfile{
		{name: "etc/", typ: tar.TypeDir},
		{name: "etc/hostname", typ: tar.TypeReg, data: []byte("zenodo\n")},
	}}}
	switch {
	case o.layers != nil:
		layers = o.layers
	case !o.tiny:
		busybox = readBusybox(t)
		layers = testLayers(busybox)
	}
	ti := &testImage{
		dir:      t.TempDir(),
		files:    map[string][]byte{},
		blobs:    map[digest.Digest][]byte{},
		busybox:  busybox,
		platform: ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH},
	}
	put := func(mt string, data []byte) ocispec.Descriptor {
		d := digest.FromBytes(data)
		ti.blobs[d] = data
		p := filepath.Join(ti.dir, "blobs", "sha256", d.Encoded())
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, data, 0o644))
		return ocispec.Descriptor{MediaType: mt, Digest: d, Size: int64(len(data))}
	}
	var diffIDs []digest.Digest
	for _, l := range layers {
		if o.gzipOnly {
			l.comp = compGzip
		}
		tarb := makeTar(t, l.files)
		for _, f := range l.files {
			if f.typ == tar.TypeReg {
				ti.files[f.name] = f.data
			}
		}
		ti.tars = append(ti.tars, tarb)
		diffIDs = append(diffIDs, digest.FromBytes(tarb))
		ti.layers = append(ti.layers, put(layerType(o.docker, l.comp), compress(t, tarb, l.comp)))
	}
	manifestType, configType, indexType := ocispec.MediaTypeImageManifest, ocispec.MediaTypeImageConfig, ocispec.MediaTypeImageIndex
	if o.docker {
		manifestType, configType, indexType = images.MediaTypeDockerSchema2Manifest, images.MediaTypeDockerSchema2Config, images.MediaTypeDockerSchema2ManifestList
	}
	mkImage := func(p ocispec.Platform, layers []ocispec.Descriptor, diffIDs []digest.Digest) (ocispec.Descriptor, ocispec.Descriptor) {
		created := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
		cfg := ocispec.Image{
			Created:  &created,
			Platform: p,
			Config:   ocispec.ImageConfig{Entrypoint: []string{"/bin/busybox"}, Cmd: []string{"sh"}, Labels: map[string]string{"org.opencontainers.image.title": "test"}},
			RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: diffIDs},
		}
		cfgData, err := json.Marshal(cfg)
		require.NoError(t, err)
		cfgDesc := put(configType, cfgData)
		m := ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: manifestType, Config: cfgDesc, Layers: layers}
		mData, err := json.MarshalIndent(m, "", "   ")
		require.NoError(t, err)
		return put(manifestType, mData), cfgDesc
	}
	ti.manifest, ti.config = mkImage(ti.platform, ti.layers, diffIDs)
	ti.root = ti.manifest
	if o.multi {
		ti.extraArch = "arm64"
		if runtime.GOARCH == "arm64" {
			ti.extraArch = "amd64"
		}
		missingTar := makeTar(t, []tfile{{name: "missing", typ: tar.TypeReg, data: []byte("not in the store")}})
		missing := compress(t, missingTar, compGzip)
		missingDesc := ocispec.Descriptor{MediaType: layerType(o.docker, compGzip), Digest: digest.FromBytes(missing), Size: int64(len(missing))}
		other, _ := mkImage(ocispec.Platform{OS: "linux", Architecture: ti.extraArch},
			[]ocispec.Descriptor{ti.layers[0], missingDesc}, []digest.Digest{diffIDs[0], digest.FromBytes(missingTar)})
		hostDesc := ti.manifest
		hostDesc.Platform = &ti.platform
		other.Platform = &ocispec.Platform{OS: "linux", Architecture: ti.extraArch}
		// A buildx attestation manifest for the host image.
		statement := put("application/vnd.in-toto+json", []byte(`{"_type":"https://in-toto.io/Statement/v0.1"}`))
		attCfg := put(ocispec.MediaTypeImageConfig, []byte(`{"architecture":"unknown","os":"unknown","config":{},"rootfs":{"type":"layers","diff_ids":[]}}`))
		attData, err := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, Config: attCfg, Layers: []ocispec.Descriptor{statement}})
		require.NoError(t, err)
		att := put(ocispec.MediaTypeImageManifest, attData)
		att.Platform = &ocispec.Platform{OS: "unknown", Architecture: "unknown"}
		att.Annotations = map[string]string{annotationReferenceType: attestationManifest, "vnd.docker.reference.digest": hostDesc.Digest.String()}
		idx := ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: indexType, Manifests: []ocispec.Descriptor{hostDesc, other, att}}
		data, err := json.Marshal(idx)
		require.NoError(t, err)
		ti.root = put(indexType, data)
	}
	var entries []ocispec.Descriptor
	for _, n := range o.names {
		d := ti.root
		d.Annotations = map[string]string{images.AnnotationImageName: n, ocispec.AnnotationRefName: ociReferenceName(n)}
		entries = append(entries, d)
	}
	if len(entries) == 0 {
		entries = []ocispec.Descriptor{ti.root}
	}
	idxData, err := json.Marshal(ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: entries})
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(ti.dir, "index.json"), idxData, 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(ti.dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644))
	return ti
}

// contentStore copies the image's blobs into a containerd content store.
func (ti *testImage) contentStore(t testing.TB) content.Store {
	t.Helper()
	cs, err := local.NewStore(t.TempDir())
	require.NoError(t, err)
	ctx := context.Background()
	for d, b := range ti.blobs {
		require.NoError(t, content.WriteBlob(ctx, cs, d.String(), bytes.NewReader(b), ocispec.Descriptor{Digest: d, Size: int64(len(b))}))
	}
	return cs
}

// countingReaderAt counts the bytes and calls of ReadAt.
type countingReaderAt struct {
	ra    io.ReaderAt
	bytes atomic.Int64
	calls atomic.Int64
}

func (c *countingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.ra.ReadAt(p, off)
	c.bytes.Add(int64(n))
	c.calls.Add(1)
	return n, err
}

func (c *countingReaderAt) reset() {
	c.bytes.Store(0)
	c.calls.Store(0)
}

// writeArchive writes ti with opts into a file and returns its bytes and
// index.
func writeArchive(t testing.TB, provider content.Provider, root ocispec.Descriptor, opts ...WriteOption) ([]byte, *Index) {
	t.Helper()
	var buf bytes.Buffer
	opts = append([]WriteOption{WithTempDir(t.TempDir())}, opts...)
	idx, err := Write(context.Background(), &buf, provider, root, opts...)
	require.NoError(t, err)
	return buf.Bytes(), idx
}

func gunzip(t testing.TB, data []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(data))
	require.NoError(t, err)
	out, err := io.ReadAll(zr)
	require.NoError(t, err)
	return out
}

func gzipBytes(t testing.TB, data []byte) []byte {
	t.Helper()
	return compress(t, data, compGzip)
}
