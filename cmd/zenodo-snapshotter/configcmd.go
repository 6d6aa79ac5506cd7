package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/containerd/platforms"
	"github.com/spf13/cobra"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/resolver"
)

func newConfigCmd() *cobra.Command {
	var configPath, socket, certsDir, platform string
	var version int
	var defaults bool
	cmd := &cobra.Command{
		Use:   "config [--containerd-config-version 2|3] [--defaults]",
		Short: "Print the containerd config snippets the snapshotter needs, and a default config file",
		Long: `Print what goes into containerd's config.toml: the proxy_plugins entry for
the snapshotter's socket (config version 2, containerd 1.x, and version 3,
containerd 2.x), CRI's registry config_path, and for containerd 2.x the
transfer service's unpack_config entry that makes ctr's default pull lazy;
then a default configuration file for the daemon. --defaults prints only
the latter.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := LoadConfig(configPath, !cmd.Flags().Changed("config"))
			if err != nil {
				return err
			}
			if socket != "" {
				cfg.Socket = socket
			}
			if err := cfg.Validate(); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if defaults {
				return printDefaultConfig(out)
			}
			var versions []int
			switch version {
			case 0:
				versions = []int{2, 3}
			case 2, 3:
				versions = []int{version}
			default:
				return fmt.Errorf("--containerd-config-version %d: want 2 or 3: %w", version, errdefs.ErrInvalidArgument)
			}
			if _, err := platforms.Parse(platform); err != nil {
				return fmt.Errorf("--platform %q: %w", platform, err)
			}
			for _, v := range versions {
				if err := printContainerdConfig(out, v, cfg.Socket, certsDir, platform); err != nil {
					return err
				}
			}
			fmt.Fprintf(out, "### zenodo-snapshotter: %s\n", DefaultConfigPath)
			return printDefaultConfig(out)
		},
	}
	cmd.Flags().StringVar(&configPath, "config", DefaultConfigPath, "the daemon's TOML configuration file (its socket goes into the snippets)")
	cmd.Flags().StringVar(&socket, "socket", "", "the snapshotter's socket (default: socket of --config)")
	cmd.Flags().StringVar(&certsDir, "certs-dir", DefaultCertsDir, "where the hosts.toml files are (for CRI's config_path)")
	cmd.Flags().StringVar(&platform, "platform", platforms.DefaultString(), "platform of the transfer service's unpack_config entry")
	cmd.Flags().IntVar(&version, "containerd-config-version", 0, "print only for this containerd config version: 2 (containerd 1.x) or 3 (2.x)")
	cmd.Flags().BoolVar(&defaults, "defaults", false, "print only a default configuration file for the daemon")
	return cmd
}

// printContainerdConfig prints the containerd config snippets for config
// version v.
func printContainerdConfig(w io.Writer, v int, socket, certsDir, platform string) error {
	release := map[int]string{2: "containerd 1.6/1.7", 3: "containerd 2.x"}[v]
	fmt.Fprintf(w, "### %s (config version %d): /etc/containerd/config.toml\n", release, v)
	fmt.Fprintf(w, "# (a file whose first line is: version = %d)\n", v)
	w.Write(resolver.ProxyPluginTOML(socket))
	if v == 3 {
		// Without it the 2.x transfer service (ctr pull) does not pass the
		// layers' annotations to Prepare, and nothing is lazy.
		fmt.Fprintln(w, "    # containerd 2.x's transfer service (ctr pull) passes the layers' annotations to Prepare only with this:")
		fmt.Fprintln(w, `    exports = { enable_remote_snapshot_annotations = "true" }`)
	}
	fmt.Fprintln(w)
	reg, err := resolver.RegistryConfigTOML(v, certsDir)
	if err != nil {
		return err
	}
	fmt.Fprintln(w, "# CRI resolves zenodo.org images through the hosts.toml of `zenodo-snapshotter hosts --install`;")
	fmt.Fprintln(w, "# Kubernetes pods choose the snapshotter with the CRI runtime's snapshotter setting.")
	w.Write(reg)
	if v == 3 {
		fmt.Fprintln(w)
		fmt.Fprint(w, transferUnpackTOML(platform))
	}
	fmt.Fprintln(w)
	return nil
}

// transferUnpackTOML is containerd 2.x's transfer-service unpack_config
// entry that unpacks with the zenodo snapshotter.
func transferUnpackTOML(platform string) string {
	var b strings.Builder
	b.WriteString(`# ctr 2.x pulls through the transfer service; with this entry its default pull
# unpacks with the zenodo snapshotter, lazily (every other image's layers are
# unpacked as the overlayfs snapshotter would). An unpack_config replaces
# containerd's default one: to keep "ctr pull --snapshotter overlayfs" working,
# add an entry for "overlayfs" too, but a pull without --snapshotter then
# prefers overlayfs (use "ctr pull --snapshotter zenodo").
[plugins."io.containerd.transfer.v1.local"]
`)
	b.WriteString(`  [[plugins."io.containerd.transfer.v1.local".unpack_config]]` + "\n")
	fmt.Fprintf(&b, "    platform = %q\n", platform)
	fmt.Fprintf(&b, "    snapshotter = %q\n", resolver.SnapshotterName)
	return b.String()
}

func printDefaultConfig(w io.Writer) error {
	data, err := MarshalConfig(DefaultConfig())
	if err != nil {
		return fmt.Errorf("writing default config: %w", err)
	}
	_, err = w.Write(data)
	return err
}
