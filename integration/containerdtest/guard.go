package containerdtest

import (
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"testing"
)

// InCI reports whether the tests run in CI (environment CI=true). CI runs as
// root with /dev/fuse and the tools built, so there every guard below fails
// the test instead of skipping it: a skipped integration test in CI hides a
// broken environment.
func InCI() bool { return os.Getenv("CI") == "true" }

// Skipf skips the test with a loud reason, or fails it when InCI. Integration
// tests use it (directly or through the Requires guards) instead of t.Skip,
// so that skips are counted by Run and cannot pass unnoticed in CI.
func Skipf(t testing.TB, format string, args ...any) {
	t.Helper()
	reason := fmt.Sprintf(format, args...)
	skips.add(t.Name(), reason)
	if InCI() {
		t.Fatalf("CANNOT RUN in CI (CI=true), failing instead of skipping: %s", reason)
		return
	}
	t.Skipf("SKIPPED: %s", reason)
}

// RequiresRoot skips (or fails, in CI) t unless the test runs as root, as
// containerd, runc and mounting need.
func RequiresRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Skipf(t, "this test needs root (real containerd, runc and mounts): run it as root, e.g. `sudo make integration`")
	}
}

// RequiresFUSE skips (or fails, in CI) t unless /dev/fuse can be opened and a
// fusermount helper is installed. It implies RequiresRoot.
func RequiresFUSE(t testing.TB) {
	t.Helper()
	RequiresRoot(t)
	if err := checkFUSE(); err != nil {
		Skipf(t, "this test needs FUSE: %v (Debian: apt-get install fuse3; in a container: --device /dev/fuse --cap-add SYS_ADMIN)", err)
	}
}

func checkFUSE() error {
	f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("opening /dev/fuse: %w", err)
	}
	f.Close()
	if _, err := exec.LookPath("fusermount3"); err != nil {
		if _, err2 := exec.LookPath("fusermount"); err2 != nil {
			return fmt.Errorf("no fusermount3 or fusermount in PATH")
		}
	}
	return nil
}

// skips is every Skipf of the test binary, for Run's summary. It is the one
// piece of process-wide state here: a TestMain has no other way to learn
// what its tests skipped.
var skips skipLog

type skipLog struct {
	mu    sync.Mutex
	names []string
}

func (l *skipLog) add(test, reason string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.names = append(l.names, test+": "+reason)
}

func (l *skipLog) list() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := append([]string(nil), l.names...)
	sort.Strings(out)
	return out
}

// Run is for TestMain: it runs the tests, then lists what Skipf skipped and,
// when InCI, turns any such skip into a failure of the test binary:
//
//	func TestMain(m *testing.M) { os.Exit(containerdtest.Run(m)) }
//
// A plain t.Skip is invisible to it; `make test` and `make integration`
// catch those too, from go test's JSON output (integration/internal/gotestreport).
func Run(m *testing.M) int {
	code := m.Run()
	names := skips.list()
	if len(names) == 0 {
		return code
	}
	fmt.Fprintf(os.Stderr, "\n==== %d integration test(s) could not run here:\n    %s\n", len(names), strings.Join(names, "\n    "))
	if InCI() {
		fmt.Fprintln(os.Stderr, "==== FAIL: CI=true and integration tests did not run")
		if code == 0 {
			code = 1
		}
	}
	return code
}
