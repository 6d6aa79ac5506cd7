package resolver

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/internal/fsutil"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/zenodo"
)

// SnapshotterName is the name the snapshotter's proxy plugin is registered
// under in containerd's config (ProxyPluginTOML).
const SnapshotterName = "zenodo"

// HostsTOML returns the hosts.toml that routes the images of the registry
// host namespace host ("zenodo.org" or "sandbox.zenodo.org") to the
// endpoint ("127.0.0.1:PORT" or "http://127.0.0.1:PORT"; without a scheme,
// plain http is meant), for `ctr --hosts-dir`, nerdctl and CRI's
// config_path. It goes in <certs.d>/<host>/hosts.toml (see InstallHosts).
//
// The endpoint is both a [host."…"] entry (containerd 1.6 ignores a
// hosts.toml without one: "invalid `host` tree") and the namespace's server,
// where containerd falls back to when the hosts fail. The server is not
// https://zenodo.org: that is no registry, so a fallback there could only
// turn the endpoint's errors ("connection refused" when the daemon is down)
// into a confusing one from Zenodo's web site, and spend requests of
// Zenodo's rate limit (an empty capabilities list does not disable the
// server: containerd reads it as "all"). containerd adds ?ns=<host> to every
// request to an address that is not the namespace's, which is how the
// endpoint tells zenodo.org from sandbox.zenodo.org. Plain http needs no
// skip_verify (that applies to https only); the capabilities are pull and
// resolve, so containerd refuses a push before it reaches the endpoint.
func HostsTOML(endpoint, host string) []byte {
	ep := tomlQuote(normalizeEndpoint(endpoint))
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by zenodo-snapshotter: images named %s/<doi>[:<tag>|@<digest>]\n", host)
	b.WriteString("# are read from Zenodo records by its read-only OCI registry endpoint.\n")
	b.WriteString("# containerd adds ?ns=" + host + " to each request. There is no registry at\n")
	b.WriteString("# https://" + host + ", so the endpoint is the server too (no fallback there).\n")
	fmt.Fprintf(&b, "server = %s\n", ep)
	b.WriteString("capabilities = [\"pull\", \"resolve\"]\n\n")
	fmt.Fprintf(&b, "[host.%s]\n", ep)
	b.WriteString("  capabilities = [\"pull\", \"resolve\"]\n")
	return []byte(b.String())
}

// normalizeEndpoint adds http:// to a scheme-less endpoint and drops a
// trailing slash.
func normalizeEndpoint(endpoint string) string {
	ep := strings.TrimSpace(endpoint)
	if !strings.Contains(ep, "://") {
		ep = "http://" + ep
	}
	return strings.TrimRight(ep, "/")
}

// checkEndpoint validates an endpoint for InstallHosts.
func checkEndpoint(endpoint string) (string, error) {
	ep := normalizeEndpoint(endpoint)
	u, err := url.Parse(ep)
	if err != nil {
		return "", fmt.Errorf("endpoint %q: %v: %w", endpoint, err, errdefs.ErrInvalidArgument)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", fmt.Errorf("endpoint %q: scheme must be http or https: %w", endpoint, errdefs.ErrInvalidArgument)
	}
	if u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || (u.Path != "" && u.Path != "/") {
		return "", fmt.Errorf("endpoint %q: want [http://]host:port: %w", endpoint, errdefs.ErrInvalidArgument)
	}
	if _, _, err := net.SplitHostPort(u.Host); err != nil {
		return "", fmt.Errorf("endpoint %q: want [http://]host:port: %v: %w", endpoint, err, errdefs.ErrInvalidArgument)
	}
	return ep, nil
}

// InstallHosts writes <certsDir>/zenodo.org/hosts.toml and
// <certsDir>/sandbox.zenodo.org/hosts.toml (HostsTOML) routing both Zenodo
// instances to endpoint, creating the directories (0755) and replacing the
// files atomically (0644). certsDir is what `ctr --hosts-dir`, nerdctl's
// hosts directory and CRI's registry config_path name, usually
// /etc/containerd/certs.d.
func InstallHosts(certsDir, endpoint string) error {
	ep, err := checkEndpoint(endpoint)
	if err != nil {
		return fmt.Errorf("installing hosts.toml: %w", err)
	}
	if certsDir == "" {
		return fmt.Errorf("installing hosts.toml: empty directory: %w", errdefs.ErrInvalidArgument)
	}
	for _, h := range []zenodo.Host{zenodo.HostProduction, zenodo.HostSandbox} {
		dir := filepath.Join(certsDir, string(h))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("installing hosts.toml for %s: %w", h, err)
		}
		if err := fsutil.WriteFileAtomic(filepath.Join(dir, "hosts.toml"), HostsTOML(ep, string(h)), 0o644); err != nil {
			return fmt.Errorf("installing hosts.toml for %s: %w", h, err)
		}
	}
	return nil
}

// ProxyPluginTOML returns the containerd config snippet that registers the
// zenodo-snapshotter's gRPC socket as the proxy snapshotter "zenodo"
// (SnapshotterName). proxy_plugins is a top-level table in both config
// version 2 (containerd 1.x) and version 3 (2.x), so the snippet is the same
// for both. For lazy pulls by containerd 2.x's transfer service (plain `ctr
// pull`) the snapshotter must also be in the transfer plugin's
// unpack_config; nerdctl and CRI choose the snapshotter themselves.
func ProxyPluginTOML(socket string) []byte {
	var b strings.Builder
	b.WriteString("# zenodo-snapshotter: lazy layers of zenodo.org images (config version 2 and 3)\n")
	b.WriteString("[proxy_plugins]\n")
	fmt.Fprintf(&b, "  [proxy_plugins.%s]\n", SnapshotterName)
	b.WriteString("    type = \"snapshot\"\n")
	fmt.Fprintf(&b, "    address = %s\n", tomlQuote(socket))
	return []byte(b.String())
}

// RegistryConfigTOML returns the containerd config snippet that points CRI's
// registry configuration at certsDir (where InstallHosts wrote hosts.toml
// files), for config version 2 (containerd 1.x, plugin
// io.containerd.grpc.v1.cri) or 3 (containerd 2.x, io.containerd.cri.v1.images).
func RegistryConfigTOML(configVersion int, certsDir string) ([]byte, error) {
	var plugin string
	switch configVersion {
	case 2:
		plugin = "io.containerd.grpc.v1.cri"
	case 3:
		plugin = "io.containerd.cri.v1.images"
	default:
		return nil, fmt.Errorf("containerd config version %d: want 2 or 3: %w", configVersion, errdefs.ErrInvalidArgument)
	}
	return []byte(fmt.Sprintf("[plugins.%s.registry]\n  config_path = %s\n", tomlQuote(plugin), tomlQuote(certsDir))), nil
}

// tomlQuote returns s as a TOML basic string.
func tomlQuote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"':
			b.WriteString(`\"`)
		case r == '\\':
			b.WriteString(`\\`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\u%04X`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}
