package donodo

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/containerd/platforms"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/archive"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/zenodo"
)

// AnnotationDOI is the layer annotation holding the record's version DOI.
// containerd passes annotations under containerd.io/snapshot/ to the
// snapshotter's Prepare as labels, so zenodo-snapshotter finds a layer's
// record from them (it is store/snapshot's LabelDOI).
const AnnotationDOI = "containerd.io/snapshot/zenodo/doi"

// PushOption configures Push.
type PushOption func(*pushOptions) error

type pushOptions struct {
	templates      Templates
	autoPublish    bool
	confirm        func(ctx context.Context, draft *PushResult) (bool, error)
	progress       Progress
	status         io.Writer
	tempDir        string
	preserveLayers bool
	platform       platforms.MatchComparer
	memo           *memo
}

// WithTemplates sets metadata templates (see Templates and BuildMetadata).
// The default is none: DefaultTemplates only.
func WithTemplates(t Templates) PushOption {
	return func(o *pushOptions) error {
		o.templates = t
		return nil
	}
}

// WithAutoPublish publishes the draft as soon as its files are uploaded
// and checked. By default Push asks WithConfirm, and without it leaves the
// draft unpublished.
func WithAutoPublish() PushOption {
	return func(o *pushOptions) error {
		o.autoPublish = true
		return nil
	}
}

// WithConfirm sets the question asked before publishing, with the draft
// ready (its DraftURL set): publish when it returns true. The default is
// no question: without WithAutoPublish the draft stays unpublished.
func WithConfirm(fn func(ctx context.Context, draft *PushResult) (bool, error)) PushOption {
	return func(o *pushOptions) error {
		o.confirm = fn
		return nil
	}
}

// WithPushProgress reports layer conversion and uploads. The default is
// NoProgress.
func WithPushProgress(p Progress) PushOption {
	return func(o *pushOptions) error {
		if p == nil {
			p = NoProgress
		}
		o.progress = p
		return nil
	}
}

// WithStatus writes one line per step (draft found or made, platforms
// pushed, files uploaded or kept) to w. The default is io.Discard.
func WithStatus(w io.Writer) PushOption {
	return func(o *pushOptions) error {
		if w == nil {
			w = io.Discard
		}
		o.status = w
		return nil
	}
}

// WithPushTempDir sets the directory for the archive, which is written
// whole before it is uploaded (about the size of the image's layers, twice
// while they are converted). The default is os.TempDir().
func WithPushTempDir(dir string) PushOption {
	return func(o *pushOptions) error {
		o.tempDir = dir
		return nil
	}
}

// WithPreserveLayers stores layers byte for byte (manifest digests do not
// change) instead of as seekable gzip; such layers cannot be read lazily.
// By default layers are converted.
func WithPreserveLayers() PushOption {
	return func(o *pushOptions) error {
		o.preserveLayers = true
		return nil
	}
}

// WithPushPlatform chooses the platform described in the record and put in
// the archive's docker-save manifest.json. The default is the host's
// (platforms.Default()), else the first present.
func WithPushPlatform(m platforms.MatchComparer) PushOption {
	return func(o *pushOptions) error {
		if m == nil {
			return fmt.Errorf("nil platform matcher: %w", errdefs.ErrInvalidArgument)
		}
		o.platform = m
		return nil
	}
}

// WithDepositionMemo remembers in dir (a small JSON file) the deposition
// each push used, per Zenodo instance and title. Zenodo's search lists a new
// draft or version only after a delay; with the memo, a push re-run right
// after an interruption still resumes its draft, and the next tag pushed
// right after a publish still becomes a new version, instead of making a
// second record. The default is no memo: the search alone decides.
func WithDepositionMemo(dir string) PushOption {
	return func(o *pushOptions) error {
		if dir == "" {
			return fmt.Errorf("empty deposition memo directory: %w", errdefs.ErrInvalidArgument)
		}
		o.memo = &memo{path: filepath.Join(dir, memoFile)}
		return nil
	}
}

// Push actions: how the deposition was found.
const (
	ActionNewRecord  = "new record"
	ActionNewVersion = "new version"
	ActionResumed    = "resumed draft"
)

// PushResult says what Push did.
type PushResult struct {
	// Image is the image name as given; Name and Tag its short name and
	// tag; Title the record's title.
	Image string `json:"image"`
	Name  string `json:"name"`
	Tag   string `json:"tag"`
	Title string `json:"title"`
	// Action is ActionNewRecord, ActionNewVersion or ActionResumed.
	Action string `json:"action"`
	// DepositionID and DraftURL name the deposition (draft until
	// published).
	DepositionID string `json:"deposition_id"`
	DraftURL     string `json:"draft_url"`
	// Published tells whether the version was published.
	Published bool `json:"published"`
	// DOI is the version DOI (reserved while a draft), ConceptDOI the
	// record's (all versions), RecordURL its page once published.
	DOI        string `json:"doi"`
	ConceptDOI string `json:"concept_doi,omitempty"`
	RecordURL  string `json:"record_url,omitempty"`
	// Reference pulls this version: zenodo.org/<doi>:<tag>.
	Reference string `json:"reference"`
	// ConfigDigest (image ID) and ManifestDigest are those of the platform
	// described; RootDigest is the archive's root (index or manifest).
	ConfigDigest   digest.Digest `json:"config_digest"`
	ManifestDigest digest.Digest `json:"manifest_digest"`
	RootDigest     digest.Digest `json:"root_digest"`
	// Platforms were pushed; SkippedPlatforms were left out because their
	// content is not present.
	Platforms        []string `json:"platforms"`
	SkippedPlatforms []string `json:"skipped_platforms,omitempty"`
	// Uploaded files were sent; Kept files were already in the draft with
	// the same size and md5.
	Uploaded []string `json:"uploaded,omitempty"`
	Kept     []string `json:"kept,omitempty"`
	// ArchiveSize is the size of image.tar.
	ArchiveSize int64 `json:"archive_size"`
	// Packages is how many packages the build manifest lists.
	Packages int `json:"packages"`
}

// Push archives the image named image (NAME:TAG, found in src by that name
// or its normalized form) into a Zenodo deposition and, with
// WithAutoPublish or WithConfirm, publishes it:
//
//   - the tag is required, not "latest", and becomes metadata.version;
//   - the title is "Docker image <name>" unless the templates say
//     otherwise; an unpublished draft of the token's user with that title
//     is resumed; else a published record with that title gets a new
//     version; else a new deposition is made. A tag already published in
//     that record is ErrTagExists;
//   - every platform whose content is present is archived (image.tar,
//     format v1, with the reserved DOI in each seekable layer's annotations
//     under AnnotationDOI) into a temp file, then image.tar and
//     image.tar.index.json are uploaded; files already in the draft with
//     the same size and md5 are kept, every other file is removed;
//   - nothing is published before the draft's files are checked.
//
// zc needs a token. On failure the draft is left for a later Push to
// resume; the result (possibly partial) is returned with the error.
func Push(ctx context.Context, zc *zenodo.Client, src Source, image string, opts ...PushOption) (*PushResult, error) {
	o := &pushOptions{progress: NoProgress, status: io.Discard, tempDir: os.TempDir(), platform: platforms.Default()}
	for _, opt := range opts {
		if err := opt(o); err != nil {
			return nil, err
		}
	}
	name, err := ParseImageName(image)
	if err != nil {
		return nil, err
	}
	if !zc.Authenticated() {
		return nil, fmt.Errorf("pushing %s: %w", image, ErrNoToken)
	}
	p := &pusher{zc: zc, src: src, o: o, name: name, res: &PushResult{Image: image, Name: name.Familiar(), Tag: name.Tag()}}
	err = p.push(ctx)
	return p.res, err
}

type pusher struct {
	zc   *zenodo.Client
	src  Source
	o    *pushOptions
	name ImageName
	res  *PushResult

	root    ocispec.Descriptor
	present []Platform
	main    Platform
}

func (p *pusher) statusf(format string, args ...any) {
	fmt.Fprintf(p.o.status, format+"\n", args...)
}

func (p *pusher) push(ctx context.Context) error {
	img, err := lookupImage(ctx, p.src, p.name)
	if err != nil {
		return err
	}
	p.root = img.Target
	present, skipped, err := presentPlatforms(ctx, p.src, p.root)
	if err != nil {
		return fmt.Errorf("image %s: %w", img.Name, err)
	}
	if len(present) == 0 {
		return fmt.Errorf("image %s: the content of none of its platforms (%s) is in the namespace; pull it again: %w",
			img.Name, strings.Join(skipped, ", "), errdefs.ErrNotFound)
	}
	p.present = present
	p.main = ChoosePlatform(present, p.o.platform)
	p.res.Platforms = platformNames(present)
	p.res.SkippedPlatforms = skipped

	data := TemplateData{
		Name: p.name.Familiar(), Tag: p.name.Tag(), FullName: p.name.Full(),
		Labels: p.main.Config.Config.Labels, Config: p.main.Config, Platforms: p.res.Platforms,
	}
	// Check the metadata (templates, creators) before touching Zenodo.
	md0, err := BuildMetadata(zenodo.Metadata{}, p.o.templates, data)
	if err != nil {
		return fmt.Errorf("pushing %s: %w", p.name.Given, err)
	}
	p.res.Title = md0.Title

	dep, err := p.deposition(ctx, md0)
	if err != nil {
		return err
	}
	p.res.DepositionID = dep.ID.String()
	p.res.DraftURL = draftURL(dep)
	p.remember(ctx, md0.Title, p.res.DepositionID)
	doi := sandboxDOI(p.zc.BaseURL(), dep.ReservedDOI())
	if doi == "" {
		return fmt.Errorf("deposition %s: Zenodo reserved no DOI for it: %w", dep.ID, errdefs.ErrUnknown)
	}
	zref, err := zenodo.ParseReference(doi)
	if err != nil {
		return fmt.Errorf("deposition %s: reserved DOI %q: %w", dep.ID, doi, err)
	}
	zref.Tag = p.name.Tag()
	p.res.DOI, p.res.Reference = doi, zref.String()
	p.statusf("%s %s: %s", p.res.Action, p.res.DepositionID, p.res.DraftURL)
	if len(skipped) > 0 {
		p.statusf("platforms: %s (skipped, content not present: %s)", strings.Join(p.res.Platforms, ", "), strings.Join(skipped, ", "))
	} else {
		p.statusf("platforms: %s", strings.Join(p.res.Platforms, ", "))
	}

	files, err := p.writeArchive(ctx, doi)
	if err != nil {
		return err
	}
	defer files.cleanup(ctx)

	data.DOI, data.Reference = doi, p.res.Reference
	data.BuildManifest = files.description
	md, err := BuildMetadata(dep.Metadata, p.o.templates, data)
	if err != nil {
		return fmt.Errorf("pushing %s: %w", p.name.Given, err)
	}
	// The DOI is reserved already; the update leaves it as it is.
	md.PrereserveDOI = nil
	delete(md.Extra, "prereserve_doi")
	if dep, err = p.zc.UpdateMetadata(ctx, dep.ID.String(), md); err != nil {
		return err
	}
	if err := p.upload(ctx, dep, files); err != nil {
		return err
	}
	return p.publish(ctx, dep)
}

// sandboxDOI corrects a DOI reserved by the Zenodo sandbox, which writes
// production's prefix in prereserve_doi (recorded in the fixtures) although
// it mints 10.5072 DOIs: the layers must carry the DOI the record gets.
func sandboxDOI(baseURL, doi string) string {
	u, err := url.Parse(baseURL)
	if err != nil || !strings.EqualFold(u.Hostname(), string(zenodo.HostSandbox)) {
		return doi
	}
	if rest, ok := strings.CutPrefix(doi, zenodo.DOIPrefixProduction+"/"); ok {
		return zenodo.DOIPrefixSandbox + "/" + rest
	}
	return doi
}

// draftURL is the web page of a deposition.
func draftURL(dep *zenodo.Deposition) string {
	for _, k := range []string{"html", "latest_draft_html"} {
		if u := dep.Links[k]; u != "" {
			return u
		}
	}
	return ""
}

// deposition finds the draft to push into: a draft with the title to
// resume, a new version of the published record with that title, or a new
// deposition.
func (p *pusher) deposition(ctx context.Context, md0 zenodo.Metadata) (*zenodo.Deposition, error) {
	title := md0.Title
	deps, err := p.zc.SearchDepositions(ctx, title)
	if err != nil {
		return nil, fmt.Errorf("looking for a record titled %q: %w", title, err)
	}
	deps = p.withRemembered(ctx, title, deps)
	var drafts, published []zenodo.Deposition
	for _, d := range deps {
		if d.Submitted {
			published = append(published, d)
		} else {
			drafts = append(drafts, d)
		}
	}
	newest := func(ds []zenodo.Deposition) zenodo.Deposition {
		return slices.MaxFunc(ds, func(a, b zenodo.Deposition) int { return compareIDs(a.ID.String(), b.ID.String()) })
	}
	for _, d := range published {
		if d.Metadata.Version == p.name.Tag() {
			doi := d.DOI
			if doi == "" {
				doi = d.ReservedDOI()
			}
			ref := p.name.Tag()
			if r, err := zenodo.ParseReference(doi); err == nil {
				r.Tag = p.name.Tag()
				ref = r.String()
			}
			return nil, fmt.Errorf("%q already has a published version %s (DOI %s, %s); published files cannot change, so push the image with a new tag: %w",
				title, p.name.Tag(), doi, ref, ErrTagExists)
		}
	}
	if len(drafts) > 0 {
		d := newest(drafts)
		if len(drafts) > 1 {
			log.G(ctx).WithField("title", title).Warnf("donodo: %d unpublished drafts have this title; resuming the newest, %s", len(drafts), d.ID)
		}
		p.res.Action = ActionResumed
		return p.zc.GetDeposition(ctx, d.ID.String())
	}
	if len(published) > 0 {
		last := newest(published)
		p.res.ConceptDOI = last.ConceptDOI
		draft, err := p.zc.NewVersion(ctx, last.ID.String())
		if err != nil {
			// Zenodo refuses a new version when the record has an open
			// draft with files, which its search may not list yet.
			var ze *zenodo.Error
			if errors.As(err, &ze) && ze.StatusCode == http.StatusBadRequest {
				if open, oerr := p.openDraftOf(ctx, last.ID.String()); oerr == nil {
					p.res.Action = ActionResumed
					return open, nil
				}
			}
			return nil, fmt.Errorf("making a new version of %q (%s): %w", title, last.ConceptDOI, err)
		}
		p.res.Action = ActionNewVersion
		if draft.ReservedDOI() == "" {
			// Ask Zenodo to reserve the new version's DOI.
			md := draft.Metadata
			md.Extra = withRaw(md.Extra, "prereserve_doi", json.RawMessage("true"))
			if draft, err = p.zc.UpdateMetadata(ctx, draft.ID.String(), md); err != nil {
				return nil, fmt.Errorf("reserving the DOI of deposition %s: %w", draft.ID, err)
			}
		}
		return draft, nil
	}
	p.res.Action = ActionNewRecord
	dep, err := p.zc.CreateDeposition(ctx, md0)
	if err != nil {
		return nil, fmt.Errorf("creating a deposition titled %q: %w", title, err)
	}
	return dep, nil
}

// remember notes the deposition a push of title used.
func (p *pusher) remember(ctx context.Context, title, id string) {
	if err := p.o.memo.put(memoKey(p.zc.BaseURL(), title), id); err != nil {
		log.G(ctx).WithError(err).Warn("donodo: cannot remember the deposition")
	}
}

// withRemembered adds the deposition the last push of title used to what
// the search found, when the search does not list it (yet).
func (p *pusher) withRemembered(ctx context.Context, title string, deps []zenodo.Deposition) []zenodo.Deposition {
	id := p.o.memo.get(memoKey(p.zc.BaseURL(), title))
	if id == "" {
		return deps
	}
	for _, d := range deps {
		if d.ID.String() == id {
			return deps
		}
	}
	d, err := p.zc.GetDeposition(ctx, id)
	if err != nil {
		log.G(ctx).WithError(err).WithField("deposition", id).Debug("donodo: the remembered deposition is gone")
		return deps
	}
	if d.Title != title && d.Metadata.Title != title {
		return deps
	}
	log.G(ctx).WithField("deposition", id).Info("donodo: Zenodo's search does not list the deposition of the last push yet; using it")
	return append(deps, *d)
}

// openDraftOf returns the open draft of the record whose published version
// is id (links.latest_draft of that version).
func (p *pusher) openDraftOf(ctx context.Context, id string) (*zenodo.Deposition, error) {
	pub, err := p.zc.GetDeposition(ctx, id)
	if err != nil {
		return nil, err
	}
	link := pub.Links["latest_draft"]
	i := strings.LastIndex(link, "/")
	if i < 0 || link[i+1:] == id {
		return nil, fmt.Errorf("deposition %s has no open draft: %w", id, errdefs.ErrNotFound)
	}
	d, err := p.zc.GetDeposition(ctx, link[i+1:])
	if err != nil {
		return nil, err
	}
	if d.Submitted {
		return nil, fmt.Errorf("deposition %s has no open draft: %w", id, errdefs.ErrNotFound)
	}
	return d, nil
}

// withRaw returns a copy of m with k set to v.
func withRaw(m map[string]json.RawMessage, k string, v json.RawMessage) map[string]json.RawMessage {
	out := make(map[string]json.RawMessage, len(m)+1)
	for key, val := range m {
		out[key] = val
	}
	out[k] = v
	return out
}

// compareIDs orders numeric ids.
func compareIDs(a, b string) int {
	if len(a) != len(b) {
		return len(a) - len(b)
	}
	return strings.Compare(a, b)
}

// archiveFiles are the files to upload.
type archiveFiles struct {
	tarPath     string
	tarSize     int64
	tarMD5      string
	index       []byte
	indexMD5    string
	description string
	packages    int
}

func (f *archiveFiles) cleanup(ctx context.Context) {
	if err := os.Remove(f.tarPath); err != nil && !errors.Is(err, os.ErrNotExist) {
		log.G(ctx).WithError(err).Warn("donodo: removing the temporary archive")
	}
}

// writeArchive writes image.tar into a temp file, and its index, and
// builds the description.
func (p *pusher) writeArchive(ctx context.Context, doi string) (_ *archiveFiles, retErr error) {
	f, err := os.CreateTemp(p.o.tempDir, "donodo-image-*.tar")
	if err != nil {
		return nil, fmt.Errorf("creating the archive file: %w", err)
	}
	files := &archiveFiles{tarPath: f.Name()}
	defer func() {
		f.Close()
		if retErr != nil {
			files.cleanup(ctx)
		}
	}()
	h := md5.New()
	tr := &convertTrackers{p: p.o.progress, bars: map[digest.Digest]Tracker{}}
	wopts := []archive.WriteOption{
		archive.WithSkipMissing(),
		archive.WithImageName(p.name.Full()),
		archive.WithTempDir(p.o.tempDir),
		archive.WithDockerPlatform(p.o.platform),
		archive.WithProgress(tr.report),
	}
	if p.o.preserveLayers {
		wopts = append(wopts, archive.WithPreserveLayers())
	} else {
		wopts = append(wopts, archive.WithLayerAnnotations(map[string]string{AnnotationDOI: doi}))
	}
	idx, err := archive.Write(ctx, io.MultiWriter(f, h), p.src, p.root, wopts...)
	tr.done(err)
	if err != nil {
		if errdefs.IsNotFound(err) {
			return nil, fmt.Errorf("archiving %s: content missing in the namespace: %w", p.name.Given, err)
		}
		return nil, fmt.Errorf("archiving %s: %w", p.name.Given, err)
	}
	files.tarSize = idx.ArchiveSize
	files.tarMD5 = hex.EncodeToString(h.Sum(nil))
	if files.index, err = archive.MarshalIndex(idx); err != nil {
		return nil, err
	}
	sum := md5.Sum(files.index)
	files.indexMD5 = hex.EncodeToString(sum[:])
	p.res.ArchiveSize = idx.ArchiveSize
	p.res.RootDigest = idx.Root.Digest

	// Describe the archived image from the archive itself.
	a, err := archive.Open(ctx, f, idx.ArchiveSize, archive.WithIndex(idx))
	if err != nil {
		return nil, fmt.Errorf("reading back the archive: %w", err)
	}
	defer a.Close()
	var plats []Platform
	descs := []ocispec.Descriptor{idx.Root}
	if images.IsIndexType(idx.Root.MediaType) {
		if descs, err = a.Manifests(ctx); err != nil {
			return nil, fmt.Errorf("reading back the archive: %w", err)
		}
	}
	for _, d := range descs {
		pl, err := readPlatform(ctx, a, d)
		if err != nil {
			return nil, fmt.Errorf("reading back the archive: %w", err)
		}
		plats = append(plats, pl)
	}
	if len(plats) == 0 {
		return nil, fmt.Errorf("archiving %s: no manifest written: %w", p.name.Given, errdefs.ErrUnknown)
	}
	main := ChoosePlatform(plats, p.o.platform)
	p.res.ConfigDigest = main.ManifestData.Config.Digest
	p.res.ManifestDigest = main.Manifest.Digest
	m := describe(ctx, a, main, p.name, p.res.Reference, p.res.Platforms)
	files.description = m.HTML()
	files.packages = len(m.Packages)
	p.res.Packages = len(m.Packages)
	return files, nil
}

// convertTrackers shows layer conversion.
type convertTrackers struct {
	p    Progress
	mu   sync.Mutex
	bars map[digest.Digest]Tracker
}

func (c *convertTrackers) report(pr archive.Progress) {
	if pr.Stage != "convert" {
		return
	}
	c.mu.Lock()
	t, ok := c.bars[pr.Desc.Digest]
	if !ok {
		t = c.p.Track("convert "+clip(pr.Desc.Digest.Encoded(), 12), pr.Desc.Size)
		c.bars[pr.Desc.Digest] = t
	}
	c.mu.Unlock()
	t.SetCurrent(pr.Done)
	if pr.Done >= pr.Desc.Size {
		t.Done(nil)
	}
}

func (c *convertTrackers) done(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, t := range c.bars {
		t.Done(err)
	}
}

// upload makes the draft's files exactly image.tar and its index: files
// with the same name, size and md5 are kept, every other file is deleted,
// missing ones are uploaded; then the list is checked.
func (p *pusher) upload(ctx context.Context, dep *zenodo.Deposition, files *archiveFiles) error {
	id := dep.ID.String()
	want := map[string]zenodo.File{
		archive.ArchiveFileName: {Key: archive.ArchiveFileName, Size: files.tarSize, Checksum: "md5:" + files.tarMD5},
		archive.IndexFileName:   {Key: archive.IndexFileName, Size: int64(len(files.index)), Checksum: "md5:" + files.indexMD5},
	}
	have, err := p.zc.DepositionFiles(ctx, id)
	if err != nil {
		return err
	}
	kept := map[string]bool{}
	for _, f := range have {
		w, ok := want[f.Key]
		if ok && !kept[f.Key] && f.Size == w.Size && f.MD5() == w.MD5() {
			kept[f.Key] = true
			continue
		}
		if err := p.zc.DeleteFile(ctx, id, f.ID); err != nil {
			return err
		}
		log.G(ctx).WithField("file", f.Key).Debug("donodo: removed a stale file from the draft")
	}
	for _, key := range []string{archive.ArchiveFileName, archive.IndexFileName} {
		if kept[key] {
			p.res.Kept = append(p.res.Kept, key)
			p.statusf("%s: already uploaded", key)
			continue
		}
		if err := p.uploadFile(ctx, dep, key, files); err != nil {
			return err
		}
		p.res.Uploaded = append(p.res.Uploaded, key)
	}
	// Check the draft holds exactly what was meant.
	have, err = p.zc.DepositionFiles(ctx, id)
	if err != nil {
		return err
	}
	got := map[string]zenodo.File{}
	for _, f := range have {
		got[f.Key] = f
	}
	for key, w := range want {
		g, ok := got[key]
		if !ok || g.Size != w.Size || g.MD5() != w.MD5() {
			return fmt.Errorf("deposition %s: %s is not as uploaded (Zenodo lists %d bytes, md5 %q; sent %d bytes, md5 %s): %w",
				id, key, g.Size, g.MD5(), w.Size, w.MD5(), zenodo.ErrChecksumMismatch)
		}
	}
	if len(got) != len(want) {
		return fmt.Errorf("deposition %s holds %d files, want %d: %w", id, len(got), len(want), errdefs.ErrFailedPrecondition)
	}
	return nil
}

func (p *pusher) uploadFile(ctx context.Context, dep *zenodo.Deposition, key string, files *archiveFiles) error {
	var (
		r    io.Reader
		size int64
	)
	if key == archive.IndexFileName {
		r, size = bytes.NewReader(files.index), int64(len(files.index))
	} else {
		f, err := os.Open(files.tarPath)
		if err != nil {
			return fmt.Errorf("opening the archive: %w", err)
		}
		defer f.Close()
		r, size = f, files.tarSize
	}
	start, err := r.(io.Seeker).Seek(0, io.SeekCurrent)
	if err != nil {
		return fmt.Errorf("uploading %s: %w", key, err)
	}
	t := p.o.progress.Track("upload "+key, size)
	for attempt := 1; ; attempt++ {
		_, err = p.zc.Upload(ctx, dep, key, r, size, t.SetCurrent)
		if err == nil || attempt == 2 || !errors.Is(err, zenodo.ErrChecksumMismatch) {
			break
		}
		// Zenodo stored something else than what was sent (and the
		// client removed it): send it once more.
		log.G(ctx).WithError(err).Warn("donodo: upload damaged on the way; sending it again")
		if _, err = r.(io.Seeker).Seek(start, io.SeekStart); err != nil {
			break
		}
	}
	t.Done(err)
	if err != nil {
		return err
	}
	p.statusf("%s: uploaded (%d bytes)", key, size)
	return nil
}

// publish publishes the draft if asked to.
func (p *pusher) publish(ctx context.Context, dep *zenodo.Deposition) error {
	id := dep.ID.String()
	ok := p.o.autoPublish
	if !ok && p.o.confirm != nil {
		var err error
		if ok, err = p.o.confirm(ctx, p.res); err != nil {
			return fmt.Errorf("asking whether to publish: %w", err)
		}
	}
	if !ok {
		p.statusf("draft left unpublished: %s", p.res.DraftURL)
		return nil
	}
	pub, err := p.zc.Publish(ctx, id)
	if err != nil {
		return err
	}
	p.res.Published = true
	p.remember(ctx, p.res.Title, id)
	if pub.DOI != "" {
		p.res.DOI = pub.DOI
		if r, err := zenodo.ParseReference(pub.DOI); err == nil {
			r.Tag = p.name.Tag()
			p.res.Reference = r.String()
		}
	}
	if pub.ConceptDOI != "" {
		p.res.ConceptDOI = pub.ConceptDOI
	}
	p.res.RecordURL = pub.Links["record_html"]
	if p.res.RecordURL == "" {
		rid := pub.RecordID.String()
		if rid == "" {
			rid = id
		}
		p.res.RecordURL = p.zc.BaseURL() + "/records/" + rid
	}
	return nil
}

// presentPlatforms lists the image manifests under root whose manifest,
// config and layers are all in provider, and the platforms left out.
func presentPlatforms(ctx context.Context, provider content.Provider, root ocispec.Descriptor) ([]Platform, []string, error) {
	var (
		present []Platform
		skipped []string
	)
	var visit func(desc ocispec.Descriptor, depth int) error
	visit = func(desc ocispec.Descriptor, depth int) error {
		switch {
		case depth > 4:
			return fmt.Errorf("indexes nested too deep: %w", errdefs.ErrInvalidArgument)
		case images.IsIndexType(desc.MediaType):
			var idx ocispec.Index
			if err := readJSONBlob(ctx, provider, desc, &idx); err != nil {
				if errdefs.IsNotFound(err) {
					return fmt.Errorf("index %s: content missing in the namespace: %w", desc.Digest, err)
				}
				return fmt.Errorf("reading index %s: %w", desc.Digest, err)
			}
			for _, m := range idx.Manifests {
				if m.Annotations["vnd.docker.reference.type"] == "attestation-manifest" {
					continue
				}
				if err := visit(m, depth+1); err != nil {
					return err
				}
			}
		case images.IsManifestType(desc.MediaType):
			pl, err := readPlatform(ctx, provider, desc)
			if err == nil {
				err = checkLayers(ctx, provider, pl.ManifestData.Layers)
			}
			if errdefs.IsNotFound(err) {
				name := desc.Digest.String()
				if desc.Platform != nil {
					name = platforms.FormatAll(*desc.Platform)
				}
				log.G(ctx).WithError(err).WithField("platform", name).Debug("donodo: platform content missing")
				skipped = append(skipped, name)
				return nil
			}
			if err != nil {
				return fmt.Errorf("reading manifest %s: %w", desc.Digest, err)
			}
			present = append(present, pl)
		}
		return nil
	}
	if err := visit(root, 0); err != nil {
		return nil, nil, err
	}
	return present, skipped, nil
}

// checkLayers checks that every distributable layer is in provider.
func checkLayers(ctx context.Context, provider content.Provider, layers []ocispec.Descriptor) error {
	for _, l := range layers {
		if images.IsNonDistributable(l.MediaType) {
			continue
		}
		ra, err := provider.ReaderAt(ctx, l)
		if err != nil {
			return fmt.Errorf("layer %s: %w", l.Digest, err)
		}
		ra.Close()
	}
	return nil
}
