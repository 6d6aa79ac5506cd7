package lazy

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/stretchr/testify/require"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/internal/testutil"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/archive"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/seekable"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/snapshot"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/zenodo"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/zenodo/zenodotest"
)

// testFiles are the regular files of the test layer, by path.
func testFiles() map[string][]byte {
	files := map[string][]byte{
		"etc/hostname": []byte("zenodo\n"),
		"usr/big.bin":  testutil.PseudoRandom(1, 3<<20),
	}
	for i := range 32 {
		files[fmt.Sprintf("usr/lib/f%02d", i)] = testutil.PseudoRandom(uint64(100+i), 8<<10)
	}
	return files
}

func layerTar(tb testing.TB, files map[string][]byte) []byte {
	tb.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, d := range []string{"etc/", "usr/", "usr/lib/"} {
		require.NoError(tb, tw.WriteHeader(&tar.Header{Name: d, Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mtime}))
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		require.NoError(tb, tw.WriteHeader(&tar.Header{Name: n, Typeflag: tar.TypeReg, Mode: 0o644, ModTime: mtime, Size: int64(len(files[n]))}))
		_, err := tw.Write(files[n])
		require.NoError(tb, err)
	}
	require.NoError(tb, tw.Close())
	return buf.Bytes()
}

// writeLayout writes a one-layer OCI image layout of files into dir and
// returns its root (a manifest).
func writeLayout(tb testing.TB, dir string, files map[string][]byte) ocispec.Descriptor {
	tb.Helper()
	put := func(mt string, data []byte) ocispec.Descriptor {
		d := digest.FromBytes(data)
		p := filepath.Join(dir, "blobs", "sha256", d.Encoded())
		require.NoError(tb, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(tb, os.WriteFile(p, data, 0o644))
		return ocispec.Descriptor{MediaType: mt, Digest: d, Size: int64(len(data))}
	}
	tb0 := layerTar(tb, files)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, err := zw.Write(tb0)
	require.NoError(tb, err)
	require.NoError(tb, zw.Close())
	layer := put(ocispec.MediaTypeImageLayerGzip, gz.Bytes())
	created := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	cfg, err := json.Marshal(ocispec.Image{Created: &created, Platform: ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH},
		RootFS: ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{digest.FromBytes(tb0)}}})
	require.NoError(tb, err)
	cfgDesc := put(ocispec.MediaTypeImageConfig, cfg)
	man, err := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
		Config: cfgDesc, Layers: []ocispec.Descriptor{layer}})
	require.NoError(tb, err)
	root := put(ocispec.MediaTypeImageManifest, man)
	idx, err := json.Marshal(ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{root}})
	require.NoError(tb, err)
	require.NoError(tb, os.WriteFile(filepath.Join(dir, "index.json"), idx, 0o644))
	require.NoError(tb, os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644))
	return root
}

// published is a test image archived in a record of the fake.
type published struct {
	doi    string
	layers []ocispec.Descriptor // the archive's layer descriptors
	files  map[string][]byte
}

// publish archives a one-layer image of files in a new record of the fake
// behind client, the way donodo push does: the layers carry the DOI Zenodo
// reserved for the draft.
func publish(tb testing.TB, client *zenodo.Client, files map[string][]byte) published {
	tb.Helper()
	ctx := context.Background()
	dir := tb.TempDir()
	root := writeLayout(tb, dir, files)
	dep, err := client.CreateDeposition(ctx, zenodo.Metadata{Title: "Docker image lazy-test", UploadType: "software",
		Creators: []zenodo.Creator{{Name: "Test, Lazy"}}})
	require.NoError(tb, err)
	doi := dep.ReservedDOI()
	require.NotEmpty(tb, doi)

	var image bytes.Buffer
	idx, err := archive.Write(ctx, &image, archive.LayoutProvider(dir), root, archive.WithTempDir(dir),
		archive.WithLayerAnnotations(map[string]string{snapshot.LabelDOI: doi}),
		archive.WithSeekableOptions(seekable.WithMinMemberSize(0), seekable.WithMaxMemberSize(256<<10)))
	require.NoError(tb, err)
	index, err := archive.MarshalIndex(idx)
	require.NoError(tb, err)
	for name, data := range map[string][]byte{"image.tar": image.Bytes(), "image.tar.index.json": index} {
		_, err := client.Upload(ctx, dep, name, bytes.NewReader(data), int64(len(data)), nil)
		require.NoError(tb, err)
	}
	_, err = client.Publish(ctx, string(dep.ID))
	require.NoError(tb, err)

	a, err := archive.Open(ctx, bytes.NewReader(image.Bytes()), int64(image.Len()), archive.WithIndex(idx))
	require.NoError(tb, err)
	mans, err := a.Manifests(ctx)
	require.NoError(tb, err)
	require.Len(tb, mans, 1)
	rc, err := a.ReaderAt(ctx, mans[0])
	require.NoError(tb, err)
	defer rc.Close()
	data := make([]byte, rc.Size())
	_, err = rc.ReadAt(data, 0)
	require.NoError(tb, err)
	var m ocispec.Manifest
	require.NoError(tb, json.Unmarshal(data, &m))
	return published{doi: doi, layers: m.Layers, files: files}
}

// newFake starts a fake Zenodo and returns it with a client for it.
func newFake(tb testing.TB, opts ...zenodo.Option) (*zenodotest.Server, *zenodo.Client) {
	tb.Helper()
	srv, ts := zenodotest.NewTestServer(tb)
	client, err := zenodo.New(ts.URL, append([]zenodo.Option{zenodo.WithToken(zenodotest.DefaultToken), zenodo.WithRateLimit(0, 0),
		zenodo.WithHourlyLimit(0), zenodo.WithRetry(2, time.Millisecond)}, opts...)...)
	require.NoError(tb, err)
	return srv, client
}

// requestLog records the HTTP attempts of a client (zenodo.WithObserver) as
// the client sees them: an attempt is recorded when its response headers
// arrive. The fake's own log cannot be used to count the requests a read
// made: it records a request once its response is complete, and a read
// returns as soon as the member it needs has arrived, while the rest of its
// request (the members read ahead) is still streaming.
type requestLog struct {
	mu   sync.Mutex
	urls []string
}

func (l *requestLog) observe(e zenodo.Event) {
	if e.Kind != zenodo.EventRequest {
		return
	}
	l.mu.Lock()
	l.urls = append(l.urls, e.URL)
	l.mu.Unlock()
}

func (l *requestLog) reset() {
	l.mu.Lock()
	l.urls = nil
	l.mu.Unlock()
}

// files returns the URLs of the attempts to read image.tar's contents.
func (l *requestLog) files() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, u := range l.urls {
		if strings.Contains(u, "/files/image.tar") && !strings.Contains(u, "image.tar.index.json") {
			out = append(out, u)
		}
	}
	return out
}
