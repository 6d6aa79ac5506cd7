package resolver

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/zenodo"
)

func TestRepository(t *testing.T) {
	tests := []struct {
		name, ns string
		want     zenodo.Reference
		code     string
	}{
		{"10.5281/zenodo.123", "", zenodo.Reference{Host: zenodo.HostProduction, RecID: "123", DOI: "10.5281/zenodo.123"}, ""},
		{"10.5281/zenodo.123", "zenodo.org", zenodo.Reference{Host: zenodo.HostProduction, RecID: "123", DOI: "10.5281/zenodo.123"}, ""},
		{"10.5072/zenodo.5", "", zenodo.Reference{Host: zenodo.HostSandbox, RecID: "5", DOI: "10.5072/zenodo.5"}, ""},
		{"10.5072/zenodo.5", "sandbox.zenodo.org", zenodo.Reference{Host: zenodo.HostSandbox, RecID: "5", DOI: "10.5072/zenodo.5"}, ""},
		{"zenodo.5", "sandbox.zenodo.org", zenodo.Reference{Host: zenodo.HostSandbox, RecID: "5", DOI: "10.5072/zenodo.5"}, ""},
		{"5", "", zenodo.Reference{Host: zenodo.HostProduction, RecID: "5", DOI: "10.5281/zenodo.5"}, ""},
		{"sandbox.zenodo.org/10.5072/zenodo.5", "", zenodo.Reference{Host: zenodo.HostSandbox, RecID: "5", DOI: "10.5072/zenodo.5"}, ""},
		{"sandbox.zenodo.org/zenodo.5", "sandbox.zenodo.org", zenodo.Reference{Host: zenodo.HostSandbox, RecID: "5", DOI: "10.5072/zenodo.5"}, ""},
		{"zenodo.org/10.5281/zenodo.7", "", zenodo.Reference{Host: zenodo.HostProduction, RecID: "7", DOI: "10.5281/zenodo.7"}, ""},
		{"zenodo.org/10.5281/zenodo.7", "sandbox.zenodo.org", zenodo.Reference{}, codeNameInvalid},
		{"10.5072/zenodo.5", "zenodo.org", zenodo.Reference{}, codeNameInvalid},
		{"10.5281/zenodo.5:tag", "", zenodo.Reference{}, codeNameInvalid},
		{"10.5281/zenodo.05", "", zenodo.Reference{}, codeNameInvalid},
		{"library/busybox", "", zenodo.Reference{}, codeNameInvalid},
		{"", "", zenodo.Reference{}, codeNameInvalid},
		{"10.5281/zenodo.5", "quay.io", zenodo.Reference{}, codeNameUnknown},
	}
	for _, tt := range tests {
		got, err := repository(tt.name, tt.ns)
		if tt.code != "" {
			require.NotNil(t, err, "%q ns=%q", tt.name, tt.ns)
			assert.Equal(t, tt.code, err.Code, "%q ns=%q: %s", tt.name, tt.ns, err.Message)
			continue
		}
		require.Nil(t, err, "%q ns=%q", tt.name, tt.ns)
		assert.Equal(t, tt.want, got, "%q ns=%q", tt.name, tt.ns)
	}
}

func FuzzRepository(f *testing.F) {
	for _, s := range []string{"10.5281/zenodo.123", "zenodo.5", "5", "sandbox.zenodo.org/10.5072/zenodo.5", "zenodo.org/x", "10.5281/zenodo.1@sha256:ab", "a/b/c"} {
		f.Add(s, "")
		f.Add(s, "sandbox.zenodo.org")
	}
	f.Fuzz(func(t *testing.T, name, ns string) {
		ref, err := repository(name, ns)
		if err != nil {
			if err.Status != 400 && err.Status != 404 {
				t.Fatalf("status %d", err.Status)
			}
			return
		}
		if ref.Tag != "" || ref.Digest != "" || ref.RecID == "" {
			t.Fatalf("bad reference %+v from %q", ref, name)
		}
		if !strings.HasPrefix(ref.DOI, doiPrefix(ref.Host)+"/zenodo.") || !strings.HasSuffix(ref.DOI, "."+ref.RecID) {
			t.Fatalf("DOI %q does not match host %s and record %s", ref.DOI, ref.Host, ref.RecID)
		}
	})
}

func TestParseRange(t *testing.T) {
	tests := []struct {
		s               string
		size            int64
		start, n        int64
		ok, satisfiable bool
	}{
		{"bytes=0-0", 10, 0, 1, true, true},
		{"bytes=2-", 10, 2, 8, true, true},
		{"bytes=-3", 10, 7, 3, true, true},
		{"bytes=-30", 10, 0, 10, true, true},
		{"bytes=5-100", 10, 5, 5, true, true},
		{"bytes=10-", 10, 0, 0, true, false},
		{"bytes=-0", 10, 0, 0, true, false},
		{"bytes=3-2", 10, 0, 0, false, false},
		{"bytes=0-1,3-4", 10, 0, 0, false, false},
		{"bits=0-1", 10, 0, 0, false, false},
		{"bytes=x-1", 10, 0, 0, false, false},
		{"bytes=0-0", 0, 0, 0, true, false},
	}
	for _, tt := range tests {
		start, n, ok, sat := parseRange(tt.s, tt.size)
		assert.Equal(t, []any{tt.start, tt.n, tt.ok, tt.satisfiable}, []any{start, n, ok, sat}, tt.s)
	}
}

func FuzzParseRange(f *testing.F) {
	for _, s := range []string{"bytes=0-0", "bytes=-5", "bytes=5-", "bytes=1-2,3-4", "bytes=9223372036854775807-"} {
		f.Add(s, int64(100))
	}
	f.Fuzz(func(t *testing.T, s string, size int64) {
		if size < 0 {
			return
		}
		start, n, ok, sat := parseRange(s, size)
		if ok && sat && (start < 0 || n < 1 || start+n > size) {
			t.Fatalf("%q on %d: start %d n %d", s, size, start, n)
		}
	})
}
