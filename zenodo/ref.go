package zenodo

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"

	"github.com/opencontainers/go-digest"
)

// Host names a Zenodo instance.
type Host string

const (
	// HostProduction is the production Zenodo instance.
	HostProduction Host = "zenodo.org"
	// HostSandbox is the Zenodo sandbox, whose DOIs use the prefix 10.5072.
	HostSandbox Host = "sandbox.zenodo.org"
)

// DOI prefixes Zenodo mints DOIs under.
const (
	// DOIPrefixProduction is the prefix of production Zenodo DOIs.
	DOIPrefixProduction = "10.5281"
	// DOIPrefixSandbox is the prefix of sandbox Zenodo DOIs.
	DOIPrefixSandbox = "10.5072"
)

// maxReferenceLen bounds the input ParseReference looks at.
const maxReferenceLen = 2048

// acceptedForms is named in every parse error.
const acceptedForms = "zenodo.org/10.5281/zenodo.<id>[:<tag>][@sha256:<hex>], " +
	"sandbox.zenodo.org/10.5072/zenodo.<id>[:<tag>][@sha256:<hex>], " +
	"10.5281/zenodo.<id>[:<tag>][@…], doi:10.5281/zenodo.<id>, https://doi.org/10.5281/zenodo.<id>, " +
	"https://zenodo.org/records/<id> (or /record/<id>, /api/records/<id>, /uploads/<id>, /doi/<doi>), " +
	"on zenodo.org or sandbox.zenodo.org, with or without ?query and #fragment"

var (
	// tagRE is the Docker tag grammar.
	tagRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)
	// recIDRE matches a Zenodo record id: digits, no leading zero.
	recIDRE = regexp.MustCompile(`^[1-9][0-9]{0,18}$`)
)

// Reference is a parsed reference to a Zenodo record, optionally with an
// image tag and a pinned manifest digest.
//
// A version DOI names exactly that version; a concept DOI (or the tag
// "latest") names the newest published version; a tag on a concept names the
// version whose metadata.version equals the tag. Resolve implements these
// rules; a Reference itself does not know whether RecID is a concept.
type Reference struct {
	// Host is the Zenodo instance the record lives on.
	Host Host
	// RecID is the record id the DOI ends with (version or concept).
	RecID string
	// DOI is the record's DOI, e.g. "10.5281/zenodo.123".
	DOI string
	// Tag is the optional tag ("" when absent).
	Tag string
	// Digest is the optional pinned manifest digest ("" when absent).
	Digest digest.Digest
}

// Sandbox reports whether the reference points at the Zenodo sandbox.
func (r Reference) Sandbox() bool { return r.Host == HostSandbox }

// Name is the reference without tag or digest: "<host>/<doi>".
func (r Reference) Name() string { return string(r.Host) + "/" + r.DOI }

// BaseURL is the API base URL of the reference's Zenodo instance
// (ProductionURL or SandboxURL).
func (r Reference) BaseURL() string {
	if r.Sandbox() {
		return SandboxURL
	}
	return ProductionURL
}

// String is the canonical form "<host>/<doi>[:<tag>][@<digest>]", which
// ParseReference accepts and maps back to the same Reference.
func (r Reference) String() string {
	var b strings.Builder
	b.WriteString(r.Name())
	if r.Tag != "" {
		b.WriteByte(':')
		b.WriteString(r.Tag)
	}
	if r.Digest != "" {
		b.WriteByte('@')
		b.WriteString(string(r.Digest))
	}
	return b.String()
}

// ParseReference parses any of the reference forms of DESIGN §3:
//
//	zenodo.org/10.5281/zenodo.123[:tag][@sha256:…]
//	sandbox.zenodo.org/10.5072/zenodo.123[:tag][@sha256:…]
//	10.5281/zenodo.123[:tag][@…]    doi:10.5281/zenodo.123    https://doi.org/10.5281/zenodo.123
//	https://zenodo.org/records/123  …/record/123  …/api/records/123  …/uploads/123  …/doi/10.5281/zenodo.123
//
// URL forms may carry a ?query and a #fragment, which are ignored, and may
// omit the scheme. Host names are case-insensitive ("www." is accepted).
// Any other input yields one error that wraps ErrInvalidReference (and so
// errdefs.ErrInvalidArgument) and names the accepted forms.
func ParseReference(s string) (Reference, error) {
	ref, reason := parseReference(strings.TrimSpace(s))
	if reason != "" {
		shown := s
		if len(shown) > 120 {
			shown = shown[:120] + "…"
		}
		return Reference{}, fmt.Errorf("%w %q: %s; accepted forms: %s", ErrInvalidReference, shown, reason, acceptedForms)
	}
	return ref, nil
}

// parseReference returns the reference or a non-empty reason for rejecting s.
func parseReference(s string) (Reference, string) {
	switch {
	case s == "":
		return Reference{}, "empty reference"
	case len(s) > maxReferenceLen:
		return Reference{}, "reference too long"
	}
	lower := strings.ToLower(s)
	switch {
	case strings.HasPrefix(lower, "doi:"):
		return parseDOIForm(strings.TrimSpace(s[len("doi:"):]), "")
	case strings.HasPrefix(lower, "10."):
		return parseDOIForm(s, "")
	case strings.HasPrefix(lower, "https://"):
		return parseURLForm(s[len("https://"):])
	case strings.HasPrefix(lower, "http://"):
		return parseURLForm(s[len("http://"):])
	}
	if strings.Contains(s, "://") {
		return Reference{}, "unsupported URL scheme"
	}
	// Scheme-less: "<host>/<doi>[:tag][@digest]" or a URL without scheme.
	host, rest, ok := strings.Cut(s, "/")
	if !ok {
		return Reference{}, "no record in reference"
	}
	h, isDOIHost, known := canonicalHost(host)
	if !known {
		return Reference{}, fmt.Sprintf("unknown host %q", truncate(host, 64))
	}
	if strings.HasPrefix(rest, "10.") && !isDOIHost {
		return parseDOIForm(rest, h)
	}
	return parseURLForm(s)
}

// parseURLForm parses "<host>/<path>[?query][#fragment]" (scheme removed).
func parseURLForm(s string) (Reference, string) {
	if i := strings.IndexAny(s, "?#"); i >= 0 {
		s = s[:i]
	}
	host, p, _ := strings.Cut(s, "/")
	h, isDOIHost, known := canonicalHost(host)
	if !known {
		return Reference{}, fmt.Sprintf("unknown host %q", truncate(host, 64))
	}
	p, err := url.PathUnescape(p)
	if err != nil {
		return Reference{}, "bad escape in URL path"
	}
	p = strings.TrimSuffix(p, "/")
	if isDOIHost {
		return parseDOIForm(p, h)
	}
	if doi, ok := strings.CutPrefix(p, "doi/"); ok {
		return parseDOIForm(doi, h)
	}
	for _, prefix := range []string{"records/", "record/", "api/records/", "uploads/"} {
		if id, ok := strings.CutPrefix(p, prefix); ok {
			if !recIDRE.MatchString(id) {
				return Reference{}, fmt.Sprintf("bad record id %q", truncate(id, 64))
			}
			if h == "" {
				h = HostProduction
			}
			return Reference{Host: h, RecID: id, DOI: doiPrefixFor(h) + "/zenodo." + id}, ""
		}
	}
	return Reference{}, fmt.Sprintf("unsupported URL path %q", truncate(p, 64))
}

// parseDOIForm parses "10.<prefix>/zenodo.<id>[:tag][@digest]". host is ""
// when the DOI prefix decides the instance (bare DOIs, doi.org URLs).
func parseDOIForm(s string, host Host) (Reference, string) {
	var ref Reference
	if before, after, ok := strings.Cut(s, "@"); ok {
		d, err := digest.Parse(after)
		if err != nil {
			return Reference{}, fmt.Sprintf("bad digest %q: %v", truncate(after, 80), err)
		}
		ref.Digest = d
		s = before
	}
	if before, after, ok := strings.Cut(s, ":"); ok {
		if !tagRE.MatchString(after) {
			return Reference{}, fmt.Sprintf("bad tag %q", truncate(after, 80))
		}
		ref.Tag = after
		s = before
	}
	prefix, suffix, ok := strings.Cut(s, "/")
	if !ok {
		return Reference{}, "DOI has no suffix"
	}
	if prefix != DOIPrefixProduction && prefix != DOIPrefixSandbox {
		return Reference{}, fmt.Sprintf("DOI prefix %q is not a Zenodo prefix (%s or %s)", truncate(prefix, 32), DOIPrefixProduction, DOIPrefixSandbox)
	}
	if len(suffix) < len("zenodo.") || !strings.EqualFold(suffix[:len("zenodo.")], "zenodo.") {
		return Reference{}, fmt.Sprintf("DOI suffix %q is not zenodo.<id>", truncate(suffix, 64))
	}
	id := suffix[len("zenodo."):]
	if !recIDRE.MatchString(id) {
		return Reference{}, fmt.Sprintf("bad record id %q in DOI", truncate(id, 64))
	}
	if host == "" {
		host = HostProduction
		if prefix == DOIPrefixSandbox {
			host = HostSandbox
		}
	}
	ref.Host = host
	ref.RecID = id
	ref.DOI = prefix + "/zenodo." + id
	return ref, ""
}

// canonicalHost maps a host name to its Zenodo instance. isDOIHost is true
// for doi.org and dx.doi.org, whose paths are bare DOIs (h is then "").
func canonicalHost(host string) (h Host, isDOIHost, known bool) {
	switch strings.ToLower(host) {
	case "zenodo.org", "www.zenodo.org":
		return HostProduction, false, true
	case "sandbox.zenodo.org", "www.sandbox.zenodo.org":
		return HostSandbox, false, true
	case "doi.org", "dx.doi.org", "www.doi.org":
		return "", true, true
	}
	return "", false, false
}

// doiPrefixFor is the DOI prefix records on host get.
func doiPrefixFor(h Host) string {
	if h == HostSandbox {
		return DOIPrefixSandbox
	}
	return DOIPrefixProduction
}

// truncate shortens s for error messages.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
