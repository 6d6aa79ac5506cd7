package archive

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/containerd/platforms"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/internal/ctxio"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/seekable"
)

// WriteOption configures Write.
type WriteOption func(*writeOptions) error

type writeOptions struct {
	preserveLayers   bool
	skipMissing      bool
	names            []string
	layerAnnotations map[string]string
	tempDir          string
	dockerPlatform   platforms.MatchComparer
	concurrency      int
	seekableOpts     []seekable.Option
	progress         func(Progress)
}

// WithPreserveLayers stores layers byte for byte as the provider has them
// instead of converting them to seekable gzip, so manifest digests do not
// change (WithLayerAnnotations is then not applied). Such layers have no TOC
// and are fetched whole on first access. By default layers are converted.
func WithPreserveLayers() WriteOption {
	return func(o *writeOptions) error {
		o.preserveLayers = true
		return nil
	}
}

// WithSkipMissing leaves out the platforms of an image index whose content
// (manifest, config or a layer) the provider does not have; the returned
// Index lists the manifests written. By default missing content is an
// errdefs.ErrNotFound error.
func WithSkipMissing() WriteOption {
	return func(o *writeOptions) error {
		o.skipMissing = true
		return nil
	}
}

// WithImageName names the image ("name:tag", normalized to
// docker.io/library/name:tag): index.json gets an entry for it with the
// io.containerd.image.name and org.opencontainers.image.ref.name
// annotations, manifest.json a RepoTags entry. It may be given several
// times. By default the archive names no image.
func WithImageName(name string) WriteOption {
	return func(o *writeOptions) error {
		n, err := normalizeNames([]string{name})
		if err != nil {
			return err
		}
		if !slices.Contains(o.names, n[0]) {
			o.names = append(o.names, n[0])
		}
		return nil
	}
}

// WithLayerAnnotations adds annotations to every converted layer's
// descriptor, next to the TOC digest and uncompressed size, for instance
// the record's DOI under containerd.io/snapshot/zenodo/doi. Keys under
// containerd.io/snapshot/ reach the snapshotter as Prepare labels. By
// default only the TOC digest and uncompressed size are added.
func WithLayerAnnotations(annotations map[string]string) WriteOption {
	return func(o *writeOptions) error {
		for k := range annotations {
			if k == seekable.AnnotationTOCDigest || k == seekable.AnnotationUncompressedSize {
				return fmt.Errorf("layer annotation %q is set by the writer: %w", k, errdefs.ErrInvalidArgument)
			}
		}
		if o.layerAnnotations == nil {
			o.layerAnnotations = map[string]string{}
		}
		maps.Copy(o.layerAnnotations, annotations)
		return nil
	}
}

// WithTempDir sets the directory for the converted layers, which are held
// there until written (at most about the size of the archive's layers). The
// default is os.TempDir().
func WithTempDir(dir string) WriteOption {
	return func(o *writeOptions) error {
		o.tempDir = dir
		return nil
	}
}

// WithDockerPlatform chooses which platform's manifest goes into the
// docker-save manifest.json, which holds one image: the best match, else the
// first manifest. The default is the host platform (platforms.Default()).
func WithDockerPlatform(p platforms.MatchComparer) WriteOption {
	return func(o *writeOptions) error {
		if p == nil {
			return fmt.Errorf("nil platform matcher: %w", errdefs.ErrInvalidArgument)
		}
		o.dockerPlatform = p
		return nil
	}
}

// WithConcurrency sets how many layers are converted at once (each
// conversion also compresses its members in parallel). The default is 2.
func WithConcurrency(n int) WriteOption {
	return func(o *writeOptions) error {
		if n < 1 {
			return fmt.Errorf("concurrency %d: %w", n, errdefs.ErrInvalidArgument)
		}
		o.concurrency = n
		return nil
	}
}

// WithSeekableOptions passes options to seekable.Convert (member sizes,
// compression level). By default seekable's defaults apply.
func WithSeekableOptions(opts ...seekable.Option) WriteOption {
	return func(o *writeOptions) error {
		o.seekableOpts = append(o.seekableOpts, opts...)
		return nil
	}
}

// Progress reports Write's progress through one blob.
type Progress struct {
	// Stage is "convert" while a layer is read and converted, "write" while
	// a blob is written into the archive.
	Stage string
	// Desc is the blob: the source layer while converting, the blob written
	// while writing.
	Desc ocispec.Descriptor
	// Done is how many of Desc.Size bytes have been processed.
	Done int64
}

// WithProgress calls fn as layers are converted and blobs written (from
// several goroutines while converting, not concurrently with itself for one
// blob). By default nothing is reported.
func WithProgress(fn func(Progress)) WriteOption {
	return func(o *writeOptions) error {
		o.progress = fn
		return nil
	}
}

func makeWriteOptions(opts []WriteOption) (*writeOptions, error) {
	o := &writeOptions{
		tempDir:        os.TempDir(),
		dockerPlatform: platforms.Default(),
		concurrency:    2,
	}
	for _, opt := range opts {
		if err := opt(o); err != nil {
			return nil, err
		}
	}
	return o, nil
}

// node is a loaded index or manifest.
type node struct {
	desc     ocispec.Descriptor // as referenced by its parent
	raw      []byte
	children []*node // index: manifests and indexes kept
	others   []ocispec.Descriptor
	// manifest only:
	manifest   *ocispec.Manifest
	config     []byte
	platform   *ocispec.Platform // from the config, for image manifests
	isImage    bool
	layerJobs  []*layerJob        // one per manifest layer (shared between manifests)
	rewritten  ocispec.Descriptor // manifest as written, with its platform
	skippedAny bool
}

// layerJob is one distinct layer blob.
type layerJob struct {
	src     ocispec.Descriptor
	diffID  digest.Digest // expected uncompressed digest, if known
	convert bool
	present bool // false for absent non-distributable layers

	// results of conversion
	file             string
	out              ocispec.Descriptor // digest, size of the converted blob
	toc              []byte
	tocDigest        digest.Digest
	uncompressedSize int64
}

// loadResult is the outcome of loading one index or manifest.
type loadResult struct {
	n   *node
	err error
}

// plannedBlob is a blob to write into the archive.
type plannedBlob struct {
	desc ocispec.Descriptor
	data []byte    // metadata in memory, or
	job  *layerJob // set for a blob copied from the provider
}

type writer struct {
	o        *writeOptions
	provider content.Provider

	layers    map[digest.Digest]*layerJob
	layerList []*layerJob
	loaded    map[digest.Digest]loadResult // indexes and manifests, once each

	mu        sync.Mutex
	tempFiles []string

	indexes, manifests, configs, tocs []plannedBlob
	planned                           map[digest.Digest]bool
	written                           []*node // image manifests, in order
}

// Write writes the image root (an index or a manifest, all its platforms)
// from provider to w as a format v1 image.tar, and returns the content of
// its image.tar.index.json. Layers are converted to seekable gzip in temp
// files (see WithTempDir) before anything is written, unless
// WithPreserveLayers; configs are copied unchanged. Every blob read from the
// provider is checked against its digest, and every converted layer's
// uncompressed digest against the config's diff_id (ErrCorrupt).
//
// provider may be a containerd content store or LayoutProvider.
func Write(ctx context.Context, w io.Writer, provider content.Provider, root ocispec.Descriptor, opts ...WriteOption) (*Index, error) {
	o, err := makeWriteOptions(opts)
	if err != nil {
		return nil, err
	}
	if !images.IsIndexType(root.MediaType) && !images.IsManifestType(root.MediaType) {
		return nil, fmt.Errorf("writing archive: root %s has media type %q, want an image index or manifest: %w", root.Digest, root.MediaType, errdefs.ErrInvalidArgument)
	}
	wr := &writer{o: o, provider: provider, layers: map[digest.Digest]*layerJob{}, loaded: map[digest.Digest]loadResult{}, planned: map[digest.Digest]bool{}}
	defer wr.removeTempFiles(ctx)

	tree, err := wr.load(ctx, root, 0)
	if err != nil {
		return nil, fmt.Errorf("writing archive of %s: %w", root.Digest, err)
	}
	if err := wr.convertLayers(ctx); err != nil {
		return nil, fmt.Errorf("writing archive of %s: %w", root.Digest, err)
	}
	newRoot, err := wr.emit(tree)
	if err != nil {
		return nil, fmt.Errorf("writing archive of %s: %w", root.Digest, err)
	}
	idx, err := wr.writeTar(ctx, w, newRoot)
	if err != nil {
		return nil, fmt.Errorf("writing archive of %s: %w", root.Digest, err)
	}
	return idx, nil
}

// readBlob reads a small blob from the provider and checks its digest.
func (wr *writer) readBlob(ctx context.Context, desc ocispec.Descriptor) ([]byte, error) {
	if desc.Size > maxJSONSize {
		return nil, fmt.Errorf("blob %s is %d bytes, more than %d: %w", desc.Digest, desc.Size, maxJSONSize, errdefs.ErrInvalidArgument)
	}
	data, err := content.ReadBlob(ctx, wr.provider, desc)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", desc.Digest, err)
	}
	if int64(len(data)) != desc.Size || digest.FromBytes(data) != desc.Digest {
		return nil, fmt.Errorf("blob %s: content does not match its descriptor: %w", desc.Digest, ErrCorrupt)
	}
	return data, nil
}

// exists tells whether the provider has a blob.
func (wr *writer) exists(ctx context.Context, desc ocispec.Descriptor) (bool, error) {
	ra, err := wr.provider.ReaderAt(ctx, desc)
	if errdefs.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("opening %s: %w", desc.Digest, err)
	}
	return true, ra.Close()
}

// load reads an index or manifest and what it needs, recursively. With
// skipMissing, index children whose content is missing are dropped; a
// manifest with missing content is errdefs.ErrNotFound.
func (wr *writer) load(ctx context.Context, desc ocispec.Descriptor, depth int) (*node, error) {
	if depth > maxIndexDepth {
		return nil, fmt.Errorf("indexes nested more than %d deep: %w", maxIndexDepth, errdefs.ErrInvalidArgument)
	}
	if r, ok := wr.loaded[desc.Digest]; ok {
		return r.n, r.err
	}
	n, err := wr.loadOnce(ctx, desc, depth)
	wr.loaded[desc.Digest] = loadResult{n, err}
	return n, err
}

// loadOnce is load without the memo.
func (wr *writer) loadOnce(ctx context.Context, desc ocispec.Descriptor, depth int) (*node, error) {
	raw, err := wr.readBlob(ctx, desc)
	if err != nil {
		return nil, err
	}
	n := &node{desc: desc, raw: raw}
	if images.IsIndexType(desc.MediaType) {
		var idx ocispec.Index
		if err := json.Unmarshal(raw, &idx); err != nil {
			return nil, fmt.Errorf("parsing index %s: %v: %w", desc.Digest, err, errdefs.ErrInvalidArgument)
		}
		for _, c := range idx.Manifests {
			if images.IsIndexType(c.MediaType) || images.IsManifestType(c.MediaType) {
				child, err := wr.load(ctx, c, depth+1)
				if errdefs.IsNotFound(err) && wr.o.skipMissing {
					log.G(ctx).WithError(err).WithField("digest", c.Digest).WithField("platform", platformString(c.Platform)).Info("skipping platform whose content is missing")
					n.skippedAny = true
					continue
				}
				if err != nil {
					return nil, fmt.Errorf("%s of index %s: %w", platformString(c.Platform), desc.Digest, err)
				}
				n.children = append(n.children, child)
				continue
			}
			ok, err := wr.exists(ctx, c)
			if err != nil {
				return nil, err
			}
			if !ok {
				if !wr.o.skipMissing {
					return nil, fmt.Errorf("blob %s of index %s: %w", c.Digest, desc.Digest, errdefs.ErrNotFound)
				}
				n.skippedAny = true
				continue
			}
			n.others = append(n.others, c)
		}
		if len(n.children) == 0 && len(idx.Manifests) > 0 {
			return nil, fmt.Errorf("index %s: content of no platform present: %w", desc.Digest, errdefs.ErrNotFound)
		}
		return n, nil
	}

	var m ocispec.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("parsing manifest %s: %v: %w", desc.Digest, err, errdefs.ErrInvalidArgument)
	}
	n.manifest = &m
	if n.config, err = wr.readBlob(ctx, m.Config); err != nil {
		return nil, fmt.Errorf("config of manifest %s: %w", desc.Digest, err)
	}
	var diffIDs []digest.Digest
	// buildx's attestation manifests are not images to run.
	attestation := desc.Annotations[annotationReferenceType] == attestationManifest
	if images.IsConfigType(m.Config.MediaType) && !attestation {
		var img ocispec.Image
		if err := json.Unmarshal(n.config, &img); err != nil {
			return nil, fmt.Errorf("parsing config %s: %v: %w", m.Config.Digest, err, errdefs.ErrInvalidArgument)
		}
		n.isImage = true
		p := platforms.Normalize(img.Platform)
		n.platform = &p
		if len(img.RootFS.DiffIDs) == len(m.Layers) {
			diffIDs = img.RootFS.DiffIDs
		} else {
			log.G(ctx).WithField("manifest", desc.Digest).Warnf("config has %d diff_ids for %d layers; not checking them", len(img.RootFS.DiffIDs), len(m.Layers))
		}
	}
	var jobs []*layerJob
	var fresh []*layerJob
	for i, l := range m.Layers {
		if err := l.Digest.Validate(); err != nil {
			return nil, fmt.Errorf("layer %d of manifest %s: %v: %w", i, desc.Digest, err, errdefs.ErrInvalidArgument)
		}
		job, ok := wr.layers[l.Digest]
		if !ok {
			present, err := wr.exists(ctx, l)
			if err != nil {
				return nil, err
			}
			if !present && !images.IsNonDistributable(l.MediaType) {
				return nil, fmt.Errorf("layer %s of manifest %s: %w", l.Digest, desc.Digest, errdefs.ErrNotFound)
			}
			job = &layerJob{src: l, present: present, convert: present && !wr.o.preserveLayers && convertible(l.MediaType)}
			if diffIDs != nil {
				job.diffID = diffIDs[i]
			}
			fresh = append(fresh, job)
			// Registered below, once the whole manifest is known to be
			// present, so a skipped platform leaves no layers behind.
		}
		jobs = append(jobs, job)
	}
	for _, job := range fresh {
		if _, ok := wr.layers[job.src.Digest]; !ok {
			wr.layers[job.src.Digest] = job
			wr.layerList = append(wr.layerList, job)
		}
	}
	for i, job := range jobs {
		if j, ok := wr.layers[job.src.Digest]; ok {
			jobs[i] = j
		}
	}
	n.layerJobs = jobs
	return n, nil
}

// convertible tells whether a layer media type is a plain (gzip, zstd or
// uncompressed) tar that can become seekable gzip.
func convertible(mt string) bool {
	switch mt {
	case images.MediaTypeDockerSchema2Layer, images.MediaTypeDockerSchema2LayerGzip, images.MediaTypeDockerSchema2LayerZstd,
		ocispec.MediaTypeImageLayer, ocispec.MediaTypeImageLayerGzip, ocispec.MediaTypeImageLayerZstd:
		return true
	}
	return false
}

func platformString(p *ocispec.Platform) string {
	if p == nil {
		return "manifest"
	}
	return "platform " + platforms.Format(*p)
}

// convertLayers converts the layers to seekable gzip temp files.
func (wr *writer) convertLayers(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(wr.o.concurrency)
	for _, job := range wr.layerList {
		if !job.convert {
			continue
		}
		g.Go(func() error {
			err := wr.convertLayer(gctx, job)
			if errors.Is(err, seekable.ErrUnsupported) {
				log.G(ctx).WithError(err).WithField("layer", job.src.Digest).Warn("layer cannot be made seekable; storing it as it is")
				job.convert = false
				return nil
			}
			return err
		})
	}
	return g.Wait()
}

// convertLayer decompresses one layer, converts it with seekable.Convert
// into a temp file, and checks the source digest and the diff_id.
func (wr *writer) convertLayer(ctx context.Context, job *layerJob) (retErr error) {
	ra, err := wr.provider.ReaderAt(ctx, job.src)
	if err != nil {
		return fmt.Errorf("opening layer %s: %w", job.src.Digest, err)
	}
	defer ra.Close()
	f, err := os.CreateTemp(wr.o.tempDir, "layer-*.tar.gz")
	if err != nil {
		return fmt.Errorf("creating temp file for layer %s: %w", job.src.Digest, err)
	}
	wr.mu.Lock()
	wr.tempFiles = append(wr.tempFiles, f.Name())
	wr.mu.Unlock()
	defer func() {
		if err := f.Close(); err != nil && retErr == nil {
			retErr = fmt.Errorf("writing converted layer %s: %w", job.src.Digest, err)
		}
	}()

	src := &hashingReader{r: content.NewReader(ra), h: job.src.Digest.Algorithm().Hash()}
	if wr.o.progress != nil {
		src.progress = func(n int64) { wr.o.progress(Progress{Stage: "convert", Desc: job.src, Done: n}) }
	}
	dr, _, err := decompress(src)
	if err != nil {
		return fmt.Errorf("decompressing layer %s: %w", job.src.Digest, err)
	}
	defer dr.Close()
	res, err := seekable.Convert(ctx, f, dr, wr.o.seekableOpts...)
	if err != nil {
		return fmt.Errorf("converting layer %s: %w", job.src.Digest, err)
	}
	// Read what the decompressor left (gzip trailer padding) to hash the
	// whole source blob.
	if _, err := ctxio.Copy(ctx, io.Discard, src); err != nil {
		return fmt.Errorf("reading layer %s: %w", job.src.Digest, err)
	}
	if got := digest.NewDigest(job.src.Digest.Algorithm(), src.h); got != job.src.Digest || src.n != job.src.Size {
		return fmt.Errorf("layer %s: provider gave %d bytes with digest %s: %w", job.src.Digest, src.n, got, ErrCorrupt)
	}
	if job.diffID != "" && res.DiffID != job.diffID {
		return fmt.Errorf("layer %s: uncompressed digest %s is not the config's diff_id %s: %w", job.src.Digest, res.DiffID, job.diffID, ErrCorrupt)
	}
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("converted layer %s: %w", job.src.Digest, err)
	}
	if fi.Size() != res.Size {
		return fmt.Errorf("converted layer %s: temp file has %d bytes, converter wrote %d: %w", job.src.Digest, fi.Size(), res.Size, ErrCorrupt)
	}
	job.file = f.Name()
	job.out = ocispec.Descriptor{Digest: res.Digest, Size: res.Size}
	if digest.FromBytes(res.TOCJSON) != res.TOCDigest {
		return fmt.Errorf("converted layer %s: TOC digest mismatch: %w", job.src.Digest, ErrCorrupt)
	}
	// The TOC is stored gzipped: about a quarter of the JSON, and it sits in
	// the metadata range every lazy start reads.
	job.toc = seekable.CompressTOC(res.TOCJSON)
	job.tocDigest = digest.FromBytes(job.toc)
	job.uncompressedSize = res.UncompressedSize
	return nil
}

// hashingReader hashes and counts what is read through it.
type hashingReader struct {
	r        io.Reader
	h        hash.Hash
	n        int64
	progress func(int64)
}

func (r *hashingReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if n > 0 {
		r.h.Write(p[:n])
		r.n += int64(n)
		if r.progress != nil {
			r.progress(r.n)
		}
	}
	return n, err
}

func (wr *writer) removeTempFiles(ctx context.Context) {
	wr.mu.Lock()
	defer wr.mu.Unlock()
	for _, name := range wr.tempFiles {
		if err := os.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
			log.G(ctx).WithError(err).WithField("file", name).Warn("removing temp file")
		}
	}
	wr.tempFiles = nil
}

// droppedLayerAnnotationPrefixes are layer annotations that describe the
// compressed blob and so are wrong after conversion.
var droppedLayerAnnotationPrefixes = []string{
	"containerd.io/snapshot/stargz/",
	"containerd.io/snapshot/nydus",
	"io.github.containers.zstd-chunked.",
	"containerd.io/snapshot/zenodo/",
}

// emit builds the rewritten tree bottom-up and plans its metadata blobs.
func (wr *writer) emit(n *node) (ocispec.Descriptor, error) {
	if n.manifest == nil {
		return wr.emitIndex(n)
	}
	m := n.manifest
	docker := m.MediaType == images.MediaTypeDockerSchema2Manifest || n.desc.MediaType == images.MediaTypeDockerSchema2Manifest
	layers := make([]ocispec.Descriptor, len(m.Layers))
	changed := false
	for i, l := range m.Layers {
		job := n.layerJobs[i]
		if !job.convert {
			layers[i] = l
			continue
		}
		nl := l
		nl.Digest, nl.Size = job.out.Digest, job.out.Size
		nl.MediaType = ocispec.MediaTypeImageLayerGzip
		if docker {
			nl.MediaType = images.MediaTypeDockerSchema2LayerGzip
		}
		nl.Annotations = map[string]string{}
		for k, v := range l.Annotations {
			if !slices.ContainsFunc(droppedLayerAnnotationPrefixes, func(p string) bool { return strings.HasPrefix(k, p) }) {
				nl.Annotations[k] = v
			}
		}
		maps.Copy(nl.Annotations, wr.o.layerAnnotations)
		nl.Annotations[seekable.AnnotationTOCDigest] = job.tocDigest.String()
		nl.Annotations[seekable.AnnotationUncompressedSize] = strconv.FormatInt(job.uncompressedSize, 10)
		layers[i] = nl
		changed = true
		wr.plan(&wr.tocs, ocispec.Descriptor{MediaType: seekable.MediaTypeTOCGzip, Digest: job.tocDigest, Size: int64(len(job.toc))}, job.toc)
	}
	wr.plan(&wr.configs, m.Config, n.config)
	raw := n.raw
	if changed {
		var err error
		if raw, err = replaceField(n.raw, "layers", layers); err != nil {
			return ocispec.Descriptor{}, fmt.Errorf("rewriting manifest %s: %w", n.desc.Digest, err)
		}
	}
	desc := n.desc
	desc.Digest, desc.Size = digest.FromBytes(raw), int64(len(raw))
	wr.plan(&wr.manifests, desc, raw)
	n.rewritten = desc
	if n.rewritten.Platform == nil && n.platform != nil {
		p := *n.platform
		n.rewritten.Platform = &p
	}
	if n.isImage && !slices.ContainsFunc(wr.written, func(w *node) bool { return w.rewritten.Digest == desc.Digest }) {
		wr.written = append(wr.written, n)
	}
	return desc, nil
}

func (wr *writer) emitIndex(n *node) (ocispec.Descriptor, error) {
	var idx ocispec.Index
	if err := json.Unmarshal(n.raw, &idx); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("parsing index %s: %v: %w", n.desc.Digest, err, errdefs.ErrInvalidArgument)
	}
	byDigest := map[digest.Digest]*node{}
	for _, c := range n.children {
		byDigest[c.desc.Digest] = c
	}
	others := map[digest.Digest]bool{}
	for _, d := range n.others {
		others[d.Digest] = true
	}
	changed := n.skippedAny
	var out []ocispec.Descriptor
	for _, c := range idx.Manifests {
		if child, ok := byDigest[c.Digest]; ok {
			nd, err := wr.emit(child)
			if err != nil {
				return ocispec.Descriptor{}, err
			}
			if nd.Digest != c.Digest {
				changed = true
			}
			c.Digest, c.Size = nd.Digest, nd.Size
			out = append(out, c)
			continue
		}
		if others[c.Digest] {
			out = append(out, c)
			wr.planProvided(c)
		}
	}
	// Attestations name the manifest they are about by digest.
	renamed := map[string]string{}
	for i, c := range idx.Manifests {
		if child, ok := byDigest[c.Digest]; ok && child.manifest != nil && child.rewritten.Digest != c.Digest {
			renamed[idx.Manifests[i].Digest.String()] = child.rewritten.Digest.String()
		}
	}
	for i, c := range out {
		if newDigest, ok := renamed[c.Annotations[annotationReferenceDigest]]; ok {
			out[i].Annotations = maps.Clone(c.Annotations)
			out[i].Annotations[annotationReferenceDigest] = newDigest
			changed = true
		}
	}
	raw := n.raw
	if changed {
		var err error
		if raw, err = replaceField(n.raw, "manifests", out); err != nil {
			return ocispec.Descriptor{}, fmt.Errorf("rewriting index %s: %w", n.desc.Digest, err)
		}
	}
	desc := n.desc
	desc.Digest, desc.Size = digest.FromBytes(raw), int64(len(raw))
	// Parents come before children: emit runs children first.
	if !wr.planned[desc.Digest] {
		wr.planned[desc.Digest] = true
		wr.indexes = slices.Insert(wr.indexes, 0, plannedBlob{desc: desc, data: raw})
	}
	return desc, nil
}

// plan adds a metadata blob to list unless already planned.
func (wr *writer) plan(list *[]plannedBlob, desc ocispec.Descriptor, data []byte) {
	if wr.planned[desc.Digest] {
		return
	}
	wr.planned[desc.Digest] = true
	*list = append(*list, plannedBlob{desc: ocispec.Descriptor{MediaType: desc.MediaType, Digest: desc.Digest, Size: desc.Size}, data: data})
}

// planProvided adds a non-manifest blob an index references, copied from
// the provider with the metadata.
func (wr *writer) planProvided(desc ocispec.Descriptor) {
	if wr.planned[desc.Digest] {
		return
	}
	wr.planned[desc.Digest] = true
	wr.configs = append(wr.configs, plannedBlob{desc: desc, job: &layerJob{src: desc, present: true}})
}

// replaceField re-encodes a JSON object with one field replaced, keeping
// the other fields as they are.
func replaceField(raw []byte, field string, v any) ([]byte, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, err
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	obj[field] = b
	return json.Marshal(obj)
}
