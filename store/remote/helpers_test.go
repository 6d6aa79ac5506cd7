package remote

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/stretchr/testify/require"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/archive"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/cache"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/seekable"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/zenodo"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/zenodo/zenodotest"
)

// Shape of the test image's first layer: many small files (one member each)
// followed by a big file spread over several members.
const (
	numSmall   = 64
	smallSize  = 4 << 10
	bigSize    = 2 << 20
	memberSize = 256 << 10
)

// testArchive is a format v1 image.tar built from a small OCI layout.
type testArchive struct {
	tar    []byte
	index  []byte
	idx    *archive.Index
	layers []ocispec.Descriptor
	// files are the regular files' contents, by layer and name.
	files []map[string][]byte
	blobs map[digest.Digest][]byte
}

var (
	archiveOnce sync.Once
	archiveVal  *testArchive
	archiveErr  error
)

// buildArchive returns the test archive, built once per test binary (it is
// never modified).
func buildArchive(t testing.TB) *testArchive {
	t.Helper()
	archiveOnce.Do(func() { archiveVal, archiveErr = makeArchive() })
	require.NoError(t, archiveErr)
	return archiveVal
}

func pseudoRandom(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

type tfile struct {
	name string
	typ  byte
	data []byte
	link string
}

func smallName(i int) string { return fmt.Sprintf("usr/lib/pkg/f%02d.bin", i) }

func testLayers() [][]tfile {
	l0 := []tfile{{name: "usr/", typ: tar.TypeDir}, {name: "usr/lib/", typ: tar.TypeDir}, {name: "usr/lib/pkg/", typ: tar.TypeDir}}
	for i := range numSmall {
		l0 = append(l0, tfile{name: smallName(i), typ: tar.TypeReg, data: pseudoRandom(uint64(i+1), smallSize)})
	}
	l0 = append(l0,
		tfile{name: "usr/lib/big.bin", typ: tar.TypeReg, data: pseudoRandom(1000, bigSize)},
		tfile{name: "usr/lib/empty", typ: tar.TypeReg},
		tfile{name: "usr/lib/link", typ: tar.TypeSymlink, link: "big.bin"},
		tfile{name: "usr/lib/hard", typ: tar.TypeLink, link: "usr/lib/pkg/f03.bin"},
	)
	l1 := []tfile{
		{name: "etc/", typ: tar.TypeDir},
		{name: "etc/hostname", typ: tar.TypeReg, data: []byte("zenodo\n")},
		{name: "etc/text", typ: tar.TypeReg, data: bytes.Repeat([]byte("archived on Zenodo\n"), 20000)},
	}
	return [][]tfile{l0, l1}
}

func makeTar(files []tfile) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, f := range files {
		hdr := &tar.Header{Name: f.name, Typeflag: f.typ, ModTime: mtime, Linkname: f.link, Mode: 0o644, Size: int64(len(f.data))}
		if f.typ != tar.TypeReg {
			hdr.Size = 0
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if f.typ == tar.TypeReg {
			if _, err := tw.Write(f.data); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func makeArchive() (*testArchive, error) { return makeArchiveOf(testLayers()) }

// makeArchiveOf builds an archive of one image with the given layers.
func makeArchiveOf(layerFiles [][]tfile) (*testArchive, error) {
	dir, err := os.MkdirTemp("", "remote-test-layout-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	put := func(mt string, data []byte) (ocispec.Descriptor, error) {
		d := digest.FromBytes(data)
		p := filepath.Join(dir, "blobs", "sha256", d.Encoded())
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return ocispec.Descriptor{}, err
		}
		return ocispec.Descriptor{MediaType: mt, Digest: d, Size: int64(len(data))}, os.WriteFile(p, data, 0o644)
	}
	ta := &testArchive{blobs: map[digest.Digest][]byte{}}
	var layers []ocispec.Descriptor
	var diffIDs []digest.Digest
	for _, files := range layerFiles {
		tb, err := makeTar(files)
		if err != nil {
			return nil, err
		}
		m := map[string][]byte{}
		for _, f := range files {
			if f.typ == tar.TypeReg {
				m[strings.TrimSuffix(f.name, "/")] = f.data
			}
		}
		ta.files = append(ta.files, m)
		var gz bytes.Buffer
		zw := gzip.NewWriter(&gz)
		zw.Write(tb)
		zw.Close()
		d, err := put(ocispec.MediaTypeImageLayerGzip, gz.Bytes())
		if err != nil {
			return nil, err
		}
		layers = append(layers, d)
		diffIDs = append(diffIDs, digest.FromBytes(tb))
	}
	created := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	cfg, _ := json.Marshal(ocispec.Image{Created: &created, Platform: ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH},
		RootFS: ocispec.RootFS{Type: "layers", DiffIDs: diffIDs}})
	cfgDesc, err := put(ocispec.MediaTypeImageConfig, cfg)
	if err != nil {
		return nil, err
	}
	man, _ := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, Config: cfgDesc, Layers: layers})
	root, err := put(ocispec.MediaTypeImageManifest, man)
	if err != nil {
		return nil, err
	}
	idx, _ := json.Marshal(ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{root}})
	if err := os.WriteFile(filepath.Join(dir, "index.json"), idx, 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644); err != nil {
		return nil, err
	}

	var out bytes.Buffer
	index, err := archive.Write(context.Background(), &out, archive.LayoutProvider(dir), root,
		archive.WithTempDir(dir), archive.WithImageName("example.org/remote/test:1.0"),
		archive.WithSeekableOptions(seekable.WithMinMemberSize(0), seekable.WithMaxMemberSize(memberSize)))
	if err != nil {
		return nil, err
	}
	ta.tar, ta.idx = out.Bytes(), index
	if ta.index, err = archive.MarshalIndex(index); err != nil {
		return nil, err
	}
	// The converted layers, from the written manifest.
	a, err := archive.Open(context.Background(), bytes.NewReader(ta.tar), int64(len(ta.tar)), archive.WithIndex(index))
	if err != nil {
		return nil, err
	}
	mans, err := a.Manifests(context.Background())
	if err != nil {
		return nil, err
	}
	data, err := content.ReadBlob(context.Background(), a, mans[0])
	if err != nil {
		return nil, err
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, err
	}
	ta.layers = m.Layers
	for _, b := range index.Blobs {
		ta.blobs[b.Digest] = ta.tar[b.Offset : b.Offset+b.Size]
	}
	return ta, nil
}

// fake is a fake Zenodo with the test archive published.
type fake struct {
	srv *zenodotest.Server
	ts  *httptest.Server
	pub zenodotest.Published
	log *clientLog
}

// clientLog records the HTTP attempts a client made, as the client sees
// them: unlike the fake's log, which a request joins once its handler has
// returned, an attempt is recorded before its body is read.
type clientLog struct {
	mu   sync.Mutex
	reqs []zenodo.Event
}

func (c *clientLog) observe(e zenodo.Event) {
	if e.Kind != zenodo.EventRequest {
		return
	}
	c.mu.Lock()
	c.reqs = append(c.reqs, e)
	c.mu.Unlock()
}

func (c *clientLog) reset() {
	c.mu.Lock()
	c.reqs = nil
	c.mu.Unlock()
}

// files returns the attempts on file contents.
func (c *clientLog) files() []zenodo.Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []zenodo.Event
	for _, e := range c.reqs {
		if strings.Contains(e.URL, "/files/") {
			out = append(out, e)
		}
	}
	return out
}

func (c *clientLog) all() []zenodo.Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]zenodo.Event(nil), c.reqs...)
}

// newFake starts a fake Zenodo serving files (nil: image.tar and its index).
func newFake(t testing.TB, files []zenodotest.SeedFile, opts ...zenodotest.Option) *fake {
	t.Helper()
	srv, ts := zenodotest.NewTestServer(t, opts...)
	return publish(t, srv, ts, files)
}

func publish(t testing.TB, srv *zenodotest.Server, ts *httptest.Server, files []zenodotest.SeedFile) *fake {
	t.Helper()
	if files == nil {
		ta := buildArchive(t)
		files = []zenodotest.SeedFile{{Name: archive.ArchiveFileName, Data: ta.tar}, {Name: archive.IndexFileName, Data: ta.index}}
	}
	pub, err := srv.Publish(zenodotest.SeedRecord{Title: "Docker image test", Version: "1.0", Files: files})
	require.NoError(t, err)
	srv.ResetRequests()
	return &fake{srv: srv, ts: ts, pub: pub, log: &clientLog{}}
}

// reset empties both request logs.
func (f *fake) reset() {
	f.srv.ResetRequests()
	f.log.reset()
}

// client returns a client of the fake without rate limits and with quick
// retries.
func (f *fake) client(t testing.TB) *zenodo.Client {
	t.Helper()
	return newClient(t, f.ts.URL, zenodo.WithObserver(f.log.observe))
}

func newClient(t testing.TB, url string, opts ...zenodo.Option) *zenodo.Client {
	t.Helper()
	c, err := zenodo.New(url, append([]zenodo.Option{zenodo.WithRateLimit(0, 0), zenodo.WithHourlyLimit(0),
		zenodo.WithRetry(2, time.Millisecond), zenodo.WithTimeout(10 * time.Second)}, opts...)...)
	require.NoError(t, err)
	return c
}

// idle waits until the layer's fetches (which go on after the reads that
// started them returned) are over. No read may be running.
func idle(l *Layer) { l.wg.Wait() }

func (f *fake) ref(t testing.TB) zenodo.Reference {
	t.Helper()
	ref, err := zenodo.ParseReference(f.pub.DOI)
	require.NoError(t, err)
	return ref
}

// newOpener returns an Opener closed at the end of the test.
func newOpener(t testing.TB, c *zenodo.Client, opts ...Option) *Opener {
	t.Helper()
	op := NewOpener(c, opts...)
	t.Cleanup(func() { op.Close() })
	return op
}

func memCacheOf(t testing.TB) cache.Cache {
	t.Helper()
	c := cache.NewMemory(cache.WithVerify(cache.VerifyDigest))
	t.Cleanup(func() { c.Close() })
	return c
}

// readFile reads a whole file of a layer with reads of chunk bytes.
func readFile(ctx context.Context, l *Layer, e *seekable.Entry, chunk int) ([]byte, error) {
	e = l.TOC().Resolve(e)
	out := make([]byte, e.Size)
	for off := int64(0); off < e.Size; off += int64(chunk) {
		n := min(int64(chunk), e.Size-off)
		if _, err := l.ReadAt(ctx, e, out[off:off+n], off); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// lookup returns a TOC entry, failing the test if it is missing.
func lookup(t testing.TB, l *Layer, name string) *seekable.Entry {
	t.Helper()
	e, ok := l.TOC().Lookup(name)
	require.True(t, ok, "no %s in the layer", name)
	return e
}

// noRange strips Range headers, as a server that ignores them.
func noRange(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Header.Del("Range")
		h.ServeHTTP(w, r)
	})
}
