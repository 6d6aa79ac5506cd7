package archive

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/stretchr/testify/require"
)

// rawTar builds a tar from headers (data for regular files is zeros of
// hdr.Size unless given).
func rawTar(t testing.TB, entries ...rawEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.hdr
		if h.ModTime.IsZero() {
			h.ModTime = time.Unix(0, 0)
		}
		if e.data != nil {
			h.Size = int64(len(e.data))
		}
		require.NoError(t, tw.WriteHeader(&h))
		if h.Typeflag == tar.TypeReg && h.Size > 0 {
			data := e.data
			if data == nil {
				data = make([]byte, h.Size)
			}
			_, err := tw.Write(data)
			require.NoError(t, err)
		}
	}
	require.NoError(t, tw.Close())
	return buf.Bytes()
}

type rawEntry struct {
	hdr  tar.Header
	data []byte
}

func reg(name string, data []byte) rawEntry {
	return rawEntry{hdr: tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644}, data: data}
}

func link(name string, typ byte, target string) rawEntry {
	return rawEntry{hdr: tar.Header{Name: name, Typeflag: typ, Linkname: target}}
}

// isBadInput tells whether err is one of the package's bad-input kinds.
func isBadInput(err error) bool {
	return errors.Is(err, errdefs.ErrInvalidArgument) || errors.Is(err, ErrCorrupt) || errors.Is(err, errdefs.ErrNotFound)
}

func TestOpenBadInput(t *testing.T) {
	ctx := context.Background()
	ti := newTestImage(t, testImageOpts{tiny: true})
	good, idx := writeArchive(t, LayoutProvider(ti.dir), ti.root)
	cfg, ok := findBlob(idx, ti.config.Digest)
	require.True(t, ok)

	indexJSON := []byte(`{"schemaVersion":2,"manifests":[]}`)
	flipped := bytes.Clone(good)
	flipped[cfg.Offset+1] ^= 0xff

	for _, tc := range []struct {
		name string
		data []byte
		opts []OpenOption
		want error
	}{
		{name: "empty", data: nil, want: errdefs.ErrInvalidArgument},
		{name: "not a tar", data: bytes.Repeat([]byte("zenodo!\n"), 200), want: ErrCorrupt},
		{name: "truncated in a blob", data: good[:len(good)/2], want: ErrCorrupt},
		{name: "truncated in a header", data: good[:512+256], want: ErrCorrupt},
		{name: "dot-dot name", data: rawTar(t, reg("../evil", []byte("x"))), want: errdefs.ErrInvalidArgument},
		{name: "dot-dot inside name", data: rawTar(t, reg("blobs/../../evil", []byte("x"))), want: errdefs.ErrInvalidArgument},
		{name: "absolute name", data: rawTar(t, reg("/etc/passwd", []byte("x"))), want: errdefs.ErrInvalidArgument},
		{name: "symlink out of the archive", data: rawTar(t, link("blobs/sha256/x", tar.TypeSymlink, "../../../etc/passwd")), want: errdefs.ErrInvalidArgument},
		{name: "absolute symlink", data: rawTar(t, link("index.json", tar.TypeSymlink, "/etc/passwd")), want: errdefs.ErrInvalidArgument},
		{name: "hardlink out of the archive", data: rawTar(t, link("index.json", tar.TypeLink, "../x")), want: errdefs.ErrInvalidArgument},
		{name: "symlink loop", data: rawTar(t, link("index.json", tar.TypeSymlink, "a"), link("a", tar.TypeSymlink, "index.json")), want: errdefs.ErrInvalidArgument},
		{name: "dangling symlink", data: rawTar(t, link("index.json", tar.TypeSymlink, "nowhere")), want: errdefs.ErrNotFound},
		{name: "char device", data: rawTar(t, rawEntry{hdr: tar.Header{Name: "dev", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3}}), want: errdefs.ErrInvalidArgument},
		{name: "fifo", data: rawTar(t, rawEntry{hdr: tar.Header{Name: "fifo", Typeflag: tar.TypeFifo}}), want: errdefs.ErrInvalidArgument},
		{name: "huge PAX header", data: rawTar(t, rawEntry{hdr: tar.Header{Name: "x", Typeflag: tar.TypeReg, PAXRecords: map[string]string{"comment": strings.Repeat("a", 200<<10)}}, data: []byte("x")}), want: errdefs.ErrInvalidArgument},
		{name: "long name", data: rawTar(t, reg(strings.Repeat("a/", 600)+"x", []byte("x"))), want: errdefs.ErrInvalidArgument},
		{name: "sparse file", data: rawTar(t, rawEntry{hdr: tar.Header{Name: "s", Typeflag: tar.TypeReg, PAXRecords: map[string]string{"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": "s", "GNU.sparse.realsize": "10"}}, data: []byte("x")}), want: errdefs.ErrInvalidArgument},
		{name: "duplicate entry", data: rawTar(t, reg("index.json", indexJSON), reg("index.json", indexJSON)), want: errdefs.ErrInvalidArgument},
		{name: "no images in index.json", data: rawTar(t, reg("index.json", indexJSON)), want: errdefs.ErrNotFound},
		{name: "index.json not JSON", data: rawTar(t, reg("index.json", []byte("{"))), want: errdefs.ErrInvalidArgument},
		{name: "root blob missing", data: rawTar(t, reg("index.json", []byte(`{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:`+strings.Repeat("a", 64)+`","size":3}]}`))), want: errdefs.ErrNotFound},
		{name: "manifest.json not JSON", data: rawTar(t, reg("manifest.json", []byte("[{"))), want: errdefs.ErrInvalidArgument},
		{name: "manifest.json empty list", data: rawTar(t, reg("manifest.json", []byte("[]"))), want: errdefs.ErrNotFound},
		{name: "manifest.json config missing", data: rawTar(t, reg("manifest.json", []byte(`[{"Config":"c.json","Layers":[]}]`))), want: errdefs.ErrNotFound},
		{name: "manifest.json config escapes", data: rawTar(t, reg("manifest.json", []byte(`[{"Config":"../c.json","Layers":[]}]`))), want: errdefs.ErrInvalidArgument},
		{name: "manifest.json layer count", data: rawTar(t, reg("c.json", []byte(`{"rootfs":{"type":"layers","diff_ids":[]}}`)), reg("l.tar", []byte("x")), reg("manifest.json", []byte(`[{"Config":"c.json","Layers":["l.tar"]}]`))), want: errdefs.ErrInvalidArgument},
		{name: "manifest.json bad tag", data: rawTar(t, reg("c.json", []byte(`{"rootfs":{"type":"layers","diff_ids":[]}}`)), reg("manifest.json", []byte(`[{"Config":"c.json","RepoTags":["Bad Name"],"Layers":[]}]`))), want: errdefs.ErrInvalidArgument},
		{name: "neither OCI nor docker", data: rawTar(t, reg("hello", []byte("x"))), want: errdefs.ErrInvalidArgument},
		{name: "too many entries", data: good, opts: []OpenOption{WithMaxEntries(3)}, want: errdefs.ErrInvalidArgument},
		{name: "index for another archive", data: good[:len(good)-512], opts: []OpenOption{WithIndex(idx)}, want: errdefs.ErrInvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Open(ctx, bytes.NewReader(tc.data), int64(len(tc.data)), tc.opts...)
			require.Error(t, err)
			require.ErrorIs(t, err, tc.want, "%v", err)
		})
	}

	t.Run("wrong digest", func(t *testing.T) {
		for _, opts := range [][]OpenOption{nil, {WithIndex(idx)}} {
			a, err := Open(ctx, bytes.NewReader(flipped), int64(len(flipped)), opts...)
			require.NoError(t, err, "the config is not read when opening")
			require.ErrorIs(t, a.Verify(ctx), ErrCorrupt)
			_, err = content.ReadBlob(ctx, a, ti.config)
			require.ErrorIs(t, err, ErrCorrupt)
			_, err = a.Manifests(ctx) // reads the config for the platform
			if err != nil {
				require.ErrorIs(t, err, ErrCorrupt)
			}
		}
	})

	t.Run("descriptor size mismatch", func(t *testing.T) {
		a, err := Open(ctx, bytes.NewReader(good), int64(len(good)), WithIndex(idx))
		require.NoError(t, err)
		d := ti.config
		d.Size++
		_, err = a.ReaderAt(ctx, d)
		require.ErrorIs(t, err, ErrCorrupt)
		_, err = a.ReaderAt(ctx, ocispec.Descriptor{Digest: digest.FromString("nope")})
		require.ErrorIs(t, err, errdefs.ErrNotFound)
	})
}

func TestOpenStreamBadInput(t *testing.T) {
	ctx := context.Background()
	bomb := gzipBytes(t, make([]byte, 8<<20))
	ti := newTestImage(t, testImageOpts{tiny: true})
	good, _ := writeArchive(t, LayoutProvider(ti.dir), ti.root)
	gz := gzipBytes(t, good)

	for _, tc := range []struct {
		name string
		data []byte
		opts []OpenOption
		want error
	}{
		{name: "gzip bomb", data: bomb, opts: []OpenOption{WithMaxSpoolSize(1 << 20)}, want: errdefs.ErrInvalidArgument},
		{name: "truncated gzip", data: gz[:len(gz)/2], want: ErrCorrupt},
		{name: "corrupt gzip", data: append(bytes.Clone(gz[:20]), bytes.Repeat([]byte{0xff}, 100)...), want: ErrCorrupt},
		{name: "gzip of garbage", data: gzipBytes(t, bytes.Repeat([]byte("zenodo!\n"), 200)), want: ErrCorrupt},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spool := t.TempDir()
			_, err := OpenStream(ctx, bytes.NewReader(tc.data), spool, tc.opts...)
			require.ErrorIs(t, err, tc.want, "%v", err)
			left, _ := filepathGlob(spool)
			require.Empty(t, left, "spool file removed")
		})
	}

	t.Run("spool removed on close", func(t *testing.T) {
		spool := t.TempDir()
		a, err := OpenStream(ctx, bytes.NewReader(gz), spool)
		require.NoError(t, err)
		left, _ := filepathGlob(spool)
		require.Len(t, left, 1)
		require.NoError(t, a.Verify(ctx))
		require.NoError(t, a.Close())
		left, _ = filepathGlob(spool)
		require.Empty(t, left)
	})
}

func TestParseIndexBad(t *testing.T) {
	ti := newTestImage(t, testImageOpts{tiny: true})
	_, idx := writeArchive(t, LayoutProvider(ti.dir), ti.root)
	mutate := func(f func(*Index)) []byte {
		c := *idx
		c.Blobs = append([]BlobEntry(nil), idx.Blobs...)
		f(&c)
		b, err := json.Marshal(&c)
		require.NoError(t, err)
		return b
	}
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{name: "not JSON", data: []byte("{")},
		{name: "trailing data", data: append(mutate(func(*Index) {}), []byte("{}")...)},
		{name: "wrong media type", data: mutate(func(i *Index) { i.MediaType = "application/json" })},
		{name: "future version", data: mutate(func(i *Index) { i.Version = 2 })},
		{name: "blob outside the archive", data: mutate(func(i *Index) { i.Blobs[0].Offset = i.ArchiveSize })},
		{name: "blob runs past the end", data: mutate(func(i *Index) { i.Blobs[len(i.Blobs)-1].Size += 1 << 40 })},
		{name: "negative offset", data: mutate(func(i *Index) { i.Blobs[0].Offset = -1 })},
		{name: "overlapping blobs", data: mutate(func(i *Index) { i.Blobs[1].Offset = i.Blobs[0].Offset })},
		{name: "duplicate blob", data: mutate(func(i *Index) { i.Blobs = append(i.Blobs, i.Blobs[0]) })},
		{name: "bad digest", data: mutate(func(i *Index) { i.Blobs[0].Digest = "sha256:xyz" })},
		{name: "root not a blob", data: mutate(func(i *Index) { i.Root.Digest = digest.FromString("x") })},
		{name: "root size", data: mutate(func(i *Index) { i.Root.Size++ })},
		{name: "metadata end", data: mutate(func(i *Index) { i.MetadataEnd = i.ArchiveSize + 1 })},
		{name: "too large", data: make([]byte, MaxIndexSize+1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseIndex(tc.data)
			require.ErrorIs(t, err, errdefs.ErrInvalidArgument)
		})
	}
}

func filepathGlob(dir string) ([]string, error) {
	return filepath.Glob(filepath.Join(dir, "*"))
}
