package buildinfo

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type file struct {
	name, body string
	typ        byte
}

func layer(t testing.TB, files ...file) LayerOpener {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		typ := f.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		require.NoError(t, tw.WriteHeader(&tar.Header{Name: f.name, Typeflag: typ, Size: int64(len(f.body)), Mode: 0o644}))
		_, err := tw.Write([]byte(f.body))
		require.NoError(t, err)
	}
	require.NoError(t, tw.Close())
	data := buf.Bytes()
	return func(context.Context) (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil }
}

const dpkgStatus = `Package: libc6
Status: install ok installed
Architecture: amd64
Version: 2.36-9+deb12u4
Description: GNU C Library
 continuation line

Package: removed-pkg
Status: deinstall ok config-files
Version: 1.0

Package: python3
Status: install ok installed
Architecture: amd64
Version: 3.11.2-1+b1
`

const apkInstalled = "C:Q1abc=\nP:musl\nV:1.2.4-r2\nA:x86_64\n\nP:busybox\nV:1.36.1-r5\nA:x86_64\n"

func TestScanLayers(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name   string
		layers []LayerOpener
		want   []Package
	}{
		{
			name:   "dpkg",
			layers: []LayerOpener{layer(t, file{name: "./var/lib/dpkg/status", body: dpkgStatus})},
			want: []Package{
				{Manager: "dpkg", Name: "libc6", Version: "2.36-9+deb12u4", Arch: "amd64"},
				{Manager: "dpkg", Name: "python3", Version: "3.11.2-1+b1", Arch: "amd64"},
			},
		},
		{
			name:   "apk",
			layers: []LayerOpener{layer(t, file{name: "lib/apk/db/installed", body: apkInstalled})},
			want: []Package{
				{Manager: "apk", Name: "busybox", Version: "1.36.1-r5", Arch: "x86_64"},
				{Manager: "apk", Name: "musl", Version: "1.2.4-r2", Arch: "x86_64"},
			},
		},
		{
			name: "conda and pip",
			layers: []LayerOpener{layer(t,
				file{name: "opt/conda/conda-meta/numpy-1.26.4-py311.json", body: `{"name":"numpy","version":"1.26.4","subdir":"linux-64"}`},
				file{name: "usr/lib/python3/dist-packages/six-1.16.0.dist-info/METADATA", body: "Metadata-Version: 2.1\nName: six\nVersion: 1.16.0\n\nbody text\nName: not-this\n"},
				file{name: "usr/lib/python3/dist-packages/foo.egg-info/PKG-INFO", body: "Name: foo\nVersion: 0.1\n"},
				file{name: "opt/conda/conda-meta/history", body: "not json"},
			)},
			want: []Package{
				{Manager: "conda", Name: "numpy", Version: "1.26.4", Arch: "linux-64"},
				{Manager: "pip", Name: "foo", Version: "0.1"},
				{Manager: "pip", Name: "six", Version: "1.16.0"},
			},
		},
		{
			name: "later layer replaces and whiteouts remove",
			layers: []LayerOpener{
				layer(t,
					file{name: "var/lib/dpkg/status", body: "Package: old\nStatus: install ok installed\nVersion: 1\n"},
					file{name: "usr/lib/python3/site-packages/gone-1.dist-info/METADATA", body: "Name: gone\nVersion: 1\n"},
					file{name: "opt/conda/conda-meta/x.json", body: `{"name":"x","version":"1"}`},
				),
				layer(t,
					file{name: "var/lib/dpkg/status", body: "Package: new\nStatus: install ok installed\nVersion: 2\n"},
					file{name: "usr/lib/python3/site-packages/.wh.gone-1.dist-info"},
					file{name: "opt/conda/conda-meta/.wh..wh..opq"},
				),
			},
			want: []Package{{Manager: "dpkg", Name: "new", Version: "2"}},
		},
		{
			name:   "no databases",
			layers: []LayerOpener{layer(t, file{name: "bin/busybox", body: "ELF"})},
			want:   nil,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ScanLayers(ctx, tt.layers)
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestScanLayersErrors(t *testing.T) {
	ctx := context.Background()
	broken := func(context.Context) (io.ReadCloser, error) {
		return io.NopCloser(strings.NewReader("this is not a tar archive, not at all, and long enough to fill a header block" + strings.Repeat("x", 600))), nil
	}
	_, err := ScanLayers(ctx, []LayerOpener{broken})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "layer 0")

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	_, err = ScanLayers(cancelled, []LayerOpener{layer(t, file{name: "a", body: "b"})})
	require.ErrorIs(t, err, context.Canceled)
}

func TestManifestHTMLEscapes(t *testing.T) {
	m := &Manifest{
		Name: "my/tool", Tag: "1.2", Reference: "zenodo.org/10.5281/zenodo.7:1.2",
		ConfigDigest: "sha256:aa", ManifestDigest: "sha256:bb", Platforms: []string{"linux/amd64"},
		Labels:   map[string]string{"evil": "<script>alert(1)</script>"},
		Cmd:      []string{"/bin/sh", "-c", "echo hi"},
		Layers:   []Layer{{DiffID: "sha256:cc", Size: 3 << 20, CreatedBy: "RUN apt-get install"}},
		Packages: []Package{{Manager: "dpkg", Name: "libc6", Version: "2.36", Arch: "amd64"}},
	}
	out := m.HTML()
	assert.NotContains(t, out, "<script>")
	assert.Contains(t, out, "&lt;script&gt;")
	assert.Contains(t, out, "sha256:aa")
	assert.Contains(t, out, "3.0 MiB")
	assert.Contains(t, out, "<h3>dpkg (1)</h3>")
	assert.Contains(t, out, "zenodo.org/10.5281/zenodo.7:1.2")
}

func TestHumanSize(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 77 << 20: "77.0 MiB", 3 << 30: "3.0 GiB"} {
		assert.Equal(t, want, HumanSize(n))
	}
}

func FuzzParseDatabases(f *testing.F) {
	f.Add([]byte(dpkgStatus))
	f.Add([]byte(apkInstalled))
	f.Add([]byte(`{"name":"x"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, name := range []string{"var/lib/dpkg/status", "lib/apk/db/installed", "a/conda-meta/x.json", "a/b.dist-info/METADATA"} {
			_ = parseDatabases(map[string][]byte{name: data})
		}
	})
}
