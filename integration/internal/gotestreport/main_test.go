package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const (
	pkgInteg = "example.com/m/integration"
	pkgUnit  = "example.com/m/zenodo"
)

func TestReporter(t *testing.T) {
	passing := `{"Action":"start","Package":"example.com/m/zenodo"}
{"Action":"run","Package":"example.com/m/zenodo","Test":"TestA"}
{"Action":"output","Package":"example.com/m/zenodo","Test":"TestA","Output":"=== RUN   TestA\n"}
{"Action":"output","Package":"example.com/m/zenodo","Test":"TestA","Output":"    a_test.go:1: chatter\n"}
{"Action":"output","Package":"example.com/m/zenodo","Test":"TestA","Output":"--- PASS: TestA (0.00s)\n"}
{"Action":"pass","Package":"example.com/m/zenodo","Test":"TestA"}
{"Action":"output","Package":"example.com/m/zenodo","Output":"PASS\n"}
{"Action":"output","Package":"example.com/m/zenodo","Output":"coverage: 50.0% of statements\n"}
{"Action":"output","Package":"example.com/m/zenodo","Output":"ok  \texample.com/m/zenodo\t0.1s\tcoverage: 50.0% of statements\n"}
{"Action":"pass","Package":"example.com/m/zenodo"}
`
	failing := `{"Action":"run","Package":"example.com/m/zenodo","Test":"TestB"}
{"Action":"output","Package":"example.com/m/zenodo","Test":"TestB","Output":"=== RUN   TestB\n"}
{"Action":"output","Package":"example.com/m/zenodo","Test":"TestB","Output":"    b_test.go:2: boom\n"}
{"Action":"output","Package":"example.com/m/zenodo","Test":"TestB","Output":"--- FAIL: TestB (0.00s)\n"}
{"Action":"fail","Package":"example.com/m/zenodo","Test":"TestB"}
{"Action":"output","Package":"example.com/m/zenodo","Output":"FAIL\texample.com/m/zenodo\t0.1s\n"}
{"Action":"fail","Package":"example.com/m/zenodo"}
`
	skipIn := func(pkg string) string {
		return `{"Action":"run","Package":"` + pkg + `","Test":"TestC/sub"}
{"Action":"output","Package":"` + pkg + `","Test":"TestC/sub","Output":"=== RUN   TestC/sub\n"}
{"Action":"output","Package":"` + pkg + `","Test":"TestC/sub","Output":"    c_test.go:3: needs root\n"}
{"Action":"output","Package":"` + pkg + `","Test":"TestC/sub","Output":"    --- SKIP: TestC/sub (0.00s)\n"}
{"Action":"skip","Package":"` + pkg + `","Test":"TestC/sub"}
{"Action":"output","Package":"` + pkg + `","Output":"ok  \t` + pkg + `\t0.1s\n"}
{"Action":"pass","Package":"` + pkg + `"}
`
	}
	crashed := `{"Action":"output","Package":"example.com/m/zenodo","Test":"TestD","Output":"=== RUN   TestD\n"}
{"Action":"output","Package":"example.com/m/zenodo","Test":"TestD","Output":"panic: test timed out after 1s\n"}
{"Action":"output","Package":"example.com/m/zenodo","Output":"FAIL\texample.com/m/zenodo\t1.0s\n"}
{"Action":"fail","Package":"example.com/m/zenodo"}
`
	buildFailed := `{"ImportPath":"example.com/m/zenodo [example.com/m/zenodo.test]","Action":"build-output","Output":"zenodo/x.go:1:1: syntax error\n"}
{"ImportPath":"example.com/m/zenodo [example.com/m/zenodo.test]","Action":"build-fail"}
{"Action":"start","Package":"example.com/m/zenodo"}
{"Action":"output","Package":"example.com/m/zenodo","Output":"FAIL\texample.com/m/zenodo [build failed]\n"}
{"Action":"fail","Package":"example.com/m/zenodo","FailedBuild":"example.com/m/zenodo [example.com/m/zenodo.test]"}
`

	tests := []struct {
		name        string
		in          string
		strict      bool
		wantCode    int
		wantOut     []string
		wantMissing []string
	}{
		{name: "pass is quiet", in: passing, wantOut: []string{"ok  \texample.com/m/zenodo\t0.1s\tcoverage: 50.0% of statements\n"},
			wantMissing: []string{"chatter", "=== RUN", "--- PASS", "PASS\n", "\ncoverage:"}},
		{name: "failure shows the test output", in: passing + failing, wantCode: 1,
			wantOut: []string{"b_test.go:2: boom", "--- FAIL: TestB", "FAIL\texample.com/m/zenodo"}},
		{name: "skip is listed", in: skipIn(pkgInteg), wantOut: []string{
			"--- SKIP: TestC/sub", "1 test(s) skipped", "SKIP " + pkgInteg + " TestC/sub: c_test.go:3: needs root"},
			wantMissing: []string{"not allowed in CI"}},
		{name: "integration skip fails in CI", in: skipIn(pkgInteg), strict: true, wantCode: 1,
			wantOut: []string{"not allowed in CI", "FAIL: 1 integration test(s) skipped"}},
		{name: "unit skip is fine in CI", in: skipIn(pkgUnit), strict: true,
			wantOut: []string{"SKIP " + pkgUnit}, wantMissing: []string{"not allowed"}},
		{name: "crash shows running tests", in: crashed, wantCode: 1,
			wantOut: []string{"panic: test timed out"}},
		{name: "build failure", in: buildFailed, wantCode: 1,
			wantOut: []string{"syntax error", "[build failed]"}},
		{name: "non-JSON lines pass through", in: "go: downloading x v1\n" + passing,
			wantOut: []string{"go: downloading x v1\n"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			r := newReporter(&out, tt.strict, pkgInteg)
			require.NoError(t, r.read(strings.NewReader(tt.in)))
			assert.Equal(t, tt.wantCode, r.finish())
			for _, s := range tt.wantOut {
				assert.Contains(t, out.String(), s)
			}
			for _, s := range tt.wantMissing {
				assert.NotContains(t, out.String(), s)
			}
		})
	}
}
