package bench

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/internal/testutil"
)

const (
	// readyTimeout bounds every wait for a subprocess to answer.
	readyTimeout = time.Minute
	// stopGrace is how long a subprocess has to exit after SIGTERM before
	// its process group is killed.
	stopGrace = 30 * time.Second
)

// proc is a subprocess in its own process group, its stderr (and stdout
// unless taken) appended to a log file. Cleanup stops it if the benchmark
// did not.
type proc struct {
	name    string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{}
	stopped bool
}

// startProc starts args in a new process group. If stdout is not nil it
// gets the process's standard output instead of the log.
func startProc(b *testing.B, name, logPath string, stdout io.Writer, args ...string) *proc {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		b.Fatal(err)
	}
	defer logf.Close()
	fmt.Fprintf(logf, "=== %s\n", strings.Join(args, " "))
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = cleanEnv()
	cmd.Stdout, cmd.Stderr = logf, logf
	if stdout != nil {
		cmd.Stdout = stdout
	}
	// Die with the benchmark even if it is killed before its cleanups.
	// Pdeathsig fires when the thread that forked the child exits, so fork
	// from a goroutine locked to its thread for the child's whole life.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	p := &proc{name: name, logPath: logPath, cmd: cmd, done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		if err := cmd.Start(); err != nil {
			started <- err
			close(p.done)
			return
		}
		started <- nil
		_ = cmd.Wait()
		close(p.done)
	}()
	if err := <-started; err != nil {
		b.Fatalf("starting %s: %v", name, err)
	}
	b.Cleanup(func() { p.stop(b) })
	return p
}

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM, then kills the process group after stopGrace. It
// reports a process that had to be killed, or that failed, as an error of
// b.
func (p *proc) stop(b *testing.B) {
	if p.stopped {
		return
	}
	p.stopped = true
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	timer := time.NewTimer(stopGrace)
	defer timer.Stop()
	select {
	case <-p.done:
		if st := p.cmd.ProcessState; st != nil && !st.Success() {
			b.Logf("%s exited with %v after SIGTERM (log %s)", p.name, st, p.logPath)
		}
	case <-timer.C:
		b.Errorf("%s did not stop within %v of SIGTERM; killing it (log %s)", p.name, stopGrace, p.logPath)
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

// emulator is the fake Zenodo (bin/zenodotest) of one image: one process
// per case on the same records directory, so every case gets a fresh rate
// limit window and its own request log. The first start publishes the
// Python donodo's image.tar.gz as a record.
type emulator struct {
	cfg       *config
	dir       string
	logDir    string
	seedFile  string
	seedTitle string
	// seedRecID is the record holding image.tar.gz, once started.
	seedRecID string
}

// newEmulator keeps the request logs and the emulator's own log of every
// case in logDir.
func newEmulator(b *testing.B, cfg *config, img *Image, logDir string) *emulator {
	return &emulator{cfg: cfg, dir: b.TempDir(), logDir: logDir, seedFile: img.DockerArchiveGz,
		seedTitle: "Docker image " + img.Spec.Name + " (Python donodo)"}
}

// emulatorRun is one running emulator process.
type emulatorRun struct {
	url     string
	reqLog  string
	p       *proc
	emuName string
}

// start runs the emulator for case name, shaped as configured.
func (z *emulator) start(b *testing.B, name string) *emulatorRun {
	r := &emulatorRun{reqLog: filepath.Join(z.logDir, name+".requests.jsonl"), emuName: "zenodotest (" + name + ")"}
	args := []string{z.cfg.bin("zenodotest"), "--listen", "127.0.0.1:0", "--dir", z.dir, "--token", benchToken,
		"--latency", z.cfg.latency.String(), "--bandwidth", strconv.FormatInt(z.cfg.bandwidth, 10),
		"--rate-limit", strconv.Itoa(z.cfg.rateLimit), "--request-log", r.reqLog, "--log-level", "warn"}
	seeding := z.seedRecID == ""
	if seeding {
		args = append(args, "--seed-file", z.seedFile, "--seed-title", z.seedTitle, "--seed-version", Tag)
	}
	pr, pw := io.Pipe()
	r.p = startProc(b, r.emuName, filepath.Join(z.logDir, name+".log"), pw, args...)
	lines := make(chan string, 2)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default:
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	go func() {
		<-r.p.done
		pw.Close()
	}()
	next := func(what string) string {
		timer := time.NewTimer(readyTimeout)
		defer timer.Stop()
		select {
		case l, ok := <-lines:
			if !ok {
				b.Fatalf("%s exited before printing its %s (log %s)", r.emuName, what, r.p.logPath)
			}
			return l
		case <-timer.C:
			b.Fatalf("%s printed no %s within %v", r.emuName, what, readyTimeout)
		}
		return ""
	}
	r.url = next("URL")
	if seeding {
		f := strings.Fields(next("seeded record"))
		if len(f) < 2 || f[0] != "seeded" {
			b.Fatalf("%s: unexpected seed line %q", r.emuName, f)
		}
		z.seedRecID = f[1]
	}
	return r
}

// stop stops the emulator and sums up its request log from start.
func (r *emulatorRun) stop(b *testing.B, start time.Time) Traffic {
	r.p.stop(b)
	reqs, err := ReadRequestLog(r.reqLog)
	if err != nil {
		b.Fatal(err)
	}
	return Summarize(reqs, start)
}

// snapshotterDaemon is bin/zenodo-snapshotter serve with its registry
// endpoint and metrics on loopback.
type snapshotterDaemon struct {
	root, socket        string
	registry, metricsAt string
	logPath             string
	p                   *proc
}

// startSnapshotter runs the daemon reading zenodoURL, its log in logDir.
func startSnapshotter(b *testing.B, cfg *config, zenodoURL, logDir string) *snapshotterDaemon {
	dir := b.TempDir()
	sd := &snapshotterDaemon{
		root:      filepath.Join(dir, "root"),
		socket:    filepath.Join(dir, "zs.sock"),
		registry:  freePort(b),
		metricsAt: freePort(b),
		logPath:   filepath.Join(logDir, "zenodo-snapshotter.log"),
	}
	conf := fmt.Sprintf(`root = %q
socket = %q
log_level = "info"

[zenodo]
url = %q
sandbox_url = ""
requests_per_minute = %d

[fetch]
background_fill = true

[registry]
listen = %q

[metrics]
listen = %q
`, sd.root, sd.socket, zenodoURL, cfg.rateLimit, sd.registry, sd.metricsAt)
	confPath := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { detachMounts(b, sd.root) })
	sd.p = startProc(b, "zenodo-snapshotter", sd.logPath, nil, cfg.bin("zenodo-snapshotter"), "serve", "--config", confPath)
	deadline := time.Now().Add(readyTimeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		err := sd.ready(b)
		if err == nil {
			return sd
		}
		if sd.p.exited() {
			b.Fatalf("zenodo-snapshotter exited: %v (log %s)", sd.p.cmd.ProcessState, sd.logPath)
		}
		if time.Now().After(deadline) {
			b.Fatalf("zenodo-snapshotter not ready after %v: %v (log %s)", readyTimeout, err, sd.logPath)
		}
		select {
		case <-tick.C:
		case <-b.Context().Done():
			b.Fatal(b.Context().Err())
		}
	}
}

func (sd *snapshotterDaemon) ready(b *testing.B) error {
	c, err := net.Dial("unix", sd.socket)
	if err != nil {
		return err
	}
	c.Close()
	if _, err := httpGet(b.Context(), "http://"+sd.registry+"/v2/"); err != nil {
		return err
	}
	_, err = httpGet(b.Context(), "http://"+sd.metricsAt+"/metrics")
	return err
}

func (sd *snapshotterDaemon) stop(b *testing.B) { sd.p.stop(b) }

// metrics scrapes /metrics.
func (sd *snapshotterDaemon) metrics(b *testing.B) promText {
	body, err := httpGet(b.Context(), "http://"+sd.metricsAt+"/metrics")
	if err != nil {
		b.Fatalf("scraping the snapshotter's metrics: %v", err)
	}
	return promText(body)
}

// peakRSS is the daemon's peak resident set so far (VmHWM).
func (sd *snapshotterDaemon) peakRSS(b *testing.B) int64 {
	n, err := vmHWM(sd.p.cmd.Process.Pid)
	if err != nil {
		b.Logf("reading the snapshotter's peak RSS: %v", err)
	}
	return n
}

// vmHWM reads a process's peak resident set from /proc/<pid>/status.
func vmHWM(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return parseVmHWM(f)
}

func parseVmHWM(r io.Reader) (int64, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		v, ok := strings.CutPrefix(sc.Text(), "VmHWM:")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("unexpected VmHWM line %q", sc.Text())
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		return n * 1024, err
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, errors.New("no VmHWM in status")
}

// promText is a Prometheus text exposition.
type promText = testutil.PromText

// detachMounts lazily unmounts whatever is still mounted below dir,
// deepest first, so a daemon that died with FUSE mounts in place does not
// keep the temporary directory.
func detachMounts(b *testing.B, dir string) {
	mounts, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		b.Logf("listing mounts under %s: %v", dir, err)
		return
	}
	points := make([]string, 0, len(mounts))
	for _, m := range mounts {
		points = append(points, m.Mountpoint)
	}
	slices.Sort(points)
	slices.Reverse(points)
	for _, p := range points {
		if err := unix.Unmount(p, unix.MNT_DETACH); err != nil {
			b.Logf("unmounting %s: %v", p, err)
		}
	}
}

func TestParseVmHWM(t *testing.T) {
	tests := []struct {
		name    string
		status  string
		want    int64
		wantErr bool
	}{
		{name: "ok", status: "Name:\tx\nVmPeak:\t  9 kB\nVmHWM:\t   71520 kB\nVmRSS:\t 1 kB\n", want: 71520 * 1024},
		{name: "missing", status: "Name:\tx\n", wantErr: true},
		{name: "other unit", status: "VmHWM:\t 3 MB\n", wantErr: true},
		{name: "not a number", status: "VmHWM:\t x kB\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseVmHWM(strings.NewReader(tt.status))
			if tt.wantErr {
				assert.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
	n, err := vmHWM(os.Getpid())
	require.NoError(t, err)
	assert.Positive(t, n)
}

func TestPromTextSum(t *testing.T) {
	p := promText(`# HELP x
# TYPE x counter
zenodo_snapshotter_zenodo_requests_total{code="200",method="GET"} 5
zenodo_snapshotter_zenodo_requests_total{code="206",method="GET"} 3
zenodo_snapshotter_zenodo_requests_total_other 100
zenodo_snapshotter_layer_fills_total{result="done"} 1
bad line
`)
	assert.InDelta(t, 8.0, p.Sum("zenodo_snapshotter_zenodo_requests_total", ""), 1e-9)
	assert.InDelta(t, 3.0, p.Sum("zenodo_snapshotter_zenodo_requests_total", `code="206"`), 1e-9)
	assert.InDelta(t, 1.0, p.Sum("zenodo_snapshotter_layer_fills_total", `result="done"`), 1e-9)
	assert.Zero(t, p.Sum("missing", ""))
}
