// Package testimage builds small, deterministic container images for tests,
// without any registry: an OCI image layout on disk holding Debian's static
// busybox (busybox-static, /bin/busybox) and its applet links, optionally
// with more layers (random data for lazy-pull tests, files of the test's
// choosing), labels, a dpkg status database and more platforms. Import loads
// such a layout into a containerdtest.Daemon and unpacks it.
//
// The same options give the same blobs on one host (fixed timestamps, sorted
// entries, seeded random data); the busybox binary and the dpkg database come
// from the host.
package testimage

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// DefaultName is the image name (annotation io.containerd.image.name) when
// WithName is not given. Its tag is not "latest", which donodo refuses.
const DefaultName = "zenodo-test.example/busybox:1.0"

// Hello is what the default command prints (with a newline).
const Hello = "hello from zenodo"

// Annotation keys of the layout's index.json entry.
const (
	// AnnotationImageName is containerd's full image name annotation, which
	// `ctr image import` and client.Import use as the image's name.
	AnnotationImageName = "io.containerd.image.name"
)

// BusyboxPath is where the busybox binary is taken from (Debian's busybox-static).
const BusyboxPath = "/bin/busybox"

// RandomDir is the directory of WithRandomLayer's files inside the image; it
// also holds SHA256SUMS, so `sha256sum -c /data/SHA256SUMS` checks them all.
const RandomDir = "/data"

// File is a file WithFile adds to the image.
type File struct {
	// Path is absolute inside the image.
	Path string
	// Content is the file's content.
	Content []byte
	// Mode is the permission bits; 0 means 0o644.
	Mode fs.FileMode
}

type platformEntry struct {
	platform ocispec.Platform
	content  bool
}

type options struct {
	name       string
	cmd        []string
	entrypoint []string
	env        []string
	labels     map[string]string
	randomMiB  int
	seed       uint64
	dpkg       bool
	files      []File
	platforms  []platformEntry
	gzip       bool
	docker     bool
	created    time.Time
}

// Option configures Busybox.
type Option func(*options)

// WithName sets the image name recorded in the layout's index.json
// (annotations io.containerd.image.name and, its tag,
// org.opencontainers.image.ref.name). The default is DefaultName.
func WithName(name string) Option { return func(o *options) { o.name = name } }

// WithCmd sets the config's Cmd. The default is
// ["/bin/sh", "-c", "echo hello from zenodo"] (see Hello).
func WithCmd(args ...string) Option { return func(o *options) { o.cmd = args } }

// WithEntrypoint sets the config's Entrypoint. The default is none.
func WithEntrypoint(args ...string) Option { return func(o *options) { o.entrypoint = args } }

// WithEnv adds KEY=VALUE entries to the config's Env, which by default holds
// only a PATH.
func WithEnv(kv ...string) Option { return func(o *options) { o.env = append(o.env, kv...) } }

// WithLabels adds labels to the config. The default is none.
func WithLabels(labels map[string]string) Option {
	return func(o *options) {
		if o.labels == nil {
			o.labels = map[string]string{}
		}
		for k, v := range labels {
			o.labels[k] = v
		}
	}
}

// WithRandomLayer adds a layer of mib MiB of random (incompressible) files
// under RandomDir, sized from 4 KiB to 4 MiB, with a SHA256SUMS file listing
// them. The same seed gives the same bytes. Its gzip uses stored blocks (the
// data does not compress). The default is no such layer.
func WithRandomLayer(mib int, seed uint64) Option {
	return func(o *options) { o.randomMiB, o.seed = mib, seed }
}

// WithDpkgStatus adds a layer with the host's /var/lib/dpkg/status and
// /etc/os-release, so the image looks Debian-based to package listers. The
// default is no such layer.
func WithDpkgStatus() Option { return func(o *options) { o.dpkg = true } }

// WithFile adds a file to a last layer of such files (parent directories
// are created). The default is no such layer.
func WithFile(f File) Option { return func(o *options) { o.files = append(o.files, f) } }

// WithPlatform makes the image multi-platform: its root becomes an image
// index listing the host's platform (linux/amd64 here) and p. The manifest for
// p shares the layers (busybox will not run there) with its own config; with
// content false only the index entry is written, as in a partial pull. May be
// repeated. The default is a single-platform image whose root is a manifest.
func WithPlatform(p ocispec.Platform, content bool) Option {
	return func(o *options) { o.platforms = append(o.platforms, platformEntry{p, content}) }
}

// WithUncompressedLayers stores layers as plain tar. The default is gzip.
func WithUncompressedLayers() Option { return func(o *options) { o.gzip = false } }

// WithDockerMediaTypes uses Docker schema 2 media types (manifest list,
// manifest, container config, rootfs diff) instead of OCI ones, as images
// pulled from Docker Hub or made by `docker save` have. The default is OCI.
func WithDockerMediaTypes() Option { return func(o *options) { o.docker = true } }

// WithCreated sets the config's and history's creation time. The default is
// 2024-01-01T00:00:00Z.
func WithCreated(t time.Time) Option { return func(o *options) { o.created = t.UTC() } }

// Docker schema 2 media types.
const (
	mediaTypeDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
	mediaTypeDockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	mediaTypeDockerConfig       = "application/vnd.docker.container.image.v1+json"
	mediaTypeDockerLayerGzip    = "application/vnd.docker.image.rootfs.diff.tar.gzip"
	mediaTypeDockerLayer        = "application/vnd.docker.image.rootfs.diff.tar"
)

// Busybox writes an OCI image layout (oci-layout, index.json, blobs/sha256/)
// into dir, which is created if needed, and returns the descriptor of the
// image's root (a manifest, or an index with WithPlatform) as listed in
// index.json, annotations included. Failures end the test.
func Busybox(t testing.TB, dir string, opts ...Option) ocispec.Descriptor {
	t.Helper()
	desc, err := build(dir, opts...)
	if err != nil {
		t.Fatalf("building busybox test image in %s: %v", dir, err)
	}
	return desc
}

func build(dir string, opts ...Option) (ocispec.Descriptor, error) {
	o := options{
		name:    DefaultName,
		cmd:     []string{"/bin/sh", "-c", "echo " + Hello},
		env:     []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		gzip:    true,
		created: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC),
	}
	for _, opt := range opts {
		opt(&o)
	}
	b := &builder{dir: dir, opts: o}
	if err := os.MkdirAll(filepath.Join(dir, "blobs", "sha256"), 0o755); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("creating layout: %w", err)
	}

	var layers []layer
	add := func(what string, entries []entry, level int) error {
		l, err := b.writeLayer(entries, level)
		if err != nil {
			return fmt.Errorf("writing %s layer: %w", what, err)
		}
		l.comment = what
		layers = append(layers, l)
		return nil
	}
	bb, err := busyboxEntries()
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	if err := add("busybox", bb, gzip.BestSpeed); err != nil {
		return ocispec.Descriptor{}, err
	}
	if o.dpkg {
		entries, err := dpkgEntries()
		if err != nil {
			return ocispec.Descriptor{}, err
		}
		if err := add("dpkg status", entries, gzip.BestSpeed); err != nil {
			return ocispec.Descriptor{}, err
		}
	}
	if o.randomMiB > 0 {
		entries, err := randomEntries(o.randomMiB, o.seed)
		if err != nil {
			return ocispec.Descriptor{}, err
		}
		if err := add(fmt.Sprintf("%d MiB of random files", o.randomMiB), entries, gzip.NoCompression); err != nil {
			return ocispec.Descriptor{}, err
		}
	}
	if len(o.files) > 0 {
		entries, err := fileEntries(o.files)
		if err != nil {
			return ocispec.Descriptor{}, err
		}
		if err := add("files", entries, gzip.BestSpeed); err != nil {
			return ocispec.Descriptor{}, err
		}
	}

	host := ocispec.Platform{OS: runtime.GOOS, Architecture: runtime.GOARCH}
	if runtime.GOARCH == "arm64" {
		host.Variant = "v8"
	}
	root, err := b.writeManifest(host, layers)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	if len(o.platforms) > 0 {
		manifests := []ocispec.Descriptor{root}
		for _, pe := range o.platforms {
			m, err := b.writeManifest(pe.platform, layers)
			if err != nil {
				return ocispec.Descriptor{}, err
			}
			if !pe.content {
				if err := os.Remove(b.blobPath(m.Digest)); err != nil {
					return ocispec.Descriptor{}, fmt.Errorf("dropping %s manifest: %w", pe.platform.Architecture, err)
				}
			}
			manifests = append(manifests, m)
		}
		mt := ocispec.MediaTypeImageIndex
		if o.docker {
			mt = mediaTypeDockerManifestList
		}
		root, err = b.writeJSON(mt, ocispec.Index{
			Versioned: specs.Versioned{SchemaVersion: 2},
			MediaType: mt,
			Manifests: manifests,
		})
		if err != nil {
			return ocispec.Descriptor{}, fmt.Errorf("writing image index: %w", err)
		}
	}

	root.Platform = nil
	root.Annotations = map[string]string{AnnotationImageName: o.name}
	if tag := tagOf(o.name); tag != "" {
		root.Annotations[ocispec.AnnotationRefName] = tag
	}
	if err := writeFileJSON(filepath.Join(dir, ocispec.ImageLayoutFile), ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion}); err != nil {
		return ocispec.Descriptor{}, err
	}
	if err := writeFileJSON(filepath.Join(dir, ocispec.ImageIndexFile), ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{root},
	}); err != nil {
		return ocispec.Descriptor{}, err
	}
	return root, nil
}

// tagOf returns the tag of an image name, or "" if it has none.
func tagOf(name string) string {
	if i := strings.IndexByte(name, '@'); i >= 0 {
		name = name[:i]
	}
	i := strings.LastIndexByte(name, ':')
	if i < 0 || strings.ContainsRune(name[i:], '/') {
		return ""
	}
	return name[i+1:]
}

type builder struct {
	dir  string
	opts options
}

// layer is a written layer blob.
type layer struct {
	desc    ocispec.Descriptor
	diffID  digest.Digest
	comment string
}

func (b *builder) blobPath(d digest.Digest) string {
	return filepath.Join(b.dir, "blobs", d.Algorithm().String(), d.Encoded())
}

// writeBlob stores what fill writes under its sha256 digest.
func (b *builder) writeBlob(fill func(w io.Writer) error) (digest.Digest, int64, error) {
	f, err := os.CreateTemp(filepath.Join(b.dir, "blobs"), ".tmp-")
	if err != nil {
		return "", 0, err
	}
	defer os.Remove(f.Name()) // after the rename, a no-op
	defer f.Close()
	h := sha256.New()
	cw := &countWriter{w: io.MultiWriter(f, h)}
	if err := fill(cw); err != nil {
		return "", 0, err
	}
	if err := f.Close(); err != nil {
		return "", 0, err
	}
	d := digest.NewDigest(digest.SHA256, h)
	if err := os.Rename(f.Name(), b.blobPath(d)); err != nil {
		return "", 0, err
	}
	return d, cw.n, nil
}

func (b *builder) writeJSON(mediaType string, v any) (ocispec.Descriptor, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	d, n, err := b.writeBlob(func(w io.Writer) error { _, err := w.Write(data); return err })
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	return ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: n}, nil
}

// writeLayer writes entries as a tar layer, gzipped at level unless
// compression is off. Random data does not compress: its layer is written at
// gzip.NoCompression (stored blocks, still gzip), which costs nothing even
// under the race detector, where deflating is a hundred times slower.
func (b *builder) writeLayer(entries []entry, level int) (layer, error) {
	var diffID digest.Digest
	d, n, err := b.writeBlob(func(w io.Writer) error {
		var (
			zw  io.WriteCloser
			out = w
		)
		if b.opts.gzip {
			gz, err := gzip.NewWriterLevel(w, level)
			if err != nil {
				return err
			}
			zw, out = gz, gz
		}
		h := sha256.New()
		if err := writeTar(io.MultiWriter(out, h), entries, b.opts.created); err != nil {
			return err
		}
		if zw != nil {
			if err := zw.Close(); err != nil {
				return err
			}
		}
		diffID = digest.NewDigest(digest.SHA256, h)
		return nil
	})
	if err != nil {
		return layer{}, err
	}
	mt := ocispec.MediaTypeImageLayer
	switch {
	case b.opts.docker && b.opts.gzip:
		mt = mediaTypeDockerLayerGzip
	case b.opts.docker:
		mt = mediaTypeDockerLayer
	case b.opts.gzip:
		mt = ocispec.MediaTypeImageLayerGzip
	}
	return layer{desc: ocispec.Descriptor{MediaType: mt, Digest: d, Size: n}, diffID: diffID}, nil
}

// writeManifest writes the config and manifest of the image for platform p
// and returns the manifest's descriptor, platform set.
func (b *builder) writeManifest(p ocispec.Platform, layers []layer) (ocispec.Descriptor, error) {
	o := b.opts
	cfg := ocispec.Image{
		Created:  &o.created,
		Platform: p,
		Config: ocispec.ImageConfig{
			Env:        o.env,
			Entrypoint: o.entrypoint,
			Cmd:        o.cmd,
			Labels:     o.labels,
			WorkingDir: "/",
		},
		RootFS: ocispec.RootFS{Type: "layers"},
	}
	for _, l := range layers {
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, l.diffID)
		cfg.History = append(cfg.History, ocispec.History{Created: &o.created, CreatedBy: "testimage: " + l.comment})
	}
	cfgType, manType := ocispec.MediaTypeImageConfig, ocispec.MediaTypeImageManifest
	if o.docker {
		cfgType, manType = mediaTypeDockerConfig, mediaTypeDockerManifest
	}
	cfgDesc, err := b.writeJSON(cfgType, cfg)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("writing config: %w", err)
	}
	m := ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: manType,
		Config:    cfgDesc,
	}
	for _, l := range layers {
		m.Layers = append(m.Layers, l.desc)
	}
	desc, err := b.writeJSON(manType, m)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("writing manifest: %w", err)
	}
	desc.Platform = &p
	return desc, nil
}

// entry is one tar entry of a layer. Exactly one of content, open, link is
// used for regular files and symlinks; directories have none.
type entry struct {
	name    string // relative, no leading slash
	typ     byte
	mode    int64
	size    int64
	content []byte
	open    func() (io.Reader, error) // for big contents, made while writing
	link    string
}

func writeTar(w io.Writer, entries []entry, mtime time.Time) error {
	sort.Slice(entries, func(i, j int) bool { return entries[i].name < entries[j].name })
	tw := tar.NewWriter(w)
	for _, e := range entries {
		hdr := &tar.Header{
			Typeflag: e.typ,
			Name:     e.name,
			Linkname: e.link,
			Mode:     e.mode,
			ModTime:  mtime,
			Format:   tar.FormatPAX,
		}
		if e.typ == tar.TypeDir {
			hdr.Name += "/"
		}
		if e.typ == tar.TypeReg {
			hdr.Size = int64(len(e.content))
			if e.open != nil {
				hdr.Size = e.size
			}
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("writing tar header of %s: %w", e.name, err)
		}
		if e.typ != tar.TypeReg {
			continue
		}
		var r io.Reader = bytes.NewReader(e.content)
		if e.open != nil {
			var err error
			if r, err = e.open(); err != nil {
				return fmt.Errorf("reading content of %s: %w", e.name, err)
			}
		}
		if _, err := io.Copy(tw, r); err != nil {
			return fmt.Errorf("writing %s: %w", e.name, err)
		}
	}
	return tw.Close()
}

func dir(name string, mode int64) entry { return entry{name: name, typ: tar.TypeDir, mode: mode} }

// withParents adds directory entries for every parent of the entries' names
// that has none.
func withParents(entries []entry) []entry {
	have := map[string]bool{}
	for _, e := range entries {
		if e.typ == tar.TypeDir {
			have[e.name] = true
		}
	}
	out := entries
	for _, e := range entries {
		for p := path.Dir(e.name); p != "." && p != "/" && !have[p]; p = path.Dir(p) {
			have[p] = true
			out = append(out, dir(p, 0o755))
		}
	}
	return out
}

// busyboxEntries is the base layer: busybox, a link per applet in /bin, and
// the directories and /etc files a container expects.
func busyboxEntries() ([]entry, error) {
	bin, err := os.ReadFile(BusyboxPath)
	if err != nil {
		return nil, fmt.Errorf("reading busybox (Debian package busybox-static): %w", err)
	}
	out, err := exec.Command(BusyboxPath, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("listing busybox applets: %w", err)
	}
	entries := []entry{
		dir("bin", 0o755), dir("dev", 0o755), dir("etc", 0o755), dir("proc", 0o555),
		dir("root", 0o700), dir("sys", 0o555), dir("tmp", 0o1777), dir("var", 0o755),
		{name: "bin/busybox", typ: tar.TypeReg, mode: 0o755, content: bin},
		{name: "etc/passwd", typ: tar.TypeReg, mode: 0o644, content: []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")},
		{name: "etc/group", typ: tar.TypeReg, mode: 0o644, content: []byte("root:x:0:\nnogroup:x:65534:\n")},
	}
	for _, applet := range strings.Fields(string(out)) {
		if applet == "busybox" || strings.ContainsAny(applet, "/[") {
			continue
		}
		entries = append(entries, entry{name: "bin/" + applet, typ: tar.TypeSymlink, mode: 0o777, link: "busybox"})
	}
	return entries, nil
}

func dpkgEntries() ([]entry, error) {
	var entries []entry
	for src, dst := range map[string]string{
		"/var/lib/dpkg/status": "var/lib/dpkg/status",
		"/etc/os-release":      "etc/os-release",
	} {
		b, err := os.ReadFile(src)
		if err != nil {
			return nil, fmt.Errorf("reading host %s: %w", src, err)
		}
		entries = append(entries, entry{name: dst, typ: tar.TypeReg, mode: 0o644, content: b})
	}
	return withParents(entries), nil
}

func fileEntries(files []File) ([]entry, error) {
	var entries []entry
	for _, f := range files {
		name := strings.TrimPrefix(path.Clean("/"+f.Path), "/")
		if name == "" {
			return nil, fmt.Errorf("file path %q names the root", f.Path)
		}
		mode := int64(f.Mode.Perm())
		if mode == 0 {
			mode = 0o644
		}
		entries = append(entries, entry{name: name, typ: tar.TypeReg, mode: mode, content: f.Content})
	}
	return withParents(entries), nil
}

// randomEntries lays out mib MiB of seeded random files, 4 KiB to 4 MiB each,
// under RandomDir, plus a SHA256SUMS for `sha256sum -c`. Contents are
// generated while the tar is written, so memory stays small.
func randomEntries(mib int, seed uint64) ([]entry, error) {
	total := int64(mib) << 20
	sizes := rand.New(rand.NewPCG(seed, 0x7a656e6f646f)) // "zenodo"
	base := strings.TrimPrefix(RandomDir, "/")
	var (
		entries []entry
		sums    strings.Builder
	)
	for i := 0; total > 0; i++ {
		size := min(int64(4<<10)+sizes.Int64N(4<<20-4<<10), total)
		total -= size
		name := fmt.Sprintf("%s/f%04d", base, i)
		var chachaSeed [32]byte
		copy(chachaSeed[:], fmt.Sprintf("%016x%08x", seed, i))
		gen := func() io.Reader { return io.LimitReader(rand.NewChaCha8(chachaSeed), size) }
		h := sha256.New()
		if _, err := io.Copy(h, gen()); err != nil {
			return nil, fmt.Errorf("generating %s: %w", name, err)
		}
		fmt.Fprintf(&sums, "%s  /%s\n", hex.EncodeToString(h.Sum(nil)), name)
		entries = append(entries, entry{
			name: name, typ: tar.TypeReg, mode: 0o644, size: size,
			open: func() (io.Reader, error) { return gen(), nil },
		})
	}
	entries = append(entries,
		dir(base, 0o755),
		entry{name: base + "/SHA256SUMS", typ: tar.TypeReg, mode: 0o644, content: []byte(sums.String())})
	return entries, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func writeFileJSON(name string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding %s: %w", filepath.Base(name), err)
	}
	if err := os.WriteFile(name, b, 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", filepath.Base(name), err)
	}
	return nil
}
