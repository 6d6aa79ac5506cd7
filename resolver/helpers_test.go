package resolver

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/stretchr/testify/require"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/internal/testutil"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/archive"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/zenodo"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/zenodo/zenodotest"
)

// memProvider is a content.Provider over blobs in memory.
type memProvider map[digest.Digest][]byte

func (m memProvider) ReaderAt(ctx context.Context, desc ocispec.Descriptor) (content.ReaderAt, error) {
	b, ok := m[desc.Digest]
	if !ok {
		return nil, fmt.Errorf("blob %s: %w", desc.Digest, errdefs.ErrNotFound)
	}
	return bytesReaderAt{bytes.NewReader(b)}, nil
}

type bytesReaderAt struct{ *bytes.Reader }

func (b bytesReaderAt) Close() error { return nil }

// testImage is a small OCI image built in memory and archived in format v1.
type testImage struct {
	blobs    memProvider
	root     ocispec.Descriptor // as built (manifest or index)
	manifest ocispec.Descriptor // the host platform's
	config   ocispec.Descriptor
	layers   []ocispec.Descriptor // as built (plain gzip)
	files    map[string][]byte
	// tar and index are the format v1 image.tar and image.tar.index.json.
	tar, index []byte
	idx        *archive.Index
}

type imageOpts struct {
	seed  uint64
	big   int  // size of a file of random data in its own layer (0: none)
	multi bool // an index with a second platform
	label string
}

func makeTarGz(t testing.TB, files map[string][]byte, order []string) (gz []byte, tarb []byte) {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	dirs := map[string]bool{}
	for _, name := range order {
		if i := strings.LastIndex(name, "/"); i > 0 && !dirs[name[:i+1]] {
			dirs[name[:i+1]] = true
			require.NoError(t, tw.WriteHeader(&tar.Header{Name: name[:i+1], Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mtime}))
		}
		data := files[name]
		require.NoError(t, tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(data)), ModTime: mtime}))
		_, err := tw.Write(data)
		require.NoError(t, err)
	}
	require.NoError(t, tw.Close())
	var zb bytes.Buffer
	zw := gzip.NewWriter(&zb)
	_, err := zw.Write(buf.Bytes())
	require.NoError(t, err)
	require.NoError(t, zw.Close())
	return zb.Bytes(), buf.Bytes()
}

// newTestImage builds an image of two or three small layers and archives it.
func newTestImage(t testing.TB, o imageOpts) *testImage {
	t.Helper()
	ti := &testImage{blobs: memProvider{}, files: map[string][]byte{}}
	put := func(mt string, data []byte) ocispec.Descriptor {
		d := digest.FromBytes(data)
		ti.blobs[d] = data
		return ocispec.Descriptor{MediaType: mt, Digest: d, Size: int64(len(data))}
	}
	layerFiles := []map[string][]byte{
		{"etc/hostname": []byte("zenodo\n"), "etc/motd": []byte(fmt.Sprintf("image %d\n", o.seed))},
		{"usr/share/doc/a.txt": bytes.Repeat([]byte("a"), 5000), "usr/share/doc/b.txt": testutil.PseudoRandom(o.seed+1, 20000)},
	}
	if o.big > 0 {
		layerFiles = append(layerFiles, map[string][]byte{"data/big.bin": testutil.PseudoRandom(o.seed+2, o.big)})
	}
	var diffIDs []digest.Digest
	for _, files := range layerFiles {
		var order []string
		for name, data := range files {
			order = append(order, name)
			ti.files[name] = data
		}
		sortStrings(order)
		gz, tarb := makeTarGz(t, files, order)
		diffIDs = append(diffIDs, digest.FromBytes(tarb))
		ti.layers = append(ti.layers, put(ocispec.MediaTypeImageLayerGzip, gz))
	}
	platform := ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH}
	mk := func(p ocispec.Platform) (ocispec.Descriptor, ocispec.Descriptor) {
		created := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
		cfg := ocispec.Image{Created: &created, Platform: p,
			Config: ocispec.ImageConfig{Cmd: []string{"/bin/sh"}, Labels: map[string]string{"test": o.label}},
			RootFS: ocispec.RootFS{Type: "layers", DiffIDs: diffIDs}}
		cb, err := json.Marshal(cfg)
		require.NoError(t, err)
		cd := put(ocispec.MediaTypeImageConfig, cb)
		mb, err := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, Config: cd, Layers: ti.layers})
		require.NoError(t, err)
		return put(ocispec.MediaTypeImageManifest, mb), cd
	}
	ti.manifest, ti.config = mk(platform)
	ti.root = ti.manifest
	if o.multi {
		other := ocispec.Platform{OS: "linux", Architecture: "arm64"}
		if runtime.GOARCH == "arm64" {
			other.Architecture = "amd64"
		}
		om, _ := mk(other)
		hm := ti.manifest
		hm.Platform, om.Platform = &platform, &other
		ib, err := json.Marshal(ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{hm, om}})
		require.NoError(t, err)
		ti.root = put(ocispec.MediaTypeImageIndex, ib)
	}
	var buf bytes.Buffer
	idx, err := archive.Write(context.Background(), &buf, ti.blobs, ti.root, archive.WithTempDir(t.TempDir()))
	require.NoError(t, err)
	ti.idx = idx
	ti.tar = buf.Bytes()
	ti.index, err = archive.MarshalIndex(idx)
	require.NoError(t, err)
	return ti
}

func sortStrings(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

// archived opens the archive as written, for the digests it holds (its
// layers are seekable gzip, not the layers as built).
func (ti *testImage) archived(t testing.TB) *archive.Archive {
	t.Helper()
	a, err := archive.Open(context.Background(), bytes.NewReader(ti.tar), int64(len(ti.tar)), archive.WithIndex(ti.idx))
	require.NoError(t, err)
	return a
}

// archivedManifest returns the archived image's host manifest and its
// parsed content.
func (ti *testImage) archivedManifest(t testing.TB) (ocispec.Descriptor, ocispec.Manifest) {
	t.Helper()
	a := ti.archived(t)
	ms, err := a.Manifests(context.Background())
	require.NoError(t, err)
	for _, d := range ms {
		if d.Platform == nil || d.Platform.Architecture == runtime.GOARCH {
			b, err := content.ReadBlob(context.Background(), a, d)
			require.NoError(t, err)
			var m ocispec.Manifest
			require.NoError(t, json.Unmarshal(b, &m))
			return d, m
		}
	}
	t.Fatal("no host manifest")
	return ocispec.Descriptor{}, ocispec.Manifest{}
}

func (ti *testImage) seedFiles() []zenodotest.SeedFile {
	return []zenodotest.SeedFile{
		{Name: archive.ArchiveFileName, Data: ti.tar},
		{Name: archive.IndexFileName, Data: ti.index},
	}
}

// fixture is a fake Zenodo with a few records, and a Source over it.
type fixture struct {
	fake   *zenodotest.Server
	ts     *httptest.Server
	client *zenodo.Client
	src    Source

	v1, v2   *testImage
	pub1     zenodotest.Published // version 1.0
	pub2     zenodotest.Published // version 2.0 of the same concept
	noImage  zenodotest.Published // a record without an image
	untagged zenodotest.Published // a record with an image and no metadata.version
}

type fixtureOpts struct {
	prefix string // DOI prefix (default production)
	big    int
	multi  bool
}

func newFixture(t testing.TB, o fixtureOpts) *fixture {
	t.Helper()
	var zopts []zenodotest.Option
	if o.prefix != "" {
		zopts = append(zopts, zenodotest.WithDOIPrefix(o.prefix))
	}
	zopts = append(zopts, zenodotest.WithLogf(func(string, ...any) {}))
	fake, ts := zenodotest.NewTestServer(t, zopts...)
	f := &fixture{fake: fake, ts: ts}
	f.v1 = newTestImage(t, imageOpts{seed: 1, big: o.big, multi: o.multi, label: "v1"})
	f.v2 = newTestImage(t, imageOpts{seed: 2, big: o.big, multi: o.multi, label: "v2"})
	var err error
	f.pub1, err = fake.Publish(zenodotest.SeedRecord{Title: "Docker image test", Version: "1.0", Files: f.v1.seedFiles()})
	require.NoError(t, err)
	f.pub2, err = fake.Publish(zenodotest.SeedRecord{Title: "Docker image test", Version: "2.0", ConceptRecID: f.pub1.ConceptRecID, Files: f.v2.seedFiles()})
	require.NoError(t, err)
	f.noImage, err = fake.Publish(zenodotest.SeedRecord{Title: "A paper", Version: "1.0", Files: []zenodotest.SeedFile{{Name: "paper.pdf", Data: []byte("%PDF-1.4 not an image")}}})
	require.NoError(t, err)
	f.untagged, err = fake.Publish(zenodotest.SeedRecord{Title: "Docker image untagged", Files: f.v1.seedFiles()})
	require.NoError(t, err)
	f.client = newClient(t, ts.URL)
	f.src = newTestSource(t, f.client)
	fake.ResetRequests()
	return f
}

func newClient(t testing.TB, url string, opts ...zenodo.Option) *zenodo.Client {
	t.Helper()
	opts = append([]zenodo.Option{zenodo.WithRateLimit(0, 0), zenodo.WithHourlyLimit(0), zenodo.WithRetry(1, time.Millisecond)}, opts...)
	c, err := zenodo.New(url, opts...)
	require.NoError(t, err)
	return c
}

// recordRequests counts the fake's requests for record metadata (not files).
func recordRequests(reqs []zenodotest.Request) int {
	n := 0
	for _, r := range reqs {
		if strings.HasPrefix(r.Path, "/api/records/") && !strings.Contains(r.Path, "/files/") {
			n++
		}
	}
	return n
}

func totalBytes(reqs []zenodotest.Request) int64 {
	var n int64
	for _, r := range reqs {
		n += r.Bytes
	}
	return n
}

// regErrorBody is a distribution-spec error body.
type regErrorBody struct {
	Errors []struct {
		Code    string          `json:"code"`
		Message string          `json:"message"`
		Detail  json.RawMessage `json:"detail"`
	} `json:"errors"`
}

func get(t testing.TB, method, url string, hdr map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	require.NoError(t, err)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, b
}

// countingSource counts Opens, and can hold them until released.
type countingSource struct {
	Source
	mu      sync.Mutex
	opens   int
	gate    chan struct{} // if not nil, Open waits for it to close
	entered chan struct{}
}

func (c *countingSource) Open(ctx context.Context, ref zenodo.Reference) (Image, error) {
	c.mu.Lock()
	c.opens++
	gate := c.gate
	c.mu.Unlock()
	if c.entered != nil {
		select {
		case c.entered <- struct{}{}:
		default:
		}
	}
	if gate != nil {
		<-gate
	}
	return c.Source.Open(ctx, ref)
}

func (c *countingSource) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.opens
}

// Versions forwards to the wrapped Source.
func (c *countingSource) Versions(ctx context.Context, ref zenodo.Reference) ([]zenodo.Record, error) {
	vl, ok := c.Source.(VersionLister)
	if !ok {
		return nil, errdefs.ErrNotImplemented
	}
	return vl.Versions(ctx, ref)
}

// clientSource is a plain Source over a zenodo.Client and archive.Open: the
// record, its index file, and every blob read by range through the
// client's ReaderAt (no caching at all).
type clientSource struct{ c *zenodo.Client }

type clientImage struct {
	*archive.Archive
	rec *zenodo.Record
}

func (i *clientImage) Record() *zenodo.Record { return i.rec }

func (s clientSource) Open(ctx context.Context, ref zenodo.Reference) (Image, error) {
	rec, err := s.c.Resolve(ctx, ref)
	if err != nil {
		return nil, err
	}
	f, ok := rec.File(archive.ArchiveFileName)
	if !ok {
		return nil, fmt.Errorf("record %s: %w", rec.RecordID(), ErrNoImage)
	}
	rc, err := s.c.Open(ctx, rec.RecordID(), archive.IndexFileName)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, archive.MaxIndexSize))
	if err != nil {
		return nil, err
	}
	idx, err := archive.ParseIndex(b)
	if err != nil {
		return nil, err
	}
	ra, err := s.c.NewReaderAt(ctx, rec.RecordID(), f.Key, f.Size)
	if err != nil {
		return nil, err
	}
	a, err := archive.Open(ctx, ra, f.Size, archive.WithIndex(idx))
	if err != nil {
		return nil, err
	}
	return &clientImage{Archive: a, rec: rec}, nil
}

func (s clientSource) Versions(ctx context.Context, ref zenodo.Reference) ([]zenodo.Record, error) {
	return s.c.Versions(ctx, ref.RecID)
}
