package donodo

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"text/template"

	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/internal/fsutil"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/zenodo"
)

// LabelAuthors is the image label whose value gives the record's creators
// when neither the templates nor an earlier version give any.
const LabelAuthors = "org.opencontainers.image.authors"

// maxTemplatesSize bounds a templates file.
const maxTemplatesSize = 1 << 20

// TemplateData is what metadata templates are executed over.
type TemplateData struct {
	// Name is the image's short name ("my/tool") and Tag its tag.
	Name string
	Tag  string
	// FullName is the normalized name with tag (docker.io/my/tool:1.2).
	FullName string
	// Labels are the image config's labels.
	Labels map[string]string
	// Config is the image config (of the platform described).
	Config ocispec.Image
	// DOI is the version DOI Zenodo reserved, and Reference the image's
	// name on Zenodo (zenodo.org/<doi>:<tag>). Both are "" when the title
	// is computed, before the deposition exists.
	DOI       string
	Reference string
	// BuildManifest is the build manifest as HTML (the default
	// description); "" when the title is computed.
	BuildManifest string
	// Platforms are the platforms pushed.
	Platforms []string
}

// Templates are deposition metadata fields (any field of Zenodo's
// deposition metadata: title, creators, description, keywords, license…)
// whose string values, at any depth, are Go text/template templates over
// TemplateData, as {"title": "{{.Name}} container", "creators": [{"name":
// "{{index .Labels \"maintainer\"}}"}]}. Missing map keys execute as "".
// Besides the builtins, templates have join, split, default, trim, lower,
// upper and replace.
type Templates map[string]json.RawMessage

// DefaultTemplates are the fields Push sets unless the templates or an
// earlier version of the record set them (title, description and version are
// always recomputed unless the templates set them; version is always the
// tag).
var DefaultTemplates = Templates{
	"title":       json.RawMessage(`"Docker image {{.Name}}"`),
	"upload_type": json.RawMessage(`"software"`),
	"description": json.RawMessage(`"{{.BuildManifest}}"`),
	"keywords":    json.RawMessage(`["docker image", "container image"]`),
}

// ParseTemplates parses a templates JSON object and checks that every
// template in it parses. Errors wrap errdefs.ErrInvalidArgument.
func ParseTemplates(data []byte) (Templates, error) {
	if len(data) > maxTemplatesSize {
		return nil, fmt.Errorf("templates: more than %d bytes: %w", maxTemplatesSize, errdefs.ErrInvalidArgument)
	}
	var t Templates
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&t); err != nil {
		return nil, fmt.Errorf("templates: want a JSON object of deposition metadata fields: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	if t == nil {
		return nil, fmt.Errorf("templates: want a JSON object, got null: %w", errdefs.ErrInvalidArgument)
	}
	if dec.More() {
		return nil, fmt.Errorf("templates: data after the JSON object: %w", errdefs.ErrInvalidArgument)
	}
	// Parse every template once, so errors show before any work.
	if _, err := t.Execute(TemplateData{}); err != nil {
		var te *templateError
		if errors.As(err, &te) && te.parse {
			return nil, err
		}
	}
	return t, nil
}

// LoadTemplates reads and parses a templates file (see ParseTemplates).
func LoadTemplates(path string) (Templates, error) {
	data, err := fsutil.ReadFileLimit(path, maxTemplatesSize)
	if err != nil {
		return nil, fmt.Errorf("reading templates %s: %w", path, err)
	}
	t, err := ParseTemplates(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return t, nil
}

// templateError is a template that does not parse or execute.
type templateError struct {
	field string
	parse bool
	err   error
}

func (e *templateError) Error() string {
	what := "executing"
	if e.parse {
		what = "parsing"
	}
	return fmt.Sprintf("templates: %s the template of %q: %v", what, e.field, e.err)
}

func (e *templateError) Unwrap() []error { return []error{e.err, errdefs.ErrInvalidArgument} }

var funcs = template.FuncMap{
	"join":  func(sep string, s []string) string { return strings.Join(s, sep) },
	"split": func(sep, s string) []string { return strings.Split(s, sep) },
	"default": func(def string, v any) string {
		if v == nil {
			return def
		}
		if s := fmt.Sprint(v); s != "" {
			return s
		}
		return def
	},
	"trim":    strings.TrimSpace,
	"lower":   strings.ToLower,
	"upper":   strings.ToUpper,
	"replace": func(old, new, s string) string { return strings.ReplaceAll(s, old, new) },
}

// Execute executes every template over data and returns the fields as
// JSON.
func (t Templates) Execute(data TemplateData) (map[string]json.RawMessage, error) {
	out := make(map[string]json.RawMessage, len(t))
	keys := make([]string, 0, len(t))
	for k := range t {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		var v any
		if err := json.Unmarshal(t[k], &v); err != nil {
			return nil, &templateError{field: k, parse: true, err: err}
		}
		v, err := executeValue(k, v, data)
		if err != nil {
			return nil, err
		}
		b, err := json.Marshal(v)
		if err != nil {
			return nil, &templateError{field: k, err: err}
		}
		out[k] = b
	}
	return out, nil
}

// executeValue executes the strings in v, recursively.
func executeValue(field string, v any, data TemplateData) (any, error) {
	switch x := v.(type) {
	case string:
		if !strings.Contains(x, "{{") {
			return x, nil
		}
		tmpl, err := template.New(field).Option("missingkey=zero").Funcs(funcs).Parse(x)
		if err != nil {
			return nil, &templateError{field: field, parse: true, err: err}
		}
		var b strings.Builder
		if err := tmpl.Execute(&limitedBuilder{b: &b, max: maxTemplatesSize * 4}, data); err != nil {
			return nil, &templateError{field: field, err: err}
		}
		return strings.ReplaceAll(b.String(), "<no value>", ""), nil
	case []any:
		for i := range x {
			e, err := executeValue(field, x[i], data)
			if err != nil {
				return nil, err
			}
			x[i] = e
		}
		return x, nil
	case map[string]any:
		for k, e := range x {
			r, err := executeValue(field, e, data)
			if err != nil {
				return nil, err
			}
			x[k] = r
		}
		return x, nil
	}
	return v, nil
}

// limitedBuilder bounds a template's output.
type limitedBuilder struct {
	b   *strings.Builder
	max int
}

func (l *limitedBuilder) Write(p []byte) (int, error) {
	if l.b.Len()+len(p) > l.max {
		return 0, fmt.Errorf("output longer than %d bytes", l.max)
	}
	return l.b.Write(p)
}

// metadataFields decodes metadata into its JSON fields.
func metadataFields(md zenodo.Metadata) (map[string]json.RawMessage, error) {
	b, err := json.Marshal(md)
	if err != nil {
		return nil, fmt.Errorf("encoding metadata: %w", err)
	}
	fields := map[string]json.RawMessage{}
	if err := json.Unmarshal(b, &fields); err != nil {
		return nil, fmt.Errorf("decoding metadata: %w", err)
	}
	return fields, nil
}

// BuildMetadata computes a deposition's metadata: base (the draft's
// current metadata, kept where nothing overrides it), then
// DefaultTemplates for the fields base lacks (title and description
// always), then templates, then creators from the LabelAuthors label if
// there are still none, and version = data.Tag. It fails with
// errdefs.ErrInvalidArgument when the result has no creators, which Zenodo
// requires to publish.
func BuildMetadata(base zenodo.Metadata, templates Templates, data TemplateData) (zenodo.Metadata, error) {
	fields, err := metadataFields(base)
	if err != nil {
		return zenodo.Metadata{}, err
	}
	defaults, err := DefaultTemplates.Execute(data)
	if err != nil {
		return zenodo.Metadata{}, err
	}
	for k, v := range defaults {
		if _, ok := fields[k]; !ok || k == "title" || k == "description" {
			fields[k] = v
		}
	}
	custom, err := templates.Execute(data)
	if err != nil {
		return zenodo.Metadata{}, err
	}
	for k, v := range custom {
		fields[k] = v
	}
	delete(fields, "version")
	b, err := json.Marshal(fields)
	if err != nil {
		return zenodo.Metadata{}, fmt.Errorf("encoding metadata: %w", err)
	}
	var md zenodo.Metadata
	if err := json.Unmarshal(b, &md); err != nil {
		return zenodo.Metadata{}, fmt.Errorf("templates give metadata Zenodo cannot take: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	md.Version = data.Tag
	if _, ok := md.Extra["creators"]; ok && len(md.Creators) == 0 {
		return zenodo.Metadata{}, fmt.Errorf("templates: \"creators\" must be a list of objects with a \"name\": %w", errdefs.ErrInvalidArgument)
	}
	if len(md.Creators) == 0 {
		md.Creators = ParseAuthors(data.Labels[LabelAuthors])
	}
	var named []zenodo.Creator
	for _, c := range md.Creators {
		if strings.TrimSpace(c.Name) != "" {
			named = append(named, c)
		}
	}
	md.Creators = named
	if len(md.Creators) == 0 {
		return zenodo.Metadata{}, fmt.Errorf("no creators, and Zenodo needs at least one to publish: set the image label %s (\"Jane Smith <jane@example.org>; John Doe\"), or give \"creators\" in --templates FILE ({\"creators\": [{\"name\": \"Smith, Jane\", \"affiliation\": \"…\"}]}): %w",
			LabelAuthors, errdefs.ErrInvalidArgument)
	}
	if strings.TrimSpace(md.Title) == "" {
		return zenodo.Metadata{}, fmt.Errorf("templates: the title is empty: %w", errdefs.ErrInvalidArgument)
	}
	return md, nil
}

var (
	emailRE   = regexp.MustCompile(`<[^<>]*>`)
	parenRE   = regexp.MustCompile(`\([^()]*\)`)
	spacesRE  = regexp.MustCompile(`\s+`)
	maxAuthor = 64
)

// ParseAuthors reads creators from an org.opencontainers.image.authors
// value, a free-form list of people: entries are separated by ";" or new
// lines, or by "," when the value gives several e-mail addresses
// ("Jane Smith <jane@x.org>, John Doe <john@y.org>"), so that a single
// "Smith, Jane" stays one creator. E-mail addresses and parenthesized
// remarks are dropped. At most 64 creators are returned.
func ParseAuthors(s string) []zenodo.Creator {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil
	}
	var parts []string
	switch {
	case strings.ContainsAny(s, ";\n"):
		parts = strings.FieldsFunc(s, func(r rune) bool { return r == ';' || r == '\n' })
	case len(emailRE.FindAllString(s, -1)) > 1:
		parts = strings.Split(s, ",")
	default:
		parts = []string{s}
	}
	var out []zenodo.Creator
	for _, p := range parts {
		p = strings.TrimSpace(p)
		if stripped := clean(emailRE.ReplaceAllString(p, " ")); stripped != "" {
			p = stripped
		} else {
			// Only an e-mail address: keep it, it names someone.
			p = clean(strings.NewReplacer("<", " ", ">", " ").Replace(p))
		}
		if p == "" {
			continue
		}
		out = append(out, zenodo.Creator{Name: clip(p, 256)})
		if len(out) == maxAuthor {
			break
		}
	}
	return out
}

// clean drops parenthesized remarks and extra white space.
func clean(s string) string {
	s = parenRE.ReplaceAllString(s, " ")
	return strings.Trim(spacesRE.ReplaceAllString(s, " "), " ,")
}
