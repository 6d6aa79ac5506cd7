package resolver

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/core/remotes/docker/config"
	"github.com/containerd/errdefs"
	"github.com/pelletier/go-toml/v2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestInstallHosts checks the hosts.toml files with containerd's own parser.
func TestInstallHosts(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, InstallHosts(dir, "127.0.0.1:5999"))
	hosts := config.ConfigureHosts(context.Background(), config.HostOptions{HostDir: config.HostDirFromRoot(dir)})
	for _, h := range []string{"zenodo.org", "sandbox.zenodo.org"} {
		fi, err := os.Stat(filepath.Join(dir, h, "hosts.toml"))
		require.NoError(t, err)
		assert.Equal(t, os.FileMode(0o644), fi.Mode().Perm())

		rh, err := hosts(h)
		require.NoError(t, err)
		require.Len(t, rh, 2, "the endpoint as host and server: no fallback to https://%s", h)
		for _, r := range rh {
			assert.Equal(t, "http", r.Scheme)
			assert.Equal(t, "127.0.0.1:5999", r.Host)
			assert.Equal(t, "/v2", r.Path)
			assert.Equal(t, docker.HostCapabilityPull|docker.HostCapabilityResolve, r.Capabilities)
		}
	}
	// Installing again replaces the files.
	require.NoError(t, InstallHosts(dir, "http://127.0.0.1:6000/"))
	rh, err := config.ConfigureHosts(context.Background(), config.HostOptions{HostDir: config.HostDirFromRoot(dir)})("zenodo.org")
	require.NoError(t, err)
	assert.Equal(t, "127.0.0.1:6000", rh[0].Host)
	entries, err := os.ReadDir(filepath.Join(dir, "zenodo.org"))
	require.NoError(t, err)
	assert.Len(t, entries, 1, "no temporary files left")

	for _, bad := range []string{"", "ftp://127.0.0.1:1", "127.0.0.1", "http://127.0.0.1:1/path", "http://u:p@127.0.0.1:1"} {
		err := InstallHosts(t.TempDir(), bad)
		assert.True(t, errdefs.IsInvalidArgument(err), "%q: %v", bad, err)
	}
}

func TestProxyPluginTOML(t *testing.T) {
	sock := `/run/zenodo "snap"\shot.sock`
	var cfg struct {
		ProxyPlugins map[string]struct {
			Type    string `toml:"type"`
			Address string `toml:"address"`
		} `toml:"proxy_plugins"`
	}
	require.NoError(t, toml.Unmarshal(ProxyPluginTOML(sock), &cfg))
	assert.Equal(t, "snapshot", cfg.ProxyPlugins[SnapshotterName].Type)
	assert.Equal(t, sock, cfg.ProxyPlugins[SnapshotterName].Address)
}

func TestRegistryConfigTOML(t *testing.T) {
	for v, plugin := range map[int]string{2: "io.containerd.grpc.v1.cri", 3: "io.containerd.cri.v1.images"} {
		b, err := RegistryConfigTOML(v, "/etc/containerd/certs.d")
		require.NoError(t, err)
		var cfg map[string]any
		require.NoError(t, toml.Unmarshal(b, &cfg), "%s", b)
		reg := cfg["plugins"].(map[string]any)[plugin].(map[string]any)["registry"].(map[string]any)
		assert.Equal(t, "/etc/containerd/certs.d", reg["config_path"])
	}
	_, err := RegistryConfigTOML(1, "/x")
	assert.True(t, errdefs.IsInvalidArgument(err))
}

func TestHostsTOMLQuoting(t *testing.T) {
	var cfg struct {
		Server       string   `toml:"server"`
		Capabilities []string `toml:"capabilities"`
		Host         map[string]struct {
			Capabilities []string `toml:"capabilities"`
		} `toml:"host"`
	}
	require.NoError(t, toml.Unmarshal(HostsTOML("http://[::1]:5000", "zenodo.org"), &cfg))
	assert.Equal(t, "http://[::1]:5000", cfg.Server)
	assert.Equal(t, []string{"pull", "resolve"}, cfg.Capabilities)
	assert.Equal(t, []string{"pull", "resolve"}, cfg.Host["http://[::1]:5000"].Capabilities)
	assert.Equal(t, `"a\"b\\c\u0001"`, tomlQuote("a\"b\\c\x01"))
}
