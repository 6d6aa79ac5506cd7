package integration

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/core/remotes/docker/config"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/moby/sys/mountinfo"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/integration/containerdtest"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/integration/testimage"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/internal/testutil"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/resolver"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/archive"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/snapshot"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/zenodo"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/zenodo/zenodotest"
)

const (
	// lazyRandomMiB is the size of the random-data layer of the big test
	// image; its first command never reads it.
	lazyRandomMiB = 100
	// lazyCacheSize bounds the daemon's chunk cache below the image's size,
	// so reading the whole tree evicts.
	lazyCacheSize = 48 << 20
	// lazyReadTimeout is how long a read of uncached data may wait for an
	// unreachable Zenodo before it fails with EIO. It bounds every read of
	// the tests, so it leaves room for a loaded CI machine; it must stay
	// below the 7.5 s the daemon's Zenodo client spends at least on its
	// retries of a refused connection (backoffs of 0.5-1, 1-2, 2-4 and
	// 4-8 s), so that an offline read ends by this timeout.
	lazyReadTimeout = 6 * time.Second
	// lazyTag is the tag (the record's metadata.version) of the test images.
	lazyTag = "1.0"
	// readyTimeout bounds every wait for a daemon to answer.
	readyTimeout = 60 * time.Second
	// zenodoLatency and zenodoBandwidth shape the fake Zenodo like the real
	// one (DESIGN §8: about 100 ms round trip, 20-30 MB/s per connection).
	zenodoLatency   = 100 * time.Millisecond
	zenodoBandwidth = 25 << 20
	// plainGreeting is what the image without TOCs prints.
	plainGreeting = "layers archived byte for byte, read whole\n"
)

// TestLazyPull runs images archived in records of the fake Zenodo lazily
// with the zenodo-snapshotter daemon (built by the test, run as a
// subprocess) as containerd's proxy snapshotter, on every available
// containerd: a lazy pull by containerd's client (as nerdctl pulls) through
// the daemon's registry endpoint, then runs, restarts, offline reads, cache
// eviction, a layer without TOC, a re-pull and nerdctl.
func TestLazyPull(t *testing.T) {
	containerdtest.RequiresFUSE(t)
	bin := buildSnapshotter(t)
	fake := startFakeZenodo(t)

	big := pushTestImage(t, fake, "big", false,
		testimage.WithRandomLayer(lazyRandomMiB, 42), testimage.WithName("zenodo-test.example/lazy-big:"+lazyTag))
	// Its busybox layer is the big image's (same diff ID, so containerd
	// reuses that lazy snapshot); its last layer is its own.
	plain := pushTestImage(t, fake, "plain", true, testimage.WithName("zenodo-test.example/lazy-plain:"+lazyTag),
		testimage.WithFile(testimage.File{Path: "/opt/plain/greeting", Content: []byte(plainGreeting)}),
		testimage.WithCmd("cat", "/opt/plain/greeting"))
	t.Logf("archives: %s (%d bytes, %d layers), %s (%d bytes, preserved layers)",
		big.ref, big.archiveSize, len(big.layers), plain.ref, plain.archiveSize)

	for _, v := range containerdtest.Versions(t) {
		// One after the other: the fake Zenodo is stopped in the middle.
		t.Run(v.Name, func(t *testing.T) { testLazyPull(t, v, bin, fake, big, plain) })
	}
}

func testLazyPull(t *testing.T, v containerdtest.Version, bin string, fake *fakeZenodo, big, plain pushedImage) {
	dir := t.TempDir()
	certs := filepath.Join(dir, "certs.d")
	sd := startSnapshotterDaemon(t, bin, dir, fake.url())
	require.NoError(t, resolver.InstallHosts(certs, sd.registry))
	d := containerdtest.Start(t, containerdtest.WithVersion(v),
		containerdtest.WithProxySnapshotter(resolver.SnapshotterName, sd.socket),
		containerdtest.WithSnapshotter(resolver.SnapshotterName))
	ctx := d.Context(t.Context())

	run := func(t *testing.T, id string, ref string, args ...string) string {
		t.Helper()
		return d.Ctr(t, append([]string{"run", "--rm", "--snapshotter", resolver.SnapshotterName, ref, id}, args...)...)
	}

	ok := t.Run("lazy pull, first output", func(t *testing.T) {
		fake.srv.ResetRequests()
		start := time.Now()
		pull(t, ctx, d, certs, big.ref)
		pulled := time.Since(start)
		out := run(t, "first", big.ref)
		elapsed := time.Since(start)
		require.Equal(t, testimage.Hello+"\n", out)

		reqs := fake.quiescentRequests(t)
		st := fileStats(reqs)
		t.Logf("MEASURED %s: first output after %v (pull %v, run %v); %d requests (%d for image.tar, %d ranged), %d bytes of image.tar = %.2f%% of the %d-byte archive",
			v.Name, elapsed.Round(time.Millisecond), pulled.Round(time.Millisecond), (elapsed - pulled).Round(time.Millisecond),
			len(reqs), st.requests, st.ranged, st.bytes, 100*float64(st.bytes)/float64(big.archiveSize), big.archiveSize)
		for _, r := range reqs {
			t.Logf("  %s %s range=%q -> %d, %d bytes", r.Method, r.Path, r.Range, r.Status, r.Bytes)
		}
		assert.LessOrEqual(t, st.bytes, big.archiveSize/10, "a lazy start fetches at most 10%% of the archive")
		m := sd.metrics(t)
		assert.GreaterOrEqual(t, m.Sum("zenodo_snapshotter_snapshot_remote_events_total", `event="mounted"`), float64(len(big.layers)),
			"every layer mounted lazily")
		assert.Zero(t, m.Sum("zenodo_snapshotter_snapshot_fallbacks_total", ""))
	})
	if !ok {
		return
	}

	ok = t.Run("kill -9, restart offline, new container", func(t *testing.T) {
		d.Ctr(t, "run", "-d", "--snapshotter", resolver.SnapshotterName, big.ref, "running", "sleep", "3600")
		sd.kill(t)
		fake.stop(t)
		t.Cleanup(func() { fake.start(t) })
		sd.start(t)
		waitUntil(t, "containerd to reach the restarted snapshotter", func() error {
			cctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			out, err := d.CtrCommand(cctx, "snapshots", "--snapshotter", resolver.SnapshotterName, "ls").CombinedOutput()
			if err != nil {
				return fmt.Errorf("%v: %s", err, out)
			}
			return nil
		})
		fake.srv.ResetRequests()
		out := run(t, "after-restart", big.ref)
		assert.Equal(t, testimage.Hello+"\n", out)
		assert.Empty(t, fake.srv.Requests(), "Zenodo is down")
		m := sd.metrics(t)
		assert.GreaterOrEqual(t, m.Sum("zenodo_snapshotter_snapshot_remote_events_total", `event="restored"`), float64(len(big.layers)))
		assert.Positive(t, m.Sum("zenodo_snapshotter_image_opens_total", `mode="state"`), "opened from the state directory")

		t.Run("uncached read fails with EIO", func(t *testing.T) {
			file := big.largestFile(t, "data/")
			start := time.Now()
			out := run(t, "offline-read", big.ref, "sh", "-c",
				fmt.Sprintf("cat /%s >/dev/null 2>/tmp/err; echo status=$?; cat /tmp/err", file))
			t.Logf("MEASURED %s: offline read of uncached /%s failed after %v (container start included; read timeout %v)",
				v.Name, file, time.Since(start).Round(time.Millisecond), lazyReadTimeout)
			assert.Contains(t, out, "status=1")
			// strerror(EIO): glibc (Debian's busybox-static) says
			// "Input/output error", musl "I/O error".
			assert.Regexp(t, `Input/output error|I/O error`, out, "EIO")
			m := sd.metrics(t)
			assert.Positive(t, m.Sum("zenodo_snapshotter_fs_read_duration_seconds_count", `result="timeout"`))
		})
		// The container that ran across the kill lost its lazy layers with
		// the FUSE servers of the killed daemon (as with any FUSE
		// snapshotter): say what became of it.
		t.Logf("tasks after the restart:\n%s", d.Ctr(t, "task", "ls"))
	})
	if !ok {
		return
	}

	t.Run("whole tree byte-identical, cache evicting", func(t *testing.T) {
		out := run(t, "hash", big.ref, "find", "/", "-xdev", "-type", "f", "-exec", "sha256sum", "{}", "+")
		got := parseSums(t, out)
		assert.Equal(t, big.sums(), got)
		m := sd.metrics(t)
		assert.Positive(t, m.Sum("zenodo_snapshotter_cache_events_total", `event="evict"`), "the cache is smaller than the image")
		assert.LessOrEqual(t, m.Sum("zenodo_snapshotter_cache_bytes", ""), float64(lazyCacheSize))
		assert.LessOrEqual(t, dirSize(t, filepath.Join(sd.root, "cache")), int64(lazyCacheSize)+1<<20)
	})

	t.Run("layers without TOC fall back", func(t *testing.T) {
		before := sd.metrics(t).Sum("zenodo_snapshotter_snapshot_remote_events_total", `event="mounted"`)
		fake.srv.ResetRequests()
		pull(t, ctx, d, certs, plain.ref)
		out := run(t, "plain", plain.ref)
		assert.Equal(t, plainGreeting, out)
		st := fileStats(fake.quiescentRequests(t))
		own := plain.layers[len(plain.layers)-1]
		assert.GreaterOrEqual(t, st.bytes, own.Size, "its own layer downloaded whole")
		assert.Equal(t, before, sd.metrics(t).Sum("zenodo_snapshotter_snapshot_remote_events_total", `event="mounted"`),
			"nothing mounted lazily")
	})

	t.Run("re-pull after image rm is lazy", func(t *testing.T) {
		// Hold the manifest in the content store, as a lease of another
		// client (or a slow garbage collection) would.
		ls := d.Client().LeasesService()
		l, err := ls.Create(ctx, leases.WithRandomID(), leases.WithExpiration(time.Hour))
		require.NoError(t, err)
		t.Cleanup(func() { ls.Delete(context.WithoutCancel(ctx), l) })
		img, err := d.Client().ImageService().Get(ctx, big.ref)
		require.NoError(t, err)
		require.NoError(t, ls.AddResource(ctx, l, leases.Resource{ID: img.Target.Digest.String(), Type: "content"}))
		d.Ctr(t, "image", "rm", "--sync", big.ref)

		fake.srv.ResetRequests()
		pull(t, ctx, d, certs, big.ref)
		out := run(t, "repull", big.ref)
		assert.Equal(t, testimage.Hello+"\n", out)
		reqs := fake.quiescentRequests(t)
		st := fileStats(reqs)
		t.Logf("MEASURED %s: re-pull and run after image rm: %d requests, %d bytes of image.tar", v.Name, len(reqs), st.bytes)
		// Only what the command reads (busybox, maybe evicted from the
		// cache by now): no layer is downloaded.
		assert.LessOrEqual(t, st.bytes, big.archiveSize/10, "lazy")
	})

	if v.Major >= 2 {
		t.Run("ctr pull through the transfer service", func(t *testing.T) {
			// The transfer service unpacks with the snapshotter of its
			// unpack_config (here zenodo, CONTAINERD_SNAPSHOTTER), in a
			// namespace where the image is new.
			ns := d.Namespace() + "-transfer"
			fake.srv.ResetRequests()
			start := time.Now()
			d.Ctr(t, "--namespace", ns, "image", "pull", "--hosts-dir", certs, big.ref)
			pulled := time.Since(start)
			out := d.Ctr(t, "--namespace", ns, "run", "--rm", big.ref, "transfer")
			elapsed := time.Since(start)
			assert.Equal(t, testimage.Hello+"\n", out)
			reqs := fake.quiescentRequests(t)
			st := fileStats(reqs)
			t.Logf("MEASURED %s: ctr pull (transfer service) + ctr run in a new namespace: %v (pull %v), %d requests, %d bytes of image.tar",
				v.Name, elapsed.Round(time.Millisecond), pulled.Round(time.Millisecond), len(reqs), st.bytes)
			assert.LessOrEqual(t, st.bytes, big.archiveSize/10, "lazy")
			_, err := d.Client().ImageService().Get(namespaces.WithNamespace(t.Context(), ns), big.ref)
			require.NoError(t, err, "ctr pulled the image into namespace %s", ns)
		})
	}

	t.Run("nerdctl in another namespace", func(t *testing.T) {
		containerdtest.NerdctlPath(t)
		ns := d.Namespace() + "-nerdctl"
		fake.srv.ResetRequests()
		start := time.Now()
		out := d.Nerdctl(t, "--namespace", ns, "--hosts-dir", certs, "--snapshotter", resolver.SnapshotterName,
			"run", "--rm", "--net", "none", big.ref)
		elapsed := time.Since(start)
		assert.Equal(t, testimage.Hello+"\n", out)
		reqs := fake.quiescentRequests(t)
		st := fileStats(reqs)
		t.Logf("MEASURED %s: nerdctl run (pull included) in a second namespace: %v, %d requests, %d bytes of image.tar",
			v.Name, elapsed.Round(time.Millisecond), len(reqs), st.bytes)
		assert.LessOrEqual(t, st.bytes, big.archiveSize/10)
		_, err := d.Client().ImageService().Get(namespaces.WithNamespace(t.Context(), ns), big.ref)
		require.NoError(t, err, "nerdctl pulled the image into namespace %s", ns)
		// The same layers in a second namespace share the first one's
		// lazy snapshots, or mount them again over the same readers.
		m := sd.metrics(t)
		t.Logf("after nerdctl: %v lazy mounts over %v layer readers", m.Sum("zenodo_snapshotter_fs_mounted_layers", ""),
			m.Sum("zenodo_snapshotter_fs_open_layers", ""))
		assert.LessOrEqual(t, m.Sum("zenodo_snapshotter_fs_open_layers", ""), float64(len(big.layers)))
	})
}

// pull pulls ref with containerd's client into the daemon's namespace,
// unpacking it with the zenodo snapshotter, resolving through the hosts.toml
// files in certs, as nerdctl does.
func pull(t *testing.T, ctx context.Context, d *containerdtest.Daemon, certs, ref string) client.Image {
	t.Helper()
	res := docker.NewResolver(docker.ResolverOptions{
		Hosts: config.ConfigureHosts(ctx, config.HostOptions{HostDir: config.HostDirFromRoot(certs)}),
	})
	pctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	img, err := d.Client().Pull(pctx, ref, client.WithPullUnpack, client.WithPullSnapshotter(resolver.SnapshotterName),
		client.WithResolver(res))
	require.NoError(t, err, "pulling %s", ref)
	return img
}

// buildSnapshotter builds the daemon into a temporary directory.
func buildSnapshotter(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	require.NoError(t, err)
	modRoot := filepath.Dir(strings.TrimSpace(string(out)))
	bin := filepath.Join(t.TempDir(), "zenodo-snapshotter")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/zenodo-snapshotter")
	cmd.Dir = modRoot
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building zenodo-snapshotter: %v\n%s", err, b)
	}
	return bin
}

// waitUntil polls check until it succeeds, failing t after readyTimeout.
func waitUntil(t *testing.T, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(readyTimeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		select {
		case <-tick.C:
		case <-t.Context().Done():
			t.Fatalf("waiting for %s: %v", what, t.Context().Err())
		}
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

// fakeZenodo serves a zenodotest.Server on one address for the whole test,
// and can be taken down and brought back (Zenodo down, Zenodo back). Its
// listener stays bound while it is down, so that no other process can take
// the port in the meantime (the tests of other packages run alongside and
// open connections, whose local ports come from the same range); the
// connections open when it goes down are closed, and those it accepts
// while down are reset at once. It counts the requests in flight.
type fakeZenodo struct {
	srv      *zenodotest.Server
	addr     string
	hs       *http.Server
	inflight atomic.Int64

	mu    sync.Mutex
	down  bool
	conns map[net.Conn]struct{} // accepted and not closed yet
}

func startFakeZenodo(t *testing.T) *fakeZenodo {
	t.Helper()
	srv, err := zenodotest.Open(zenodotest.WithDir(t.TempDir()),
		zenodotest.WithLatency(zenodoLatency), zenodotest.WithBandwidth(zenodoBandwidth))
	require.NoError(t, err)
	t.Cleanup(func() { srv.Close() })
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	f := &fakeZenodo{srv: srv, addr: l.Addr().String(), conns: map[net.Conn]struct{}{}}
	f.hs = &http.Server{Handler: f, ConnState: f.connState}
	go f.hs.Serve(gateListener{Listener: l, f: f})
	t.Cleanup(func() { f.hs.Close() })
	return f
}

func (f *fakeZenodo) url() string { return "http://" + f.addr }

func (f *fakeZenodo) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.inflight.Add(1)
	defer f.inflight.Add(-1)
	f.srv.ServeHTTP(w, r)
}

// connState forgets the connections that are closed.
func (f *fakeZenodo) connState(c net.Conn, s http.ConnState) {
	if s == http.StateClosed || s == http.StateHijacked {
		f.mu.Lock()
		delete(f.conns, c)
		f.mu.Unlock()
	}
}

// start brings the fake back up; a no-op while it is up.
func (f *fakeZenodo) start(t *testing.T) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = false
}

// stop takes the fake down: every open connection is closed, and new ones
// are reset until start.
func (f *fakeZenodo) stop(t *testing.T) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = true
	for c := range f.conns {
		c.Close()
	}
}

// gateListener hands the fake's server the connections it accepts while
// the fake is up, recording them, and resets the others.
type gateListener struct {
	net.Listener
	f *fakeZenodo
}

func (l gateListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		l.f.mu.Lock()
		if !l.f.down {
			l.f.conns[c] = struct{}{}
			l.f.mu.Unlock()
			return c, nil
		}
		l.f.mu.Unlock()
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
		c.Close()
	}
}

// quiescentRequests waits until no request is in flight (the log records a
// request when it completes) and returns the log.
func (f *fakeZenodo) quiescentRequests(t *testing.T) []zenodotest.Request {
	t.Helper()
	waitUntil(t, "the fake Zenodo's requests to complete", func() error {
		if n := f.inflight.Load(); n > 0 {
			return fmt.Errorf("%d requests in flight", n)
		}
		return nil
	})
	return f.srv.Requests()
}

// stats of the requests for image.tar's contents.
type stats struct {
	requests, ranged int
	bytes            int64
}

func fileStats(reqs []zenodotest.Request) stats {
	var s stats
	for _, r := range reqs {
		if !strings.HasSuffix(r.Path, "/files/image.tar") && !strings.HasSuffix(r.Path, "/files/image.tar/content") {
			continue
		}
		s.requests++
		if r.Range != "" {
			s.ranged++
		}
		s.bytes += r.Bytes
	}
	return s
}

// pushedImage is a test image archived in a record of the fake.
type pushedImage struct {
	doi, ref    string
	archiveSize int64
	layers      []ocispec.Descriptor // the original layers
	files       map[string]fileSum   // regular files of the image, by path
}

type fileSum struct {
	sum  string
	size int64
}

func (p pushedImage) sums() map[string]string {
	m := make(map[string]string, len(p.files))
	for name, f := range p.files {
		m[name] = f.sum
	}
	return m
}

// largestFile returns the largest regular file under prefix.
func (p pushedImage) largestFile(t *testing.T, prefix string) string {
	t.Helper()
	var best string
	for name, f := range p.files {
		if strings.HasPrefix(name, prefix) && (best == "" || f.size > p.files[best].size) {
			best = name
		}
	}
	require.NotEmpty(t, best, "no file under %s", prefix)
	return best
}

// pushTestImage builds a test image and archives it in a new record of the
// fake as donodo push does: a deposition is made first, so that the layers
// can carry the DOI it reserves; then image.tar and image.tar.index.json
// are uploaded and the record published with version lazyTag.
func pushTestImage(t *testing.T, fake *fakeZenodo, name string, preserve bool, opts ...testimage.Option) pushedImage {
	t.Helper()
	ctx := t.Context()
	layout := filepath.Join(t.TempDir(), name)
	root := testimage.Busybox(t, layout, opts...)
	c, err := zenodo.New(fake.url(), zenodo.WithToken(zenodotest.DefaultToken), zenodo.WithRateLimit(0, 0), zenodo.WithHourlyLimit(0))
	require.NoError(t, err)
	dep, err := c.CreateDeposition(ctx, zenodo.Metadata{Title: "Docker image " + name, UploadType: "software", Version: lazyTag,
		Creators: []zenodo.Creator{{Name: "Test, Integration"}}})
	require.NoError(t, err)
	doi := dep.ReservedDOI()
	require.NotEmpty(t, doi)

	tmp := t.TempDir()
	tarPath := filepath.Join(tmp, "image.tar")
	f, err := os.Create(tarPath)
	require.NoError(t, err)
	wopts := []archive.WriteOption{archive.WithTempDir(tmp)}
	if preserve {
		wopts = append(wopts, archive.WithPreserveLayers())
	} else {
		wopts = append(wopts, archive.WithLayerAnnotations(map[string]string{snapshot.LabelDOI: doi}))
	}
	idx, err := archive.Write(ctx, f, archive.LayoutProvider(layout), root, wopts...)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	index, err := archive.MarshalIndex(idx)
	require.NoError(t, err)

	f, err = os.Open(tarPath)
	require.NoError(t, err)
	defer f.Close()
	st, err := f.Stat()
	require.NoError(t, err)
	_, err = c.Upload(ctx, dep, "image.tar", f, st.Size(), nil)
	require.NoError(t, err)
	_, err = c.Upload(ctx, dep, "image.tar.index.json", strings.NewReader(string(index)), int64(len(index)), nil)
	require.NoError(t, err)
	_, err = c.Publish(ctx, string(dep.ID))
	require.NoError(t, err)

	p := pushedImage{doi: doi, ref: "zenodo.org/" + doi + ":" + lazyTag, archiveSize: st.Size()}
	p.layers, p.files = imageFiles(t, archive.LayoutProvider(layout), root)
	return p
}

// imageFiles reads the original layers of the image root (a manifest) and
// returns them with the regular files the image's root filesystem has,
// and their sha256.
func imageFiles(t *testing.T, p content.Provider, root ocispec.Descriptor) ([]ocispec.Descriptor, map[string]fileSum) {
	t.Helper()
	ctx := t.Context()
	b, err := content.ReadBlob(ctx, p, root)
	require.NoError(t, err)
	var m ocispec.Manifest
	require.NoError(t, json.Unmarshal(b, &m))
	files := map[string]fileSum{}
	for _, l := range m.Layers {
		ra, err := p.ReaderAt(ctx, l)
		require.NoError(t, err)
		var r io.Reader = content.NewReader(ra)
		if strings.HasSuffix(l.MediaType, "gzip") {
			zr, err := gzip.NewReader(r)
			require.NoError(t, err)
			r = zr
		}
		tr := tar.NewReader(r)
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			require.NoError(t, err)
			name := path.Clean(strings.TrimPrefix(h.Name, "/"))
			dir, base := path.Split(name)
			if base == ".wh..wh..opq" {
				for n := range files {
					if strings.HasPrefix(n, dir) {
						delete(files, n)
					}
				}
				continue
			}
			if wh, ok := strings.CutPrefix(base, ".wh."); ok {
				gone := path.Join(dir, wh)
				for n := range files {
					if n == gone || strings.HasPrefix(n, gone+"/") {
						delete(files, n)
					}
				}
				continue
			}
			delete(files, name)
			switch h.Typeflag {
			case tar.TypeReg:
				hash := sha256.New()
				n, err := io.Copy(hash, tr)
				require.NoError(t, err)
				files[name] = fileSum{sum: hex.EncodeToString(hash.Sum(nil)), size: n}
			case tar.TypeLink:
				target, ok := files[path.Clean(strings.TrimPrefix(h.Linkname, "/"))]
				require.True(t, ok, "hard link %s to a missing %s", name, h.Linkname)
				files[name] = target
			}
		}
		ra.Close()
	}
	return m.Layers, files
}

// parseSums parses sha256sum's output into sums by path (without the
// leading slash).
func parseSums(t *testing.T, out string) map[string]string {
	t.Helper()
	got := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		sum, name, ok := strings.Cut(sc.Text(), "  ")
		require.True(t, ok, "line %q", sc.Text())
		got[strings.TrimPrefix(name, "/")] = sum
	}
	require.NoError(t, sc.Err())
	return got
}

func dirSize(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	require.NoError(t, filepath.WalkDir(dir, func(_ string, e os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.Type().IsRegular() {
			fi, err := e.Info()
			if err != nil {
				return err
			}
			n += fi.Size()
		}
		return nil
	}))
	return n
}

// snapshotterDaemon is the zenodo-snapshotter daemon run as a subprocess.
type snapshotterDaemon struct {
	bin, config, logPath string
	root, socket         string
	registry, metricsAt  string

	cmd  *exec.Cmd
	done chan struct{}
}

// startSnapshotterDaemon writes the daemon's config under dir and starts
// it; t.Cleanup stops it (unmounting its layers).
func startSnapshotterDaemon(t *testing.T, bin, dir, zenodoURL string) *snapshotterDaemon {
	t.Helper()
	sd := &snapshotterDaemon{
		bin:       bin,
		config:    filepath.Join(dir, "zenodo-snapshotter.toml"),
		logPath:   filepath.Join(dir, "zenodo-snapshotter.log"),
		root:      filepath.Join(dir, "zs"),
		socket:    filepath.Join(dir, "zs.sock"),
		registry:  freePort(t),
		metricsAt: freePort(t),
	}
	cfg := fmt.Sprintf(`root = %q
socket = %q
log_level = "debug"

[zenodo]
url = %q
sandbox_url = ""
requests_per_minute = 6000
timeout = "10s"

[cache]
size = "%dB"

[fetch]
background_fill = false
read_timeout = %q

[registry]
listen = %q

[metrics]
listen = %q
`, sd.root, sd.socket, zenodoURL, lazyCacheSize, lazyReadTimeout.String(), sd.registry, sd.metricsAt)
	require.NoError(t, os.WriteFile(sd.config, []byte(cfg), 0o600))
	sd.start(t)
	t.Cleanup(func() {
		sd.stop(t)
		detachMounts(t, sd.root)
		if t.Failed() {
			if b, err := os.ReadFile(sd.logPath); err == nil {
				const tail = 30000
				if len(b) > tail {
					b = b[len(b)-tail:]
				}
				t.Logf("zenodo-snapshotter log (tail):\n%s", b)
			}
		}
	})
	return sd
}

// start runs the daemon and waits until its socket and endpoints answer.
func (sd *snapshotterDaemon) start(t *testing.T) {
	t.Helper()
	logf, err := os.OpenFile(sd.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	require.NoError(t, err)
	defer logf.Close()
	fmt.Fprintf(logf, "=== starting %s serve --config %s\n", sd.bin, sd.config)
	cmd := exec.Command(sd.bin, "serve", "--config", sd.config)
	cmd.Stdout, cmd.Stderr = logf, logf
	require.NoError(t, cmd.Start())
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	sd.cmd, sd.done = cmd, done
	waitUntil(t, "the zenodo-snapshotter daemon", func() error {
		select {
		case <-done:
			return fmt.Errorf("exited: %v (see %s)", cmd.ProcessState, sd.logPath)
		default:
		}
		c, err := net.Dial("unix", sd.socket)
		if err != nil {
			return err
		}
		c.Close()
		resp, err := http.Get("http://" + sd.registry + "/v2/")
		if err != nil {
			return err
		}
		resp.Body.Close()
		resp, err = http.Get("http://" + sd.metricsAt + "/metrics")
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	})
}

// kill kills the daemon with SIGKILL, leaving its mounts and socket behind.
func (sd *snapshotterDaemon) kill(t *testing.T) {
	t.Helper()
	require.NoError(t, sd.cmd.Process.Signal(syscall.SIGKILL))
	<-sd.done
	sd.cmd = nil
}

// stop stops the daemon with SIGTERM (it unmounts its layers), then
// SIGKILL after a grace period.
func (sd *snapshotterDaemon) stop(t *testing.T) {
	t.Helper()
	if sd.cmd == nil {
		return
	}
	sd.cmd.Process.Signal(syscall.SIGTERM)
	timer := time.NewTimer(30 * time.Second)
	defer timer.Stop()
	select {
	case <-sd.done:
		if !sd.cmd.ProcessState.Success() {
			t.Errorf("zenodo-snapshotter exited with %v after SIGTERM", sd.cmd.ProcessState)
		}
		// A clean stop unmounts every lazy layer.
		mounts, err := mountinfo.GetMounts(mountinfo.FSTypeFilter("fuse.zenodo"))
		if err == nil {
			for _, m := range mounts {
				if strings.HasPrefix(m.Mountpoint, sd.root+"/") {
					t.Errorf("lazy layer still mounted after zenodo-snapshotter stopped: %s", m.Mountpoint)
				}
			}
		}
	case <-timer.C:
		t.Errorf("zenodo-snapshotter did not stop within 30s of SIGTERM")
		sd.cmd.Process.Kill()
		<-sd.done
	}
	sd.cmd = nil
}

// metrics scrapes the daemon's /metrics.
func (sd *snapshotterDaemon) metrics(t *testing.T) promText {
	t.Helper()
	resp, err := http.Get("http://" + sd.metricsAt + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return promText(b)
}

// promText is a Prometheus text exposition.
type promText = testutil.PromText

// detachMounts lazily unmounts whatever is still mounted below dir
// (deepest first), so that the temporary directory can be removed even
// after a daemon died with its FUSE mounts in place.
func detachMounts(t *testing.T, dir string) {
	t.Helper()
	mounts, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		t.Logf("listing mounts under %s: %v", dir, err)
		return
	}
	points := make([]string, 0, len(mounts))
	for _, m := range mounts {
		points = append(points, m.Mountpoint)
	}
	slices.Sort(points)
	slices.Reverse(points)
	for _, p := range points {
		if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			t.Logf("detaching %s: %v", p, err)
		}
	}
}
