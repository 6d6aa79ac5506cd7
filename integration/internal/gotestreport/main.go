// Command gotestreport reads `go test -json` on stdin and prints what a plain
// `go test` would (package result lines, the output of failed tests), plus the
// output of every skipped test and a closing list of skips.
//
// With -strict-skips=true (the Makefile passes $CI), a skipped test in a
// package whose import path starts with -strict-prefix makes it exit non-zero:
// CI runs as root with FUSE, so an integration test that skipped there hid a
// broken environment instead of testing something.
//
// It also exits non-zero when any test, package or build failed, so a pipeline
// `go test -json ./... | gotestreport` fails as `go test` would.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

func main() {
	strictSkips := flag.String("strict-skips", "", `"true" (as $CI is in CI) makes skips under -strict-prefix fatal`)
	strictPrefix := flag.String("strict-prefix", "", "import path prefix of the packages that must not skip tests")
	flag.Parse()

	r := newReporter(os.Stdout, *strictSkips == "true", *strictPrefix)
	if err := r.read(os.Stdin); err != nil {
		fmt.Fprintf(os.Stderr, "gotestreport: reading go test output: %v\n", err)
		os.Exit(2)
	}
	if code := r.finish(); code != 0 {
		os.Exit(code)
	}
}

// event is one line of `go test -json` (cmd/test2json), including the build
// events that go test emits with -json since Go 1.24.
type event struct {
	Action      string
	Package     string
	Test        string
	Output      string
	ImportPath  string
	FailedBuild string
}

// skip is one skipped test and the last line of output it gave as reason.
type skip struct {
	pkg, test, reason string
	strict            bool
}

type reporter struct {
	w            io.Writer
	strict       bool
	strictPrefix string

	// Output of each running test, keyed by package and test name, printed
	// only if the test fails or skips.
	pending map[string][]string
	skips   []skip
	failed  bool
}

func newReporter(w io.Writer, strict bool, strictPrefix string) *reporter {
	return &reporter{w: w, strict: strict, strictPrefix: strictPrefix, pending: map[string][]string{}}
}

func (r *reporter) read(in io.Reader) error {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var ev event
		if len(line) == 0 || line[0] != '{' || json.Unmarshal(line, &ev) != nil || ev.Action == "" {
			// Not an event: go's own messages (e.g. from `go run`, or a
			// build error on an older go). Pass it through.
			fmt.Fprintf(r.w, "%s\n", line)
			continue
		}
		r.handle(ev)
	}
	return sc.Err()
}

func key(pkg, test string) string { return pkg + "\x00" + test }

// noise reports the lines that go test prints only in verbose mode.
func noise(line string) bool {
	for _, p := range []string{"=== RUN", "=== PAUSE", "=== CONT", "=== NAME", "--- PASS"} {
		if strings.HasPrefix(strings.TrimLeft(line, " "), p) {
			return true
		}
	}
	return false
}

func (r *reporter) handle(ev event) {
	switch {
	case ev.Action == "build-output":
		fmt.Fprint(r.w, ev.Output)
	case ev.Action == "build-fail":
		r.failed = true
	case ev.Test == "":
		r.handlePackage(ev)
	default:
		r.handleTest(ev)
	}
}

func (r *reporter) handlePackage(ev event) {
	switch ev.Action {
	case "output":
		// Verbose-only lines; the coverage line is repeated in the "ok" line.
		if ev.Output == "PASS\n" || noise(ev.Output) || strings.HasPrefix(ev.Output, "coverage: ") {
			return
		}
		fmt.Fprint(r.w, ev.Output)
	case "fail":
		r.failed = true
		// A crash (panic, timeout) ends the binary with tests still
		// running: their output explains the failure.
		r.flushPackage(ev.Package)
	case "pass", "skip":
		r.dropPackage(ev.Package)
	}
}

func (r *reporter) handleTest(ev event) {
	k := key(ev.Package, ev.Test)
	switch ev.Action {
	case "output":
		if !noise(ev.Output) {
			r.pending[k] = append(r.pending[k], ev.Output)
		}
	case "pass":
		delete(r.pending, k)
	case "fail":
		r.failed = true
		r.print(k)
	case "skip":
		out := r.pending[k]
		r.print(k)
		r.skips = append(r.skips, skip{
			pkg:    ev.Package,
			test:   ev.Test,
			reason: lastLine(out),
			strict: r.strict && r.underPrefix(ev.Package),
		})
	}
}

// underPrefix reports whether pkg is the strict prefix or a package below it.
func (r *reporter) underPrefix(pkg string) bool {
	p := strings.TrimSuffix(r.strictPrefix, "/")
	return p != "" && (pkg == p || strings.HasPrefix(pkg, p+"/"))
}

func (r *reporter) print(k string) {
	for _, o := range r.pending[k] {
		fmt.Fprint(r.w, o)
	}
	delete(r.pending, k)
}

func (r *reporter) packageKeys(pkg string) []string {
	var keys []string
	for k := range r.pending {
		if strings.HasPrefix(k, pkg+"\x00") {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys
}

func (r *reporter) flushPackage(pkg string) {
	for _, k := range r.packageKeys(pkg) {
		r.print(k)
	}
}

func (r *reporter) dropPackage(pkg string) {
	for _, k := range r.packageKeys(pkg) {
		delete(r.pending, k)
	}
}

// lastLine returns the last non-blank output line that is not go test's own
// "--- SKIP" line: the skip reason.
func lastLine(out []string) string {
	for i := len(out) - 1; i >= 0; i-- {
		l := strings.TrimSpace(out[i])
		if l != "" && !strings.HasPrefix(l, "--- SKIP") {
			return l
		}
	}
	return "(no reason given)"
}

// finish prints the skip summary and returns the exit code.
func (r *reporter) finish() int {
	// Whatever is still pending belongs to a binary that never reported its
	// end (killed): show it.
	keys := make([]string, 0, len(r.pending))
	for k := range r.pending {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		r.print(k)
	}

	strict := 0
	if len(r.skips) > 0 {
		fmt.Fprintf(r.w, "\n%d test(s) skipped:\n", len(r.skips))
		for _, s := range r.skips {
			mark := ""
			if s.strict {
				mark = "  <-- not allowed in CI"
				strict++
			}
			fmt.Fprintf(r.w, "  SKIP %s %s: %s%s\n", s.pkg, s.test, s.reason, mark)
		}
	}
	if strict > 0 {
		fmt.Fprintf(r.w, "FAIL: %d integration test(s) skipped with CI=true; CI must run them all (fix the environment, or the test)\n", strict)
		return 1
	}
	if r.failed {
		return 1
	}
	return 0
}
