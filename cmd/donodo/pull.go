package main

import (
	"fmt"
	"strings"

	"github.com/containerd/platforms"
	"github.com/spf13/cobra"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/donodo"
)

func newPullCmd(o *options) *cobra.Command {
	var (
		output      string
		snapshotter string
		platform    string
	)
	cmd := &cobra.Command{
		Use:   "pull REF",
		Short: "Import the image of a Zenodo record into containerd, or into a file",
		Long: `Import the image of a Zenodo record into the containerd namespace, named
zenodo.org/<version DOI>:<tag> and by its original name, and unpack it.
With --snapshotter zenodo (zenodo-snapshotter running), layers are not
downloaded: they are read lazily when the container runs.

With -o FILE, write the image archive to FILE instead, in a form docker load,
podman load and ctr import accept (a gzipped archive is decompressed).

Records holding archives of other tools (the Python donodo's image.tar.gz, any
docker save or OCI archive) are read too.`,
		Example: `  donodo pull zenodo.org/10.5281/zenodo.123:1.2
  donodo pull --snapshotter zenodo 10.5281/zenodo.123
  donodo pull -o image.tar https://zenodo.org/records/123 && docker load -i image.tar`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			ctx := cmd.Context()
			ref, err := parseRef(a[0])
			if err != nil {
				return err
			}
			var popts []donodo.PullOption
			if platform != "" {
				p, err := platforms.Parse(platform)
				if err != nil {
					return usage(fmt.Errorf("--platform %q: %w", platform, err))
				}
				popts = append(popts, donodo.WithPlatform(platforms.Only(p)))
			}
			if output != "" && snapshotter != "" {
				return usage(fmt.Errorf("-o writes a file; --snapshotter is for pulls into containerd"))
			}
			o.start(ctx)
			zc, err := o.zenodo(&ref)
			if err != nil {
				return err
			}
			if output != "" {
				res, err := donodo.Export(ctx, zc, ref, output)
				o.endProgress()
				if err != nil {
					return err
				}
				switch {
				case o.json:
					return o.printJSON(res)
				case o.quiet:
					o.printf("%s\n", res.Path)
				default:
					o.printf("wrote %s (%d bytes) from %s of record %s\n", res.Path, res.Size, res.File, res.Record.DOI)
					o.printf("load it with: docker load -i %[1]s, or ctr image import %[1]s\n", res.Path)
					if len(res.Names) > 0 {
						o.printf("image names: %s\n", strings.Join(res.Names, ", "))
					}
				}
				return nil
			}
			cc, ctx, err := o.containerd(ctx)
			if err != nil {
				return err
			}
			defer cc.Close()
			if snapshotter != "" {
				popts = append(popts, donodo.WithSnapshotter(snapshotter))
			}
			res, err := donodo.Pull(ctx, zc, cc, ref, popts...)
			o.endProgress()
			if err != nil {
				return err
			}
			switch {
			case o.json:
				return o.printJSON(res)
			case o.quiet:
				for _, n := range res.Names {
					o.printf("%s\n", n)
				}
			default:
				o.printf("pulled %s into namespace %s\n", res.Reference, o.namespace)
				for _, n := range res.Names[1:] {
					o.printf("also named %s\n", n)
				}
				o.printf("record:             %s\n", res.Record.URL)
				o.printf("platform:           %s\n", res.Platform)
				o.printf("image ID (config):  %s\n", res.ConfigDigest)
				o.printf("manifest digest:    %s\n", res.ManifestDigest)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&output, "output", "o", "", "write the image archive to this file instead of containerd")
	f.StringVar(&snapshotter, "snapshotter", "", "snapshotter to unpack with (\"zenodo\" for a lazy pull; default: the namespace's)")
	f.StringVar(&platform, "platform", "", "platform to pull (default: this host's)")
	return cmd
}
