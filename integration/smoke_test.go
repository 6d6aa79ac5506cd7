package integration

import (
	"fmt"
	"testing"

	"github.com/containerd/containerd/v2/client"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/integration/containerdtest"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/integration/testimage"
)

// TestSmoke proves the harness: on every available containerd, a daemon of
// our own runs the busybox test image with ctr and with nerdctl, on the
// overlayfs snapshotter.
func TestSmoke(t *testing.T) {
	containerdtest.RequiresRoot(t)
	layout := t.TempDir()
	testimage.Busybox(t, layout)

	for _, v := range containerdtest.Versions(t) {
		t.Run(v.Name, func(t *testing.T) {
			t.Parallel()
			d := containerdtest.Start(t, containerdtest.WithVersion(v))
			img := testimage.Import(t, d, layout, "", testimage.UnpackWith("overlayfs"))
			assert.Equal(t, testimage.DefaultName, img.Name)

			t.Run("ctr", func(t *testing.T) {
				out := d.Ctr(t, "run", "--rm", "--snapshotter", "overlayfs", img.Name, "smoke-ctr")
				assert.Equal(t, testimage.Hello+"\n", out)
			})
			t.Run("nerdctl", func(t *testing.T) {
				out := d.Nerdctl(t, "run", "--rm", "--net", "none", "--pull", "never", "--snapshotter", "overlayfs", img.Name)
				assert.Equal(t, testimage.Hello+"\n", out)
			})
		})
	}
}

// TestImageVariants runs the richer test images: several layers (random
// files checked inside the container against their SHA256SUMS, a dpkg
// database, extra files), labels, a command of our own, Docker media types
// and a multi-platform index whose foreign platform has no content.
func TestImageVariants(t *testing.T) {
	containerdtest.RequiresRoot(t)
	tests := []struct {
		name       string
		opts       []testimage.Option
		cmd        []string
		want       string
		wantLabels map[string]string
	}{
		{
			name: "random layer",
			opts: []testimage.Option{testimage.WithRandomLayer(8, 1)},
			cmd:  []string{"sha256sum", "-c", "-s", "/data/SHA256SUMS"},
		},
		{
			name: "dpkg and files, uncompressed",
			opts: []testimage.Option{
				testimage.WithUncompressedLayers(),
				testimage.WithDpkgStatus(),
				testimage.WithFile(testimage.File{Path: "/opt/tool/greeting", Content: []byte("hi\n")}),
			},
			cmd:  []string{"sh", "-c", "cat /opt/tool/greeting; grep -q '^Package: ' /var/lib/dpkg/status && echo dpkg"},
			want: "hi\ndpkg\n",
		},
		{
			name: "docker media types, multi-platform, own cmd and labels",
			opts: []testimage.Option{
				testimage.WithDockerMediaTypes(),
				testimage.WithPlatform(ocispec.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}, false),
				testimage.WithCmd("/bin/echo", "custom"),
				testimage.WithLabels(map[string]string{"org.opencontainers.image.title": "t"}),
			},
			want:       "custom\n",
			wantLabels: map[string]string{"org.opencontainers.image.title": "t"},
		},
	}
	d := containerdtest.Start(t)
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			layout := t.TempDir()
			name := fmt.Sprintf("zenodo-test.example/variant:%d", i)
			testimage.Busybox(t, layout, append(tt.opts, testimage.WithName(name))...)
			img := testimage.Import(t, d, layout, "")
			require.Equal(t, name, img.Name)

			out := d.Ctr(t, append([]string{"run", "--rm", img.Name, fmt.Sprintf("variant-%d", i)}, tt.cmd...)...)
			assert.Equal(t, tt.want, out)

			spec, err := client.NewImage(d.Client(), img).Spec(d.Context(t.Context()))
			require.NoError(t, err)
			assert.Equal(t, tt.wantLabels, spec.Config.Labels)
		})
	}
}
