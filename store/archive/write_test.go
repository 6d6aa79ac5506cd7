package archive

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"strconv"
	"testing"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/seekable"
)

// tarFiles lists the regular files of a tar with their data offsets.
func tarFiles(t testing.TB, data []byte) (names []string, files map[string][]byte, offsets map[string]int64) {
	t.Helper()
	files, offsets = map[string][]byte{}, map[string]int64{}
	r := bytes.NewReader(data)
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		names = append(names, hdr.Name)
		if hdr.Typeflag == tar.TypeReg {
			offsets[hdr.Name] = int64(len(data)) - int64(r.Len())
			b, err := io.ReadAll(tr)
			require.NoError(t, err)
			files[hdr.Name] = b
		}
	}
	return names, files, offsets
}

func TestWriteRoundTrip(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name     string
		img      testImageOpts
		store    bool // content store instead of layout provider
		preserve bool
		opts     []WriteOption
	}{
		{name: "oci layout", img: testImageOpts{}},
		{name: "oci content store", img: testImageOpts{}, store: true},
		{name: "docker media types", img: testImageOpts{docker: true}, store: true},
		{name: "named", img: testImageOpts{}, opts: []WriteOption{WithImageName("example.org/tools/busy:1.2"), WithImageName("busy:latest")}},
		{name: "annotations", img: testImageOpts{}, opts: []WriteOption{WithLayerAnnotations(map[string]string{"containerd.io/snapshot/zenodo/doi": "10.5281/zenodo.123"})}},
		{name: "preserve", img: testImageOpts{}, preserve: true, opts: []WriteOption{WithPreserveLayers(), WithImageName("busy:1")}},
		{name: "multi-platform skip missing", img: testImageOpts{multi: true}, store: true, opts: []WriteOption{WithSkipMissing()}},
		{name: "small members", img: testImageOpts{}, opts: []WriteOption{WithSeekableOptions(seekable.WithMinMemberSize(0)), WithConcurrency(1)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ti := newTestImage(t, tc.img)
			var provider content.Provider = LayoutProvider(ti.dir)
			if tc.store {
				provider = ti.contentStore(t)
			}
			data, idx := writeArchive(t, provider, ti.root, tc.opts...)
			require.Equal(t, int64(len(data)), idx.ArchiveSize)

			// The index survives encoding.
			enc, err := MarshalIndex(idx)
			require.NoError(t, err)
			idx2, err := ParseIndex(enc)
			require.NoError(t, err)
			require.Equal(t, idx.Blobs, idx2.Blobs)
			require.Equal(t, idx.Root.Digest, idx2.Root.Digest)

			// Every blob is where the index says, metadata first.
			names, files, offsets := tarFiles(t, data)
			require.Equal(t, []string{"oci-layout", "index.json", "manifest.json"}, names[:3])
			var sawLayer bool
			for _, b := range idx.Blobs {
				got := data[b.Offset : b.Offset+b.Size]
				require.Equal(t, b.Digest, digest.FromBytes(got), "blob %s", b.Digest)
				require.Equal(t, b.Offset, offsets[blobPath(b.Digest)])
				isMetadata := images.IsIndexType(b.MediaType) || images.IsManifestType(b.MediaType) ||
					images.IsConfigType(b.MediaType) || b.MediaType == seekable.MediaTypeTOC || b.MediaType == seekable.MediaTypeTOCGzip
				if !isMetadata {
					sawLayer = true
				} else {
					require.False(t, sawLayer, "metadata blob %s after a layer", b.Digest)
					require.LessOrEqual(t, b.Offset+b.Size, idx.MetadataEnd)
				}
			}
			// Configs are unchanged; with preserve, everything is.
			_, ok := findBlob(idx, ti.config.Digest)
			require.True(t, ok, "config kept")
			if tc.preserve {
				require.Equal(t, ti.root.Digest, idx.Root.Digest)
				for d := range ti.blobs {
					_, ok := findBlob(idx, d)
					require.True(t, ok, "source blob %s kept", d)
				}
			}

			for _, withIndex := range []bool{true, false} {
				cr := &countingReaderAt{ra: bytes.NewReader(data)}
				var oo []OpenOption
				if withIndex {
					oo = append(oo, WithIndex(idx))
				}
				a, err := Open(ctx, cr, int64(len(data)), oo...)
				require.NoError(t, err)
				if withIndex {
					require.Zero(t, cr.bytes.Load(), "open with index reads nothing")
				} else {
					// Header blocks only: a window per entry.
					require.Less(t, cr.bytes.Load(), int64(len(names)+2)*walkWindow)
					require.Less(t, cr.bytes.Load(), int64(len(data))/8)
				}
				require.Equal(t, idx.Root.Digest, a.Root().Digest)
				require.Equal(t, idx.Names, a.Names())
				require.NoError(t, a.Verify(ctx))
				for _, b := range idx.Blobs {
					off, size, ok := a.Blob(b.Digest)
					require.True(t, ok)
					require.Equal(t, b.Offset, off)
					require.Equal(t, b.Size, size)
					got, err := content.ReadBlob(ctx, a, ocispec.Descriptor{Digest: b.Digest, Size: b.Size})
					require.NoError(t, err)
					require.Equal(t, data[b.Offset:b.Offset+b.Size], got)
				}
				checkManifests(t, ctx, a, cr, ti, tc.preserve, tc.opts)
			}
			_ = files
		})
	}
}

func findBlob(idx *Index, d digest.Digest) (BlobEntry, bool) {
	for _, b := range idx.Blobs {
		if b.Digest == d {
			return b, true
		}
	}
	return BlobEntry{}, false
}

// checkManifests checks the image in a against the test image: one
// manifest for the host platform, the same config, layers that decompress
// to the source tars, files readable through the TOC.
func checkManifests(t *testing.T, ctx context.Context, a *Archive, cr *countingReaderAt, ti *testImage, preserve bool, opts []WriteOption) {
	t.Helper()
	ms, err := a.Manifests(ctx)
	require.NoError(t, err)
	require.Len(t, ms, 1)
	require.NotNil(t, ms[0].Platform)
	require.Equal(t, ti.platform.Architecture, ms[0].Platform.Architecture)
	var m ocispec.Manifest
	b, err := content.ReadBlob(ctx, a, ms[0])
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &m))
	require.Equal(t, ti.config.Digest, m.Config.Digest)
	require.Len(t, m.Layers, len(ti.tars))
	wo, err := makeWriteOptions(opts)
	require.NoError(t, err)
	for i, l := range m.Layers {
		blob, err := content.ReadBlob(ctx, a, l)
		require.NoError(t, err)
		if preserve {
			require.Equal(t, ti.layers[i], l)
			_, err := a.TOC(ctx, l)
			require.ErrorIs(t, err, errdefs.ErrNotFound)
			continue
		}
		require.Contains(t, []string{ocispec.MediaTypeImageLayerGzip, images.MediaTypeDockerSchema2LayerGzip}, l.MediaType)
		require.Equal(t, ti.tars[i], gunzip(t, blob), "layer %d decompresses to the source tar", i)
		require.Equal(t, strconv.Itoa(len(ti.tars[i])), l.Annotations[seekable.AnnotationUncompressedSize])
		for k, v := range wo.layerAnnotations {
			require.Equal(t, v, l.Annotations[k])
		}
		toc, err := a.TOC(ctx, l)
		require.NoError(t, err)
		_, files, _ := tarFiles(t, ti.tars[i])
		for name, want := range files {
			_, size, ok := a.Blob(l.Digest)
			require.True(t, ok)
			cr.reset()
			r, err := a.OpenFile(ctx, l, name)
			require.NoError(t, err, name)
			got, err := io.ReadAll(r)
			require.NoError(t, err)
			require.Equal(t, want, got, name)
			// Only the members holding the file are read.
			e, ok := toc.Lookup(name)
			require.True(t, ok)
			first, last := toc.MemberRange(e, 0, e.Size)
			var memberBytes int64
			for j := first; j <= last && j >= 0; j++ {
				memberBytes += toc.Members[j].Size
			}
			require.LessOrEqual(t, cr.bytes.Load(), memberBytes, "%s: read %d bytes for members of %d", name, cr.bytes.Load(), memberBytes)
			if int64(len(want)) < 4096 && len(toc.Members) > 2 {
				require.Less(t, cr.bytes.Load(), size/2+1, "%s: small file read", name)
			}
		}
	}
	// busybox reads back through its TOC.
	r, err := a.OpenFile(ctx, m.Layers[0], "/bin/busybox")
	if preserve {
		require.ErrorIs(t, err, errdefs.ErrNotFound)
		return
	}
	require.NoError(t, err)
	got, err := io.ReadAll(r)
	require.NoError(t, err)
	require.True(t, bytes.Equal(ti.busybox, got))
	_, err = a.OpenFile(ctx, m.Layers[0], "no/such/file")
	require.ErrorIs(t, err, errdefs.ErrNotFound)
	_, err = a.OpenFile(ctx, m.Layers[0], "bin/sh")
	require.ErrorIs(t, err, errdefs.ErrInvalidArgument, "symlinks are not followed")
	_, err = a.OpenFile(ctx, m.Layers[0], "bin")
	require.ErrorIs(t, err, errdefs.ErrInvalidArgument)
	r, err = a.OpenFile(ctx, m.Layers[2], "etc/motd.link")
	require.NoError(t, err)
	got, err = io.ReadAll(r)
	require.NoError(t, err)
	require.Equal(t, ti.files["etc/motd"], got, "hardlinks read their target")
}

// A layer seekable gzip cannot describe (a hardlink to a file of another
// layer) is stored as it is.
func TestWriteUnsupportedLayer(t *testing.T) {
	ctx := context.Background()
	ti := newTestImage(t, testImageOpts{layers: []tlayer{
		{comp: compGzip, files: []tfile{{name: "etc/", typ: tar.TypeDir}, {name: "etc/hostname", typ: tar.TypeReg, data: []byte("x\n")}}},
		{comp: compGzip, files: []tfile{{name: "etc/hostname.link", typ: tar.TypeLink, link: "etc/hostname"}}},
	}})
	data, idx := writeArchive(t, LayoutProvider(ti.dir), ti.root)
	a, err := Open(ctx, bytes.NewReader(data), int64(len(data)), WithIndex(idx))
	require.NoError(t, err)
	require.NoError(t, a.Verify(ctx))
	ms, err := a.Manifests(ctx)
	require.NoError(t, err)
	var m ocispec.Manifest
	b, err := content.ReadBlob(ctx, a, ms[0])
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &m))
	require.Contains(t, m.Layers[0].Annotations, seekable.AnnotationTOCDigest)
	require.Equal(t, ti.layers[1], m.Layers[1], "unsupported layer kept as it was")
}

func TestWriteProgress(t *testing.T) {
	ti := newTestImage(t, testImageOpts{tiny: true})
	done := map[string]map[digest.Digest]int64{}
	_, idx := writeArchive(t, LayoutProvider(ti.dir), ti.root, WithConcurrency(1), WithProgress(func(p Progress) {
		if done[p.Stage] == nil {
			done[p.Stage] = map[digest.Digest]int64{}
		}
		require.GreaterOrEqual(t, p.Done, done[p.Stage][p.Desc.Digest])
		done[p.Stage][p.Desc.Digest] = p.Done
	}))
	require.Equal(t, ti.layers[0].Size, done["convert"][ti.layers[0].Digest])
	for _, b := range idx.Blobs {
		require.Equal(t, b.Size, done["write"][b.Digest], "blob %s", b.Digest)
	}
}

func TestWriteSkipMissing(t *testing.T) {
	ctx := context.Background()
	ti := newTestImage(t, testImageOpts{multi: true})
	provider := LayoutProvider(ti.dir)

	_, err := Write(ctx, io.Discard, provider, ti.root, WithTempDir(t.TempDir()))
	require.ErrorIs(t, err, errdefs.ErrNotFound)

	data, idx := writeArchive(t, provider, ti.root, WithSkipMissing())
	require.Len(t, idx.Manifests, 1)
	require.Equal(t, ti.platform.Architecture, idx.Manifests[0].Platform.Architecture)
	require.NotEqual(t, ti.root.Digest, idx.Root.Digest, "index rewritten")
	require.Equal(t, ti.root.MediaType, idx.Root.MediaType)

	a, err := Open(ctx, bytes.NewReader(data), int64(len(data)))
	require.NoError(t, err)
	var root ocispec.Index
	b, err := content.ReadBlob(ctx, a, a.Root())
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &root))
	require.Len(t, root.Manifests, 2, "host platform and its attestation")
	require.Equal(t, ti.platform.Architecture, root.Manifests[0].Platform.Architecture)
	require.Equal(t, idx.Manifests[0].Digest, root.Manifests[0].Digest)
	require.Equal(t, root.Manifests[0].Digest.String(), root.Manifests[1].Annotations[annotationReferenceDigest], "attestation follows the rewritten manifest")

	// With preserved layers the index still loses the missing platform.
	_, idx = writeArchive(t, provider, ti.root, WithSkipMissing(), WithPreserveLayers())
	require.Len(t, idx.Manifests, 1)
	require.Equal(t, ti.manifest.Digest, idx.Manifests[0].Digest)
}

func TestWriteNames(t *testing.T) {
	ctx := context.Background()
	ti := newTestImage(t, testImageOpts{})
	data, idx := writeArchive(t, LayoutProvider(ti.dir), ti.root, WithImageName("example.org/tools/busy:1.2"), WithImageName("busy"))
	require.Equal(t, []string{"example.org/tools/busy:1.2", "docker.io/library/busy:latest"}, idx.Names)
	_, files, _ := tarFiles(t, data)

	var index ocispec.Index
	require.NoError(t, json.Unmarshal(files["index.json"], &index))
	require.Len(t, index.Manifests, 2)
	assert.Equal(t, "example.org/tools/busy:1.2", index.Manifests[0].Annotations[images.AnnotationImageName])
	assert.Equal(t, "1.2", index.Manifests[0].Annotations[ocispec.AnnotationRefName])
	assert.Equal(t, "latest", index.Manifests[1].Annotations[ocispec.AnnotationRefName])
	assert.Equal(t, idx.Root.Digest, index.Manifests[0].Digest)

	var dm []dockerManifest
	require.NoError(t, json.Unmarshal(files["manifest.json"], &dm))
	require.Len(t, dm, 1)
	assert.Equal(t, []string{"example.org/tools/busy:1.2", "busy:latest"}, dm[0].RepoTags)
	assert.Equal(t, blobPath(ti.config.Digest), dm[0].Config)
	require.Len(t, dm[0].Layers, 3)
	for _, l := range dm[0].Layers {
		require.Contains(t, files, l)
	}
	var repos map[string]map[string]string
	require.NoError(t, json.Unmarshal(files["repositories"], &repos))
	assert.Contains(t, repos, "busy")
	assert.Contains(t, repos, "example.org/tools/busy")

	a, err := Open(ctx, bytes.NewReader(data), int64(len(data)))
	require.NoError(t, err)
	assert.Equal(t, idx.Names, a.Names())

	_, err = Write(ctx, io.Discard, LayoutProvider(ti.dir), ti.root, WithImageName("Not A Name"))
	require.ErrorIs(t, err, errdefs.ErrInvalidArgument)
}

// A layer whose content does not match the config's diff_id, or whose blob
// does not match its digest, is refused.
func TestWriteCorruptSource(t *testing.T) {
	ctx := context.Background()
	ti := newTestImage(t, testImageOpts{})
	cs := ti.contentStore(t)

	// A provider serving other bytes for the first layer.
	bad := &swapProvider{Provider: cs, swap: map[digest.Digest][]byte{ti.layers[0].Digest: gzipBytes(t, ti.tars[1])}}
	_, err := Write(ctx, io.Discard, bad, ti.root, WithTempDir(t.TempDir()))
	require.ErrorIs(t, err, ErrCorrupt)
	_, err = Write(ctx, io.Discard, bad, ti.root, WithTempDir(t.TempDir()), WithPreserveLayers())
	require.ErrorIs(t, err, ErrCorrupt)

	_, err = Write(ctx, io.Discard, cs, ti.config)
	require.ErrorIs(t, err, errdefs.ErrInvalidArgument)
}

// swapProvider serves replacement bytes for some digests.
type swapProvider struct {
	content.Provider
	swap map[digest.Digest][]byte
}

func (p *swapProvider) ReaderAt(ctx context.Context, desc ocispec.Descriptor) (content.ReaderAt, error) {
	if b, ok := p.swap[desc.Digest]; ok {
		return nopCloser{bytes.NewReader(b)}, nil
	}
	return p.Provider.ReaderAt(ctx, desc)
}
