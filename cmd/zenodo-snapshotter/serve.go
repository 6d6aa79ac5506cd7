package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/log"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/resolver"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/cache"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/lazy"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/remote"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/snapshot"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/zenodo"
)

// shutdownGrace bounds how long the HTTP endpoints wait for requests in
// flight when the daemon stops.
const shutdownGrace = 5 * time.Second

func newServeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the snapshotter, the registry endpoint and the metrics endpoint (the default)",
		Long: `Run the containerd proxy snapshotter (gRPC on --socket), the read-only
registry endpoint for zenodo.org references (--registry-listen) and the
Prometheus endpoint (--metrics-listen) until SIGINT or SIGTERM, then unmount
every lazy layer and exit. Settings come from --config (TOML, see
"zenodo-snapshotter config --defaults"); flags override the file.`,
		Args: cobra.NoArgs,
		RunE: runServe,
	}
	addConfigFlags(cmd.Flags())
	return cmd
}

func runServe(cmd *cobra.Command, _ []string) error {
	cfg, err := configFromFlags(cmd.Flags())
	if err != nil {
		return err
	}
	if err := log.SetLevel(cfg.LogLevel); err != nil {
		return fmt.Errorf("setting log level: %w", err)
	}
	return serve(cmd.Context(), cfg)
}

// daemon is what serve builds, in the order it is torn down.
type daemon struct {
	cache   cache.Cache
	openers []*remote.Opener
	fs      lazy.FileSystem
	sn      interface{ Close() error }
}

func (d *daemon) close(ctx context.Context) {
	if d.sn != nil {
		if err := d.sn.Close(); err != nil {
			log.G(ctx).WithError(err).Warn("closing snapshotter")
		}
	}
	if d.fs != nil {
		if err := d.fs.Close(); err != nil {
			log.G(ctx).WithError(err).Warn("closing lazy filesystem")
		}
	}
	for _, op := range d.openers {
		if err := op.Close(); err != nil {
			log.G(ctx).WithError(err).Warn("closing Zenodo opener")
		}
	}
	if d.cache != nil {
		if err := d.cache.Close(); err != nil {
			log.G(ctx).WithError(err).Warn("closing cache")
		}
	}
}

// serve runs the daemon until ctx is cancelled.
func serve(ctx context.Context, cfg Config) (retErr error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics, err := lazy.NewMetrics(reg)
	if err != nil {
		return err
	}

	d := &daemon{}
	defer func() { d.close(log.WithLogger(context.Background(), log.G(ctx))) }()
	if err := os.MkdirAll(cfg.Root, 0o700); err != nil {
		return fmt.Errorf("creating root: %w", err)
	}
	d.cache, err = cache.NewDirectory(filepath.Join(cfg.Root, "cache"), cache.WithMaxBytes(int64(cfg.Cache.Size)),
		cache.WithVerify(cache.VerifyDigest), cache.WithObserver(metrics.CacheObserver()))
	if err != nil {
		return fmt.Errorf("opening cache: %w", err)
	}
	if err := metrics.WatchCache(d.cache); err != nil {
		return err
	}

	instances := []struct {
		host      zenodo.Host
		url       string
		tokenFile string
		envToken  bool
	}{
		{zenodo.HostProduction, cfg.Zenodo.URL, cfg.Zenodo.TokenFile, true},
		{zenodo.HostSandbox, cfg.Zenodo.SandboxURL, cfg.Zenodo.SandboxTokenFile, false},
	}
	openers := map[zenodo.Host]lazy.Opener{}
	sources := map[zenodo.Host]resolver.Source{}
	for _, in := range instances {
		if in.url == "" {
			continue
		}
		opts := []zenodo.Option{zenodo.WithObserver(metrics.ZenodoObserver()), zenodo.WithTimeout(time.Duration(cfg.Zenodo.Timeout))}
		switch {
		case in.tokenFile != "":
			opts = append(opts, zenodo.WithTokenFile(in.tokenFile))
		case in.envToken:
			opts = append(opts, zenodo.WithToken(zenodo.TokenFromEnv()))
		}
		if n := cfg.Zenodo.RequestsPerMinute; n > 0 {
			opts = append(opts, zenodo.WithRateLimit(n, 0))
		}
		if n := cfg.Zenodo.RequestsPerHour; n > 0 {
			opts = append(opts, zenodo.WithHourlyLimit(n))
		}
		client, err := zenodo.New(in.url, opts...)
		if err != nil {
			return fmt.Errorf("creating Zenodo client for %s: %w", in.host, err)
		}
		op := remote.NewOpener(client,
			remote.WithCache(d.cache),
			remote.WithStateDir(filepath.Join(cfg.Root, "state", string(in.host))),
			remote.WithBackgroundFill(cfg.Fetch.BackgroundFill),
			remote.WithObserver(metrics.RemoteObserver()))
		d.openers = append(d.openers, op)
		openers[in.host] = lazy.RemoteOpener(op)
		sources[in.host] = resolver.NewRemoteSource(client, op)
		log.G(ctx).WithFields(log.Fields{"host": in.host, "url": in.url, "authenticated": client.Authenticated()}).Info("reading Zenodo instance")
	}

	d.fs, err = lazy.NewFileSystem(lazy.Hosts(openers),
		lazy.WithBackgroundFill(cfg.Fetch.BackgroundFill),
		lazy.WithReadTimeout(time.Duration(cfg.Fetch.ReadTimeout)),
		lazy.WithMetrics(metrics))
	if err != nil {
		return err
	}
	sn, err := snapshot.NewSnapshotter(ctx, filepath.Join(cfg.Root, "snapshotter"), d.fs,
		snapshot.WithObserver(metrics.SnapshotObserver()))
	if err != nil {
		return fmt.Errorf("starting snapshotter: %w", err)
	}
	d.sn = sn

	// Listen before serving anything, so a taken address fails at once.
	var servers []*httpServer
	defer func() {
		for _, s := range servers {
			s.l.Close()
		}
	}()
	if cfg.Registry.Listen != "" {
		s, err := listenHTTP("registry endpoint", cfg.Registry.Listen, resolver.NewHandler(resolver.Hosts(sources)))
		if err != nil {
			return err
		}
		servers = append(servers, s)
	}
	if cfg.Metrics.Listen != "" {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
		s, err := listenHTTP("metrics endpoint", cfg.Metrics.Listen, mux)
		if err != nil {
			return err
		}
		servers = append(servers, s)
	}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		return snapshot.Serve(gctx, sn, cfg.Socket, snapshot.OnListening(func(net.Addr) {
			log.G(ctx).WithField("socket", cfg.Socket).Info("snapshotter ready")
		}))
	})
	for _, s := range servers {
		s.serve(gctx, g)
	}
	err = g.Wait()
	log.G(ctx).Info("stopping: unmounting lazy layers")
	return err
}

// httpServer is an HTTP endpoint of the daemon.
type httpServer struct {
	what string
	l    net.Listener
	srv  *http.Server
}

func listenHTTP(what, addr string, h http.Handler) (*httpServer, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listening for the %s on %s: %w", what, addr, err)
	}
	return &httpServer{what: what, l: l, srv: &http.Server{Handler: h, ReadHeaderTimeout: 30 * time.Second}}, nil
}

// serve serves in g until ctx ends, then shuts the server down.
func (s *httpServer) serve(ctx context.Context, g *errgroup.Group) {
	s.srv.BaseContext = func(net.Listener) context.Context { return ctx }
	log.G(ctx).WithField("address", s.l.Addr().String()).Infof("serving %s", s.what)
	g.Go(func() error {
		err := s.srv.Serve(s.l)
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("serving the %s: %w", s.what, err)
	})
	g.Go(func() error {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
		defer cancel()
		if err := s.srv.Shutdown(sctx); err != nil {
			s.srv.Close()
		}
		return nil
	})
}
