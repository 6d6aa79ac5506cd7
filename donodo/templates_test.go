package donodo

import (
	"encoding/json"
	"testing"

	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/zenodo"
)

func TestParseImageName(t *testing.T) {
	tests := []struct {
		in, familiar, full, tag string
		wantErr                 string
	}{
		{in: "my/tool:1.2", familiar: "my/tool", full: "docker.io/my/tool:1.2", tag: "1.2"},
		{in: "busybox:1", familiar: "busybox", full: "docker.io/library/busybox:1", tag: "1"},
		{in: "docker.io/library/busybox:1", familiar: "busybox", full: "docker.io/library/busybox:1", tag: "1"},
		{in: "example.org:5000/a/b:v2", familiar: "example.org:5000/a/b", full: "example.org:5000/a/b:v2", tag: "v2"},
		{in: "my/tool", wantErr: "has no tag"},
		{in: "my/tool:latest", wantErr: `"latest" is refused`},
		{in: "my/tool:1@sha256:" + sixtyFour, wantErr: "without a digest"},
		{in: "my/tool@sha256:" + sixtyFour, wantErr: "without a digest"},
		{in: "My/Tool:1", wantErr: "image name"},
		{in: "", wantErr: "image name"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			n, err := ParseImageName(tt.in)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				assert.True(t, errdefs.IsInvalidArgument(err))
				assert.Equal(t, ExitUsage, ExitCode(err))
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.familiar, n.Familiar())
			assert.Equal(t, tt.full, n.Full())
			assert.Equal(t, tt.tag, n.Tag())
		})
	}
}

const sixtyFour = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func TestParseAuthors(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"Jane Smith <jane@example.org>", []string{"Jane Smith"}},
		{"Smith, Jane", []string{"Smith, Jane"}},
		{"Jane Smith <jane@x.org>, John Doe <john@y.org>", []string{"Jane Smith", "John Doe"}},
		{"Jane Smith; John Doe (maintainer)\nAda", []string{"Jane Smith", "John Doe", "Ada"}},
		{"jane@example.org", []string{"jane@example.org"}},
		{"<jane@example.org>", []string{"jane@example.org"}},
		{" ; ;\n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			var got []string
			for _, c := range ParseAuthors(tt.in) {
				got = append(got, c.Name)
			}
			assert.Equal(t, tt.want, got)
		})
	}
}

func FuzzParseAuthors(f *testing.F) {
	for _, s := range []string{"Jane Smith <jane@x.org>, John <j@y>", "a;b\nc", "(x) <y>", "<<>>", "Smith, Jane"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		cs := ParseAuthors(s)
		assert.LessOrEqual(t, len(cs), maxAuthor)
		for _, c := range cs {
			assert.NotEmpty(t, c.Name)
		}
	})
}

func TestParseTemplates(t *testing.T) {
	tests := []struct {
		name, in, wantErr string
	}{
		{name: "object", in: `{"title": "{{.Name}}", "keywords": ["a", "{{.Tag}}"]}`},
		{name: "array", in: `["x"]`, wantErr: "JSON object"},
		{name: "null", in: `null`, wantErr: "got null"},
		{name: "garbage", in: `{"title": `, wantErr: "JSON object"},
		{name: "trailing", in: `{} {}`, wantErr: "data after"},
		{name: "bad template", in: `{"creators": [{"name": "{{.Name"}]}`, wantErr: `parsing the template of "creators"`},
		{name: "execution errors wait", in: `{"title": "{{index .Config.Config.Env 5}}"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseTemplates([]byte(tt.in))
			if tt.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tt.wantErr)
			assert.Equal(t, ExitUsage, ExitCode(err))
		})
	}
}

func FuzzParseTemplates(f *testing.F) {
	for _, s := range []string{`{"title": "{{.Name}}"}`, `{"a": [{"b": "{{join \",\" .Config.Config.Cmd}}"}]}`, `{}`, `{"x": "{{"}`, `{"d": "{{default \"x\" .Labels.y}}"}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tm, err := ParseTemplates([]byte(s))
		if err != nil {
			return
		}
		_, _ = tm.Execute(TemplateData{Name: "n", Tag: "t", Labels: map[string]string{"y": "z"}})
	})
}

func TestBuildMetadata(t *testing.T) {
	data := TemplateData{
		Name: "my/tool", Tag: "1.2", FullName: "docker.io/my/tool:1.2",
		Labels:        map[string]string{LabelAuthors: "Jane Smith <jane@x.org>", "org.opencontainers.image.licenses": "MIT"},
		Config:        ocispec.Image{Config: ocispec.ImageConfig{Cmd: []string{"tool", "--help"}}},
		DOI:           "10.5281/zenodo.7",
		Reference:     "zenodo.org/10.5281/zenodo.7:1.2",
		BuildManifest: "<p>manifest</p>",
	}
	t.Run("defaults", func(t *testing.T) {
		md, err := BuildMetadata(zenodo.Metadata{}, nil, data)
		require.NoError(t, err)
		assert.Equal(t, "Docker image my/tool", md.Title)
		assert.Equal(t, "software", md.UploadType)
		assert.Equal(t, "1.2", md.Version)
		assert.Equal(t, "<p>manifest</p>", md.Description)
		assert.Equal(t, []zenodo.Creator{{Name: "Jane Smith"}}, md.Creators)
		assert.Equal(t, []string{"docker image", "container image"}, md.Keywords)
	})
	t.Run("templates override any field", func(t *testing.T) {
		tm, err := ParseTemplates([]byte(`{
			"title": "{{.Name}} {{.Tag}}",
			"version": "ignored",
			"creators": [{"name": "Smith, Jane", "affiliation": "Uni", "orcid": "0000-0002-1694-233X"}],
			"description": "<p>{{join \" \" .Config.Config.Cmd}} at {{.Reference}}</p>{{.BuildManifest}}",
			"keywords": ["{{.Name}}", "science"],
			"license": "{{index .Labels \"org.opencontainers.image.licenses\" | lower}}",
			"related_identifiers": [{"identifier": "https://doi.org/{{.DOI}}", "relation": "isIdenticalTo"}],
			"notes": "{{.Labels.missing}}"
		}`))
		require.NoError(t, err)
		md, err := BuildMetadata(zenodo.Metadata{}, tm, data)
		require.NoError(t, err)
		assert.Equal(t, "my/tool 1.2", md.Title)
		assert.Equal(t, "1.2", md.Version, "the tag is always the version")
		assert.Equal(t, []zenodo.Creator{{Name: "Smith, Jane", Affiliation: "Uni", ORCID: "0000-0002-1694-233X"}}, md.Creators)
		assert.Equal(t, "<p>tool --help at zenodo.org/10.5281/zenodo.7:1.2</p><p>manifest</p>", md.Description)
		assert.Equal(t, []string{"my/tool", "science"}, md.Keywords)
		assert.Equal(t, "mit", md.License)
		assert.Equal(t, "", md.Notes)
		assert.JSONEq(t, `[{"identifier": "https://doi.org/10.5281/zenodo.7", "relation": "isIdenticalTo"}]`, string(md.Extra["related_identifiers"]))
	})
	t.Run("base kept, title and description recomputed", func(t *testing.T) {
		base := zenodo.Metadata{
			Title: "Old title", Description: "old", Version: "1.1", Keywords: []string{"edited"},
			Creators: []zenodo.Creator{{Name: "Doe, John"}},
			Extra:    map[string]json.RawMessage{"communities": json.RawMessage(`[{"identifier": "x"}]`)},
		}
		md, err := BuildMetadata(base, nil, data)
		require.NoError(t, err)
		assert.Equal(t, "Docker image my/tool", md.Title)
		assert.Equal(t, "<p>manifest</p>", md.Description)
		assert.Equal(t, "1.2", md.Version)
		assert.Equal(t, []string{"edited"}, md.Keywords)
		assert.Equal(t, []zenodo.Creator{{Name: "Doe, John"}}, md.Creators, "an earlier version's creators win over the label")
		assert.JSONEq(t, `[{"identifier": "x"}]`, string(md.Extra["communities"]))
	})
	t.Run("no creators", func(t *testing.T) {
		d := data
		d.Labels = nil
		_, err := BuildMetadata(zenodo.Metadata{}, nil, d)
		require.ErrorContains(t, err, "org.opencontainers.image.authors")
		require.ErrorContains(t, err, "--templates")
		assert.Equal(t, ExitUsage, ExitCode(err))
	})
	t.Run("creators of the wrong shape", func(t *testing.T) {
		tm, err := ParseTemplates([]byte(`{"creators": "{{.Name}}"}`))
		require.NoError(t, err)
		_, err = BuildMetadata(zenodo.Metadata{}, tm, data)
		require.ErrorContains(t, err, "creators")
		assert.True(t, errdefs.IsInvalidArgument(err))
	})
	t.Run("execution error", func(t *testing.T) {
		tm, err := ParseTemplates([]byte(`{"title": "{{index .Config.Config.Env 5}}"}`))
		require.NoError(t, err)
		_, err = BuildMetadata(zenodo.Metadata{}, tm, data)
		require.ErrorContains(t, err, `executing the template of "title"`)
		assert.Equal(t, ExitUsage, ExitCode(err))
	})
}
