// Command zenodotest serves the fake Zenodo of package zenodotest on a real
// address, for demos, benchmarks and manual tests. Its first line on stdout
// is the base URL (http://ADDR), so that scripts can read it:
//
//	url=$(zenodotest --dir /tmp/z --latency 50ms --bandwidth 25MB --rate-limit 60 | head -n1)
//
// It stops cleanly on SIGINT or SIGTERM.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/log"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/zenodo/zenodotest"
)

// listFlag collects a repeatable (or comma-separated) flag.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

// byteSize parses 1000, 25MB (10^6), 25MiB (2^20), 2G...
type byteSize int64

func (b *byteSize) String() string { return strconv.FormatInt(int64(*b), 10) }
func (b *byteSize) Set(v string) error {
	n, err := parseBytes(v)
	*b = byteSize(n)
	return err
}

func parseBytes(v string) (int64, error) {
	s := strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "/s"))
	units := []struct {
		suffix string
		mult   int64
	}{
		{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30},
		{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"K", 1e3}, {"M", 1e6}, {"G", 1e9}, {"B", 1},
	}
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(strings.ToUpper(s), strings.ToUpper(u.suffix)) && (u.suffix != "B" || !strings.HasSuffix(strings.ToUpper(s), "IB")) {
			s, mult = strings.TrimSpace(s[:len(s)-len(u.suffix)]), u.mult
			break
		}
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f < 0 {
		return 0, fmt.Errorf("not a size in bytes: %q (use 1000, 25MB, 25MiB)", v)
	}
	return int64(f * float64(mult)), nil
}

type config struct {
	listen, dir, doiPrefix, requestLog, logLevel string
	tokens, seedFiles                            listFlag
	seedTitle, seedVersion                       string
	latency, indexDelay                          time.Duration
	bandwidth, maxRecordSize                     byteSize
	rateLimit, rateLimitHour, searchRateLimit    int
	conceptRedirect, unreliableHEAD              bool
}

func parseFlags(args []string, stderr io.Writer) (*config, error) {
	c := &config{maxRecordSize: byteSize(zenodotest.DefaultMaxRecordSize)}
	fs := flag.NewFlagSet("zenodotest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.listen, "listen", "127.0.0.1:0", "address to listen on (port 0: any free port)")
	fs.StringVar(&c.dir, "dir", "", "keep records and files in this directory across restarts (default: a temporary directory, removed on exit)")
	fs.Var(&c.tokens, "token", "accepted bearer token; repeatable or comma-separated (default "+zenodotest.DefaultToken+")")
	fs.StringVar(&c.doiPrefix, "doi-prefix", zenodotest.DefaultDOIPrefix, "DOI prefix (the sandbox uses 10.5072)")
	fs.DurationVar(&c.latency, "latency", 0, "delay before the first byte of every response")
	fs.Var(&c.bandwidth, "bandwidth", "bytes per second per connection, for downloads and uploads (25MB, 25MiB; default unshaped)")
	fs.IntVar(&c.rateLimit, "rate-limit", 0, "requests per minute per client before 429 (0: unlimited)")
	fs.IntVar(&c.rateLimitHour, "rate-limit-hour", 0, "requests per hour per client before 429 (0: unlimited)")
	fs.IntVar(&c.searchRateLimit, "search-rate-limit", 0, "searches (GET /api/records) per minute per client (Zenodo: 30; 0: unlimited)")
	fs.Var(&c.maxRecordSize, "max-record-size", "total size of the files of one record (default 50GB)")
	fs.DurationVar(&c.indexDelay, "index-delay", 0, "how long new records stay out of search")
	fs.BoolVar(&c.conceptRedirect, "concept-redirect", false, "answer /api/records/<concept recid> with 302 to the latest version instead of 404")
	fs.BoolVar(&c.unreliableHEAD, "unreliable-head", false, "answer HEAD on downloads without Content-Length")
	fs.StringVar(&c.requestLog, "request-log", "", "append every request to this file as a JSON line")
	fs.Var(&c.seedFiles, "seed-file", "publish these files as one record at startup (repeatable); prints 'seeded RECID DOI CONCEPTDOI' after the URL")
	fs.StringVar(&c.seedTitle, "seed-title", "zenodotest seed", "title of the --seed-file record")
	fs.StringVar(&c.seedVersion, "seed-version", "", "version of the --seed-file record")
	fs.StringVar(&c.logLevel, "log-level", "info", "log level (debug logs every request)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	return c, nil
}

func (c *config) options(reqLog io.Writer) []zenodotest.Option {
	opts := []zenodotest.Option{
		zenodotest.WithDOIPrefix(c.doiPrefix),
		zenodotest.WithLatency(c.latency),
		zenodotest.WithBandwidth(int64(c.bandwidth)),
		zenodotest.WithRateLimit(c.rateLimit, c.rateLimitHour),
		zenodotest.WithSearchRateLimit(c.searchRateLimit),
		zenodotest.WithMaxRecordSize(int64(c.maxRecordSize)),
		zenodotest.WithIndexDelay(c.indexDelay),
	}
	if len(c.tokens) > 0 {
		opts = append(opts, zenodotest.WithTokens(c.tokens...))
	}
	if c.dir != "" {
		opts = append(opts, zenodotest.WithDir(c.dir))
	}
	if c.conceptRedirect {
		opts = append(opts, zenodotest.WithConceptRedirect())
	}
	if c.unreliableHEAD {
		opts = append(opts, zenodotest.WithUnreliableHEAD())
	}
	if reqLog != nil {
		opts = append(opts, zenodotest.WithRequestLogWriter(reqLog))
	}
	return opts
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr, nil); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			log.G(ctx).WithError(err).Error("zenodotest")
		}
		os.Exit(2)
	}
}

// run serves until ctx is done. ready, if set, receives the base URL once
// the server accepts connections.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, ready chan<- string) error {
	c, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	if err := log.SetLevel(c.logLevel); err != nil {
		return fmt.Errorf("setting the log level: %w", err)
	}
	var reqLog *os.File
	if c.requestLog != "" {
		reqLog, err = os.OpenFile(c.requestLog, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			return fmt.Errorf("opening the request log: %w", err)
		}
		defer func() { _ = reqLog.Close() }()
	}
	var w io.Writer
	if reqLog != nil {
		w = reqLog
	}
	s, err := zenodotest.Open(c.options(w)...)
	if err != nil {
		return fmt.Errorf("starting the fake Zenodo: %w", err)
	}
	defer func() {
		if err := s.Close(); err != nil {
			log.G(ctx).WithError(err).Warn("closing the fake Zenodo")
		}
	}()

	ln, err := net.Listen("tcp", c.listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", c.listen, err)
	}
	base := "http://" + ln.Addr().String()
	if _, err := fmt.Fprintln(stdout, base); err != nil {
		_ = ln.Close()
		return fmt.Errorf("printing the URL: %w", err)
	}
	if len(c.seedFiles) > 0 {
		if err := seed(s, c, stdout); err != nil {
			_ = ln.Close()
			return err
		}
	}
	srv := &http.Server{Handler: s, ReadHeaderTimeout: time.Minute}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.G(ctx).WithField("url", base).WithField("dir", s.Dir()).Info("fake Zenodo listening")
	if ready != nil {
		ready <- base
	}

	select {
	case err := <-errc:
		return fmt.Errorf("serving: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.G(ctx).WithError(err).Warn("requests still running at shutdown")
		_ = srv.Close()
	}
	return nil
}

func seed(s *zenodotest.Server, c *config, stdout io.Writer) error {
	sr := zenodotest.SeedRecord{Title: c.seedTitle, Version: c.seedVersion}
	for _, p := range c.seedFiles {
		sr.Files = append(sr.Files, zenodotest.SeedFile{Name: filepath.Base(p), Path: p})
	}
	pub, err := s.Publish(sr)
	if err != nil {
		return fmt.Errorf("seeding %s: %w", c.seedFiles.String(), err)
	}
	_, err = fmt.Fprintf(stdout, "seeded %s %s %s\n", pub.RecID, pub.DOI, pub.ConceptDOI)
	return err
}
