package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/donodo"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/zenodo"
)

const longHelp = `donodo archives container images from containerd as citable Zenodo records,
and brings them back: into containerd (lazily with zenodo-snapshotter), into a
file for docker load / ctr import, or one blob at a time.

References (pull, inspect, versions, blob, digest):
  zenodo.org/10.5281/zenodo.123[:tag][@sha256:…]   sandbox.zenodo.org/10.5072/zenodo.123…
  10.5281/zenodo.123   doi:10.5281/zenodo.123   https://doi.org/10.5281/zenodo.123
  https://zenodo.org/records/123 (or /record/123, /api/records/123, /uploads/123, /doi/<doi>)
A version DOI names that version; a concept DOI (or :latest) its newest version;
:<tag> the version whose version field is the tag; @sha256: pins the manifest.

Environment:
  ZENODO_TOKEN          Zenodo token for push (scopes deposit:write, deposit:actions)
  ZENODO_URL            Zenodo base URL (default https://zenodo.org), as --zenodo-url
  CONTAINERD_ADDRESS    containerd socket, as --address
  CONTAINERD_NAMESPACE  containerd namespace, as --namespace

Exit codes:
  0  success
  1  error (Zenodo unreachable, corrupt archive, several candidate archives, …)
  2  usage: bad command line or input (reference, NAME:TAG, templates, creators)
  3  not found (record, tag, digest, image archive in the record, image or content in the namespace)
  4  authentication: Zenodo token missing or rejected`

// options are the global flags and what the commands share.
type options struct {
	address   string
	namespace string
	sandbox   bool
	zenodoURL string
	tokenFile string
	json      bool
	quiet     bool
	logLevel  string

	stdin          io.Reader
	stdout, stderr io.Writer
	// ran is set once a command's RunE starts: errors before are usage
	// errors.
	ran bool
	// bars, when set, draws progress on stderr.
	bars *donodo.Bars
}

// newRootCmd builds the donodo command.
func newRootCmd(o *options) *cobra.Command {
	root := &cobra.Command{
		Use:           "donodo",
		Short:         "Container images on Zenodo: push, pull, inspect",
		Long:          longHelp,
		SilenceErrors: true,
		SilenceUsage:  true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			if err := log.SetLevel(o.logLevel); err != nil {
				return usage(fmt.Errorf("--log-level %q: %w", o.logLevel, err))
			}
			log.L.Logger.SetOutput(o.stderr)
			return nil
		},
	}
	root.SetOut(o.stdout)
	root.SetErr(o.stderr)
	root.SetIn(o.stdin)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usage(err) })
	f := root.PersistentFlags()
	f.StringVar(&o.address, "address", envOr("CONTAINERD_ADDRESS", "/run/containerd/containerd.sock"), "containerd socket (env CONTAINERD_ADDRESS)")
	f.StringVarP(&o.namespace, "namespace", "n", envOr("CONTAINERD_NAMESPACE", "default"), "containerd namespace (env CONTAINERD_NAMESPACE)")
	f.BoolVar(&o.sandbox, "sandbox", false, "use the Zenodo sandbox (sandbox.zenodo.org)")
	f.StringVar(&o.zenodoURL, "zenodo-url", os.Getenv("ZENODO_URL"), "Zenodo base URL, e.g. a local emulator (env ZENODO_URL)")
	f.StringVar(&o.tokenFile, "token-file", "", "read the Zenodo token from this file instead of $ZENODO_TOKEN")
	f.BoolVar(&o.json, "json", false, "print results as JSON")
	f.BoolVarP(&o.quiet, "quiet", "q", false, "print only the result (push: the DOI), no progress")
	f.StringVar(&o.logLevel, "log-level", "warn", "log level (debug, info, warn, error)")

	root.AddCommand(
		newPushCmd(o),
		newPullCmd(o),
		newInspectCmd(o),
		newVersionsCmd(o),
		newBlobCmd(o),
		newDigestCmd(o),
	)
	return root
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// run executes the command line and returns the exit code.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	o := &options{stdin: stdin, stdout: stdout, stderr: stderr}
	root := newRootCmd(o)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if o.bars != nil {
		o.bars.Close()
	}
	if err == nil {
		return donodo.ExitOK
	}
	if !o.ran && !errdefs.IsInvalidArgument(err) {
		err = usage(err)
	}
	fmt.Fprintf(stderr, "donodo: %s\n", oneLine(err.Error()))
	if h := donodo.Hint(err); h != "" {
		fmt.Fprintf(stderr, "donodo: hint: %s\n", h)
	}
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintln(stderr, "Run 'donodo --help' for usage.")
	}
	return donodo.ExitCode(err)
}

// oneLine keeps an error message on one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// usageError is a bad command line: exit code 2.
type usageError struct{ err error }

func (e *usageError) Error() string   { return e.err.Error() }
func (e *usageError) Unwrap() []error { return []error{e.err, errdefs.ErrInvalidArgument} }

func usage(err error) error { return &usageError{err} }

// args checks the number of positional arguments as a usage error.
func args(n cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, a []string) error {
		if err := n(cmd, a); err != nil {
			return usage(err)
		}
		return nil
	}
}

// start marks the command as running and sets up progress bars.
func (o *options) start(ctx context.Context) {
	o.ran = true
	if !o.quiet && isTerminal(o.stderr) {
		o.bars = donodo.NewBars(ctx, o.stderr)
	}
}

// progress is where transfers report.
func (o *options) progress() donodo.Progress {
	if o.bars == nil {
		return donodo.NoProgress
	}
	return o.bars
}

// status is where step-by-step lines go: stderr (above the bars), nowhere
// with -q.
func (o *options) status() io.Writer {
	switch {
	case o.quiet:
		return io.Discard
	case o.bars != nil:
		return o.bars.Writer()
	}
	return o.stderr
}

// endProgress stops the bars, before a prompt or the final output.
func (o *options) endProgress() {
	if o.bars != nil {
		o.bars.Close()
	}
}

// isTerminal tells whether w is a terminal.
func isTerminal(w any) bool {
	f, ok := w.(interface{ Fd() uintptr })
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// baseURL is the Zenodo to talk to: --zenodo-url, else the sandbox with
// --sandbox or a sandbox reference, else production Zenodo.
func (o *options) baseURL(ref *zenodo.Reference) string {
	switch {
	case o.zenodoURL != "":
		return o.zenodoURL
	case o.sandbox || (ref != nil && ref.Sandbox()):
		return zenodo.SandboxURL
	}
	return zenodo.ProductionURL
}

// zenodo returns a client for ref's Zenodo (nil: the one of --sandbox),
// with the token from --token-file or $ZENODO_TOKEN if there is one.
func (o *options) zenodo(ref *zenodo.Reference) (*zenodo.Client, error) {
	opts := []zenodo.Option{
		zenodo.WithUserAgent("donodo (+https://github.com/zenodo-snapshotter/zenodo-snapshotter)"),
		zenodo.WithHTTPClient(donodo.NewHTTPClient(o.progress())),
	}
	if o.tokenFile != "" {
		data, err := os.ReadFile(o.tokenFile)
		if err != nil {
			return nil, fmt.Errorf("reading --token-file: %v: %w", err, donodo.ErrNoToken)
		}
		token := strings.TrimSpace(string(data))
		if token == "" {
			return nil, fmt.Errorf("--token-file %s is empty: %w", o.tokenFile, donodo.ErrNoToken)
		}
		opts = append(opts, zenodo.WithToken(token))
	} else {
		opts = append(opts, zenodo.WithToken(zenodo.TokenFromEnv()))
	}
	zc, err := zenodo.New(o.baseURL(ref), opts...)
	if err != nil {
		return nil, fmt.Errorf("setting up the Zenodo client: %w", err)
	}
	return zc, nil
}

// parseRef parses a record reference as a usage error when bad.
func parseRef(s string) (zenodo.Reference, error) {
	ref, err := zenodo.ParseReference(s)
	if err != nil {
		return ref, usage(err)
	}
	return ref, nil
}

// containerd connects to containerd and returns the context carrying the
// namespace.
func (o *options) containerd(ctx context.Context) (*client.Client, context.Context, error) {
	if !strings.Contains(o.address, "://") {
		if _, err := os.Stat(o.address); err != nil {
			return nil, ctx, fmt.Errorf("containerd socket %s: %v (is containerd running? see --address): %w", o.address, err, errdefs.ErrUnavailable)
		}
	}
	c, err := client.New(o.address, client.WithDefaultNamespace(o.namespace), client.WithTimeout(10*time.Second))
	if err != nil {
		return nil, ctx, fmt.Errorf("connecting to containerd at %s: %w", o.address, err)
	}
	return c, namespaces.WithNamespace(ctx, o.namespace), nil
}

// printJSON writes v as indented JSON to stdout.
func (o *options) printJSON(v any) error {
	enc := json.NewEncoder(o.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// printf writes to stdout.
func (o *options) printf(format string, a ...any) {
	fmt.Fprintf(o.stdout, format, a...)
}
