package containerdtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Environment variables the Makefile sets from scripts/build-tools.sh.
const (
	// EnvContainerd2Dir names the directory holding containerd 2.x's
	// containerd, ctr and containerd-shim-runc-v2.
	EnvContainerd2Dir = "ZS_CONTAINERD2_DIR"
	// EnvNerdctl names the nerdctl binary.
	EnvNerdctl = "ZS_NERDCTL"
)

// debianDir is where Debian's containerd package (1.6) installs its binaries.
const debianDir = "/usr/bin"

// Version is one containerd installation: a directory holding containerd,
// ctr and containerd-shim-runc-v2 of the same release.
type Version struct {
	// Name is "containerd-" and the release, e.g. "containerd-1.6.20" or
	// "containerd-2.4.2": use it as the subtest name.
	Name string
	// Release is the release without decoration, e.g. "1.6.20".
	Release string
	// Major is the major release, 1 or 2. Their config formats (version 2,
	// version 3) and some plugin names differ.
	Major int
	// Dir holds the binaries.
	Dir string
}

// Containerd is the path of the daemon.
func (v Version) Containerd() string { return filepath.Join(v.Dir, "containerd") }

// Ctr is the path of the matching ctr.
func (v Version) Ctr() string { return filepath.Join(v.Dir, "ctr") }

// Shim is the path of the matching containerd-shim-runc-v2.
func (v Version) Shim() string { return filepath.Join(v.Dir, "containerd-shim-runc-v2") }

// String returns the name.
func (v Version) String() string { return v.Name }

// probeVersion reads the release of the containerd in dir.
func probeVersion(dir string) (Version, error) {
	v := Version{Dir: dir}
	for _, bin := range []string{v.Containerd(), v.Ctr(), v.Shim()} {
		if _, err := os.Stat(bin); err != nil {
			return Version{}, fmt.Errorf("looking for containerd binaries: %w", err)
		}
	}
	out, err := exec.Command(v.Containerd(), "--version").Output()
	if err != nil {
		return Version{}, fmt.Errorf("running %s --version: %w", v.Containerd(), err)
	}
	rel, err := parseRelease(string(out))
	if err != nil {
		return Version{}, fmt.Errorf("%s --version: %w", v.Containerd(), err)
	}
	v.Release = rel
	v.Name = "containerd-" + rel
	if _, err := fmt.Sscanf(rel, "%d.", &v.Major); err != nil {
		return Version{}, fmt.Errorf("major release of %q: %w", rel, err)
	}
	return v, nil
}

// parseRelease extracts "1.6.20" from lines such as
// "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3"
// or "containerd github.com/containerd/containerd/v2 v2.4.2 ".
func parseRelease(versionOutput string) (string, error) {
	f := strings.Fields(versionOutput)
	if len(f) < 3 {
		return "", fmt.Errorf("unexpected version output %q", versionOutput)
	}
	rel := strings.TrimPrefix(f[2], "v")
	if i := strings.IndexAny(rel, "~+-"); i >= 0 {
		rel = rel[:i]
	}
	if rel == "" || rel[0] < '0' || rel[0] > '9' {
		return "", fmt.Errorf("unexpected version output %q", versionOutput)
	}
	return rel, nil
}

// Debian returns Debian's containerd (1.6, in /usr/bin); it skips (fails in
// CI) t when that is not installed.
func Debian(t testing.TB) Version {
	t.Helper()
	v, err := probeVersion(debianDir)
	if err != nil {
		Skipf(t, "Debian's containerd is not installed (apt-get install containerd, or `make deps` as root): %v", err)
	}
	return v
}

// Containerd2 returns the containerd 2.x that `make tools` built (directory
// in $ZS_CONTAINERD2_DIR); it skips (fails in CI) t when there is none.
func Containerd2(t testing.TB) Version {
	t.Helper()
	v, err := containerd2()
	if err != nil {
		Skipf(t, "%v", err)
	}
	return v
}

func containerd2() (Version, error) {
	dir := os.Getenv(EnvContainerd2Dir)
	if dir == "" {
		return Version{}, fmt.Errorf("containerd 2.x not available: $%s is not set (run the tests through `make test`/`make integration`, which build it with `make tools`)", EnvContainerd2Dir)
	}
	v, err := probeVersion(dir)
	if err != nil {
		return Version{}, fmt.Errorf("containerd 2.x not available in $%s=%s (run `make tools`): %w", EnvContainerd2Dir, dir, err)
	}
	if v.Major < 2 {
		return Version{}, fmt.Errorf("$%s=%s holds containerd %s, not 2.x", EnvContainerd2Dir, dir, v.Release)
	}
	return v, nil
}

// Versions returns the containerds to run a table test against: Debian's
// 1.6 always, containerd 2.x when built. A missing 2.x is logged loudly, and
// fails t in CI (where `make tools` builds it); the test still runs on 1.6.
//
//	for _, v := range containerdtest.Versions(t) {
//		t.Run(v.Name, func(t *testing.T) { d := containerdtest.Start(t, containerdtest.WithVersion(v)) … })
//	}
func Versions(t testing.TB) []Version {
	t.Helper()
	vs := []Version{Debian(t)}
	v2, err := containerd2()
	switch {
	case err == nil:
		vs = append(vs, v2)
	case InCI():
		t.Fatalf("CI=true but %v", err)
	default:
		skips.add(t.Name()+"/containerd-2", err.Error())
		t.Logf("NOT TESTED against containerd 2.x: %v", err)
	}
	return vs
}
