package bench

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	dockerconfig "github.com/containerd/containerd/v2/core/remotes/docker/config"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/integration/containerdtest"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/integration/testimage"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/resolver"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/archive"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/seekable"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/zenodo"
)

// TestMain lists what could not run here (no root, no FUSE) and, with
// CI=true, fails the run if anything was skipped.
func TestMain(m *testing.M) { os.Exit(containerdtest.Run(m)) }

// benchToken is the emulator's token for donodo push.
const benchToken = "bench-token"

// BenchmarkImages is `make bench`: for each image of the mode
// (ZS_BENCH_MODE=quick: python; full: python and scipy) it measures, in one
// run against the emulator shaped like Zenodo, donodo push, the Python
// donodo's full pull (baseline), donodo pull, and the lazy start through
// the zenodo snapshotter, then prints a markdown table and writes the
// figures as JSON (see config for the environment it reads). Run it once:
//
//	go test -run '^$' -bench '^BenchmarkImages$' -benchtime 1x -timeout 60m ./integration/bench
func BenchmarkImages(b *testing.B) {
	containerdtest.RequiresFUSE(b)
	cfg := loadConfig(b)
	specs, err := Specs(cfg.mode)
	if err != nil {
		b.Fatal(err)
	}
	v := cfg.containerd(b)
	res := &Results{
		Schema: SchemaVersion, Mode: cfg.mode, Started: time.Now(), Commit: gitDescribe(cfg.modRoot),
		Machine: machine(v.Name),
		Link:    Link{LatencyMS: float64(cfg.latency) / float64(time.Millisecond), BandwidthBytesPerSecond: cfg.bandwidth, RateLimitPerMinute: cfg.rateLimit},
	}
	// Results are written whatever happens below, so a failing case still
	// leaves the figures of the others.
	defer func() {
		res.Seconds = time.Since(res.Started).Seconds()
		res.Machine.Load1End = load1()
		res.Finish()
		writeResults(b, cfg, res)
		if cfg.strict {
			for _, t := range res.Targets {
				if !t.Met {
					b.Errorf("target not met: %s: want %s, got %s", t.Name, t.Want, t.Got)
				}
			}
		}
	}()
	for _, spec := range specs {
		res.Images = append(res.Images, ImageResult{Name: spec.Name, Command: spec.Command})
		ir := &res.Images[len(res.Images)-1]
		b.Run(spec.Name, func(b *testing.B) {
			benchImage(b, cfg, v, spec, ir)
			if c := ir.Case(KindLazy); c != nil {
				b.ReportMetric(c.FirstOutputSeconds, "lazy-first-output-s")
				b.ReportMetric(float64(c.Requests), "lazy-requests")
			}
			if c := ir.Case(KindBaseline); c != nil {
				b.ReportMetric(c.FirstOutputSeconds, "baseline-first-output-s")
			}
			if c := ir.Case(KindDonodoPull); c != nil {
				b.ReportMetric(c.FirstOutputSeconds, "donodo-pull-first-output-s")
			}
			b.ReportMetric(ir.Push.Seconds, "push-s")
		})
	}
}

// benchImage runs every case of one image, filling ir as it goes.
func benchImage(b *testing.B, cfg *config, v containerdtest.Version, spec Spec, ir *ImageResult) {
	ctx := b.Context()
	img, err := Prepare(ctx, cfg.cacheDir, spec, progress)
	if err != nil {
		b.Fatal(err)
	}
	ir.UnpackedBytes, ir.Files = img.LayerSize, img.Files
	ir.Archive.OriginalLayerBytes, ir.Archive.ImageTarGzBytes = img.Layer.Size, img.DockerArchiveGzSize

	progress("%s: measuring archive.Write and gzip on %.1f MB of layer", spec.Name, float64(img.LayerSize)/1e6)
	measureArchive(b, img, &ir.Archive)

	logDir := filepath.Join(cfg.outDir, "logs", spec.Name)
	if err := os.RemoveAll(logDir); err != nil {
		b.Fatal(err)
	}
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		b.Fatal(err)
	}
	z := newEmulator(b, cfg, img, logDir)
	progress("%s: donodo push", spec.Name)
	ir.Push = benchPush(b, cfg, v, img, z)
	ir.Push.GzipMBps = ir.Archive.GzipMBps

	progress("%s: baseline (download image.tar.gz, gunzip, ctr import)", spec.Name)
	ir.Cases = append(ir.Cases, benchBaseline(b, cfg, v, img, z))
	progress("%s: donodo pull", spec.Name)
	ir.Cases = append(ir.Cases, benchDonodoPull(b, cfg, v, img, z, ir.Push.Reference))
	progress("%s: lazy pull and first output", spec.Name)
	ir.Cases = append(ir.Cases, benchLazy(b, cfg, v, img, z, ir.Push.Reference))
}

// measureArchive writes the image with archive.Write in process and gzips
// its layer tar with gzip -6, for the sizes and speeds of the closing notes.
func measureArchive(b *testing.B, img *Image, a *ArchiveResult) {
	ctx := b.Context()
	tmp := b.TempDir()
	root, _, err := archive.LayoutRoot(img.Layout)
	if err != nil {
		b.Fatal(err)
	}
	f, err := os.Create(filepath.Join(tmp, "image.tar"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	start := time.Now()
	idx, err := archive.Write(ctx, f, archive.LayoutProvider(img.Layout), root, archive.WithTempDir(tmp))
	if err != nil {
		b.Fatalf("archive.Write: %v", err)
	}
	a.WriteSeconds = time.Since(start).Seconds()
	a.WriteMBps = float64(img.LayerSize) / 1e6 / a.WriteSeconds
	a.ArchiveBytes, a.MetadataBytes = idx.ArchiveSize, idx.MetadataEnd

	arch, err := archive.Open(ctx, f, idx.ArchiveSize, archive.WithIndex(idx))
	if err != nil {
		b.Fatalf("opening the archive written: %v", err)
	}
	mans, err := arch.Manifests(ctx)
	if err != nil || len(mans) != 1 {
		b.Fatalf("manifests of the archive written: %v (%d)", err, len(mans))
	}
	mb, err := content.ReadBlob(ctx, arch, mans[0])
	if err != nil {
		b.Fatal(err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(mb, &m); err != nil || len(m.Layers) != 1 {
		b.Fatalf("manifest of the archive written: %v (%d layers)", err, len(m.Layers))
	}
	layer := m.Layers[0]
	a.SeekableLayerBytes = layer.Size
	toc, err := arch.TOC(ctx, layer)
	if err != nil {
		b.Fatalf("TOC: %v", err)
	}
	a.Members, a.Entries = len(toc.Members), len(toc.Entries)
	tocDigest := layer.Annotations[seekable.AnnotationTOCDigest]
	for _, e := range idx.Blobs {
		if e.Digest.String() != tocDigest {
			continue
		}
		raw, err := content.ReadBlob(ctx, arch, ocispec.Descriptor{Digest: e.Digest, Size: e.Size})
		if err != nil {
			b.Fatal(err)
		}
		a.TOCGzipBytes, a.TOCBytes = e.Size, e.Size
		if zr, err := gzip.NewReader(bytes.NewReader(raw)); err == nil {
			n, err := io.Copy(io.Discard, zr)
			if err != nil {
				b.Fatalf("decompressing the TOC: %v", err)
			}
			a.TOCBytes = n
		}
	}

	in, err := os.Open(img.LayerTar)
	if err != nil {
		b.Fatal(err)
	}
	defer in.Close()
	out := &countWriter{}
	cmd := exec.CommandContext(ctx, "gzip", "-c", "-n", "-6")
	cmd.Stdin, cmd.Stdout = in, out
	start = time.Now()
	if err := cmd.Run(); err != nil {
		b.Fatalf("gzip -6 of the layer: %v", err)
	}
	a.GzipSeconds = time.Since(start).Seconds()
	a.GzipMBps = float64(img.LayerSize) / 1e6 / a.GzipSeconds
	a.OneMemberGzipBytes = out.n
}

// benchPush imports the image into a containerd and times donodo push of
// it to the emulator.
func benchPush(b *testing.B, cfg *config, v containerdtest.Version, img *Image, z *emulator) PushResult {
	d := containerdtest.Start(b, containerdtest.WithVersion(v), containerdtest.WithLogLevel("info"))
	defer d.Stop(b)
	testimage.Import(b, d, img.Layout, img.Name, testimage.NoUnpack(), testimage.ImportTimeout(10*time.Minute))

	srv := z.start(b, "push")
	tokenFile := filepath.Join(b.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(benchToken), 0o600); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(b.Context(), cfg.stepTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, cfg.bin("donodo"), "--address", d.Address(), "--namespace", d.Namespace(),
		"--zenodo-url", srv.url, "--token-file", tokenFile, "--json",
		"push", "--auto-publish", "--tmp-dir", b.TempDir(), img.Name)
	cmd.Env = cleanEnv()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		b.Fatalf("donodo push: %v\n%s%s", err, stdout.String(), stderr.String())
	}
	p := PushResult{Seconds: time.Since(start).Seconds(), LinkMBps: float64(cfg.bandwidth) / 1e6, PeakRSSBytes: maxRSS(cmd.ProcessState)}
	var out struct {
		Reference   string `json:"reference"`
		ArchiveSize int64  `json:"archive_size"`
		Published   bool   `json:"published"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil || !out.Published || out.Reference == "" {
		b.Fatalf("donodo push --json printed %q (%v)", stdout.String(), err)
	}
	p.Reference, p.ArchiveBytes = out.Reference, out.ArchiveSize
	p.UploadMBps = float64(p.ArchiveBytes) / 1e6 / p.Seconds
	p.UnpackedMBps = float64(img.LayerSize) / 1e6 / p.Seconds
	p.Traffic = srv.stop(b, start)
	return p
}

// benchBaseline is the Python donodo's pull: download image.tar.gz in one
// GET (after the record's JSON), gunzip it, ctr import it, then run the
// command.
func benchBaseline(b *testing.B, cfg *config, v containerdtest.Version, img *Image, z *emulator) Case {
	d := containerdtest.Start(b, containerdtest.WithVersion(v), containerdtest.WithLogLevel("info"))
	defer d.Stop(b)
	srv := z.start(b, "baseline")
	tmp := b.TempDir()
	ctx, cancel := context.WithTimeout(b.Context(), cfg.stepTimeout)
	defer cancel()
	c := Case{Kind: KindBaseline, Steps: map[string]float64{}}

	start := time.Now()
	zc, err := zenodo.New(srv.url, zenodo.WithRateLimit(0, 0), zenodo.WithHourlyLimit(0))
	if err != nil {
		b.Fatal(err)
	}
	rec, err := zc.GetRecord(ctx, z.seedRecID)
	if err != nil {
		b.Fatalf("baseline: reading record %s: %v", z.seedRecID, err)
	}
	key := ""
	for _, f := range rec.Files {
		if strings.HasSuffix(f.Key, ".tar.gz") {
			key = f.Key
		}
	}
	if key == "" {
		b.Fatalf("baseline: no .tar.gz in record %s", z.seedRecID)
	}
	gzPath := filepath.Join(tmp, key)
	if err := download(ctx, zc, z.seedRecID, key, gzPath); err != nil {
		b.Fatalf("baseline: %v", err)
	}
	c.Steps["download"] = time.Since(start).Seconds()

	step := time.Now()
	tarPath := filepath.Join(tmp, "image.tar")
	if err := gunzip(ctx, gzPath, tarPath); err != nil {
		b.Fatalf("baseline: %v", err)
	}
	c.Steps["gunzip"] = time.Since(step).Seconds()

	step = time.Now()
	if out, err := d.CtrCommand(ctx, "images", "import", tarPath).CombinedOutput(); err != nil {
		b.Fatalf("baseline: ctr images import: %v\n%s", err, out)
	}
	c.Steps["import"] = time.Since(step).Seconds()
	c.ReadySeconds = time.Since(start).Seconds()

	runFirstOutput(b, cfg, d, &c, start, "", img.Name, img.Spec.Command)
	c.Traffic = srv.stop(b, start)
	c.Requests, c.Bytes = c.Traffic.Requests, c.Traffic.Bytes
	return c
}

// benchDonodoPull runs donodo pull (full) into a containerd, then the
// command.
func benchDonodoPull(b *testing.B, cfg *config, v containerdtest.Version, img *Image, z *emulator, ref string) Case {
	d := containerdtest.Start(b, containerdtest.WithVersion(v), containerdtest.WithLogLevel("info"))
	defer d.Stop(b)
	srv := z.start(b, "donodo-pull")
	ctx, cancel := context.WithTimeout(b.Context(), cfg.stepTimeout)
	defer cancel()
	c := Case{Kind: KindDonodoPull, Steps: map[string]float64{}, PeakRSSOf: "donodo"}

	cmd := exec.CommandContext(ctx, cfg.bin("donodo"), "--address", d.Address(), "--namespace", d.Namespace(),
		"--zenodo-url", srv.url, "-q", "pull", ref)
	cmd.Env = cleanEnv()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		b.Fatalf("donodo pull: %v\n%s%s", err, stdout.String(), stderr.String())
	}
	c.ReadySeconds = time.Since(start).Seconds()
	c.Steps["pull"] = c.ReadySeconds
	c.PeakRSSBytes = maxRSS(cmd.ProcessState)

	runFirstOutput(b, cfg, d, &c, start, "", ref, img.Spec.Command)
	c.Traffic = srv.stop(b, start)
	c.Requests, c.Bytes = c.Traffic.Requests, c.Traffic.Bytes
	return c
}

// benchLazy pulls through the snapshotter's registry endpoint with
// containerd's client, unpacking with the zenodo snapshotter as nerdctl
// does, runs the command from the lazy layers, then waits for the
// background fill.
func benchLazy(b *testing.B, cfg *config, v containerdtest.Version, img *Image, z *emulator, ref string) Case {
	srv := z.start(b, "lazy")
	sd := startSnapshotter(b, cfg, srv.url, z.logDir)
	defer sd.stop(b)
	certs := filepath.Join(b.TempDir(), "certs.d")
	if err := resolver.InstallHosts(certs, sd.registry); err != nil {
		b.Fatal(err)
	}
	d := containerdtest.Start(b, containerdtest.WithVersion(v), containerdtest.WithLogLevel("info"),
		containerdtest.WithProxySnapshotter(resolver.SnapshotterName, sd.socket))
	defer d.Stop(b)
	ctx, cancel := context.WithTimeout(d.Context(b.Context()), cfg.stepTimeout)
	defer cancel()
	c := Case{Kind: KindLazy, Steps: map[string]float64{}, PeakRSSOf: "zenodo-snapshotter"}

	res := docker.NewResolver(docker.ResolverOptions{
		Hosts: dockerconfig.ConfigureHosts(ctx, dockerconfig.HostOptions{HostDir: dockerconfig.HostDirFromRoot(certs)}),
	})
	start := time.Now()
	if _, err := d.Client().Pull(ctx, ref, client.WithPullUnpack, client.WithPullSnapshotter(resolver.SnapshotterName),
		client.WithResolver(res)); err != nil {
		b.Fatalf("lazy pull of %s: %v (snapshotter log %s)", ref, err, sd.logPath)
	}
	c.ReadySeconds = time.Since(start).Seconds()
	c.Steps["pull"] = c.ReadySeconds

	runFirstOutput(b, cfg, d, &c, start, resolver.SnapshotterName, ref, img.Spec.Command)
	m := sd.metrics(b)
	c.Requests = int(m.Sum("zenodo_snapshotter_zenodo_requests_total", ""))
	c.Bytes = int64(m.Sum("zenodo_snapshotter_zenodo_transfer_bytes_total", `method="GET"`))
	c.OnDemandRequests = int(m.Sum("zenodo_snapshotter_layer_fetches_total", `kind="on-demand"`))
	c.OnDemandBytes = int64(m.Sum("zenodo_snapshotter_layer_fetched_bytes_total", `kind="on-demand"`))
	c.RateLimitWaits = int(m.Sum("zenodo_snapshotter_zenodo_rate_limit_waits_total", ""))
	c.RateLimitWaitSeconds = m.Sum("zenodo_snapshotter_zenodo_rate_limit_wait_seconds_total", "")

	// The background fill: one request per layer, then quiet.
	deadline := time.Now().Add(cfg.fillWait)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for time.Now().Before(deadline) {
		m := sd.metrics(b)
		if m.Sum("zenodo_snapshotter_layer_fills_total", "") >= 1 {
			c.FillSeconds = time.Since(start).Seconds()
			if failed := m.Sum("zenodo_snapshotter_layer_fills_total", `result="failed"`); failed > 0 {
				b.Logf("lazy: %v background fills failed (see %s)", failed, sd.logPath)
				c.FillSeconds = 0
			}
			break
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			b.Fatalf("lazy: waiting for the background fill: %v", ctx.Err())
		}
	}
	c.PeakRSSBytes = sd.peakRSS(b)
	c.Traffic = srv.stop(b, start)
	return c
}

// runFirstOutput runs the command in the image with ctr run and records
// the time from start to its first output line, and the run step.
func runFirstOutput(b *testing.B, cfg *config, d *containerdtest.Daemon, c *Case, start time.Time, snapshotter, ref string, command []string) {
	ctx, cancel := context.WithTimeout(b.Context(), cfg.stepTimeout)
	defer cancel()
	args := []string{"run", "--rm"}
	if snapshotter != "" {
		args = append(args, "--snapshotter", snapshotter)
	}
	args = append(args, ref, "bench-"+c.Kind)
	args = append(args, command...)
	cmd := d.CtrCommand(ctx, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	step := time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatalf("ctr run: %v", err)
	}
	br := bufio.NewReader(stdout)
	line, err := br.ReadString('\n')
	if err == nil {
		c.FirstOutputSeconds = time.Since(start).Seconds()
		c.Steps["run"] = time.Since(step).Seconds()
		c.Output = strings.TrimSpace(line)
	}
	_, _ = io.Copy(io.Discard, br)
	werr := cmd.Wait()
	if err != nil || werr != nil {
		b.Fatalf("%s: no output line (%v, %v)\nstderr:\n%s", strings.Join(cmd.Args, " "), err, werr, stderr.String())
	}
}

// progress reports a step on stderr at once (b.Logf shows only when the
// benchmark ends).
func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench %s: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// download copies the record's file key to path in one GET.
func download(ctx context.Context, zc *zenodo.Client, recID, key, path string) error {
	rc, err := zc.Open(ctx, recID, key)
	if err != nil {
		return fmt.Errorf("downloading %s: %w", key, err)
	}
	defer rc.Close()
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, rc); err != nil {
		f.Close()
		return fmt.Errorf("downloading %s: %w", key, err)
	}
	return f.Close()
}

// gunzip decompresses src into dst with gzip(1).
func gunzip(ctx context.Context, src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	defer out.Close()
	cmd := exec.CommandContext(ctx, "gzip", "-d", "-c")
	var stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = in, out, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("gunzip %s: %w: %s", src, err, stderr.String())
	}
	return out.Close()
}

// maxRSS is a finished process's peak resident set in bytes.
func maxRSS(ps *os.ProcessState) int64 {
	if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
		return ru.Maxrss * 1024
	}
	return 0
}

// cleanEnv is the environment of donodo: no token from the caller's
// environment, no containerd defaults.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case zenodo.TokenEnv, "ZENODO_URL", "CONTAINERD_ADDRESS", "CONTAINERD_NAMESPACE":
			continue
		}
		env = append(env, kv)
	}
	return env
}

// config is what the benchmark reads from its environment.
type config struct {
	// mode is ZS_BENCH_MODE: quick (python) or full (python, scipy); the
	// default is quick.
	mode string
	// cacheDir is ZS_BENCH_CACHE, default $CACHE/bench with CACHE
	// defaulting to /var/cache/zenodo-snapshotter.
	cacheDir string
	// binDir is ZS_BENCH_BIN, default <module>/bin: donodo, zenodotest and
	// zenodo-snapshotter as `make build` puts them.
	binDir string
	// outDir is ZS_BENCH_OUT, default <module>/bench/out.
	outDir string
	// containerdVersion is ZS_BENCH_CONTAINERD: "1" (Debian's 1.6, the
	// default) or "2" (the 2.x `make tools` builds).
	containerdVersion string
	// latency (ZS_BENCH_LATENCY, default 100ms) goes before the first byte
	// of every response; bandwidth (ZS_BENCH_BANDWIDTH bytes/s, default
	// 25000000) per connection; rateLimit (ZS_BENCH_RATE_LIMIT, default 60)
	// requests per minute.
	latency   time.Duration
	bandwidth int64
	rateLimit int
	// fillWait (ZS_BENCH_FILL_WAIT, default 5m) bounds the wait for the
	// lazy case's background fill; stepTimeout (ZS_BENCH_STEP_TIMEOUT,
	// default 15m) every other step.
	fillWait, stepTimeout time.Duration
	// strict (ZS_BENCH_STRICT=true) fails the benchmark when a target is
	// not met; by default the table only says so.
	strict bool

	modRoot string
}

func loadConfig(b *testing.B) *config {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		b.Fatalf("finding the module root: %v", err)
	}
	modRoot := filepath.Dir(strings.TrimSpace(string(out)))
	cache := os.Getenv("CACHE")
	if cache == "" {
		cache = "/var/cache/zenodo-snapshotter"
	}
	c := &config{
		mode:              env("ZS_BENCH_MODE", "quick"),
		cacheDir:          env("ZS_BENCH_CACHE", filepath.Join(cache, "bench")),
		binDir:            env("ZS_BENCH_BIN", filepath.Join(modRoot, "bin")),
		outDir:            env("ZS_BENCH_OUT", filepath.Join(modRoot, "bench", "out")),
		containerdVersion: env("ZS_BENCH_CONTAINERD", "1"),
		strict:            os.Getenv("ZS_BENCH_STRICT") == "true",
		modRoot:           modRoot,
	}
	durations := []struct {
		key string
		def time.Duration
		dst *time.Duration
	}{
		{"ZS_BENCH_LATENCY", 100 * time.Millisecond, &c.latency},
		{"ZS_BENCH_FILL_WAIT", 5 * time.Minute, &c.fillWait},
		{"ZS_BENCH_STEP_TIMEOUT", 15 * time.Minute, &c.stepTimeout},
	}
	for _, d := range durations {
		v, err := time.ParseDuration(env(d.key, d.def.String()))
		if err != nil {
			b.Fatalf("%s: %v", d.key, err)
		}
		*d.dst = v
	}
	if c.bandwidth, err = strconv.ParseInt(env("ZS_BENCH_BANDWIDTH", "25000000"), 10, 64); err != nil {
		b.Fatalf("ZS_BENCH_BANDWIDTH: %v", err)
	}
	if c.rateLimit, err = strconv.Atoi(env("ZS_BENCH_RATE_LIMIT", "60")); err != nil {
		b.Fatalf("ZS_BENCH_RATE_LIMIT: %v", err)
	}
	for _, name := range []string{"donodo", "zenodotest", "zenodo-snapshotter"} {
		if _, err := os.Stat(c.bin(name)); err != nil {
			b.Fatalf("%s is missing: run `make build` first (or set ZS_BENCH_BIN): %v", name, err)
		}
	}
	return c
}

func env(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func (c *config) bin(name string) string { return filepath.Join(c.binDir, name) }

func (c *config) containerd(b *testing.B) containerdtest.Version {
	if c.containerdVersion == "2" {
		return containerdtest.Containerd2(b)
	}
	return containerdtest.Debian(b)
}

// writeResults prints the table and writes results.json and results.md to
// the output directory, plus a copy of the JSON named after the commit
// and time, for comparisons across commits.
func writeResults(b *testing.B, cfg *config, res *Results) {
	var md bytes.Buffer
	if err := res.WriteMarkdown(&md); err != nil {
		b.Error(err)
	}
	fmt.Printf("\n%s\n", md.String())
	js, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		b.Error(err)
		return
	}
	if err := os.MkdirAll(cfg.outDir, 0o755); err != nil {
		b.Error(err)
		return
	}
	stamp := res.Commit + "-" + res.Mode + "-" + res.Started.UTC().Format("20060102T150405Z")
	for name, data := range map[string][]byte{
		"results.json":               js,
		"results.md":                 md.Bytes(),
		"results-" + stamp + ".json": js,
	} {
		if err := os.WriteFile(filepath.Join(cfg.outDir, name), append(data, '\n'), 0o644); err != nil {
			b.Error(err)
		}
	}
	fmt.Printf("results: %s (and %s, results-%s.json)\n", filepath.Join(cfg.outDir, "results.json"), "results.md", stamp)
}

// gitDescribe names the commit measured.
func gitDescribe(dir string) string {
	cmd := exec.Command("git", "describe", "--always", "--dirty")
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}

func machine(containerd string) Machine {
	m := Machine{CPUs: runtime.NumCPU(), Go: runtime.Version(), Containerd: containerd}
	var u unix.Utsname
	if err := unix.Uname(&u); err == nil {
		m.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err == nil {
		m.MemoryBytes = int64(si.Totalram) * int64(si.Unit)
	}
	m.Load1Start = load1()
	return m
}

// load1 is the 1-minute load average.
func load1() float64 {
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil {
		return 0
	}
	return float64(si.Loads[0]) / (1 << unix.SI_LOAD_SHIFT)
}

// freePort returns a loopback address that was free a moment ago.
func freePort(b *testing.B) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// httpGet fetches a small URL with a bounded wait.
func httpGet(ctx context.Context, url string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return io.ReadAll(io.LimitReader(resp.Body, 64<<20))
}
