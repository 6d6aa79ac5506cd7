package main

import (
	"fmt"
	"io"
	"os"

	"github.com/containerd/platforms"
	"github.com/opencontainers/go-digest"
	"github.com/spf13/cobra"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/donodo"
)

func newBlobCmd(o *options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "blob",
		Short: "Read single blobs of a record's image (as dxf pull-blob, blob-size)",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return usage(fmt.Errorf("blob needs a subcommand: get or size"))
		},
	}
	cmd.AddCommand(newBlobGetCmd(o), newBlobSizeCmd(o))
	return cmd
}

// openImage opens the image ref names, by range.
func (o *options) openImage(cmd *cobra.Command, s string) (*donodo.Image, error) {
	ref, err := parseRef(s)
	if err != nil {
		return nil, err
	}
	o.start(cmd.Context())
	zc, err := o.zenodo(&ref)
	if err != nil {
		return nil, err
	}
	return donodo.OpenImage(cmd.Context(), zc, ref)
}

func parseDigest(s string) (digest.Digest, error) {
	d, err := digest.Parse(s)
	if err != nil {
		return "", usage(fmt.Errorf("digest %q: %w", s, err))
	}
	return d, nil
}

func newBlobGetCmd(o *options) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "get REF DIGEST",
		Short: "Write a blob of the record's image to stdout or a file, verified",
		Args:  args(cobra.ExactArgs(2)),
		RunE: func(cmd *cobra.Command, a []string) (retErr error) {
			dgst, err := parseDigest(a[1])
			if err != nil {
				return err
			}
			im, err := o.openImage(cmd, a[0])
			if err != nil {
				return err
			}
			defer im.Close()
			var w io.Writer = o.stdout
			var tmp *os.File
			if output != "" && output != "-" {
				if tmp, err = os.CreateTemp(dirOf(output), ".blob-*"); err != nil {
					return err
				}
				defer func() {
					tmp.Close()
					if retErr != nil {
						os.Remove(tmp.Name())
					}
				}()
				w = tmp
			}
			desc, err := im.CopyBlob(cmd.Context(), w, dgst, nil)
			o.endProgress()
			if err != nil {
				return err
			}
			if tmp != nil {
				if err := tmp.Close(); err != nil {
					return err
				}
				if err := os.Rename(tmp.Name(), output); err != nil {
					return err
				}
				if o.json {
					return o.printJSON(desc)
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "write the blob to this file (default stdout)")
	return cmd
}

func dirOf(path string) string {
	for i := len(path) - 1; i >= 0; i-- {
		if path[i] == '/' {
			return path[:i+1]
		}
	}
	return "."
}

func newBlobSizeCmd(o *options) *cobra.Command {
	var platform string
	cmd := &cobra.Command{
		Use:   "size REF [DIGEST...]",
		Short: "Print the size of blobs; without DIGEST, the total of the image's blobs",
		Args:  args(cobra.MinimumNArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			var dgsts []digest.Digest
			for _, s := range a[1:] {
				d, err := parseDigest(s)
				if err != nil {
					return err
				}
				dgsts = append(dgsts, d)
			}
			m, err := platformMatcher(platform)
			if err != nil {
				return err
			}
			im, err := o.openImage(cmd, a[0])
			if err != nil {
				return err
			}
			defer im.Close()
			type size struct {
				Digest digest.Digest `json:"digest,omitempty"`
				Size   int64         `json:"size"`
			}
			var sizes []size
			if len(dgsts) == 0 {
				n, err := im.BlobsSize(cmd.Context(), m)
				if err != nil {
					return err
				}
				sizes = append(sizes, size{Size: n})
			}
			for _, d := range dgsts {
				ra, desc, err := im.Blob(cmd.Context(), d)
				if err != nil {
					return err
				}
				ra.Close()
				sizes = append(sizes, size{Digest: d, Size: desc.Size})
			}
			if o.json {
				return o.printJSON(sizes)
			}
			for _, s := range sizes {
				o.printf("%d\n", s.Size)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&platform, "platform", "", "platform whose blobs are summed (default: this host's)")
	return cmd
}

func platformMatcher(s string) (platforms.MatchComparer, error) {
	if s == "" {
		return platforms.Default(), nil
	}
	p, err := platforms.Parse(s)
	if err != nil {
		return nil, usage(fmt.Errorf("--platform %q: %w", s, err))
	}
	return platforms.Only(p), nil
}

func newDigestCmd(o *options) *cobra.Command {
	var (
		platform string
		manifest bool
	)
	cmd := &cobra.Command{
		Use:   "digest REF",
		Short: "Print the image ID (config digest) of a record's image, as dxf get-digest",
		Long: `Print the image ID (config digest) of a record's image, the same as
docker inspect --format '{{.Id}}' gives for it; with --manifest, the digest
that pins it (REF@sha256:…).`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			m, err := platformMatcher(platform)
			if err != nil {
				return err
			}
			im, err := o.openImage(cmd, a[0])
			if err != nil {
				return err
			}
			defer im.Close()
			var d digest.Digest
			if manifest {
				root, err := im.Root(cmd.Context())
				if err != nil {
					return err
				}
				d = root.Digest
			} else if d, err = im.ConfigDigest(cmd.Context(), m); err != nil {
				return err
			}
			if o.json {
				return o.printJSON(map[string]any{"digest": d, "reference": im.Name()})
			}
			o.printf("%s\n", d)
			return nil
		},
	}
	cmd.Flags().StringVar(&platform, "platform", "", "platform whose image ID is printed (default: this host's)")
	cmd.Flags().BoolVar(&manifest, "manifest", false, "print the manifest (root) digest instead")
	return cmd
}
