package zenodo

import (
	"errors"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const testDigest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func TestParseReference(t *testing.T) {
	prod := func(id string) Reference {
		return Reference{Host: HostProduction, RecID: id, DOI: "10.5281/zenodo." + id}
	}
	sb := func(id string) Reference {
		return Reference{Host: HostSandbox, RecID: id, DOI: "10.5072/zenodo." + id}
	}
	with := func(r Reference, tag string, d digest.Digest) Reference {
		r.Tag, r.Digest = tag, d
		return r
	}
	tests := []struct {
		in   string
		want Reference
		str  string // canonical form; "" = want.String() must equal in
	}{
		// host/DOI forms
		{in: "zenodo.org/10.5281/zenodo.123", want: prod("123")},
		{in: "zenodo.org/10.5281/zenodo.123:1.2", want: with(prod("123"), "1.2", "")},
		{in: "zenodo.org/10.5281/zenodo.123@" + testDigest, want: with(prod("123"), "", testDigest)},
		{in: "zenodo.org/10.5281/zenodo.123:v1.2_rc-1@" + testDigest, want: with(prod("123"), "v1.2_rc-1", testDigest)},
		{in: "zenodo.org/10.5281/zenodo.123:latest", want: with(prod("123"), "latest", "")},
		{in: "sandbox.zenodo.org/10.5072/zenodo.145250", want: sb("145250")},
		{in: "sandbox.zenodo.org/10.5072/zenodo.145250:2.0@" + testDigest, want: with(sb("145250"), "2.0", testDigest)},
		{in: "sandbox.zenodo.org/10.5281/zenodo.412011", want: Reference{Host: HostSandbox, RecID: "412011", DOI: "10.5281/zenodo.412011"}},
		{in: "ZENODO.ORG/10.5281/ZENODO.123:Tag", want: with(prod("123"), "Tag", ""), str: "zenodo.org/10.5281/zenodo.123:Tag"},
		{in: "www.zenodo.org/10.5281/zenodo.123", want: prod("123"), str: "zenodo.org/10.5281/zenodo.123"},
		{in: "  zenodo.org/10.5281/zenodo.123\n", want: prod("123"), str: "zenodo.org/10.5281/zenodo.123"},
		// bare DOIs
		{in: "10.5281/zenodo.123", want: prod("123"), str: "zenodo.org/10.5281/zenodo.123"},
		{in: "10.5281/zenodo.123:1.0", want: with(prod("123"), "1.0", ""), str: "zenodo.org/10.5281/zenodo.123:1.0"},
		{in: "10.5072/zenodo.9", want: sb("9"), str: "sandbox.zenodo.org/10.5072/zenodo.9"},
		{in: "doi:10.5281/zenodo.123", want: prod("123"), str: "zenodo.org/10.5281/zenodo.123"},
		{in: "DOI: 10.5281/zenodo.123", want: prod("123"), str: "zenodo.org/10.5281/zenodo.123"},
		{in: "https://doi.org/10.5281/zenodo.123", want: prod("123"), str: "zenodo.org/10.5281/zenodo.123"},
		{in: "http://dx.doi.org/10.5072/zenodo.77", want: sb("77"), str: "sandbox.zenodo.org/10.5072/zenodo.77"},
		{in: "doi.org/10.5281/zenodo.123", want: prod("123"), str: "zenodo.org/10.5281/zenodo.123"},
		{in: "https://doi.org/10.5281%2Fzenodo.123", want: prod("123"), str: "zenodo.org/10.5281/zenodo.123"},
		// record links
		{in: "https://zenodo.org/records/123", want: prod("123"), str: "zenodo.org/10.5281/zenodo.123"},
		{in: "https://zenodo.org/records/123/", want: prod("123"), str: "zenodo.org/10.5281/zenodo.123"},
		{in: "https://zenodo.org/records/123?preview=1#files", want: prod("123"), str: "zenodo.org/10.5281/zenodo.123"},
		{in: "https://zenodo.org/records/123#files", want: prod("123"), str: "zenodo.org/10.5281/zenodo.123"},
		{in: "https://zenodo.org/record/123", want: prod("123"), str: "zenodo.org/10.5281/zenodo.123"},
		{in: "https://zenodo.org/api/records/123", want: prod("123"), str: "zenodo.org/10.5281/zenodo.123"},
		{in: "https://zenodo.org/uploads/123?x=y", want: prod("123"), str: "zenodo.org/10.5281/zenodo.123"},
		{in: "https://zenodo.org/doi/10.5281/zenodo.123", want: prod("123"), str: "zenodo.org/10.5281/zenodo.123"},
		{in: "http://www.zenodo.org/records/123", want: prod("123"), str: "zenodo.org/10.5281/zenodo.123"},
		{in: "zenodo.org/records/123", want: prod("123"), str: "zenodo.org/10.5281/zenodo.123"},
		{in: "HTTPS://Zenodo.Org/Records/123", want: Reference{}, str: "!"}, // path is case-sensitive
		// sandbox links
		{in: "https://sandbox.zenodo.org/records/145250", want: sb("145250"), str: "sandbox.zenodo.org/10.5072/zenodo.145250"},
		{in: "https://sandbox.zenodo.org/record/145250?a=b", want: sb("145250"), str: "sandbox.zenodo.org/10.5072/zenodo.145250"},
		{in: "https://sandbox.zenodo.org/api/records/145250", want: sb("145250"), str: "sandbox.zenodo.org/10.5072/zenodo.145250"},
		{in: "https://sandbox.zenodo.org/uploads/346365", want: sb("346365"), str: "sandbox.zenodo.org/10.5072/zenodo.346365"},
		{in: "https://sandbox.zenodo.org/doi/10.5072/zenodo.145250", want: sb("145250"), str: "sandbox.zenodo.org/10.5072/zenodo.145250"},
		{in: "sandbox.zenodo.org/records/1", want: sb("1"), str: "sandbox.zenodo.org/10.5072/zenodo.1"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseReference(tt.in)
			if tt.str == "!" {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
			str := tt.str
			if str == "" {
				str = tt.in
			}
			assert.Equal(t, str, got.String())
			again, err := ParseReference(got.String())
			require.NoError(t, err)
			assert.Equal(t, got, again)
		})
	}
}

func TestParseReferenceErrors(t *testing.T) {
	bad := []string{
		"",
		"   ",
		"zenodo",
		"zenodo.org",
		"zenodo.org/",
		"docker.io/library/busybox:latest",
		"ghcr.io/10.5281/zenodo.123",
		"10.1234/zenodo.123",
		"10.5281/figshare.123",
		"10.5281/zenodo.",
		"10.5281/zenodo.abc",
		"10.5281/zenodo.0123",
		"10.5281/zenodo.0",
		"10.5281/zenodo.123:",
		"10.5281/zenodo.123:-bad",
		"10.5281/zenodo.123:" + strings.Repeat("a", 129),
		"10.5281/zenodo.123@sha256:short",
		"10.5281/zenodo.123@md5:0123",
		"zenodo.org/10.5281/zenodo.123/extra",
		"https://zenodo.org/records/",
		"https://zenodo.org/records/abc",
		"https://zenodo.org/records/123/files/image.tar",
		"https://zenodo.org/communities/foo",
		"https://zenodo.org/10.5281/zenodo.123",
		"https://example.org/records/123",
		"ftp://zenodo.org/records/123",
		"https://doi.org/10.1000/182",
		"doi:",
		"https://zenodo.org/doi/",
		"https://zenodo.org/records/1%zz",
		strings.Repeat("x", maxReferenceLen+1),
	}
	for _, in := range bad {
		t.Run(in, func(t *testing.T) {
			_, err := ParseReference(in)
			require.Error(t, err)
			assert.ErrorIs(t, err, ErrInvalidReference)
			assert.True(t, errdefs.IsInvalidArgument(err))
			assert.Contains(t, err.Error(), "zenodo.org/10.5281/zenodo.<id>")
			assert.Contains(t, err.Error(), "https://zenodo.org/records/<id>")
			assert.Less(t, len(err.Error()), 1500, "error message stays bounded")
		})
	}
}

func TestReferenceMethods(t *testing.T) {
	r, err := ParseReference("sandbox.zenodo.org/10.5072/zenodo.5:1.0@" + testDigest)
	require.NoError(t, err)
	assert.True(t, r.Sandbox())
	assert.Equal(t, SandboxURL, r.BaseURL())
	assert.Equal(t, "sandbox.zenodo.org/10.5072/zenodo.5", r.Name())

	p, err := ParseReference("10.5281/zenodo.5")
	require.NoError(t, err)
	assert.False(t, p.Sandbox())
	assert.Equal(t, ProductionURL, p.BaseURL())
	assert.True(t, errors.Is(func() error { _, err := ParseReference("x"); return err }(), errdefs.ErrInvalidArgument))
}

func FuzzParseReference(f *testing.F) {
	for _, s := range []string{
		"zenodo.org/10.5281/zenodo.123",
		"zenodo.org/10.5281/zenodo.123:1.2@" + testDigest,
		"sandbox.zenodo.org/10.5072/zenodo.145250",
		"10.5281/zenodo.123",
		"doi:10.5281/zenodo.123:x",
		"https://doi.org/10.5281/zenodo.123",
		"https://zenodo.org/records/123?preview=1#x",
		"https://zenodo.org/record/123",
		"https://zenodo.org/api/records/123",
		"https://zenodo.org/doi/10.5281/zenodo.123",
		"https://sandbox.zenodo.org/uploads/123",
		"https://doi.org/10.5281%2Fzenodo.123",
		"zenodo.org/10.5281/zenodo.1@sha512:" + strings.Repeat("ab", 64),
		"",
		":@/",
		"10.5281/zenodo.1:a@b:c",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ref, err := ParseReference(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidReference) {
				t.Fatalf("error %v does not wrap ErrInvalidReference", err)
			}
			return
		}
		if ref.RecID == "" || ref.DOI == "" || (ref.Host != HostProduction && ref.Host != HostSandbox) {
			t.Fatalf("accepted %q as incomplete %+v", s, ref)
		}
		again, err := ParseReference(ref.String())
		if err != nil {
			t.Fatalf("canonical form %q of %q does not parse: %v", ref.String(), s, err)
		}
		if again != ref {
			t.Fatalf("round trip of %q: %+v != %+v", s, again, ref)
		}
	})
}
