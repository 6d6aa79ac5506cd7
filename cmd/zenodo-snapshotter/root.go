package main

import (
	"github.com/containerd/log"
	"github.com/spf13/cobra"
)

// newRootCmd is the command tree. Without a subcommand it serves, taking
// serve's flags.
func newRootCmd() *cobra.Command {
	serve := newServeCmd()
	root := &cobra.Command{
		Use:   "zenodo-snapshotter",
		Short: "Run container images archived on Zenodo lazily, from their DOI",
		Long: `zenodo-snapshotter makes zenodo.org/<doi>[:tag] a container image reference:
a containerd proxy snapshotter whose layers are FUSE filesystems reading file
contents from Zenodo by HTTP range on demand, plus a read-only OCI registry
endpoint through which ctr, nerdctl and CRI resolve zenodo.org images.

Without a subcommand it runs "serve".`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE:          serve.RunE,
		PersistentPreRun: func(cmd *cobra.Command, _ []string) {
			_ = log.SetFormat(log.TextFormat)
		},
	}
	root.Flags().AddFlagSet(serve.Flags())
	root.AddCommand(serve, newHostsCmd(), newConfigCmd(), newVersionCmd())
	return root
}
