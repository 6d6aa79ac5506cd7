package main

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/docker/go-units"
	"github.com/pelletier/go-toml/v2"
	"github.com/spf13/pflag"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/zenodo"
)

// Defaults of the configuration.
const (
	DefaultConfigPath     = "/etc/zenodo-snapshotter/config.toml"
	DefaultRoot           = "/var/lib/zenodo-snapshotter"
	DefaultSocket         = "/run/zenodo-snapshotter/snapshotter.sock"
	DefaultRegistryListen = "127.0.0.1:5000"
	DefaultCacheSize      = "10GiB"
	DefaultReadTimeout    = 30 * time.Second
)

// Config is the daemon's configuration file (TOML). Every field has a
// command-line flag that overrides it.
type Config struct {
	// Root holds the snapshotter's snapshots, the chunk cache and the
	// state that lets layers be mounted again without network.
	Root string `toml:"root" comment:"Directory of snapshots, chunk cache and state (what remounts need without network)."`
	// Socket is the gRPC socket containerd's proxy_plugins names.
	Socket string `toml:"socket" comment:"The snapshotter's gRPC socket, named in containerd's [proxy_plugins.zenodo]."`
	// LogLevel is trace, debug, info, warn or error.
	LogLevel string `toml:"log_level" comment:"trace, debug, info, warn or error."`

	Zenodo   ZenodoConfig   `toml:"zenodo"`
	Cache    CacheConfig    `toml:"cache"`
	Fetch    FetchConfig    `toml:"fetch"`
	Registry RegistryConfig `toml:"registry"`
	Metrics  MetricsConfig  `toml:"metrics"`
}

// ZenodoConfig says which Zenodo instances to read and how.
type ZenodoConfig struct {
	URL              string `toml:"url" comment:"Base URL of the instance serving zenodo.org references (10.5281 DOIs); point it at an emulator for tests."`
	SandboxURL       string `toml:"sandbox_url" comment:"Base URL of the instance serving sandbox.zenodo.org references (10.5072 DOIs); \"\" turns them off."`
	TokenFile        string `toml:"token_file" comment:"File holding the access token for url (else $ZENODO_TOKEN; none: guest access, enough for public records)."`
	SandboxTokenFile string `toml:"sandbox_token_file" comment:"File holding the access token for sandbox_url."`
	// RequestsPerMinute and RequestsPerHour are the client's own request
	// budget, kept below Zenodo's rate limits (0: the client's defaults).
	RequestsPerMinute int      `toml:"requests_per_minute" comment:"Request budget per minute (0: 60 as a guest, 100 with a token)."`
	RequestsPerHour   int      `toml:"requests_per_hour" comment:"Request budget per hour (0: 2000 as a guest, 5000 with a token)."`
	Timeout           Duration `toml:"timeout" comment:"How long one request may make no progress before it is retried."`
}

// CacheConfig bounds the on-disk chunk cache.
type CacheConfig struct {
	Size Size `toml:"size" comment:"Bound of the on-disk chunk cache (\"10GiB\", \"512MB\"); least recently used chunks are evicted past it."`
}

// FetchConfig says how layer data is fetched.
type FetchConfig struct {
	BackgroundFill bool     `toml:"background_fill" comment:"Stream each mounted layer whole into the cache in the background (one request per layer)."`
	ReadTimeout    Duration `toml:"read_timeout" comment:"A read of uncached data that gets nothing for this long fails with EIO (never a hang)."`
}

// RegistryConfig is the read-only OCI registry endpoint.
type RegistryConfig struct {
	Listen string `toml:"listen" comment:"Address of the read-only registry endpoint hosts.toml points at (\"\" or \"0\": off)."`
}

// MetricsConfig is the Prometheus endpoint.
type MetricsConfig struct {
	Listen string `toml:"listen" comment:"Address serving Prometheus /metrics (\"\" or \"0\": off)."`
}

// DefaultConfig returns the configuration used where the file and the
// flags say nothing.
func DefaultConfig() Config {
	size, _ := units.RAMInBytes(DefaultCacheSize)
	return Config{
		Root:     DefaultRoot,
		Socket:   DefaultSocket,
		LogLevel: "info",
		Zenodo: ZenodoConfig{
			URL:        zenodo.ProductionURL,
			SandboxURL: zenodo.SandboxURL,
			Timeout:    Duration(time.Minute),
		},
		Cache:    CacheConfig{Size: Size(size)},
		Fetch:    FetchConfig{BackgroundFill: true, ReadTimeout: Duration(DefaultReadTimeout)},
		Registry: RegistryConfig{Listen: DefaultRegistryListen},
	}
}

// LoadConfig reads the TOML file path over the defaults. A missing file is
// no error when mayBeMissing (the default path); unknown keys are.
func LoadConfig(path string, mayBeMissing bool) (Config, error) {
	cfg := DefaultConfig()
	if path == "" {
		return cfg, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		if mayBeMissing && errors.Is(err, fs.ErrNotExist) {
			return cfg, nil
		}
		return cfg, fmt.Errorf("reading config: %w", err)
	}
	dec := toml.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cfg); err != nil {
		var sm *toml.StrictMissingError
		if errors.As(err, &sm) {
			return cfg, fmt.Errorf("config %s: %s: %w", path, sm.String(), errdefs.ErrInvalidArgument)
		}
		return cfg, fmt.Errorf("config %s: %v: %w", path, err, errdefs.ErrInvalidArgument)
	}
	return cfg, nil
}

// MarshalConfig returns cfg as TOML, with a comment on every key.
func MarshalConfig(cfg Config) ([]byte, error) {
	return toml.Marshal(cfg)
}

// Validate checks cfg and normalizes its paths.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf(format+": %w", append(args, errdefs.ErrInvalidArgument)...))
	}
	for _, p := range []*string{&c.Root, &c.Socket} {
		if *p == "" {
			bad("root and socket must be set")
			continue
		}
		abs, err := filepath.Abs(*p)
		if err != nil {
			bad("path %q: %v", *p, err)
			continue
		}
		*p = abs
	}
	switch strings.ToLower(c.LogLevel) {
	case "trace", "debug", "info", "warn", "warning", "error":
	default:
		bad("log_level %q: want trace, debug, info, warn or error", c.LogLevel)
	}
	if c.Zenodo.URL == "" {
		bad("zenodo.url must be set")
	}
	if c.Zenodo.RequestsPerMinute < 0 || c.Zenodo.RequestsPerHour < 0 {
		bad("request budgets must not be negative")
	}
	if c.Zenodo.Timeout < 0 {
		bad("zenodo.timeout must not be negative")
	}
	if c.Cache.Size <= 0 {
		bad("cache.size must be positive")
	}
	if c.Fetch.ReadTimeout <= 0 {
		bad("fetch.read_timeout must be positive")
	}
	for _, l := range []*string{&c.Registry.Listen, &c.Metrics.Listen} {
		if *l == "0" {
			*l = ""
		}
		if *l == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(*l); err != nil {
			bad("listen address %q: %v", *l, err)
		}
	}
	return errors.Join(errs...)
}

// addConfigFlags defines the flags that override the file.
func addConfigFlags(fl *pflag.FlagSet) {
	d := DefaultConfig()
	fl.String("config", DefaultConfigPath, "TOML configuration file (a missing default file is fine)")
	fl.String("root", d.Root, "directory of snapshots, cache and state")
	fl.String("socket", d.Socket, "gRPC socket for containerd's proxy plugin")
	fl.String("log-level", d.LogLevel, "log level: trace, debug, info, warn, error")
	fl.String("zenodo-url", d.Zenodo.URL, "base URL serving zenodo.org references (an emulator's, for tests)")
	fl.String("sandbox-url", d.Zenodo.SandboxURL, `base URL serving sandbox.zenodo.org references ("" = off)`)
	fl.String("token-file", "", "file holding the Zenodo access token (else $ZENODO_TOKEN)")
	fl.String("sandbox-token-file", "", "file holding the sandbox access token")
	fl.Int("requests-per-minute", 0, "request budget per minute (0: the client's default)")
	fl.Int("requests-per-hour", 0, "request budget per hour (0: the client's default)")
	fl.Duration("zenodo-timeout", time.Duration(d.Zenodo.Timeout), "how long a request may make no progress")
	fl.String("cache-size", DefaultCacheSize, "bound of the on-disk chunk cache")
	fl.Bool("background-fill", d.Fetch.BackgroundFill, "stream mounted layers whole into the cache in the background")
	fl.Duration("read-timeout", time.Duration(d.Fetch.ReadTimeout), "reads of uncached data fail with EIO after this long")
	fl.String("registry-listen", d.Registry.Listen, `address of the registry endpoint ("" or 0: off)`)
	fl.String("metrics-listen", "", `address of the Prometheus /metrics endpoint ("" or 0: off)`)
}

// configFromFlags loads the file --config names and applies the flags the
// user set on top.
func configFromFlags(fl *pflag.FlagSet) (Config, error) {
	path, _ := fl.GetString("config")
	cfg, err := LoadConfig(path, !fl.Changed("config"))
	if err != nil {
		return cfg, err
	}
	var errs []error
	str := func(name string, dst *string) {
		if fl.Changed(name) {
			v, err := fl.GetString(name)
			errs = append(errs, err)
			*dst = v
		}
	}
	integer := func(name string, dst *int) {
		if fl.Changed(name) {
			v, err := fl.GetInt(name)
			errs = append(errs, err)
			*dst = v
		}
	}
	dur := func(name string, dst *Duration) {
		if fl.Changed(name) {
			v, err := fl.GetDuration(name)
			errs = append(errs, err)
			*dst = Duration(v)
		}
	}
	str("root", &cfg.Root)
	str("socket", &cfg.Socket)
	str("log-level", &cfg.LogLevel)
	str("zenodo-url", &cfg.Zenodo.URL)
	str("sandbox-url", &cfg.Zenodo.SandboxURL)
	str("token-file", &cfg.Zenodo.TokenFile)
	str("sandbox-token-file", &cfg.Zenodo.SandboxTokenFile)
	integer("requests-per-minute", &cfg.Zenodo.RequestsPerMinute)
	integer("requests-per-hour", &cfg.Zenodo.RequestsPerHour)
	dur("zenodo-timeout", &cfg.Zenodo.Timeout)
	if fl.Changed("cache-size") {
		v, _ := fl.GetString("cache-size")
		errs = append(errs, cfg.Cache.Size.UnmarshalText([]byte(v)))
	}
	if fl.Changed("background-fill") {
		v, err := fl.GetBool("background-fill")
		errs = append(errs, err)
		cfg.Fetch.BackgroundFill = v
	}
	dur("read-timeout", &cfg.Fetch.ReadTimeout)
	str("registry-listen", &cfg.Registry.Listen)
	str("metrics-listen", &cfg.Metrics.Listen)
	if err := errors.Join(errs...); err != nil {
		return cfg, fmt.Errorf("reading flags: %w", err)
	}
	return cfg, cfg.Validate()
}

// Duration is a time.Duration written as a string ("30s", "1m") in TOML.
type Duration time.Duration

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(strings.TrimSpace(string(b)))
	if err != nil {
		return fmt.Errorf("duration %q: %w", b, errdefs.ErrInvalidArgument)
	}
	*d = Duration(v)
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// Size is a size in bytes written as a string with a unit ("10GiB",
// "512MB"; units are powers of 1024 either way) in TOML.
type Size int64

// UnmarshalText implements encoding.TextUnmarshaler.
func (s *Size) UnmarshalText(b []byte) error {
	v, err := units.RAMInBytes(strings.TrimSpace(string(b)))
	if err != nil {
		return fmt.Errorf("size %q: %w", b, errdefs.ErrInvalidArgument)
	}
	*s = Size(v)
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (s Size) MarshalText() ([]byte, error) { return []byte(units.BytesSize(float64(s))), nil }
