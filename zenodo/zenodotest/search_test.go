package zenodotest

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestTokens(t *testing.T) {
	assert.Equal(t, []string{"docker", "image", "example", "tool:1.2"}, tokens("Docker image example/tool:1.2"))
	assert.Equal(t, []string{"zenodo.123", "10.5281"}, tokens("zenodo.123 (10.5281)."))
	assert.Empty(t, tokens(" -- "))
}

func TestQuery(t *testing.T) {
	d := doc{
		"title":        {"Docker image example/tool"},
		"description":  {"An image."},
		"version":      {"1.2"},
		"doi":          {"10.5281/zenodo.12"},
		"conceptrecid": {"11"},
		"keywords":     {"containers", "oci"},
	}
	for _, tc := range []struct {
		q     string
		match bool
	}{
		{``, true},
		{`title:"Docker image example/tool"`, true},
		{`title:"docker IMAGE"`, true},
		{`title:"image docker"`, false},
		{`title:"Docker image example/tool2"`, false},
		{`title:docker title:tool`, true},
		{`title:docker AND title:nope`, false},
		{`title:nope OR keywords:oci`, true},
		{`-keywords:oci`, false},
		{`NOT keywords:oci`, false},
		{`+keywords:oci`, true},
		{`doi:"10.5281/zenodo.12"`, true},
		{`doi:"10.5281/zenodo.1"`, false},
		{`conceptrecid:11`, true},
		{`metadata.version:"1.2"`, true},
		{`version:1.3`, false},
		{`cont*`, true},
		{`title:*`, true},
		{`nosuchfield:x`, false},
		{`(title:docker)`, true},
		{`image`, true},
	} {
		q, err := parseQuery(tc.q)
		require.NoError(t, err, tc.q)
		assert.Equal(t, tc.match, q.match(d), tc.q)
	}
	for _, bad := range []string{`title:"open`, `title:`, `title: x`} {
		_, err := parseQuery(bad)
		assert.Error(t, err, bad)
	}
}

func FuzzParseQuery(f *testing.F) {
	for _, s := range []string{`title:"Docker image foo"`, `a OR -b:c`, `NOT x:"y z" AND (w)`, `"`, `a:`, `+-`} {
		f.Add(s)
	}
	d := doc{"title": {"Docker image foo"}, "doi": {"10.5281/zenodo.1"}}
	f.Fuzz(func(t *testing.T, s string) {
		q, err := parseQuery(s)
		if err != nil {
			return
		}
		n := 0
		for _, c := range q {
			n += len(c)
		}
		if n > maxQueryTerms {
			t.Fatalf("%d terms", n)
		}
		_ = q.match(d)
	})
}
