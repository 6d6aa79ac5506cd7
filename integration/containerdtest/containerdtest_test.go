package containerdtest

import (
	"fmt"
	"testing"

	"github.com/pelletier/go-toml/v2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseRelease(t *testing.T) {
	tests := []struct {
		in, want string
		wantErr  bool
	}{
		{in: "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3\n", want: "1.6.20"},
		{in: "containerd github.com/containerd/containerd/v2 v2.4.2 \n", want: "2.4.2"},
		{in: "containerd github.com/containerd/containerd/v2 2.4.2+unknown\n", want: "2.4.2"},
		{in: "containerd github.com/containerd/containerd/v2 v2.1.0-rc.1 abc\n", want: "2.1.0"},
		{in: "", wantErr: true},
		{in: "containerd x\n", wantErr: true},
		{in: "containerd x dev\n", wantErr: true},
	}
	for _, tt := range tests {
		got, err := parseRelease(tt.in)
		if tt.wantErr {
			assert.Error(t, err, tt.in)
			continue
		}
		require.NoError(t, err, tt.in)
		assert.Equal(t, tt.want, got)
	}
}

func TestConfig(t *testing.T) {
	proxy := `
[proxy_plugins.other]
  type = "snapshot"
  address = "/tmp/y.sock"
`
	tests := []struct {
		name  string
		major int
		opts  options
		check func(t *testing.T, cfg map[string]any)
	}{
		{
			name: "1.6", major: 1,
			check: func(t *testing.T, cfg map[string]any) {
				assert.EqualValues(t, 2, cfg["version"])
				assert.Equal(t, []any{"io.containerd.grpc.v1.cri"}, cfg["disabled_plugins"])
				assert.Equal(t, "/d/containerd.sock", dig(cfg, "grpc", "address"))
				assert.Equal(t, "/d/root", cfg["root"])
				assert.Equal(t, "/d/state", cfg["state"])
				assert.Equal(t, "/d/opt", dig(cfg, "plugins", "io.containerd.internal.v1.opt", "path"))
			},
		},
		{
			name: "2.x with snapshotter and proxy", major: 2,
			opts: options{snapshotter: "zenodo", proxies: map[string]string{"zenodo": "/tmp/x/zenodo.sock"}, extraConfig: []string{proxy}},
			check: func(t *testing.T, cfg map[string]any) {
				assert.EqualValues(t, 3, cfg["version"])
				assert.Equal(t, []any{"io.containerd.nri.v1.nri"}, cfg["disabled_plugins"])
				assert.Equal(t, "/tmp/x/zenodo.sock", dig(cfg, "proxy_plugins", "zenodo", "address"))
				assert.Equal(t, "snapshot", dig(cfg, "proxy_plugins", "zenodo", "type"))
				assert.Equal(t, "true", dig(cfg, "proxy_plugins", "zenodo", "exports", "enable_remote_snapshot_annotations"))
				assert.Equal(t, "/tmp/y.sock", dig(cfg, "proxy_plugins", "other", "address"), "from WithConfig")
				unpack := dig(cfg, "plugins", "io.containerd.transfer.v1.local", "unpack_config").([]any)
				require.Len(t, unpack, 2)
				assert.Equal(t, "zenodo", unpack[0].(map[string]any)["snapshotter"])
				assert.Equal(t, "overlayfs", unpack[1].(map[string]any)["snapshotter"])
			},
		},
		{
			name: "extra config merges into generated tables", major: 2,
			opts: options{extraConfig: []string{
				"[plugins.\"io.containerd.internal.v1.opt\"]\nextra = 1\n",
				"[grpc]\naddress = \"/elsewhere.sock\"\n",
			}},
			check: func(t *testing.T, cfg map[string]any) {
				assert.Equal(t, "/d/opt", dig(cfg, "plugins", "io.containerd.internal.v1.opt", "path"))
				assert.EqualValues(t, 1, dig(cfg, "plugins", "io.containerd.internal.v1.opt", "extra"))
				assert.Equal(t, "/elsewhere.sock", dig(cfg, "grpc", "address"))
				assert.Equal(t, "/d/containerd.sock.ttrpc", dig(cfg, "ttrpc", "address"))
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := tt.opts
			o.version = &Version{Major: tt.major}
			o.logLevel = "debug"
			d := &Daemon{opts: o, dir: "/d", address: "/d/containerd.sock"}
			s, err := d.config()
			require.NoError(t, err)
			var cfg map[string]any
			require.NoError(t, toml.Unmarshal([]byte(s), &cfg), s)
			assert.Equal(t, "debug", dig(cfg, "debug", "level"))
			tt.check(t, cfg)
		})
	}

	d := &Daemon{opts: options{version: &Version{Major: 1}, extraConfig: []string{"[broken"}}, dir: "/d"}
	_, err := d.config()
	assert.ErrorContains(t, err, "extra config #1")
}

func dig(m map[string]any, keys ...string) any {
	var v any = m
	for _, k := range keys {
		mm, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = mm[k]
	}
	return v
}

// recorder stands in for a *testing.T to see what the guards do.
type recorder struct {
	testing.TB
	fatal, skip string
}

func (r *recorder) Helper()                           {}
func (r *recorder) Name() string                      { return "TestRecorded" }
func (r *recorder) Fatalf(format string, args ...any) { r.fatal = fmt.Sprintf(format, args...) }
func (r *recorder) Skipf(format string, args ...any)  { r.skip = fmt.Sprintf(format, args...) }
func (r *recorder) Logf(format string, args ...any)   {}

func TestSkipf(t *testing.T) {
	t.Run("skips loudly outside CI", func(t *testing.T) {
		t.Setenv("CI", "")
		r := &recorder{TB: t}
		Skipf(r, "needs %s", "magic")
		assert.Equal(t, "SKIPPED: needs magic", r.skip)
		assert.Empty(t, r.fatal)
	})
	t.Run("fails in CI", func(t *testing.T) {
		t.Setenv("CI", "true")
		r := &recorder{TB: t}
		Skipf(r, "needs %s", "magic")
		assert.Contains(t, r.fatal, "CANNOT RUN in CI")
		assert.Contains(t, r.fatal, "needs magic")
		assert.Empty(t, r.skip)
	})
	assert.Contains(t, skips.list(), "TestRecorded: needs magic")
}

func TestVersionsWithoutContainerd2(t *testing.T) {
	t.Setenv(EnvContainerd2Dir, "")
	_, err := containerd2()
	assert.ErrorContains(t, err, EnvContainerd2Dir)

	t.Setenv(EnvContainerd2Dir, t.TempDir())
	_, err = containerd2()
	assert.ErrorContains(t, err, "make tools")
}
