package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/pelletier/go-toml/v2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/internal/testutil"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/zenodo/zenodotest"
)

// run runs the command line args and returns its output.
func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	return runCtx(t.Context(), args...)
}

func runCtx(ctx context.Context, args ...string) (string, error) {
	cmd := newRootCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(ctx)
	return out.String(), err
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.toml")
	require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
	return p
}

func TestConfigFileAndFlags(t *testing.T) {
	file := writeFile(t, `
root = "/srv/zs"
log_level = "debug"
[zenodo]
url = "http://127.0.0.1:9"
sandbox_url = ""
requests_per_minute = 30
timeout = "10s"
[cache]
size = "512MiB"
[fetch]
background_fill = false
read_timeout = "2s"
[registry]
listen = "0"
[metrics]
listen = "127.0.0.1:9100"
`)
	tests := []struct {
		name  string
		args  []string
		check func(t *testing.T, c Config)
		err   error
	}{
		{
			name: "defaults",
			args: []string{"--config", ""},
			check: func(t *testing.T, c Config) {
				assert.Equal(t, DefaultRoot, c.Root)
				assert.Equal(t, DefaultSocket, c.Socket)
				assert.Equal(t, "https://zenodo.org", c.Zenodo.URL)
				assert.Equal(t, "https://sandbox.zenodo.org", c.Zenodo.SandboxURL)
				assert.Equal(t, DefaultRegistryListen, c.Registry.Listen)
				assert.Empty(t, c.Metrics.Listen)
				assert.True(t, c.Fetch.BackgroundFill)
				assert.EqualValues(t, 10<<30, c.Cache.Size)
				assert.Equal(t, Duration(30*time.Second), c.Fetch.ReadTimeout)
			},
		},
		{
			name: "file",
			args: []string{"--config", file},
			check: func(t *testing.T, c Config) {
				assert.Equal(t, "/srv/zs", c.Root)
				assert.Equal(t, DefaultSocket, c.Socket, "not in the file: default")
				assert.Equal(t, "debug", c.LogLevel)
				assert.Equal(t, "http://127.0.0.1:9", c.Zenodo.URL)
				assert.Empty(t, c.Zenodo.SandboxURL)
				assert.Equal(t, 30, c.Zenodo.RequestsPerMinute)
				assert.Equal(t, Duration(10*time.Second), c.Zenodo.Timeout)
				assert.EqualValues(t, 512<<20, c.Cache.Size)
				assert.False(t, c.Fetch.BackgroundFill)
				assert.Equal(t, Duration(2*time.Second), c.Fetch.ReadTimeout)
				assert.Empty(t, c.Registry.Listen, `"0" is off`)
				assert.Equal(t, "127.0.0.1:9100", c.Metrics.Listen)
			},
		},
		{
			name: "flags over file",
			args: []string{"--config", file, "--root", "rel/dir", "--background-fill", "--cache-size", "1GiB",
				"--read-timeout", "5s", "--registry-listen", "127.0.0.1:5001", "--zenodo-url", "http://fake"},
			check: func(t *testing.T, c Config) {
				wd, _ := os.Getwd()
				assert.Equal(t, filepath.Join(wd, "rel/dir"), c.Root, "made absolute")
				assert.True(t, c.Fetch.BackgroundFill)
				assert.EqualValues(t, 1<<30, c.Cache.Size)
				assert.Equal(t, Duration(5*time.Second), c.Fetch.ReadTimeout)
				assert.Equal(t, "127.0.0.1:5001", c.Registry.Listen)
				assert.Equal(t, "http://fake", c.Zenodo.URL)
				assert.Equal(t, "debug", c.LogLevel, "from the file")
			},
		},
		{name: "missing given file", args: []string{"--config", filepath.Join(t.TempDir(), "nope.toml")}, err: os.ErrNotExist},
		{name: "unknown key", args: []string{"--config", writeFile(t, "roots = \"/x\"\n")}, err: errdefs.ErrInvalidArgument},
		{name: "bad size", args: []string{"--config", writeFile(t, "[cache]\nsize = \"lots\"\n")}, err: errdefs.ErrInvalidArgument},
		{name: "bad duration flag", args: []string{"--config", "", "--read-timeout", "0s"}, err: errdefs.ErrInvalidArgument},
		{name: "bad level", args: []string{"--config", "", "--log-level", "loud"}, err: errdefs.ErrInvalidArgument},
		{name: "bad listen", args: []string{"--config", "", "--metrics-listen", "nowhere"}, err: errdefs.ErrInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := newServeCmd()
			require.NoError(t, cmd.Flags().Parse(tt.args))
			cfg, err := configFromFlags(cmd.Flags())
			if tt.err != nil {
				require.ErrorIs(t, err, tt.err)
				return
			}
			require.NoError(t, err)
			tt.check(t, cfg)
		})
	}
}

// TestDefaultConfigRoundTrip: the printed default config loads back to the
// defaults.
func TestDefaultConfigRoundTrip(t *testing.T) {
	out, err := run(t, "config", "--defaults", "--config", "")
	require.NoError(t, err)
	cfg, err := LoadConfig(writeFile(t, out), false)
	require.NoError(t, err)
	assert.Equal(t, DefaultConfig(), cfg)
	var m map[string]any
	require.NoError(t, toml.Unmarshal([]byte(out), &m))
}

func TestConfigCmd(t *testing.T) {
	out, err := run(t, "config", "--config", "", "--socket", "/run/zs/s.sock", "--platform", "linux/arm64")
	require.NoError(t, err)
	for _, want := range []string{
		"[proxy_plugins.zenodo]", `address = "/run/zs/s.sock"`,
		`[plugins."io.containerd.grpc.v1.cri".registry]`, `[plugins."io.containerd.cri.v1.images".registry]`,
		`[[plugins."io.containerd.transfer.v1.local".unpack_config]]`, `platform = "linux/arm64"`, `snapshotter = "zenodo"`,
		"root = '/var/lib/zenodo-snapshotter'",
	} {
		assert.Contains(t, out, want)
	}
	// Each containerd snippet is valid TOML on its own.
	for i, part := range strings.Split(out, "### ")[1:3] {
		var m struct {
			ProxyPlugins map[string]struct {
				Type, Address string
				Exports       map[string]string
			} `toml:"proxy_plugins"`
		}
		require.NoError(t, toml.Unmarshal([]byte("#"+part), &m), part)
		p := m.ProxyPlugins["zenodo"]
		assert.Equal(t, "snapshot", p.Type)
		assert.Equal(t, "/run/zs/s.sock", p.Address)
		if i == 1 {
			assert.Equal(t, map[string]string{"enable_remote_snapshot_annotations": "true"}, p.Exports, "config version 3")
		}
	}

	out, err = run(t, "config", "--config", "", "--containerd-config-version", "2")
	require.NoError(t, err)
	assert.NotContains(t, out, "unpack_config")
	_, err = run(t, "config", "--config", "", "--containerd-config-version", "4")
	require.ErrorIs(t, err, errdefs.ErrInvalidArgument)
}

func TestHostsCmd(t *testing.T) {
	file := writeFile(t, "[registry]\nlisten = \"0.0.0.0:5123\"\n")
	out, err := run(t, "hosts", "--config", file)
	require.NoError(t, err)
	assert.Contains(t, out, "# /etc/containerd/certs.d/zenodo.org/hosts.toml")
	assert.Contains(t, out, "# /etc/containerd/certs.d/sandbox.zenodo.org/hosts.toml")
	assert.Contains(t, out, `server = "http://127.0.0.1:5123"`)

	dir := t.TempDir()
	_, err = run(t, "hosts", "--config", "", "--install", "--certs-dir", dir)
	require.NoError(t, err)
	data, err := os.ReadFile(filepath.Join(dir, "zenodo.org", "hosts.toml"))
	require.NoError(t, err)
	assert.Contains(t, string(data), `server = "http://127.0.0.1:5000"`)

	_, err = run(t, "hosts", "--config", writeFile(t, "[registry]\nlisten = \"\"\n"))
	require.ErrorIs(t, err, errdefs.ErrInvalidArgument)
}

func TestEndpointOf(t *testing.T) {
	tests := []struct{ listen, want string }{
		{"127.0.0.1:5000", "127.0.0.1:5000"},
		{":5000", "127.0.0.1:5000"},
		{"0.0.0.0:5000", "127.0.0.1:5000"},
		{"[::]:5000", "127.0.0.1:5000"},
		{"[::1]:5000", "[::1]:5000"},
		{"localhost:5000", "localhost:5000"},
	}
	for _, tt := range tests {
		got, err := endpointOf(tt.listen)
		require.NoError(t, err, tt.listen)
		assert.Equal(t, tt.want, got, tt.listen)
	}
}

func TestVersionCmd(t *testing.T) {
	out, err := run(t, "version")
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(out, "zenodo-snapshotter "), out)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

// waitFor polls check until it returns nil or the deadline passes.
func waitFor(t *testing.T, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		<-tick.C
	}
}

// TestServe runs the daemon in-process against the fake Zenodo: the
// snapshotter socket, the registry endpoint and /metrics answer, and
// cancelling the context stops it cleanly, removing the socket.
func TestServe(t *testing.T) {
	testutil.RequireRoot(t, "serve, which runs containerd's overlay snapshotter,")
	_, ts := zenodotest.NewTestServer(t)
	dir := t.TempDir()
	socket := filepath.Join(dir, "run", "zs.sock")
	registry, metrics := freeAddr(t), freeAddr(t)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := runCtx(ctx, "serve", "--config", "", "--root", filepath.Join(dir, "root"), "--socket", socket,
			"--zenodo-url", ts.URL, "--sandbox-url", "", "--registry-listen", registry, "--metrics-listen", metrics)
		done <- err
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})

	waitFor(t, "the snapshotter socket", func() error {
		c, err := net.Dial("unix", socket)
		if err == nil {
			c.Close()
		}
		return err
	})
	get := func(url string) (int, string) {
		resp, err := http.Get(url)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(b)
	}
	waitFor(t, "the registry endpoint", func() error {
		resp, err := http.Get("http://" + registry + "/v2/")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	})
	code, _ := get("http://" + registry + "/v2/10.5281/zenodo.424242/manifests/1.0")
	assert.Equal(t, http.StatusNotFound, code)
	code, body := get("http://" + metrics + "/metrics")
	assert.Equal(t, http.StatusOK, code)
	assert.Contains(t, body, "zenodo_snapshotter_zenodo_requests_total")
	assert.Contains(t, body, "zenodo_snapshotter_cache_max_bytes")

	cancel()
	require.NoError(t, <-done)
	done <- nil
	_, err := os.Stat(socket)
	assert.ErrorIs(t, err, os.ErrNotExist, "socket removed")
	_, err = http.Get("http://" + registry + "/v2/")
	assert.Error(t, err, "endpoint closed")
}

// TestRootServes: without a subcommand the root command is serve, with
// serve's flags.
func TestRootServes(t *testing.T) {
	_, err := run(t, "--config", "", "--log-level", "loud")
	require.ErrorIs(t, err, errdefs.ErrInvalidArgument)
	assert.Contains(t, err.Error(), "log_level")
	_, err = run(t, "--config", "", "--no-such-flag")
	require.Error(t, err)
}
