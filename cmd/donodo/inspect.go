package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/donodo"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/donodo/buildinfo"
)

func newInspectCmd(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "inspect REF",
		Short: "Describe the image of a Zenodo record without downloading its layers",
		Long: `Describe a record's image: the record, its versions, the archive, and for each
platform the image ID, manifest digest, config and layers with their sizes.
A format v1 archive (image.tar + image.tar.index.json) costs a few small
requests; other uncompressed archives are read by range; compressed ones are
downloaded.`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			ctx := cmd.Context()
			ref, err := parseRef(a[0])
			if err != nil {
				return err
			}
			o.start(ctx)
			zc, err := o.zenodo(&ref)
			if err != nil {
				return err
			}
			ins, err := donodo.Inspect(ctx, zc, ref)
			o.endProgress()
			if err != nil {
				return err
			}
			if o.json {
				return o.printJSON(ins)
			}
			printInspection(o.stdout, ins)
			return nil
		},
	}
}

func printInspection(w io.Writer, ins *donodo.Inspection) {
	p := func(format string, a ...any) { fmt.Fprintf(w, format, a...) }
	r := ins.Record
	p("Image:        %s\n", ins.Reference)
	if len(ins.Names) > 0 {
		p("Named:        %s\n", strings.Join(ins.Names, ", "))
	}
	p("Record:       %s (%s)\n", r.URL, r.Title)
	if r.Version != "" {
		p("DOI:          %s (version %s, published %s)\n", r.DOI, r.Version, r.PublicationDate)
	} else {
		p("DOI:          %s (published %s)\n", r.DOI, r.PublicationDate)
	}
	if r.ConceptDOI != "" {
		p("All versions: %s\n", r.ConceptDOI)
	}
	idx := ""
	if ins.Archive.Index != "" {
		idx = " + " + ins.Archive.Index
	}
	p("Archive:      %s%s, %s, format %s\n", ins.Archive.File, idx, buildinfo.HumanSize(ins.Archive.Size), ins.Archive.Format)
	p("Root:         %s (%s)\n", ins.RootDigest, ins.RootMediaType)
	for _, im := range ins.Images {
		p("\nPlatform %s\n", im.Platform)
		p("  Image ID:   %s\n", im.ConfigDigest)
		p("  Manifest:   %s\n", im.ManifestDigest)
		if im.Created != nil {
			p("  Created:    %s\n", im.Created.UTC().Format("2006-01-02T15:04:05Z"))
		}
		if len(im.Entrypoint) > 0 {
			p("  Entrypoint: %s\n", strings.Join(im.Entrypoint, " "))
		}
		if len(im.Cmd) > 0 {
			p("  Cmd:        %s\n", strings.Join(im.Cmd, " "))
		}
		size := buildinfo.HumanSize(im.Size)
		if im.UncompressedSize > 0 {
			size += ", " + buildinfo.HumanSize(im.UncompressedSize) + " uncompressed"
		}
		p("  Size:       %s\n", size)
		for k, v := range im.Labels {
			p("  Label:      %s=%s\n", k, v)
		}
		tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  LAYER\tSIZE\tUNCOMPRESSED\tLAZY")
		for _, l := range im.Layers {
			unc := "-"
			if l.UncompressedSize > 0 {
				unc = buildinfo.HumanSize(l.UncompressedSize)
			}
			lazy := "no"
			if l.Seekable {
				lazy = "yes"
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", l.Digest, buildinfo.HumanSize(l.Size), unc, lazy)
		}
		tw.Flush()
	}
	if len(ins.Versions) > 0 {
		p("\nVersions\n")
		printVersions(w, ins.Versions)
	}
}
