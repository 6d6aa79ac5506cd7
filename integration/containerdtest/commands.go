package containerdtest

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pelletier/go-toml/v2"
)

// CtrCommand returns the matching ctr set up for the daemon through its
// environment: CONTAINERD_ADDRESS, CONTAINERD_NAMESPACE and, when
// WithSnapshotter was given, CONTAINERD_SNAPSHOTTER (variables of these names
// inherited from the test's environment are dropped). Flags in args override
// them, e.g. `-n other` for another namespace. For tests that need stdin, an
// expected failure, or their own timeout.
func (d *Daemon) CtrCommand(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, d.opts.version.Ctr(), args...)
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

// NerdctlCommand returns nerdctl (see NerdctlPath) set up for the daemon:
// the environment of CtrCommand, and a nerdctl.toml of its own (NERDCTL_TOML)
// giving a data root, CNI config directory and CNI plugin directory under Dir
// (nothing read from /etc or written to /var/lib) and the cgroupfs driver.
// Flags in args override all of it, e.g. `--namespace other`,
// `--snapshotter zenodo`, `--hosts-dir DIR`.
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
	cfg, err := toml.Marshal(map[string]any{
		"address":         d.address,
		"namespace":       d.opts.namespace,
		"data_root":       filepath.Join(base, "data"),
		"cni_path":        filepath.Join(base, "cni-bin"),
		"cni_netconfpath": filepath.Join(base, "cni.d"),
		"cgroup_manager":  "cgroupfs",
	})
	if err != nil {
		t.Fatalf("encoding nerdctl.toml: %v", err)
	}
	tomlPath := filepath.Join(base, "nerdctl.toml")
	if err := os.WriteFile(tomlPath, cfg, 0o600); err != nil {
		t.Fatalf("writing nerdctl.toml: %v", err)
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(d.toolEnv(), "NERDCTL_TOML="+tomlPath)
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

// toolEnv is the environment of ctr and nerdctl: the daemon's, without the
// variables that would point them elsewhere, with ours.
func (d *Daemon) toolEnv() []string {
	var env []string
	for _, kv := range d.env() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "CONTAINERD_") || strings.HasPrefix(name, "NERDCTL_") ||
			name == "CNI_PATH" || name == "NETCONFPATH" {
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "CONTAINERD_ADDRESS="+d.address, "CONTAINERD_NAMESPACE="+d.opts.namespace)
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
