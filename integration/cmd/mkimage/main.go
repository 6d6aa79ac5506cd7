// Command mkimage builds the small busybox image the demo pushes, without a
// registry or a Docker daemon, and writes it as an OCI archive that
// `ctr images import` loads.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/integration/testimage"
)

func main() {
	out := flag.String("o", "image.oci.tar", "OCI archive to write")
	name := flag.String("name", testimage.DefaultName, "image name:tag recorded in the archive")
	randomMiB := flag.Int("random-mib", 0, "add a layer of this many MiB of random data under /data (not read by the command)")
	dpkg := flag.Bool("dpkg", true, "add the host's dpkg status database, so the build manifest lists packages")
	flag.Parse()
	cmd := flag.Args()
	if err := run(*out, *name, *randomMiB, *dpkg, cmd); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}

func run(out, name string, randomMiB int, dpkg bool, cmd []string) error {
	dir, err := os.MkdirTemp(filepath.Dir(out), ".mkimage-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	opts := []testimage.Option{testimage.WithName(name), testimage.WithLabels(map[string]string{
		"org.opencontainers.image.authors":     "Demo, Ada",
		"org.opencontainers.image.description": "A busybox image made by zenodo-snapshotter's demo",
	})}
	if len(cmd) > 0 {
		opts = append(opts, testimage.WithCmd(cmd...))
	}
	if randomMiB > 0 {
		opts = append(opts, testimage.WithRandomLayer(randomMiB, 1))
	}
	if dpkg {
		opts = append(opts, testimage.WithDpkgStatus())
	}
	if _, err := testimage.Build(dir, opts...); err != nil {
		return fmt.Errorf("building image: %w", err)
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	if err := testimage.WriteArchive(f, dir); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", out, err)
	}
	return f.Close()
}
