package resolver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/singleflight"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/zenodo"
)

// catalog opens images through a Source and remembers them: which image a
// (host, record, tag) names, and which image of a repository holds a digest.
// Entries live for the TTL; concurrent look-ups of one key share one Open.
type catalog struct {
	src  Source
	opts *options

	sf singleflight.Group

	mu       sync.Mutex
	images   map[imageKey]*imageEntry
	versions map[repoKey]*versionsEntry
	missing  map[digestKey]time.Time // digests not found in a repository, until
}

// repoKey names a repository: a record (version or concept) on a host.
type repoKey struct {
	host  zenodo.Host
	recID string
}

func (k repoKey) String() string { return string(k.host) + "/" + k.recID }

// imageKey is what a tag (or no tag) of a repository was resolved with.
type imageKey struct {
	repo repoKey
	tag  string
}

type digestKey struct {
	repo repoKey
	dgst digest.Digest
}

type imageEntry struct {
	img     *image
	err     error
	added   time.Time
	expires time.Time
}

type versionsEntry struct {
	records []zenodo.Record
	expires time.Time
}

func newCatalog(src Source, opts *options) *catalog {
	return &catalog{
		src:      src,
		opts:     opts,
		images:   make(map[imageKey]*imageEntry),
		versions: make(map[repoKey]*versionsEntry),
		missing:  make(map[digestKey]time.Time),
	}
}

func keyOf(ref zenodo.Reference) imageKey {
	return imageKey{repo: repoKey{host: ref.Host, recID: ref.RecID}, tag: ref.Tag}
}

// image is an opened Image with the descriptors of its tree (root, index
// manifests, configs, layers) and its manifests' bytes.
type image struct {
	Image
	rec   *zenodo.Record
	root  ocispec.Descriptor
	descs map[digest.Digest]ocispec.Descriptor
	raw   map[digest.Digest][]byte // manifests and indexes, verified

	// repos are the repositories this image answers digests for; guarded
	// by catalog.mu.
	repos map[repoKey]struct{}

	small      singleflight.Group
	smallMu    sync.Mutex
	smallBlobs map[digest.Digest][]byte
	smallSize  int
}

// recordID is the record's id, or "" when the Source gave none.
func (im *image) recordID() string {
	if im.rec == nil {
		return ""
	}
	return im.rec.RecordID()
}

// describe names the image's record for messages.
func (im *image) describe() string {
	if im.rec == nil {
		return "the record"
	}
	s := "record " + im.rec.RecordID()
	if im.rec.DOI != "" {
		s = im.rec.DOI
	}
	if v := im.rec.Version(); v != "" {
		s += " (version " + v + ")"
	}
	return s
}

// open returns the image ref names (ref.Digest ignored), from the cache or
// by opening it once for all concurrent callers.
func (c *catalog) open(ctx context.Context, ref zenodo.Reference) (*image, error) {
	key := keyOf(ref)
	now := c.opts.now()
	c.mu.Lock()
	if e, ok := c.images[key]; ok && now.Before(e.expires) {
		if e.img != nil {
			e.img.repos[key.repo] = struct{}{}
		}
		c.mu.Unlock()
		log.G(ctx).WithField("ref", ref.String()).Trace("resolver: image from cache")
		return e.img, e.err
	}
	c.mu.Unlock()

	ch := c.sf.DoChan(fmt.Sprintf("%s\x00%s\x00%s", key.repo.host, key.repo.recID, key.tag), func() (any, error) {
		// The look-up outlives a caller that gives up: others may wait on it.
		img, err := c.load(context.WithoutCancel(ctx), ref)
		c.store(key, img, err)
		return img, err
	})
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case res := <-ch:
		if res.Err != nil {
			return nil, res.Err
		}
		return res.Val.(*image), nil
	}
}

// store caches the outcome of an Open: images for the TTL, "not found"
// for a few seconds, other errors not at all.
func (c *catalog) store(key imageKey, img *image, err error) {
	if c.opts.ttl <= 0 || (err != nil && !errdefs.IsNotFound(err)) {
		return
	}
	now := c.opts.now()
	ttl := c.opts.ttl
	if err != nil {
		ttl = min(ttl, negativeTTL)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if img != nil {
		img.repos[key.repo] = struct{}{}
	}
	c.images[key] = &imageEntry{img: img, err: err, added: now, expires: now.Add(ttl)}
	c.evictLocked(now)
}

// evictLocked drops expired entries and, past the size bound, the oldest.
func (c *catalog) evictLocked(now time.Time) {
	for k, e := range c.images {
		if !now.Before(e.expires) {
			delete(c.images, k)
		}
	}
	for k, e := range c.versions {
		if !now.Before(e.expires) {
			delete(c.versions, k)
		}
	}
	for k, until := range c.missing {
		if !now.Before(until) {
			delete(c.missing, k)
		}
	}
	for len(c.images) > c.opts.cacheSize {
		var oldest imageKey
		first := true
		for k, e := range c.images {
			if first || e.added.Before(c.images[oldest].added) {
				oldest, first = k, false
			}
		}
		delete(c.images, oldest)
	}
	for len(c.versions) > c.opts.cacheSize {
		for k := range c.versions {
			delete(c.versions, k)
			break
		}
	}
	for len(c.missing) > 16*c.opts.cacheSize {
		for k := range c.missing {
			delete(c.missing, k)
			break
		}
	}
}

// load opens ref's image through the Source and reads its manifests.
func (c *catalog) load(ctx context.Context, ref zenodo.Reference) (*image, error) {
	ref.Digest = ""
	start := time.Now()
	img, err := c.src.Open(ctx, ref)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", ref, err)
	}
	im, err := walk(ctx, img)
	if err != nil {
		return nil, fmt.Errorf("reading the image of %s: %w", ref, err)
	}
	log.G(ctx).WithFields(log.Fields{
		"ref":      ref.String(),
		"record":   im.recordID(),
		"root":     im.root.Digest,
		"blobs":    len(im.descs),
		"duration": time.Since(start),
	}).Debug("resolver: opened image")
	return im, nil
}

// walk reads the image's manifests from its root down (verified, as the
// Image's readers check digests) and lists every descriptor of the tree.
// Child manifests missing from the archive (platforms left out when it was
// made) are skipped.
func walk(ctx context.Context, img Image) (*image, error) {
	im := &image{
		Image:      img,
		rec:        img.Record(),
		root:       img.Root(),
		descs:      make(map[digest.Digest]ocispec.Descriptor),
		raw:        make(map[digest.Digest][]byte),
		repos:      make(map[repoKey]struct{}),
		smallBlobs: make(map[digest.Digest][]byte),
	}
	if err := im.root.Digest.Validate(); err != nil {
		return nil, fmt.Errorf("root descriptor: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	if !isManifestType(im.root.MediaType) {
		return nil, fmt.Errorf("root %s has media type %q, not an image index or manifest: %w",
			im.root.Digest, im.root.MediaType, errdefs.ErrInvalidArgument)
	}
	queue := []ocispec.Descriptor{im.root}
	const maxDescs = 100000
	for len(queue) > 0 {
		d := queue[0]
		queue = queue[1:]
		if _, seen := im.descs[d.Digest]; seen {
			continue
		}
		if len(im.descs) >= maxDescs {
			return nil, fmt.Errorf("image has more than %d blobs: %w", maxDescs, errdefs.ErrInvalidArgument)
		}
		if !isManifestType(d.MediaType) {
			im.descs[d.Digest] = d
			continue
		}
		b, err := readManifest(ctx, img, d)
		if err != nil {
			if d.Digest != im.root.Digest && errdefs.IsNotFound(err) {
				log.G(ctx).WithField("digest", d.Digest).Debug("resolver: manifest not in archive, skipped")
				continue
			}
			return nil, err
		}
		if d.MediaType == "" {
			d.MediaType = mediaTypeOf(b)
		}
		im.descs[d.Digest] = d
		im.raw[d.Digest] = b
		if d.Digest == im.root.Digest {
			im.root = d
		}
		children, err := childrenOf(d, b)
		if err != nil {
			return nil, err
		}
		queue = append(queue, children...)
	}
	return im, nil
}

// readManifest reads a manifest or index whole (verified by the Image).
func readManifest(ctx context.Context, p content.Provider, d ocispec.Descriptor) ([]byte, error) {
	if d.Size < 0 || d.Size > maxManifestSize {
		return nil, fmt.Errorf("manifest %s: size %d out of bounds (max %d): %w", d.Digest, d.Size, maxManifestSize, errdefs.ErrInvalidArgument)
	}
	b, err := content.ReadBlob(ctx, p, d)
	if err != nil {
		return nil, fmt.Errorf("reading manifest %s: %w", d.Digest, err)
	}
	if int64(len(b)) != d.Size {
		return nil, fmt.Errorf("manifest %s: read %d bytes, want %d: %w", d.Digest, len(b), d.Size, errdefs.ErrDataLoss)
	}
	if got := d.Digest.Algorithm().FromBytes(b); got != d.Digest {
		return nil, fmt.Errorf("manifest %s: content has digest %s: %w", d.Digest, got, errdefs.ErrDataLoss)
	}
	return b, nil
}

// manifestDoc holds the fields of an index or a manifest that lead to
// children.
type manifestDoc struct {
	MediaType string               `json:"mediaType"`
	Manifests []ocispec.Descriptor `json:"manifests"`
	Config    *ocispec.Descriptor  `json:"config"`
	Layers    []ocispec.Descriptor `json:"layers"`
}

func childrenOf(d ocispec.Descriptor, b []byte) ([]ocispec.Descriptor, error) {
	var doc manifestDoc
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("parsing manifest %s: %v: %w", d.Digest, err, errdefs.ErrInvalidArgument)
	}
	var out []ocispec.Descriptor
	if images.IsIndexType(d.MediaType) {
		out = append(out, doc.Manifests...)
	} else {
		if doc.Config != nil {
			out = append(out, *doc.Config)
		}
		out = append(out, doc.Layers...)
	}
	for _, c := range out {
		if err := c.Digest.Validate(); err != nil {
			return nil, fmt.Errorf("manifest %s names a bad digest %q: %w", d.Digest, c.Digest, errdefs.ErrInvalidArgument)
		}
		if c.Size < 0 {
			return nil, fmt.Errorf("manifest %s names blob %s with size %d: %w", d.Digest, c.Digest, c.Size, errdefs.ErrInvalidArgument)
		}
	}
	return out, nil
}

func isManifestType(mt string) bool {
	return images.IsIndexType(mt) || images.IsManifestType(mt)
}

// mediaTypeOf is the mediaType field of a manifest, or the OCI manifest
// type when it has none.
func mediaTypeOf(b []byte) string {
	var doc manifestDoc
	switch {
	case json.Unmarshal(b, &doc) != nil:
	case doc.MediaType != "":
		return doc.MediaType
	case len(doc.Manifests) > 0:
		return ocispec.MediaTypeImageIndex
	}
	return ocispec.MediaTypeImageManifest
}

// find returns the image of repository ref (host and record; ref.Digest
// ignored) that holds dgst: a cached image of that repository, else the
// image ref's tag names (if any), else the record's newest version, else (up
// to WithMaxVersionSearch) its older versions, newest first. A miss is
// remembered for a few seconds.
func (c *catalog) find(ctx context.Context, ref zenodo.Reference, dgst digest.Digest) (*image, ocispec.Descriptor, error) {
	repo := repoKey{host: ref.Host, recID: ref.RecID}
	if im, d, ok := c.cached(repo, dgst); ok {
		return im, d, nil
	}
	if ref.Tag != "" {
		// The tag says where to look first.
		im, err := c.open(ctx, ref)
		if err != nil && !errdefs.IsNotFound(err) {
			return nil, ocispec.Descriptor{}, err
		}
		if im != nil {
			if d, ok := im.descs[dgst]; ok {
				return im, d, nil
			}
		}
	}
	dk := digestKey{repo: repo, dgst: dgst}
	c.mu.Lock()
	until, missing := c.missing[dk]
	c.mu.Unlock()
	if missing && c.opts.now().Before(until) {
		return nil, ocispec.Descriptor{}, fmt.Errorf("%s: %s is not in this record or its versions: %w", ref.Name(), dgst, errdefs.ErrNotFound)
	}

	ch := c.sf.DoChan("find\x00"+repo.String()+"\x00"+string(dgst), func() (any, error) {
		return c.search(context.WithoutCancel(ctx), ref, dgst)
	})
	select {
	case <-ctx.Done():
		return nil, ocispec.Descriptor{}, ctx.Err()
	case res := <-ch:
		if res.Err != nil {
			return nil, ocispec.Descriptor{}, res.Err
		}
		im := res.Val.(*image)
		return im, im.descs[dgst], nil
	}
}

// cached looks for dgst in the cached images of repo.
func (c *catalog) cached(repo repoKey, dgst digest.Digest) (*image, ocispec.Descriptor, bool) {
	now := c.opts.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range c.images {
		if e.img == nil || !now.Before(e.expires) {
			continue
		}
		if _, ok := e.img.repos[repo]; !ok {
			continue
		}
		if d, ok := e.img.descs[dgst]; ok {
			return e.img, d, true
		}
	}
	return nil, ocispec.Descriptor{}, false
}

// search opens the repository's newest version, then older ones, until one
// holds dgst.
func (c *catalog) search(ctx context.Context, ref zenodo.Reference, dgst digest.Digest) (*image, error) {
	repo := repoKey{host: ref.Host, recID: ref.RecID}
	base := zenodo.Reference{Host: ref.Host, RecID: ref.RecID, DOI: ref.DOI}
	latest, err := c.open(ctx, base)
	if err != nil && !errors.Is(err, ErrNoImage) {
		return nil, err
	}
	tried := map[string]bool{}
	if latest != nil {
		if _, ok := latest.descs[dgst]; ok {
			return latest, nil
		}
		tried[latest.recordID()] = true
	}
	notFound := func() error {
		now := c.opts.now()
		c.mu.Lock()
		c.missing[digestKey{repo: repo, dgst: dgst}] = now.Add(min(c.opts.ttl, negativeTTL))
		c.evictLocked(now)
		c.mu.Unlock()
		return fmt.Errorf("%s: %s is not in this record or its versions: %w", ref.Name(), dgst, errdefs.ErrNotFound)
	}
	if c.opts.maxVersionSearch == 0 {
		return nil, notFound()
	}
	records, err := c.listVersions(ctx, base)
	if errdefs.IsNotImplemented(err) {
		return nil, notFound()
	}
	if err != nil {
		return nil, err
	}
	opened := 0
	for i := len(records) - 1; i >= 0 && opened < c.opts.maxVersionSearch; i-- {
		r := records[i]
		id := r.RecordID()
		if id == "" || tried[id] {
			continue
		}
		tried[id] = true
		opened++
		vref := zenodo.Reference{Host: ref.Host, RecID: id, DOI: r.DOI}
		if vref.DOI == "" {
			vref.DOI = doiPrefix(ref.Host) + "/zenodo." + id
		}
		im, err := c.open(ctx, vref)
		if err != nil {
			if errdefs.IsNotFound(err) {
				continue // a version without an image
			}
			return nil, err
		}
		if _, ok := im.descs[dgst]; ok {
			c.mu.Lock()
			im.repos[repo] = struct{}{}
			c.mu.Unlock()
			log.G(ctx).WithFields(log.Fields{"repository": ref.Name(), "digest": dgst, "record": id}).Debug("resolver: digest found in an older version")
			return im, nil
		}
	}
	return nil, notFound()
}

// listVersions lists the versions of ref's record (cached for the TTL).
// It fails with errdefs.ErrNotImplemented when the Source cannot list.
func (c *catalog) listVersions(ctx context.Context, ref zenodo.Reference) ([]zenodo.Record, error) {
	vl, ok := c.src.(VersionLister)
	if !ok {
		return nil, fmt.Errorf("listing versions of %s: %w", ref.Name(), errdefs.ErrNotImplemented)
	}
	repo := repoKey{host: ref.Host, recID: ref.RecID}
	now := c.opts.now()
	c.mu.Lock()
	if e, ok := c.versions[repo]; ok && now.Before(e.expires) {
		c.mu.Unlock()
		return e.records, nil
	}
	c.mu.Unlock()
	ch := c.sf.DoChan("versions\x00"+repo.String(), func() (any, error) {
		recs, err := vl.Versions(context.WithoutCancel(ctx), zenodo.Reference{Host: ref.Host, RecID: ref.RecID, DOI: ref.DOI})
		if err != nil {
			return nil, fmt.Errorf("listing versions of %s: %w", ref.Name(), err)
		}
		if c.opts.ttl > 0 {
			now := c.opts.now()
			c.mu.Lock()
			c.versions[repo] = &versionsEntry{records: recs, expires: now.Add(c.opts.ttl)}
			c.evictLocked(now)
			c.mu.Unlock()
		}
		return recs, nil
	})
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case res := <-ch:
		if res.Err != nil {
			return nil, res.Err
		}
		return res.Val.([]zenodo.Record), nil
	}
}

// tags lists the tags of ref's record: the metadata.version of each of its
// versions, and "latest", in lexical order.
func (c *catalog) tags(ctx context.Context, ref zenodo.Reference) ([]string, error) {
	records, err := c.listVersions(ctx, ref)
	if errdefs.IsNotImplemented(err) {
		// Without a lister: check that the record exists.
		if _, err := c.open(ctx, zenodo.Reference{Host: ref.Host, RecID: ref.RecID, DOI: ref.DOI}); err != nil && !errors.Is(err, ErrNoImage) {
			return nil, err
		}
		return []string{"latest"}, nil
	}
	if err != nil {
		return nil, err
	}
	set := map[string]bool{"latest": true}
	for _, r := range records {
		if v := r.Version(); v != "" && validTag(v) {
			set[v] = true
		}
	}
	tags := make([]string, 0, len(set))
	for t := range set {
		tags = append(tags, t)
	}
	sort.Strings(tags)
	return slices.Compact(tags), nil
}

// smallBlob returns a small blob's bytes, read once for concurrent callers
// and kept with the image (bounded).
func (im *image) smallBlob(ctx context.Context, d ocispec.Descriptor) ([]byte, error) {
	if b, ok := im.raw[d.Digest]; ok {
		return b, nil
	}
	im.smallMu.Lock()
	b, ok := im.smallBlobs[d.Digest]
	im.smallMu.Unlock()
	if ok {
		return b, nil
	}
	ch := im.small.DoChan(string(d.Digest), func() (any, error) {
		b, err := im.readWhole(context.WithoutCancel(ctx), d)
		if err != nil {
			return nil, fmt.Errorf("reading blob %s: %w", d.Digest, err)
		}
		if got := d.Digest.Algorithm().FromBytes(b); int64(len(b)) != d.Size || got != d.Digest {
			return nil, fmt.Errorf("blob %s: content has digest %s and %d bytes, want %d: %w", d.Digest, got, len(b), d.Size, errdefs.ErrDataLoss)
		}
		im.smallMu.Lock()
		if im.smallSize+len(b) <= maxSmallBlobsPerImage {
			im.smallBlobs[d.Digest] = b
			im.smallSize += len(b)
		}
		im.smallMu.Unlock()
		return b, nil
	})
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case res := <-ch:
		if res.Err != nil {
			return nil, res.Err
		}
		return res.Val.([]byte), nil
	}
}

// readWhole reads a small blob with one request when the Image can stream
// it, else through its ReaderAt. The caller checks the digest.
func (im *image) readWhole(ctx context.Context, d ocispec.Descriptor) ([]byte, error) {
	rc, err := streamBlob(ctx, im, d, 0, d.Size)
	if err != nil {
		return nil, err
	}
	if rc == nil {
		return content.ReadBlob(ctx, im.Image, d)
	}
	defer rc.Close()
	return io.ReadAll(io.LimitReader(rc, d.Size+1))
}

// doiPrefix is the DOI prefix of records on host.
func doiPrefix(h zenodo.Host) string {
	if h == zenodo.HostSandbox {
		return zenodo.DOIPrefixSandbox
	}
	return zenodo.DOIPrefixProduction
}
