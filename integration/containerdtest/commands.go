package containerdtest

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// CtrCommand returns the matching ctr with the daemon's address and
// namespace before args, and CONTAINERD_SNAPSHOTTER set when WithSnapshotter
// was given; for tests that need stdin, a failure, or their own timeout.
func (d *Daemon) CtrCommand(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, d.opts.version.Ctr(),
		append([]string{"--address", d.address, "--namespace", d.opts.namespace}, args...)...)
	cmd.Env = d.toolEnv()
	return cmd
}

// Ctr runs the matching ctr (see CtrCommand) and returns its standard output.
// A non-zero exit, or a run longer than the command timeout, fails t with the
// output of both streams.
func (d *Daemon) Ctr(t testing.TB, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d.opts.cmdTimeout)
	defer cancel()
	return run(t, d.CtrCommand(ctx, args...))
}

// NerdctlPath is the nerdctl binary that `make tools` built ($ZS_NERDCTL); it
// skips (fails in CI) t when there is none.
func NerdctlPath(t testing.TB) string {
	t.Helper()
	p := os.Getenv(EnvNerdctl)
	if p == "" {
		Skipf(t, "nerdctl not available: $%s is not set (run the tests through `make test`/`make integration`, which build it with `make tools`)", EnvNerdctl)
	}
	if _, err := os.Stat(p); err != nil {
		Skipf(t, "nerdctl not available in $%s (run `make tools`): %v", EnvNerdctl, err)
	}
	return p
}

// NerdctlCommand returns nerdctl (see NerdctlPath) set up for the daemon before
// args: its address and namespace, a data root, CNI config directory and
// nerdctl.toml of its own under Dir (nothing read from /etc or written to
// /var/lib), the cgroupfs driver, and the default snapshotter of
// WithSnapshotter.
//
// Its CNI plugin directory is empty on purpose: nerdctl's default bridge
// network would add a bridge, iptables rules and IPAM state to the host that
// outlive the test. So `run` needs `--net none` (or `--net host`); with the
// default network it fails with a missing CNI plugin error.
func (d *Daemon) NerdctlCommand(ctx context.Context, t testing.TB, args ...string) *exec.Cmd {
	t.Helper()
	bin := NerdctlPath(t)
	base := filepath.Join(d.dir, "nerdctl")
	for _, sub := range []string{"data", "cni.d", "cni-bin"} {
		if err := os.MkdirAll(filepath.Join(base, sub), 0o700); err != nil {
			t.Fatalf("creating nerdctl directories: %v", err)
		}
	}
	global := []string{
		"--address", d.address,
		"--namespace", d.opts.namespace,
		"--data-root", filepath.Join(base, "data"),
		"--cni-path", filepath.Join(base, "cni-bin"),
		"--cni-netconfpath", filepath.Join(base, "cni.d"),
		"--cgroup-manager", "cgroupfs",
	}
	if d.opts.snapshotter != "" {
		global = append(global, "--snapshotter", d.opts.snapshotter)
	}
	cmd := exec.CommandContext(ctx, bin, append(global, args...)...)
	cmd.Env = append(d.toolEnv(), "NERDCTL_TOML="+filepath.Join(base, "nerdctl.toml"))
	return cmd
}

// Nerdctl runs nerdctl (see NerdctlCommand) and returns its standard output.
// A non-zero exit, or a run longer than the command timeout, fails t with the
// output of both streams.
func (d *Daemon) Nerdctl(t testing.TB, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d.opts.cmdTimeout)
	defer cancel()
	return run(t, d.NerdctlCommand(ctx, t, args...))
}

// toolEnv is the environment of ctr and nerdctl.
func (d *Daemon) toolEnv() []string {
	env := d.env()
	if d.opts.snapshotter != "" {
		env = append(env, "CONTAINERD_SNAPSHOTTER="+d.opts.snapshotter)
	}
	return env
}

func run(t testing.TB, cmd *exec.Cmd) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(cmd.Args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}
