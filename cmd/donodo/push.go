package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/platforms"
	"github.com/spf13/cobra"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/donodo"
)

func newPushCmd(o *options) *cobra.Command {
	var (
		templates      string
		autoPublish    bool
		preserveLayers bool
		tmpDir         string
		platform       string
	)
	cmd := &cobra.Command{
		Use:   "push NAME:TAG",
		Short: "Archive an image from containerd as a Zenodo record (or a new version of one)",
		Long: `Archive an image from the containerd namespace as a Zenodo record and print its DOI.

The tag is required and may not be "latest": it becomes the record's version.
The record is titled "Docker image NAME" unless --templates says otherwise; if
you already have a record with that title, the image becomes a new version of
it, and an unpublished draft with that title (an interrupted push) is resumed:
files already uploaded are kept. Every platform whose content is in the
namespace is pushed. The image is written as image.tar (an OCI layout and a
docker save archive at once, layers as seekable gzip for lazy pulls) with its
index image.tar.index.json; the description lists the image's layers and
packages. Once the draft is ready you are asked whether to publish it (published
files can never change), unless --auto-publish. Needs ZENODO_TOKEN (or
--token-file) with the deposit:write and deposit:actions scopes.

--templates FILE is a JSON object of Zenodo deposition metadata fields (title,
creators, description, keywords, license, …) whose strings are Go templates
over .Name .Tag .FullName .Labels .Config .DOI .Reference .BuildManifest, e.g.
  {"creators": [{"name": "Smith, Jane", "affiliation": "My University"}],
   "keywords": ["docker image", "{{index .Labels \"topic\"}}"]}
Creators default to the image label org.opencontainers.image.authors.`,
		Example: `  ZENODO_TOKEN=… donodo push -n default my/tool:1.2
  donodo push --sandbox --auto-publish --templates meta.json my/tool:1.3`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			ctx := cmd.Context()
			var opts []donodo.PushOption
			if templates != "" {
				t, err := donodo.LoadTemplates(templates)
				if err != nil {
					return usage(err)
				}
				opts = append(opts, donodo.WithTemplates(t))
			}
			if platform != "" {
				p, err := platforms.Parse(platform)
				if err != nil {
					return usage(fmt.Errorf("--platform %q: %w", platform, err))
				}
				opts = append(opts, donodo.WithPushPlatform(platforms.Only(p)))
			}
			if _, err := donodo.ParseImageName(a[0]); err != nil {
				return usage(err)
			}
			o.start(ctx)
			zc, err := o.zenodo(nil)
			if err != nil {
				return err
			}
			if !zc.Authenticated() {
				return fmt.Errorf("pushing %s: %w", a[0], donodo.ErrNoToken)
			}
			cc, ctx, err := o.containerd(ctx)
			if err != nil {
				return err
			}
			defer cc.Close()
			opts = append(opts, donodo.WithPushProgress(o.progress()), donodo.WithStatus(o.status()))
			if tmpDir != "" {
				opts = append(opts, donodo.WithPushTempDir(tmpDir))
			}
			if dir, err := os.UserCacheDir(); err == nil {
				// Remembers each push's deposition: Zenodo's search lags.
				opts = append(opts, donodo.WithDepositionMemo(filepath.Join(dir, "donodo")))
			}
			if preserveLayers {
				opts = append(opts, donodo.WithPreserveLayers())
			}
			switch {
			case autoPublish:
				opts = append(opts, donodo.WithAutoPublish())
			case isTerminal(o.stdin) && isTerminal(o.stderr):
				opts = append(opts, donodo.WithConfirm(o.confirmPublish))
			}
			res, err := donodo.Push(ctx, zc, donodo.ContainerdSource(cc), a[0], opts...)
			o.endProgress()
			if err != nil {
				if res != nil && res.DraftURL != "" {
					fmt.Fprintf(o.stderr, "donodo: the draft %s is unpublished; run the same push again to resume it\n", res.DraftURL)
				}
				return err
			}
			return o.printPush(res)
		},
	}
	f := cmd.Flags()
	f.StringVar(&templates, "templates", "", "JSON file of deposition metadata templates")
	f.BoolVar(&autoPublish, "auto-publish", false, "publish without asking once the upload is complete")
	f.BoolVar(&preserveLayers, "preserve-layers", false, "keep layers byte for byte (manifest digest unchanged; no lazy pull)")
	f.StringVar(&tmpDir, "tmp-dir", "", "directory for the archive while it is written and uploaded (default $TMPDIR)")
	f.StringVar(&platform, "platform", "", "platform described in the record (default: this host's)")
	return cmd
}

// confirmPublish asks on the terminal whether to publish the draft.
func (o *options) confirmPublish(ctx context.Context, draft *donodo.PushResult) (bool, error) {
	o.endProgress()
	fmt.Fprintf(o.stderr, "The draft is ready: %s\nYou can check or edit it there now. Once published, its files can never change.\nPublish %s as version %s? [y/N] ", draft.DraftURL, draft.Title, draft.Tag)
	answer := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(o.stdin).ReadString('\n')
		answer <- line
	}()
	select {
	case <-ctx.Done():
		fmt.Fprintln(o.stderr)
		return false, ctx.Err()
	case line := <-answer:
		switch strings.ToLower(strings.TrimSpace(line)) {
		case "y", "yes":
			return true, nil
		}
		return false, nil
	}
}

func (o *options) printPush(res *donodo.PushResult) error {
	if o.json {
		return o.printJSON(res)
	}
	if o.quiet {
		if res.Published {
			o.printf("%s\n", res.DOI)
		} else {
			o.printf("%s\n", res.DraftURL)
		}
		return nil
	}
	if !res.Published {
		o.printf("draft (unpublished): %s\n", res.DraftURL)
		o.printf("reserved DOI:        %s\n", res.DOI)
		o.printf("to publish it, run the same push again with --auto-publish (nothing is uploaded again), or publish it on Zenodo\n")
	} else {
		o.printf("published:           %s (%s)\n", res.DOI, res.Action)
		o.printf("record:              %s\n", res.RecordURL)
		if res.ConceptDOI != "" {
			o.printf("all versions:        %s\n", res.ConceptDOI)
		}
	}
	o.printf("image:               %s\n", res.Reference)
	o.printf("platforms:           %s\n", strings.Join(res.Platforms, ", "))
	if len(res.SkippedPlatforms) > 0 {
		o.printf("skipped platforms:   %s (content not in the namespace)\n", strings.Join(res.SkippedPlatforms, ", "))
	}
	o.printf("image ID (config):   %s\n", res.ConfigDigest)
	o.printf("manifest digest:     %s\n", res.ManifestDigest)
	if res.RootDigest != res.ManifestDigest {
		o.printf("index digest:        %s\n", res.RootDigest)
	}
	return nil
}
