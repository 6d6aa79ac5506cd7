// Command zenodo-snapshotter is a containerd proxy snapshotter that runs
// images archived on Zenodo lazily, and a read-only OCI registry endpoint for
// zenodo.org references.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "zenodo-snapshotter: not implemented yet")
	os.Exit(2)
}
