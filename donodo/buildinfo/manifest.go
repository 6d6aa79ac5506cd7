package buildinfo

import (
	"fmt"
	"html"
	"sort"
	"strings"
	"time"
)

// Manifest is an image's build manifest, in the manner of the docker-stacks
// image manifests: what the image is, how to get it back, and what is in it.
type Manifest struct {
	// Name and Tag of the image as pushed (e.g. "my/tool" and "1.2").
	Name string `json:"name"`
	Tag  string `json:"tag"`
	// Reference is the image reference that pulls this version, e.g.
	// zenodo.org/10.5281/zenodo.123:1.2.
	Reference      string            `json:"reference,omitempty"`
	ConfigDigest   string            `json:"config_digest"`
	ManifestDigest string            `json:"manifest_digest"`
	Created        time.Time         `json:"created,omitempty"`
	Platforms      []string          `json:"platforms"`
	Labels         map[string]string `json:"labels,omitempty"`
	Entrypoint     []string          `json:"entrypoint,omitempty"`
	Cmd            []string          `json:"cmd,omitempty"`
	Layers         []Layer           `json:"layers"`
	Packages       []Package         `json:"packages,omitempty"`
}

// Layer is one row of the layer table.
type Layer struct {
	DiffID string `json:"diff_id"`
	Digest string `json:"digest"`
	// Size is the stored (compressed) size, UncompressedSize the tar's.
	Size             int64  `json:"size"`
	UncompressedSize int64  `json:"uncompressed_size,omitempty"`
	CreatedBy        string `json:"created_by,omitempty"`
}

// Size is the total stored size of the layers.
func (m *Manifest) Size() int64 {
	var n int64
	for _, l := range m.Layers {
		n += l.Size
	}
	return n
}

// HTML renders the manifest as the HTML Zenodo accepts in a record's
// description. Every value taken from the image is escaped.
func (m *Manifest) HTML() string {
	var b strings.Builder
	e := html.EscapeString
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	p("<p>Container image <code>%s:%s</code>, archived by donodo.</p>\n", e(m.Name), e(m.Tag))
	if m.Reference != "" {
		p("<p>Run it with containerd: <code>ctr pull %s</code> (through zenodo-snapshotter's endpoint), "+
			"or import it: <code>donodo pull %s</code>. The file <code>image.tar</code> also loads with "+
			"<code>docker load</code>, <code>podman load</code> and <code>ctr import</code>.</p>\n", e(m.Reference), e(m.Reference))
	}
	p("<h2>Image</h2>\n<table>\n")
	row := func(k, v string) { p("<tr><td>%s</td><td>%s</td></tr>\n", e(k), v) }
	row("Name", "<code>"+e(m.Name)+"</code>")
	row("Tag", "<code>"+e(m.Tag)+"</code>")
	row("Image ID (config digest)", "<code>"+e(m.ConfigDigest)+"</code>")
	row("Manifest digest", "<code>"+e(m.ManifestDigest)+"</code>")
	if !m.Created.IsZero() {
		row("Created", e(m.Created.UTC().Format(time.RFC3339)))
	}
	row("Size", e(HumanSize(m.Size())))
	row("Platforms", e(strings.Join(m.Platforms, ", ")))
	if len(m.Entrypoint) > 0 {
		row("Entrypoint", "<code>"+e(strings.Join(m.Entrypoint, " "))+"</code>")
	}
	if len(m.Cmd) > 0 {
		row("Cmd", "<code>"+e(strings.Join(m.Cmd, " "))+"</code>")
	}
	p("</table>\n")
	if len(m.Labels) > 0 {
		keys := make([]string, 0, len(m.Labels))
		for k := range m.Labels {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		p("<h2>Labels</h2>\n<table>\n")
		for _, k := range keys {
			row(k, e(m.Labels[k]))
		}
		p("</table>\n")
	}
	p("<h2>Layers</h2>\n<table>\n<tr><th>#</th><th>diff_id</th><th>size</th><th>created by</th></tr>\n")
	for i, l := range m.Layers {
		p("<tr><td>%d</td><td><code>%s</code></td><td>%s</td><td><code>%s</code></td></tr>\n",
			i+1, e(l.DiffID), e(HumanSize(l.Size)), e(l.CreatedBy))
	}
	p("</table>\n")
	if len(m.Packages) > 0 {
		p("<h2>Packages</h2>\n")
		byManager := map[string][]Package{}
		var managers []string
		for _, pk := range m.Packages {
			if _, ok := byManager[pk.Manager]; !ok {
				managers = append(managers, pk.Manager)
			}
			byManager[pk.Manager] = append(byManager[pk.Manager], pk)
		}
		sort.Strings(managers)
		for _, mg := range managers {
			p("<h3>%s (%d)</h3>\n<table>\n<tr><th>name</th><th>version</th><th>arch</th></tr>\n", e(mg), len(byManager[mg]))
			for _, pk := range byManager[mg] {
				p("<tr><td>%s</td><td>%s</td><td>%s</td></tr>\n", e(pk.Name), e(pk.Version), e(pk.Arch))
			}
			p("</table>\n")
		}
	}
	return b.String()
}

// HumanSize formats n bytes with binary units, as "77.3 MiB".
func HumanSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for v := n / unit; v >= unit; v /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
