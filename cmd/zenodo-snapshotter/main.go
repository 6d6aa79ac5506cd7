// Command zenodo-snapshotter is a containerd proxy snapshotter that runs
// images archived on Zenodo lazily, and a read-only OCI registry endpoint for
// zenodo.org references.
//
//	zenodo-snapshotter [serve] [--config FILE] [flags]   run the daemon (the default)
//	zenodo-snapshotter hosts [--certs-dir DIR] [--install] print or install hosts.toml
//	zenodo-snapshotter config [--defaults]                print containerd's config snippets
//	zenodo-snapshotter version
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRootCmd().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "zenodo-snapshotter:", err)
		stop()
		os.Exit(1)
	}
}
