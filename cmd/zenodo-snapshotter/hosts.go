package main

import (
	"fmt"
	"net"
	"path/filepath"

	"github.com/containerd/errdefs"
	"github.com/spf13/cobra"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/resolver"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/zenodo"
)

// DefaultCertsDir is where containerd's tools look for hosts.toml files.
const DefaultCertsDir = "/etc/containerd/certs.d"

func newHostsCmd() *cobra.Command {
	var certsDir, endpoint, configPath string
	var install bool
	cmd := &cobra.Command{
		Use:   "hosts [--certs-dir DIR] [--install]",
		Short: "Print, or install, the hosts.toml routing zenodo.org images to the registry endpoint",
		Long: `Print the hosts.toml files that route the images of zenodo.org and
sandbox.zenodo.org to the daemon's registry endpoint, or write them into
--certs-dir with --install. ctr (--hosts-dir), nerdctl and CRI's registry
config_path read them from there.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if endpoint == "" {
				cfg, err := LoadConfig(configPath, !cmd.Flags().Changed("config"))
				if err != nil {
					return err
				}
				if err := cfg.Validate(); err != nil {
					return err
				}
				if endpoint, err = endpointOf(cfg.Registry.Listen); err != nil {
					return err
				}
			}
			if install {
				if err := resolver.InstallHosts(certsDir, endpoint); err != nil {
					return fmt.Errorf("installing hosts.toml: %w", err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "installed %s and %s\n",
					filepath.Join(certsDir, string(zenodo.HostProduction), "hosts.toml"),
					filepath.Join(certsDir, string(zenodo.HostSandbox), "hosts.toml"))
				return nil
			}
			for _, h := range []zenodo.Host{zenodo.HostProduction, zenodo.HostSandbox} {
				fmt.Fprintf(cmd.OutOrStdout(), "# %s\n%s\n", filepath.Join(certsDir, string(h), "hosts.toml"), resolver.HostsTOML(endpoint, string(h)))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&certsDir, "certs-dir", DefaultCertsDir, "containerd's hosts directory")
	cmd.Flags().BoolVar(&install, "install", false, "write the files instead of printing them")
	cmd.Flags().StringVar(&endpoint, "endpoint", "", "the registry endpoint's address (default: registry.listen of --config)")
	cmd.Flags().StringVar(&configPath, "config", DefaultConfigPath, "the daemon's TOML configuration file")
	return cmd
}

// endpointOf turns the registry endpoint's listen address into the address
// clients dial: a wildcard host becomes loopback.
func endpointOf(listen string) (string, error) {
	if listen == "" {
		return "", fmt.Errorf("the registry endpoint is off (registry.listen): give --endpoint: %w", errdefs.ErrInvalidArgument)
	}
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", fmt.Errorf("registry.listen %q: %v: %w", listen, err, errdefs.ErrInvalidArgument)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port), nil
}
