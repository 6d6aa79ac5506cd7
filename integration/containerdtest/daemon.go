// Package containerdtest runs real containerd daemons for integration tests:
// each on a private socket, with its root, state, config and log in a fresh
// temporary directory, stopped and cleaned (tasks killed, mounts unmounted) by
// t.Cleanup. It runs Debian's containerd 1.6 or the 2.x that `make tools`
// builds, and the matching ctr and nerdctl against it.
//
//	func TestX(t *testing.T) {
//		for _, v := range containerdtest.Versions(t) {
//			t.Run(v.Name, func(t *testing.T) {
//				d := containerdtest.Start(t, containerdtest.WithVersion(v))
//				out := d.Ctr(t, "version")
//				…
//			})
//		}
//	}
//
// Tests that need root or FUSE guard themselves with RequiresRoot and
// RequiresFUSE (Start does RequiresRoot): they skip loudly on a developer's
// machine and fail in CI (CI=true), where everything must run.
package containerdtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/defaults"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/containerd/platforms"
	"github.com/pelletier/go-toml/v2"
	"golang.org/x/sys/unix"
)

// Daemon is a running containerd started by Start. Its methods may be called
// from the test's goroutine; it is stopped by the test's cleanup.
type Daemon struct {
	opts options

	dir       string // everything below lives here
	address   string
	configLog string // the generated config, for failure reports
	logPath   string

	// ownNamespace: the namespace was made up for this daemon, so what is
	// named after it outside dir is ours to remove.
	ownNamespace bool

	proc   *process
	client *client.Client
}

// options are Start's settings; see the With functions for defaults.
type options struct {
	version      *Version
	extraConfig  []string
	proxies      map[string]string // name → address
	snapshotter  string
	namespace    string
	logLevel     string
	startTimeout time.Duration
	stopTimeout  time.Duration
	cmdTimeout   time.Duration
	env          []string
}

// Option configures Start.
type Option func(*options)

// WithVersion selects the containerd to run. The default is Debian's (1.6).
func WithVersion(v Version) Option { return func(o *options) { o.version = &v } }

// WithConfig adds TOML to the daemon's config, e.g. plugin settings:
//
//	[plugins."io.containerd.gc.v1.scheduler"]
//	  pause_threshold = 0.5
//
// (for proxy snapshotters, see WithProxySnapshotter). It is merged table by table over the generated config (root, state, socket,
// disabled CRI/NRI, …), later WithConfig calls winning; keys valid in both the
// 1.6 (version 2) and 2.x (version 3) formats, such as proxy_plugins, work on
// either. The default is no extra config.
func WithConfig(toml string) Option {
	return func(o *options) { o.extraConfig = append(o.extraConfig, toml) }
}

// WithSnapshotter makes name the namespace's default snapshotter: for Client
// (the namespace label containerd.io/defaults/snapshotter), for Ctr and
// Nerdctl (CONTAINERD_SNAPSHOTTER) and, on 2.x, for the transfer service's
// unpack (unpack_config, used by `ctr pull` and `ctr image import` without
// --local). The default is containerd's default, overlayfs.
func WithSnapshotter(name string) Option { return func(o *options) { o.snapshotter = name } }

// WithNamespace sets the namespace Client, Ctr and Nerdctl use. The default
// is a name unique to the daemon ("zs-" and a random suffix), so that
// containers of daemons running side by side never share cgroup paths.
func WithNamespace(ns string) Option { return func(o *options) { o.namespace = ns } }

// WithLogLevel sets containerd's log level. The default is "debug"; the log
// goes to a file (LogPath) and its tail is printed when the test fails.
func WithLogLevel(level string) Option { return func(o *options) { o.logLevel = level } }

// WithStartTimeout bounds the wait for the daemon to answer. The default is 60s.
func WithStartTimeout(d time.Duration) Option { return func(o *options) { o.startTimeout = d } }

// WithCommandTimeout bounds each Ctr and Nerdctl run. The default is 5 minutes.
func WithCommandTimeout(d time.Duration) Option { return func(o *options) { o.cmdTimeout = d } }

// WithEnv adds KEY=VALUE entries to the daemon's environment. The default is
// the test's environment, with the Version's directory first in PATH (so the
// matching shim is found).
func WithEnv(kv ...string) Option { return func(o *options) { o.env = append(o.env, kv...) } }

// Start runs a containerd for t and waits until it answers; t.Cleanup stops
// it. It needs root (RequiresRoot).
func Start(t testing.TB, opts ...Option) *Daemon {
	t.Helper()
	RequiresRoot(t)
	o := options{
		logLevel:     "debug",
		startTimeout: 60 * time.Second,
		stopTimeout:  15 * time.Second,
		cmdTimeout:   5 * time.Minute,
	}
	for _, opt := range opts {
		opt(&o)
	}
	if o.version == nil {
		v := Debian(t)
		o.version = &v
	}

	// A short directory directly under the temp dir: unix socket paths
	// (ours and those of plugins placed next to it) must stay under 108
	// bytes, which t.TempDir's long names can break.
	dir, err := os.MkdirTemp("", "zs-ctd-")
	if err != nil {
		t.Fatalf("creating containerd test directory: %v", err)
	}
	own := o.namespace == ""
	if own {
		o.namespace = "zs-" + strings.TrimPrefix(filepath.Base(dir), "zs-ctd-")
	}
	d := &Daemon{
		opts:         o,
		ownNamespace: own,
		dir:          dir,
		address:      filepath.Join(dir, "containerd.sock"),
		logPath:      filepath.Join(dir, "containerd.log"),
	}
	t.Cleanup(func() { d.cleanup(t) })

	for _, sub := range []string{"root", "state", "opt"} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o700); err != nil {
			t.Fatalf("creating containerd test directory: %v", err)
		}
	}
	cfg, err := d.config()
	if err != nil {
		t.Fatalf("writing containerd config: %v", err)
	}
	d.configLog = cfg
	if err := os.WriteFile(d.ConfigPath(), []byte(cfg), 0o600); err != nil {
		t.Fatalf("writing containerd config: %v", err)
	}
	d.start(t)

	if o.snapshotter != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		labels := map[string]string{defaults.DefaultSnapshotterNSLabel: o.snapshotter}
		if err := d.client.NamespaceService().Create(ctx, o.namespace, labels); err != nil && !errdefs.IsAlreadyExists(err) {
			t.Fatalf("creating namespace %s with default snapshotter %s: %v", o.namespace, o.snapshotter, err)
		}
	}
	return d
}

// config renders the daemon's TOML config.
func (d *Daemon) config() (string, error) {
	v := d.opts.version
	cfg := map[string]any{
		"root":  filepath.Join(d.dir, "root"),
		"state": filepath.Join(d.dir, "state"),
		"grpc":  map[string]any{"address": d.address},
		"ttrpc": map[string]any{"address": d.address + ".ttrpc"},
		"debug": map[string]any{"level": d.opts.logLevel},
		"plugins": map[string]any{
			// Not /opt/containerd.
			"io.containerd.internal.v1.opt": map[string]any{"path": filepath.Join(d.dir, "opt")},
		},
	}
	if v.Major >= 2 {
		cfg["version"] = 3
		// NRI listens on a fixed socket (/var/run/nri/nri.sock): daemons
		// side by side would fight over it. (CRI is not built in.)
		cfg["disabled_plugins"] = []string{"io.containerd.nri.v1.nri"}
		if sn := d.opts.snapshotter; sn != "" {
			p := platforms.DefaultString()
			unpack := []any{map[string]any{"platform": p, "snapshotter": sn}}
			if sn != defaults.DefaultSnapshotter {
				unpack = append(unpack, map[string]any{"platform": p, "snapshotter": defaults.DefaultSnapshotter})
			}
			cfg["plugins"].(map[string]any)["io.containerd.transfer.v1.local"] = map[string]any{"unpack_config": unpack}
		}
	} else {
		cfg["version"] = 2
		// CRI listens on TCP ports and wants CNI: not what these tests
		// are about, and daemons side by side would fight over the ports.
		cfg["disabled_plugins"] = []string{"io.containerd.grpc.v1.cri"}
	}
	if len(d.opts.proxies) > 0 {
		cfg["proxy_plugins"] = proxyConfig(d.opts.proxies)
	}
	for i, extra := range d.opts.extraConfig {
		var m map[string]any
		if err := toml.Unmarshal([]byte(extra), &m); err != nil {
			return "", fmt.Errorf("parsing extra config #%d: %w", i+1, err)
		}
		mergeTables(cfg, m)
	}
	b, err := toml.Marshal(cfg)
	if err != nil {
		return "", fmt.Errorf("encoding config: %w", err)
	}
	return string(b), nil
}

// mergeTables merges src into dst: tables recursively, anything else replaced.
func mergeTables(dst, src map[string]any) {
	for k, sv := range src {
		st, sok := sv.(map[string]any)
		dt, dok := dst[k].(map[string]any)
		if sok && dok {
			mergeTables(dt, st)
			continue
		}
		dst[k] = sv
	}
}

// process is one run of the containerd binary.
type process struct {
	cmd     *exec.Cmd
	exited  chan struct{} // closed when the process has been waited for
	waitErr error         // valid once exited is closed
}

// start launches the daemon and waits until it answers Version.
func (d *Daemon) start(t testing.TB) {
	t.Helper()
	logf, err := os.OpenFile(d.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatalf("opening containerd log: %v", err)
	}
	defer logf.Close() // the child has its own descriptor

	cmd := exec.Command(d.opts.version.Containerd(), "--config", d.ConfigPath(), "--log-level", d.opts.logLevel)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(d.env(), d.opts.env...)
	// Die with the test binary, even if it is killed before its cleanups.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	p := &process{cmd: cmd, exited: make(chan struct{})}

	// Pdeathsig fires when the thread that forked the child exits, so fork
	// from a goroutine locked to its thread for the child's whole life.
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		if err := cmd.Start(); err != nil {
			started <- err
			close(p.exited)
			return
		}
		started <- nil
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()
	if err := <-started; err != nil {
		t.Fatalf("starting %s: %v", d.opts.version.Containerd(), err)
	}
	d.proc = p

	if err := d.waitReady(); err != nil {
		t.Fatalf("containerd %s did not start: %v\n%s", d.opts.version.Name, err, d.logTail())
	}
}

// env is the environment for the daemon and its tools: the test's, with the
// version's directory first in PATH so that its shim is the one found.
func (d *Daemon) env() []string {
	env := os.Environ()
	for i, kv := range env {
		if strings.HasPrefix(kv, "PATH=") {
			env[i] = "PATH=" + d.opts.version.Dir + string(os.PathListSeparator) + strings.TrimPrefix(kv, "PATH=")
			return env
		}
	}
	return append(env, "PATH="+d.opts.version.Dir+":/usr/sbin:/usr/bin:/sbin:/bin")
}

// waitReady polls until the socket accepts connections and Version answers,
// the process exits, or the start timeout passes.
func (d *Daemon) waitReady() error {
	ctx, cancel := context.WithTimeout(context.Background(), d.opts.startTimeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		if last = d.probe(ctx); last == nil {
			return nil
		}
		select {
		case <-d.proc.exited:
			return fmt.Errorf("containerd exited: %v", d.proc.waitErr)
		case <-ctx.Done():
			return fmt.Errorf("no answer within %v: %w", d.opts.startTimeout, last)
		case <-tick.C:
		}
	}
}

// probe checks the socket with a plain connect first: gRPC's reconnect
// back-off would otherwise delay noticing that the daemon is up.
func (d *Daemon) probe(ctx context.Context) error {
	c, err := (&net.Dialer{}).DialContext(ctx, "unix", d.address)
	if err != nil {
		return err
	}
	c.Close()
	if d.client == nil {
		cl, err := client.New(d.address, client.WithDefaultNamespace(d.opts.namespace))
		if err != nil {
			return fmt.Errorf("creating client: %w", err)
		}
		d.client = cl
	}
	vctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err = d.client.Version(vctx)
	return err
}

// Client returns a containerd client (containerd/v2/client, which also speaks
// to 1.6) whose default namespace is Namespace, or nil while the daemon is
// stopped (Stop; Restart makes a new one). Do not Close it: Stop and the
// daemon's cleanup do.
func (d *Daemon) Client() *client.Client { return d.client }

// Context returns ctx carrying the daemon's namespace, for APIs (content
// store, snapshotters, …) used without the client's default.
func (d *Daemon) Context(ctx context.Context) context.Context {
	return namespaces.WithNamespace(ctx, d.opts.namespace)
}

// Version is the containerd the daemon runs.
func (d *Daemon) Version() Version { return *d.opts.version }

// Address is the path of the daemon's gRPC socket.
func (d *Daemon) Address() string { return d.address }

// Namespace is the namespace Client, Ctr and Nerdctl use.
func (d *Daemon) Namespace() string { return d.opts.namespace }

// Snapshotter is the default snapshotter set with WithSnapshotter, or "" for
// containerd's default.
func (d *Daemon) Snapshotter() string { return d.opts.snapshotter }

// Dir is the daemon's private directory (removed by cleanup); tests may put
// their own sockets and files there.
func (d *Daemon) Dir() string { return d.dir }

// Root is the daemon's root directory.
func (d *Daemon) Root() string { return filepath.Join(d.dir, "root") }

// State is the daemon's state directory.
func (d *Daemon) State() string { return filepath.Join(d.dir, "state") }

// ConfigPath is the path of the daemon's generated config.toml.
func (d *Daemon) ConfigPath() string { return filepath.Join(d.dir, "config.toml") }

// LogPath is the file holding the daemon's log (all runs, if restarted).
func (d *Daemon) LogPath() string { return d.logPath }

// Log returns the daemon's log so far.
func (d *Daemon) Log(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile(d.logPath)
	if err != nil {
		t.Fatalf("reading containerd log: %v", err)
	}
	return string(b)
}

// Stop terminates the daemon (SIGTERM, then SIGKILL after the stop timeout)
// and keeps its root and state, so Restart can bring it back. Containers'
// shims keep running, as they do when a real containerd restarts.
func (d *Daemon) Stop(t testing.TB) {
	t.Helper()
	if d.client != nil {
		d.client.Close()
		d.client = nil
	}
	if err := d.stopProcess(); err != nil {
		t.Fatalf("stopping containerd: %v", err)
	}
}

// Restart stops the daemon if it runs and starts it again on the same root,
// state and config.
func (d *Daemon) Restart(t testing.TB) {
	t.Helper()
	d.Stop(t)
	d.start(t)
}

// stopProcess sends SIGTERM, then SIGKILL if the daemon is still running after
// the stop timeout. It returns nil if the daemon is not running.
func (d *Daemon) stopProcess() error {
	p := d.proc
	if p == nil {
		return nil
	}
	d.proc = nil
	select {
	case <-p.exited:
		return nil
	default:
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("sending SIGTERM: %w", err)
	}
	timer := time.NewTimer(d.opts.stopTimeout)
	defer timer.Stop()
	select {
	case <-p.exited:
		return nil
	case <-timer.C:
	}
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("sending SIGKILL: %w", err)
	}
	<-p.exited
	return fmt.Errorf("containerd ignored SIGTERM for %v and was killed", d.opts.stopTimeout)
}

// cleanup kills what the test left running, stops the daemon, unmounts
// everything below its directory and removes it. Problems are reported with
// t.Errorf: a leftover mount or process is a bug worth seeing.
func (d *Daemon) cleanup(t testing.TB) {
	t.Helper()
	// Every namespace the test used: runc names cgroups and state after them.
	nss := []string{d.opts.namespace}
	if d.client != nil {
		ctx, cancel := context.WithTimeout(context.Background(), d.opts.stopTimeout)
		if list, err := d.client.NamespaceService().List(ctx); err == nil {
			for _, ns := range list {
				if ns != d.opts.namespace {
					nss = append(nss, ns)
				}
			}
		}
		if err := killTasks(ctx, d.client, nss); err != nil {
			t.Logf("containerd cleanup: killing leftover tasks: %v", err)
		}
		cancel()
		d.client.Close()
		d.client = nil
	}
	if err := d.stopProcess(); err != nil {
		t.Errorf("containerd cleanup: %v", err)
	}
	// Shims of tasks that could not be killed through the API.
	if n := killByArg(d.address); n > 0 {
		t.Logf("containerd cleanup: killed %d leftover process(es) of this daemon", n)
	}
	for _, ns := range nss {
		removeNamespaceLeftovers(ns, d.ownNamespace && ns == d.opts.namespace)
	}
	if t.Failed() {
		// Keep the whole log: the directory goes away below.
		kept := filepath.Join(os.TempDir(), filepath.Base(d.dir)+".log")
		if b, err := os.ReadFile(d.logPath); err == nil && os.WriteFile(kept, b, 0o600) == nil {
			t.Logf("containerd %s failed test: full log kept in %s", d.opts.version.Name, kept)
		}
		t.Logf("containerd %s config:\n%s\ncontainerd log:\n%s", d.opts.version.Name, d.configLog, d.logTail())
	}
	if err := mount.UnmountRecursive(d.dir, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
		t.Errorf("containerd cleanup: unmounting below %s: %v", d.dir, err)
	}
	if err := os.RemoveAll(d.dir); err != nil {
		t.Errorf("containerd cleanup: %v", err)
	}
}

// removeNamespaceLeftovers removes what runc leaves named after a namespace
// outside the daemon's directory once its containers are gone: the empty
// cgroups "/<namespace>" of every hierarchy and the empty runc root
// /run/containerd/runc/<namespace>. With all (a namespace made up for this
// daemon, so nobody else's), the runc root goes even if not empty. Best
// effort: what is still in use stays.
func removeNamespaceLeftovers(ns string, all bool) {
	cgroups, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", ns))
	for _, p := range append(cgroups, filepath.Join("/sys/fs/cgroup", ns)) {
		_ = os.Remove(p) // rmdir: only empty cgroups go
	}
	runcRoot := filepath.Join(defaults.DefaultStateDir, "runc", ns)
	if all {
		_ = os.RemoveAll(runcRoot)
	} else {
		_ = os.Remove(runcRoot)
	}
}

// killTasks kills and deletes every task in the namespaces, so their shims
// exit and their rootfs mounts go away.
func killTasks(ctx context.Context, c *client.Client, nss []string) error {
	var errs []error
	for _, ns := range nss {
		nctx := namespaces.WithNamespace(ctx, ns)
		cs, err := c.Containers(nctx)
		if err != nil {
			errs = append(errs, fmt.Errorf("listing containers of %s: %w", ns, err))
			continue
		}
		for _, ctr := range cs {
			task, err := ctr.Task(nctx, nil)
			if err != nil {
				continue // no task
			}
			if st, err := task.Status(nctx); err == nil && st.Status != client.Stopped {
				wait, err := task.Wait(nctx)
				if err == nil && task.Kill(nctx, syscall.SIGKILL) == nil {
					<-wait
				}
			}
			if _, err := task.Delete(nctx, client.WithProcessKill); err != nil {
				errs = append(errs, fmt.Errorf("deleting task %s/%s: %w", ns, ctr.ID(), err))
			}
		}
	}
	return errors.Join(errs...)
}

// killByArg SIGKILLs every process whose command line has arg as an argument
// (the shims started by a daemon carry its socket path) and returns how many.
func killByArg(arg string) int {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	n := 0
	for _, f := range procs {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, a := range bytes.Split(b, []byte{0}) {
			if string(a) == arg {
				var pid int
				if _, err := fmt.Sscanf(f, "/proc/%d/cmdline", &pid); err == nil && pid != os.Getpid() {
					if unix.Kill(pid, unix.SIGKILL) == nil {
						n++
					}
				}
				break
			}
		}
	}
	return n
}

// logTail returns the end of the daemon's log, enough to explain a failure
// without drowning the test output.
func (d *Daemon) logTail() string {
	const max = 64 << 10
	b, err := os.ReadFile(d.logPath)
	if err != nil {
		return fmt.Sprintf("(reading %s: %v)", d.logPath, err)
	}
	if len(b) > max {
		b = b[len(b)-max:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
		return "[… start of log cut]\n" + string(b)
	}
	return string(b)
}
