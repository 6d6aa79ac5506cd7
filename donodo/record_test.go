package donodo

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/containerd/platforms"
	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/integration/testimage"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/archive"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/zenodo"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/zenodo/zenodotest"
)

func TestChooseArchive(t *testing.T) {
	files := func(keys ...string) []zenodo.File {
		var fs []zenodo.File
		for _, k := range keys {
			fs = append(fs, zenodo.File{Key: k, Size: 1})
		}
		return fs
	}
	tests := []struct {
		name      string
		files     []zenodo.File
		want      string
		wantIndex bool
		is        error
	}{
		{name: "format v1", files: files("README.md", "image.tar", "image.tar.index.json"), want: "image.tar", wantIndex: true},
		{name: "python donodo", files: files("image.tar.gz"), want: "image.tar.gz"},
		{name: "image.tar without index", files: files("image.tar", "notes.txt"), want: "image.tar"},
		{name: "prefix wins over contains", files: files("other.tar", "image.tar.zst"), want: "image.tar.zst"},
		{name: "single tar", files: files("data.csv", "tool-1.2.tar.gz"), want: "tool-1.2.tar.gz"},
		{name: "image.tar wins", files: files("image.tar", "image.tar.gz"), want: "image.tar"},
		{name: "two image.tar files", files: files("image.tar.zst", "image.tar.gz"), is: ErrAmbiguous},
		{name: "two tars", files: files("a.tar", "b.tar.gz"), is: ErrAmbiguous},
		{name: "no image", files: files("README.md", "data.csv"), is: ErrNoImage},
		{name: "no files", is: ErrNoImage},
		{name: "index alone", files: files("image.tar.index.json"), is: ErrNoImage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, idx, err := ChooseArchive(tt.files)
			if tt.is != nil {
				require.ErrorIs(t, err, tt.is)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got.Key)
			assert.Equal(t, tt.wantIndex, idx != nil)
		})
	}
}

// twoVersions pushes two tags of one image and returns both results.
func twoVersions(t testing.TB, f *fake) (v1, v2 *PushResult) {
	v1 = pushed(t, f, layout(t, "example.org/tool:1.0", authors), "example.org/tool:1.0")
	v2 = pushed(t, f, layout(t, "example.org/tool:1.1", authors, testimage.WithCmd("/bin/echo", "two")), "example.org/tool:1.1")
	return v1, v2
}

func TestOpenImageReferences(t *testing.T) {
	f := newFake(t)
	v1, v2 := twoVersions(t, f)
	id1 := mustRef(t, v1.DOI).RecID
	concept := v1.ConceptDOI
	tests := []struct {
		ref  string
		want *PushResult
		code int
	}{
		{ref: concept, want: v2},
		{ref: "zenodo.org/" + concept, want: v2},
		{ref: "zenodo.org/" + concept + ":latest", want: v2},
		{ref: "zenodo.org/" + concept + ":1.0", want: v1},
		{ref: concept + ":1.1", want: v2},
		{ref: v1.DOI, want: v1},
		{ref: v1.Reference, want: v1},
		{ref: "doi:" + v1.DOI, want: v1},
		{ref: "https://doi.org/" + v1.DOI, want: v1},
		{ref: "https://zenodo.org/records/" + id1, want: v1},
		{ref: "https://zenodo.org/record/" + id1 + "?preview=1#files", want: v1},
		{ref: "https://zenodo.org/api/records/" + id1, want: v1},
		{ref: "https://zenodo.org/doi/" + v1.DOI, want: v1},
		{ref: "zenodo.org/" + v1.DOI + ":1.0@" + v1.RootDigest.String(), want: v1},
		{ref: "zenodo.org/" + concept + ":1.1@" + v2.ManifestDigest.String(), want: v2},
		{ref: "zenodo.org/" + v1.DOI + "@sha256:" + sixtyFour, code: ExitNotFound},
		{ref: "zenodo.org/" + concept + ":9.9", code: ExitNotFound},
		{ref: "zenodo.org/10.5281/zenodo.999999", code: ExitNotFound},
		{ref: "example.com/10.5281/zenodo.1", code: ExitUsage},
	}
	for _, tt := range tests {
		t.Run(tt.ref, func(t *testing.T) {
			ref, err := zenodo.ParseReference(tt.ref)
			if err != nil {
				assert.Equal(t, tt.code, ExitCode(err))
				return
			}
			im, err := OpenImage(ctx(t), f.guest(t), ref)
			if err == nil {
				defer im.Close()
				_, err = im.Root(ctx(t))
			}
			if tt.want == nil {
				require.Error(t, err)
				assert.Equal(t, tt.code, ExitCode(err), "%v", err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, FormatV1, im.Format)
			assert.Equal(t, tt.want.DOI, im.Record.DOI)
			assert.Equal(t, tt.want.Reference, im.Name())
			dgst, err := im.ConfigDigest(ctx(t), platforms.Default())
			require.NoError(t, err)
			assert.Equal(t, tt.want.ConfigDigest, dgst)
		})
	}
}

func TestInspectReadsMetadataOnly(t *testing.T) {
	f := newFake(t)
	res := pushed(t, f, layout(t, "example.org/big:1.0", authors, testimage.WithRandomLayer(8, 5)), "example.org/big:1.0")
	f.srv.ResetRequests()

	ins, err := Inspect(ctx(t), f.guest(t), mustRef(t, res.Reference))
	require.NoError(t, err)
	f.settle()

	n, fetched := f.requests("", "/files/"+archive.ArchiveFileName+"")
	idxN, _ := f.requests("", "/files/"+archive.IndexFileName)
	_, idxBytes := f.requests("", "/files/"+archive.IndexFileName)
	n, fetched = n-idxN, fetched-idxBytes
	for _, r := range f.srv.Requests() {
		t.Logf("%s %s %s %d %d", r.Method, r.Path, r.Range, r.Status, r.Bytes)
	}
	t.Logf("inspect: %d requests, %d of %d archive bytes (%.3f%%)", len(f.srv.Requests()), fetched, res.ArchiveSize, 100*float64(fetched)/float64(res.ArchiveSize))
	assert.Less(t, float64(fetched), 0.01*float64(res.ArchiveSize), "inspect fetches less than 1%% of the archive")
	assert.LessOrEqual(t, n, 2, "a range probe and one range for all metadata")
	assert.Equal(t, 1, idxN)

	assert.Equal(t, res.Reference, ins.Reference)
	assert.Equal(t, res.RootDigest, ins.RootDigest)
	assert.Equal(t, FormatV1, ins.Archive.Format)
	assert.Equal(t, res.ArchiveSize, ins.Archive.Size)
	assert.Equal(t, "1.0", ins.Record.Version)
	assert.Equal(t, []string{"example.org/big:1.0"}, ins.Names)
	require.Len(t, ins.Versions, 1)
	assert.True(t, ins.Versions[0].Selected)
	require.Len(t, ins.Images, 1)
	im := ins.Images[0]
	assert.Equal(t, res.ConfigDigest, im.ConfigDigest)
	assert.Equal(t, res.ManifestDigest, im.ManifestDigest)
	assert.Equal(t, "linux/amd64", im.Platform)
	require.Len(t, im.Layers, 2)
	for _, l := range im.Layers {
		assert.True(t, l.Seekable)
		assert.NotEmpty(t, l.DiffID)
		assert.Positive(t, l.UncompressedSize)
	}
	assert.Greater(t, im.Size, int64(8<<20))

	b, err := json.Marshal(ins)
	require.NoError(t, err)
	assert.Contains(t, string(b), `"config_digest":"`+res.ConfigDigest.String())
}

func TestBlobs(t *testing.T) {
	f := newFake(t)
	res := pushed(t, f, layout(t, "example.org/tool:1.0", authors, testimage.WithRandomLayer(2, 9)), "example.org/tool:1.0")
	im, err := OpenImage(ctx(t), f.guest(t), mustRef(t, res.Reference))
	require.NoError(t, err)
	defer im.Close()
	plats, err := im.Platforms(ctx(t))
	require.NoError(t, err)
	p := plats[0]

	var buf bytes.Buffer
	desc, err := im.CopyBlob(ctx(t), &buf, res.ConfigDigest, nil)
	require.NoError(t, err)
	assert.Equal(t, res.ConfigDigest, digest.FromBytes(buf.Bytes()))
	assert.Equal(t, desc.Size, int64(buf.Len()))

	for _, l := range p.ManifestData.Layers {
		buf.Reset()
		_, err := im.CopyBlob(ctx(t), &buf, l.Digest, nil)
		require.NoError(t, err)
		assert.Equal(t, l.Digest, digest.FromBytes(buf.Bytes()))
	}
	size, err := im.BlobsSize(ctx(t), platforms.Default())
	require.NoError(t, err)
	want := p.Manifest.Size + p.ManifestData.Config.Size
	for _, l := range p.ManifestData.Layers {
		want += l.Size
	}
	assert.Equal(t, want, size)

	_, err = im.CopyBlob(ctx(t), io.Discard, digest.FromString("nothing"), nil)
	assert.Equal(t, ExitNotFound, ExitCode(err), "%v", err)
	_, err = im.CopyBlob(ctx(t), io.Discard, "sha256:nothex", nil)
	assert.Equal(t, ExitUsage, ExitCode(err), "%v", err)
}

// skopeoCopy runs skopeo copy, skipping the test when skopeo is missing.
func skopeoCopy(t testing.TB, from, to string) {
	t.Helper()
	path, err := exec.LookPath("skopeo")
	if err != nil {
		t.Skip("skopeo is not installed (apt-get install skopeo): cannot make a docker-save archive")
	}
	cmd := exec.Command(path, "--insecure-policy", "copy", "--quiet", from, to)
	cmd.Env = append(os.Environ(), "TMPDIR="+t.TempDir())
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "skopeo copy %s %s: %s", from, to, out)
}

// dockerSave makes a `docker save` archive of a busybox test image with
// skopeo, gzipped or not, and returns it with the image's config digest.
func dockerSave(t testing.TB, name string, gz bool) ([]byte, digest.Digest) {
	t.Helper()
	dir := t.TempDir()
	testimage.Busybox(t, dir, testimage.WithName(name))
	src, err := LayoutSource(dir)
	require.NoError(t, err)
	img, err := src.Image(ctx(t), name)
	require.NoError(t, err)
	pl, err := readPlatform(ctx(t), src, img.Target)
	require.NoError(t, err)
	out := filepath.Join(t.TempDir(), "save.tar")
	skopeoCopy(t, "oci:"+dir, "docker-archive:"+out+":"+name)
	data, err := os.ReadFile(out)
	require.NoError(t, err)
	if gz {
		var b bytes.Buffer
		zw := gzip.NewWriter(&b)
		_, err := zw.Write(data)
		require.NoError(t, err)
		require.NoError(t, zw.Close())
		data = b.Bytes()
	}
	return data, pl.ManifestData.Config.Digest
}

func TestForeignArchives(t *testing.T) {
	f := newFake(t)
	for _, tt := range []struct {
		name       string
		file       string
		gz         bool
		wantFormat Format
	}{
		{name: "python donodo image.tar.gz", file: "image.tar.gz", gz: true, wantFormat: FormatCompressed},
		{name: "docker save tar", file: "tool.tar", wantFormat: FormatTar},
	} {
		t.Run(tt.name, func(t *testing.T) {
			data, config := dockerSave(t, "example.org/legacy:0.9", tt.gz)
			pub, err := f.srv.Publish(zenodotest.SeedRecord{Title: "Docker image example.org/legacy", Version: "0.9",
				Files: []zenodotest.SeedFile{{Name: tt.file, Data: data}, {Name: "README.md", Data: []byte("hi")}}})
			require.NoError(t, err)
			ref := mustRef(t, pub.DOI)

			f.srv.ResetRequests()
			ins, err := Inspect(ctx(t), f.guest(t), ref)
			require.NoError(t, err)
			assert.Equal(t, tt.wantFormat, ins.Archive.Format)
			require.Len(t, ins.Images, 1)
			assert.Equal(t, config, ins.Images[0].ConfigDigest)
			assert.Equal(t, []string{"example.org/legacy:0.9"}, ins.Names)
			assert.Equal(t, "zenodo.org/"+pub.DOI+":0.9", ins.Reference)

			out := filepath.Join(t.TempDir(), "out.tar")
			res, err := Export(ctx(t), f.guest(t), ref, out)
			require.NoError(t, err)
			assert.Equal(t, tt.gz, res.Decompressed)
			fi, err := os.Stat(out)
			require.NoError(t, err)
			assert.Equal(t, res.Size, fi.Size())
			a := openLocal(t, out)
			assert.Equal(t, []string{"example.org/legacy:0.9"}, a.Names())
		})
	}
}

func openLocal(t testing.TB, path string) *archive.Archive {
	t.Helper()
	fh, err := os.Open(path)
	require.NoError(t, err)
	t.Cleanup(func() { fh.Close() })
	fi, err := fh.Stat()
	require.NoError(t, err)
	a, err := archive.Open(ctx(t), fh, fi.Size())
	require.NoError(t, err)
	require.NoError(t, a.Verify(ctx(t)))
	return a
}

func TestExportFormatV1(t *testing.T) {
	f := newFake(t)
	res := pushed(t, f, layout(t, "example.org/tool:1.0", authors), "example.org/tool:1.0")
	out := filepath.Join(t.TempDir(), "image.tar")
	got, err := Export(ctx(t), f.guest(t), mustRef(t, res.Reference), out)
	require.NoError(t, err)
	assert.False(t, got.Decompressed)
	assert.Equal(t, res.ArchiveSize, got.Size)
	assert.Equal(t, res.RootDigest, got.RootDigest)
	a := openLocal(t, out)
	assert.Equal(t, res.RootDigest, a.Root().Digest)

	// A pinned digest that is not in the record leaves no file behind.
	bad := filepath.Join(t.TempDir(), "bad.tar")
	_, err = Export(ctx(t), f.guest(t), mustRef(t, res.DOI+"@sha256:"+sixtyFour), bad)
	assert.Equal(t, ExitNotFound, ExitCode(err))
	_, err = os.Stat(bad)
	assert.ErrorIs(t, err, os.ErrNotExist)
	entries, err := os.ReadDir(filepath.Dir(bad))
	require.NoError(t, err)
	assert.Empty(t, entries, "no partial file is left")
}

func TestRecordErrors(t *testing.T) {
	f := newFake(t)
	v1 := pushed(t, f, layout(t, "example.org/tool:1.0", authors), "example.org/tool:1.0")
	im, err := OpenImage(ctx(t), f.guest(t), mustRef(t, v1.DOI))
	require.NoError(t, err)
	tarData, err := io.ReadAll(io.NewSectionReader(readerAtOf(t, f, im), 0, im.File.Size))
	require.NoError(t, err)
	im.Close()
	goodIndex := indexOf(t, f, v1)

	corrupt := bytes.Clone(tarData)
	// Flip a byte in the last blob (a layer).
	corrupt[len(corrupt)-2048] ^= 0xff
	seed := func(files ...zenodotest.SeedFile) string {
		pub, err := f.srv.Publish(zenodotest.SeedRecord{Title: "seeded", Version: "1", Files: files})
		require.NoError(t, err)
		return pub.DOI
	}
	tests := []struct {
		name    string
		doi     string
		is      error
		code    int
		pull    bool // the error shows when reading the layers
		wantErr string
	}{
		{name: "unknown DOI", doi: "10.5281/zenodo.987654", code: ExitNotFound},
		{name: "no image", doi: seed(zenodotest.SeedFile{Name: "README.md", Data: []byte("x")}), is: ErrNoImage, code: ExitNotFound, wantErr: `"README.md"`},
		{name: "two candidates", doi: seed(zenodotest.SeedFile{Name: "a.tar", Data: tarData}, zenodotest.SeedFile{Name: "b.tar.gz", Data: []byte("x")}),
			is: ErrAmbiguous, code: ExitError, wantErr: `"a.tar", "b.tar.gz"`},
		{name: "not an archive", doi: seed(zenodotest.SeedFile{Name: "image.tar", Data: bytes.Repeat([]byte("garbage!"), 1000)}), is: ErrCorruptArchive, code: ExitError},
		{name: "not gzip", doi: seed(zenodotest.SeedFile{Name: "image.tar.gz", Data: []byte("\x1f\x8b\x08garbage")}), is: ErrCorruptArchive, code: ExitError},
		{name: "bad index", doi: seed(zenodotest.SeedFile{Name: "image.tar", Data: tarData}, zenodotest.SeedFile{Name: "image.tar.index.json", Data: []byte("{")}), is: ErrCorruptArchive, code: ExitError},
		{name: "corrupt layer", doi: seed(zenodotest.SeedFile{Name: "image.tar", Data: corrupt}, zenodotest.SeedFile{Name: "image.tar.index.json", Data: goodIndex}),
			is: ErrCorruptArchive, code: ExitError, pull: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ref := mustRef(t, tt.doi)
			var err error
			if tt.pull {
				_, err = Export(ctx(t), f.guest(t), ref, filepath.Join(t.TempDir(), "x.tar"))
			} else {
				_, err = Inspect(ctx(t), f.guest(t), ref)
			}
			require.Error(t, err)
			t.Log(err)
			if tt.is != nil {
				assert.ErrorIs(t, err, tt.is)
			}
			assert.Equal(t, tt.code, ExitCode(err))
			assert.ErrorContains(t, err, tt.wantErr)
			assert.NotContains(t, err.Error(), "\n")
		})
	}
	t.Run("unreachable", func(t *testing.T) {
		zc := newClient(t, "http://127.0.0.1:1", "")
		_, err := Inspect(ctx(t), zc, mustRef(t, v1.DOI))
		require.Error(t, err)
		assert.Equal(t, ExitError, ExitCode(err))
		assert.Contains(t, Hint(err), "could not be reached")
	})
}

func readerAtOf(t testing.TB, f *fake, im *Image) io.ReaderAt {
	t.Helper()
	rr, err := f.guest(t).NewReaderAt(ctx(t), im.Record.RecordID(), im.File.Key, im.File.Size)
	require.NoError(t, err)
	t.Cleanup(func() { rr.Close() })
	return rr
}

func indexOf(t testing.TB, f *fake, res *PushResult) []byte {
	t.Helper()
	rc, err := f.guest(t).Open(ctx(t), mustRef(t, res.DOI).RecID, archive.IndexFileName)
	require.NoError(t, err)
	defer rc.Close()
	b, err := io.ReadAll(rc)
	require.NoError(t, err)
	return b
}
