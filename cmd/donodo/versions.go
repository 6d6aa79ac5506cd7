package main

import (
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/donodo"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/donodo/buildinfo"
)

func newVersionsCmd(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "versions REF",
		Short: "List the published versions (tags) of a record",
		Args:  args(cobra.ExactArgs(1)),
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
			vs, err := donodo.ListVersions(ctx, zc, ref)
			if err != nil {
				return err
			}
			switch {
			case o.json:
				return o.printJSON(vs)
			case o.quiet:
				for _, v := range vs {
					o.printf("%s\n", v.Reference)
				}
			default:
				printVersions(o.stdout, vs)
			}
			return nil
		},
	}
}

func printVersions(w io.Writer, vs []donodo.VersionInfo) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  TAG\tDOI\tPUBLISHED\tSIZE\tREFERENCE")
	for _, v := range vs {
		mark := " "
		if v.Selected {
			mark = "*"
		}
		tag := v.Tag
		if tag == "" {
			tag = "-"
		}
		fmt.Fprintf(tw, "%s %s\t%s\t%s\t%s\t%s\n", mark, tag, v.DOI, v.PublicationDate, buildinfo.HumanSize(v.Size), v.Reference)
	}
	tw.Flush()
}
