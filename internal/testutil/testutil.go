// Package testutil holds what the tests of several packages share: guards
// for tests that need root, FUSE or a tool, and deterministic test data.
//
// A guard skips its test loudly on a developer's machine, but fails it when
// the environment has CI=true: CI runs as root with /dev/fuse and every tool
// installed, so there a skip could only hide a broken environment.
package testutil

import (
	"fmt"
	"math/rand/v2"
	"os"
	"testing"
)

// InCI reports whether the tests run in CI (environment CI=true).
func InCI() bool { return os.Getenv("CI") == "true" }

// SkipOrFail skips tb with a loud reason, or fails it when InCI.
func SkipOrFail(tb testing.TB, format string, args ...any) {
	tb.Helper()
	msg := fmt.Sprintf(format, args...)
	if InCI() {
		tb.Fatalf("CI=true, so failing instead of skipping %s: %s", tb.Name(), msg)
	}
	tb.Skipf("!!! SKIPPING %s: %s", tb.Name(), msg)
}

// RequireRoot skips (or, InCI, fails) tb unless it runs as root; why says
// what needs root.
func RequireRoot(tb testing.TB, why string) {
	tb.Helper()
	if os.Geteuid() != 0 {
		SkipOrFail(tb, "not running as root, which %s needs", why)
	}
}

// RequireFUSE skips (or, InCI, fails) tb unless it runs as root and can open
// /dev/fuse, as mounting FUSE filesystems needs.
func RequireFUSE(tb testing.TB) {
	tb.Helper()
	RequireRoot(tb, "mounting FUSE filesystems")
	f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err != nil {
		SkipOrFail(tb, "this test mounts FUSE filesystems: cannot open /dev/fuse: %v", err)
		return
	}
	f.Close()
}

// PseudoRandom returns n bytes of incompressible data, the same for the
// same seed.
func PseudoRandom(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}
