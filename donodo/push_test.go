package donodo

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/integration/testimage"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/archive"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/zenodo"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/zenodo/zenodotest"
)

// depositions returns the token owner's depositions titled title.
func depositions(t testing.TB, f *fake, title string) (drafts, published []zenodo.Deposition) {
	t.Helper()
	deps, err := f.zc.SearchDepositions(ctx(t), title)
	require.NoError(t, err)
	for _, d := range deps {
		if d.Submitted {
			published = append(published, d)
		} else {
			drafts = append(drafts, d)
		}
	}
	return drafts, published
}

// versionTags lists the tags of the published versions of the record doi.
func versionTags(t testing.TB, f *fake, doi string) []string {
	t.Helper()
	vs, err := ListVersions(ctx(t), f.zc, mustRef(t, doi))
	require.NoError(t, err)
	var tags []string
	for _, v := range vs {
		tags = append(tags, v.Tag)
	}
	return tags
}

func TestPushNewRecordThenNewVersion(t *testing.T) {
	f := newFake(t)
	first := pushed(t, f, layout(t, "example.org/tool:1.0", authors), "example.org/tool:1.0")
	assert.Equal(t, ActionNewRecord, first.Action)
	assert.Equal(t, "Docker image example.org/tool", first.Title)
	assert.Equal(t, "zenodo.org/"+first.DOI+":1.0", first.Reference)
	assert.Equal(t, []string{"linux/amd64"}, first.Platforms)
	assert.Equal(t, []string{archive.ArchiveFileName, archive.IndexFileName}, first.Uploaded)
	assert.NotEmpty(t, first.ConceptDOI)
	assert.NotEmpty(t, first.RecordURL)

	// A second tag of the same image name: a new version of the record,
	// with metadata.version set again.
	second := pushed(t, f, layout(t, "example.org/tool:1.1", authors, testimage.WithCmd("/bin/echo", "1.1")), "example.org/tool:1.1")
	assert.Equal(t, ActionNewVersion, second.Action)
	assert.Equal(t, first.ConceptDOI, second.ConceptDOI)
	assert.NotEqual(t, first.DOI, second.DOI)
	assert.NotEqual(t, first.ConfigDigest, second.ConfigDigest)
	assert.Equal(t, []string{"1.0", "1.1"}, versionTags(t, f, first.ConceptDOI))
	rec, err := f.zc.Resolve(ctx(t), mustRef(t, second.Reference))
	require.NoError(t, err)
	assert.Equal(t, "1.1", rec.Version())
	assert.Equal(t, []string{"image.tar", "image.tar.index.json"}, fileKeys(rec.Files), "the previous version's files are replaced")

	drafts, published := depositions(t, f, first.Title)
	assert.Empty(t, drafts)
	assert.Len(t, published, 2)

	// The same tag again is refused, and makes no draft.
	_, err = Push(ctx(t), f.zc, layout(t, "example.org/tool:1.1", authors), "example.org/tool:1.1", WithAutoPublish(), WithPushTempDir(t.TempDir()))
	require.ErrorIs(t, err, ErrTagExists)
	assert.ErrorContains(t, err, second.DOI)
	assert.Equal(t, ExitError, ExitCode(err))
	drafts, _ = depositions(t, f, first.Title)
	assert.Empty(t, drafts)

	// Another image name: another record.
	other := pushed(t, f, layout(t, "example.org/other:1.0", authors), "example.org/other:1.0")
	assert.Equal(t, ActionNewRecord, other.Action)
	assert.NotEqual(t, first.ConceptDOI, other.ConceptDOI)
}

func fileKeys(files []zenodo.File) []string {
	var keys []string
	for _, f := range files {
		keys = append(keys, f.Key)
	}
	return keys
}

func TestPushTemplates(t *testing.T) {
	f := newFake(t)
	tm, err := ParseTemplates([]byte(`{
		"title": "Tool {{.Name}}",
		"creators": [{"name": "Smith, Jane", "affiliation": "My University", "orcid": "0000-0002-1694-233X"}],
		"keywords": ["docker image", "my topic", "{{index .Labels \"topic\"}}"],
		"license": "mit",
		"description": "<p>{{.Name}}:{{.Tag}} is {{.Reference}}</p>{{.BuildManifest}}",
		"access_right": "open"
	}`))
	require.NoError(t, err)
	labels := testimage.WithLabels(map[string]string{"topic": "biology"})
	res := pushed(t, f, layout(t, "example.org/tool:2.0", labels, testimage.WithDpkgStatus()), "example.org/tool:2.0", WithTemplates(tm))
	assert.Equal(t, "Tool example.org/tool", res.Title)
	assert.Positive(t, res.Packages, "the dpkg database lists packages")

	rec, err := f.zc.Resolve(ctx(t), mustRef(t, res.DOI))
	require.NoError(t, err)
	md := rec.Metadata
	assert.Equal(t, "Tool example.org/tool", md.Title)
	assert.Equal(t, "2.0", md.Version)
	assert.Equal(t, []zenodo.Creator{{Name: "Smith, Jane", Affiliation: "My University", ORCID: "0000-0002-1694-233X"}}, md.Creators)
	assert.Equal(t, []string{"docker image", "my topic", "biology"}, md.Keywords)
	assert.Equal(t, "mit", md.License)
	assert.Contains(t, md.Description, "<p>example.org/tool:2.0 is "+res.Reference+"</p>")
	assert.Contains(t, md.Description, res.ConfigDigest.String())
	assert.Contains(t, md.Description, res.ManifestDigest.String())
	assert.Contains(t, md.Description, "dpkg")

	// The templated title is the record's identity: the next tag with the
	// same templates is a new version, without them another record.
	again := pushed(t, f, layout(t, "example.org/tool:2.1", labels), "example.org/tool:2.1", WithTemplates(tm))
	assert.Equal(t, ActionNewVersion, again.Action)
	assert.Equal(t, res.ConceptDOI, again.ConceptDOI)
	plain := pushed(t, f, layout(t, "example.org/tool:2.1", authors), "example.org/tool:2.1")
	assert.Equal(t, ActionNewRecord, plain.Action)
	assert.Equal(t, "Docker image example.org/tool", plain.Title)
}

func TestPushMultiPlatform(t *testing.T) {
	arm := ocispec.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}
	tests := []struct {
		name        string
		content     bool
		wantPushed  []string
		wantSkipped []string
	}{
		{name: "partial", content: false, wantPushed: []string{"linux/amd64"}, wantSkipped: []string{"linux/arm64/v8"}},
		{name: "complete", content: true, wantPushed: []string{"linux/amd64", "linux/arm64/v8"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(t)
			res := pushed(t, f, layout(t, "example.org/multi:1.0", authors, testimage.WithPlatform(arm, tt.content)), "example.org/multi:1.0")
			assert.Equal(t, tt.wantPushed, res.Platforms)
			assert.Equal(t, tt.wantSkipped, res.SkippedPlatforms)
			ins, err := Inspect(ctx(t), f.guest(t), mustRef(t, res.Reference))
			require.NoError(t, err)
			var got []string
			for _, im := range ins.Images {
				got = append(got, im.Platform)
			}
			assert.Equal(t, tt.wantPushed, got)
			assert.Equal(t, res.RootDigest, ins.RootDigest)
		})
	}
}

func TestPushErrors(t *testing.T) {
	f := newFake(t)
	src := layout(t, "example.org/tool:1.0", authors)
	tests := []struct {
		name     string
		zc       *zenodo.Client
		src      Source
		image    string
		wantCode int
		wantErr  string
		is       error
	}{
		{name: "no token", zc: f.guest(t), src: src, image: "example.org/tool:1.0", wantCode: ExitAuth, is: ErrNoToken},
		{name: "rejected token", zc: newClient(t, f.url, "wrong-token"), src: src, image: "example.org/tool:1.0", wantCode: ExitAuth, is: zenodo.ErrUnauthorized},
		{name: "image not found", zc: f.zc, src: src, image: "example.org/nothere:1.0", wantCode: ExitNotFound, wantErr: "example.org/nothere:1.0 not found"},
		{name: "latest", zc: f.zc, src: src, image: "example.org/tool:latest", wantCode: ExitUsage, wantErr: "latest"},
		{name: "no tag", zc: f.zc, src: src, image: "example.org/tool", wantCode: ExitUsage, wantErr: "no tag"},
		{name: "no creators", zc: f.zc, src: layout(t, "example.org/tool:1.0"), image: "example.org/tool:1.0", wantCode: ExitUsage, wantErr: "creators"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f.srv.ResetRequests()
			_, err := Push(ctx(t), tt.zc, tt.src, tt.image, WithAutoPublish(), WithPushTempDir(t.TempDir()))
			require.Error(t, err)
			assert.Equal(t, tt.wantCode, ExitCode(err), "%v", err)
			if tt.is != nil {
				assert.ErrorIs(t, err, tt.is)
			}
			assert.ErrorContains(t, err, tt.wantErr)
			assert.NotContains(t, err.Error(), zenodotest.DefaultToken)
			n, _ := f.requests(http.MethodPost, "/api/deposit/depositions")
			assert.Zero(t, n, "no deposition is made")
		})
	}
	t.Run("hint", func(t *testing.T) {
		_, err := Push(ctx(t), f.guest(t), src, "example.org/tool:1.0")
		assert.Contains(t, Hint(err), "deposit:write")
	})
}

// TestPushResume interrupts pushes at each step with injected faults:
// nothing is ever published half-uploaded, and a re-run resumes the same
// draft (keeping what is already uploaded) and publishes exactly one
// version, in one record.
func TestPushResume(t *testing.T) {
	tests := []struct {
		name      string
		fault     zenodotest.Fault
		wantKept  []string
		secondTag bool // the interrupted push is a record's second version
	}{
		{name: "upload refused", fault: zenodotest.Fault{Method: http.MethodPut, PathContains: "/image.tar", Status: http.StatusServiceUnavailable, Times: 2}},
		{name: "upload dropped", fault: zenodotest.Fault{Method: http.MethodPut, PathContains: "/image.tar", Drop: true, Times: 2}},
		{name: "upload stored, answer lost", fault: zenodotest.Fault{Method: http.MethodPut, PathContains: "/image.tar", ResetAfter: zenodotest.BeforeBody, Times: 2},
			wantKept: []string{archive.ArchiveFileName}},
		{name: "upload corrupted", fault: zenodotest.Fault{Method: http.MethodPut, PathContains: "/image.tar", WrongChecksum: true, Times: 2}},
		{name: "index upload refused", fault: zenodotest.Fault{Method: http.MethodPut, PathContains: "/image.tar.index.json", Status: http.StatusBadGateway, Times: 2},
			wantKept: []string{archive.ArchiveFileName}},
		{name: "publish fails", fault: zenodotest.Fault{Method: http.MethodPost, PathContains: "/actions/publish", Status: http.StatusInternalServerError, Times: 2},
			wantKept: []string{archive.ArchiveFileName, archive.IndexFileName}},
		{name: "second version upload refused", secondTag: true, fault: zenodotest.Fault{Method: http.MethodPut, PathContains: "/image.tar", Status: http.StatusServiceUnavailable, Times: 2}},
		{name: "second version publish fails", secondTag: true, fault: zenodotest.Fault{Method: http.MethodPost, PathContains: "/actions/publish", Status: http.StatusInternalServerError, Times: 2},
			wantKept: []string{archive.ArchiveFileName, archive.IndexFileName}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(t)
			title := "Docker image example.org/tool"
			var concept string
			wantTags := []string{"2.0"}
			if tt.secondTag {
				concept = pushed(t, f, layout(t, "example.org/tool:1.0", authors), "example.org/tool:1.0").ConceptDOI
				wantTags = []string{"1.0", "2.0"}
			}
			src := layout(t, "example.org/tool:2.0", authors, testimage.WithRandomLayer(1, 7))
			f.srv.InjectFault(tt.fault)
			res, err := Push(ctx(t), f.zc, src, "example.org/tool:2.0", WithAutoPublish(), WithPushTempDir(t.TempDir()))
			require.Error(t, err)
			assert.Zero(t, f.srv.PendingFaults())
			require.NotNil(t, res)
			assert.False(t, res.Published)

			// Nothing published: one unpublished draft, the record unchanged.
			drafts, published := depositions(t, f, title)
			require.Len(t, drafts, 1)
			assert.Equal(t, res.DepositionID, drafts[0].ID.String())
			if tt.secondTag {
				assert.Len(t, published, 1)
				assert.Equal(t, []string{"1.0"}, versionTags(t, f, concept))
			} else {
				assert.Empty(t, published)
				_, err := f.zc.Resolve(ctx(t), mustRef(t, res.DOI))
				assert.True(t, errdefs.IsNotFound(err), "the draft is not a record: %v", err)
			}

			again, err := Push(ctx(t), f.zc, src, "example.org/tool:2.0", WithAutoPublish(), WithPushTempDir(t.TempDir()))
			require.NoError(t, err)
			assert.Equal(t, ActionResumed, again.Action)
			assert.Equal(t, res.DepositionID, again.DepositionID)
			assert.Equal(t, res.DOI, again.DOI, "the reserved DOI is kept")
			assert.Equal(t, tt.wantKept, again.Kept)
			assert.True(t, again.Published)

			drafts, published = depositions(t, f, title)
			assert.Empty(t, drafts)
			assert.Len(t, published, len(wantTags))
			assert.Equal(t, wantTags, versionTags(t, f, again.ConceptDOI))
			// The published files are the archive, whole.
			ins, err := Inspect(ctx(t), f.guest(t), mustRef(t, again.Reference))
			require.NoError(t, err)
			assert.Equal(t, again.ConfigDigest, ins.Images[0].ConfigDigest)
			im, err := OpenImage(ctx(t), f.guest(t), mustRef(t, again.Reference))
			require.NoError(t, err)
			defer im.Close()
			require.NoError(t, im.Archive().Verify(ctx(t)))
		})
	}
}

// cancelAt is a Progress that cancels a push once an upload has sent half
// its bytes, as an interrupt would.
type cancelAt struct {
	cancel context.CancelFunc
	fired  atomic.Bool
}

func (c *cancelAt) Track(name string, total int64) Tracker {
	return &cancelTracker{c: c, name: name, total: total}
}

type cancelTracker struct {
	c     *cancelAt
	name  string
	total int64
}

func (t *cancelTracker) SetCurrent(n int64) {
	if strings.HasPrefix(t.name, "upload image.tar") && n > t.total/2 && t.c.fired.CompareAndSwap(false, true) {
		t.c.cancel()
	}
}
func (t *cancelTracker) Done(error) {}

func TestPushResumeAfterInterrupt(t *testing.T) {
	f := newFake(t)
	src := layout(t, "example.org/tool:3.0", authors, testimage.WithRandomLayer(4, 3))
	cctx, cancel := context.WithCancel(ctx(t))
	defer cancel()
	c := &cancelAt{cancel: cancel}
	res, err := Push(cctx, f.zc, src, "example.org/tool:3.0", WithAutoPublish(), WithPushTempDir(t.TempDir()), WithPushProgress(c))
	require.ErrorIs(t, err, context.Canceled)
	assert.True(t, c.fired.Load())
	assert.False(t, res.Published)
	drafts, published := depositions(t, f, res.Title)
	assert.Len(t, drafts, 1)
	assert.Empty(t, published)

	again := pushed(t, f, src, "example.org/tool:3.0")
	assert.Equal(t, ActionResumed, again.Action)
	assert.Equal(t, res.DepositionID, again.DepositionID)
	drafts, published = depositions(t, f, res.Title)
	assert.Empty(t, drafts)
	assert.Len(t, published, 1)
}

func TestPushConfirm(t *testing.T) {
	f := newFake(t)
	src := layout(t, "example.org/tool:1.0", authors)
	var asked *PushResult
	res, err := Push(ctx(t), f.zc, src, "example.org/tool:1.0", WithPushTempDir(t.TempDir()),
		WithConfirm(func(_ context.Context, d *PushResult) (bool, error) {
			c := *d
			asked = &c
			return false, nil
		}))
	require.NoError(t, err)
	require.NotNil(t, asked)
	assert.NotEmpty(t, asked.DraftURL)
	assert.Equal(t, res.DepositionID, asked.DepositionID)
	assert.False(t, res.Published)

	// Declining leaves a complete draft; the next push publishes it
	// without uploading anything again.
	again, err := Push(ctx(t), f.zc, src, "example.org/tool:1.0", WithPushTempDir(t.TempDir()),
		WithConfirm(func(context.Context, *PushResult) (bool, error) { return true, nil }))
	require.NoError(t, err)
	assert.True(t, again.Published)
	assert.Equal(t, ActionResumed, again.Action)
	assert.Equal(t, []string{archive.ArchiveFileName, archive.IndexFileName}, again.Kept)
	assert.Empty(t, again.Uploaded)

	// A failing question fails the push, unpublished.
	boom := errors.New("no terminal")
	_, err = Push(ctx(t), f.zc, layout(t, "example.org/tool:1.1", authors), "example.org/tool:1.1", WithPushTempDir(t.TempDir()),
		WithConfirm(func(context.Context, *PushResult) (bool, error) { return false, boom }))
	require.ErrorIs(t, err, boom)
}

// TestPushLayerAnnotations checks the archive's layers carry the reserved
// DOI, which the published version then has.
func TestPushLayerAnnotations(t *testing.T) {
	f := newFake(t)
	res := pushed(t, f, layout(t, "example.org/tool:1.0", authors, testimage.WithRandomLayer(1, 1)), "example.org/tool:1.0")
	im, err := OpenImage(ctx(t), f.guest(t), mustRef(t, res.Reference))
	require.NoError(t, err)
	defer im.Close()
	plats, err := im.Platforms(ctx(t))
	require.NoError(t, err)
	require.Len(t, plats, 1)
	require.NotEmpty(t, plats[0].ManifestData.Layers)
	for _, l := range plats[0].ManifestData.Layers {
		assert.Equal(t, res.DOI, l.Annotations[AnnotationDOI])
	}
	assert.Equal(t, []string{"example.org/tool:1.0"}, im.Names())
}

func TestPushPreserveLayers(t *testing.T) {
	f := newFake(t)
	src := layout(t, "example.org/tool:1.0", authors)
	img, err := src.Image(ctx(t), "example.org/tool:1.0")
	require.NoError(t, err)
	res := pushed(t, f, src, "example.org/tool:1.0", WithPreserveLayers())
	assert.Equal(t, img.Target.Digest, res.ManifestDigest, "the manifest is kept byte for byte")
	ins, err := Inspect(ctx(t), f.guest(t), mustRef(t, res.Reference))
	require.NoError(t, err)
	for _, l := range ins.Images[0].Layers {
		assert.False(t, l.Seekable)
	}
}

func TestSandboxDOI(t *testing.T) {
	for _, tt := range []struct{ base, in, want string }{
		{zenodo.SandboxURL, "10.5281/zenodo.412011", "10.5072/zenodo.412011"},
		{zenodo.SandboxURL, "10.5072/zenodo.412011", "10.5072/zenodo.412011"},
		{zenodo.ProductionURL, "10.5281/zenodo.412011", "10.5281/zenodo.412011"},
		{"http://127.0.0.1:8080", "10.5281/zenodo.1", "10.5281/zenodo.1"},
		{zenodo.SandboxURL, "", ""},
	} {
		assert.Equal(t, tt.want, sandboxDOI(tt.base, tt.in), "%s %s", tt.base, tt.in)
	}
}

// TestPushSearchLag pushes against a Zenodo whose search lists nothing new
// (its index lags): with the deposition memo, a re-run after an
// interruption resumes its draft and the next tag becomes a new version;
// without it, each push would make another record.
func TestPushSearchLag(t *testing.T) {
	f := newFake(t, zenodotest.WithIndexDelay(time.Hour))
	memoDir := t.TempDir()
	opts := []PushOption{WithDepositionMemo(memoDir)}

	src := layout(t, "example.org/tool:1.0", authors)
	f.srv.InjectFault(zenodotest.Fault{Method: http.MethodPut, PathContains: "/image.tar", Status: http.StatusServiceUnavailable, Times: 2})
	res, err := Push(ctx(t), f.zc, src, "example.org/tool:1.0", append(opts, WithAutoPublish(), WithPushTempDir(t.TempDir()))...)
	require.Error(t, err)
	drafts, _ := depositions(t, f, res.Title)
	require.Empty(t, drafts, "the search does not list the draft")

	first := pushed(t, f, src, "example.org/tool:1.0", opts...)
	assert.Equal(t, ActionResumed, first.Action)
	assert.Equal(t, res.DepositionID, first.DepositionID)

	second := pushed(t, f, layout(t, "example.org/tool:1.1", authors), "example.org/tool:1.1", opts...)
	assert.Equal(t, ActionNewVersion, second.Action)
	assert.Equal(t, first.ConceptDOI, second.ConceptDOI)

	_, err = Push(ctx(t), f.zc, layout(t, "example.org/tool:1.1", authors), "example.org/tool:1.1", append(opts, WithAutoPublish(), WithPushTempDir(t.TempDir()))...)
	assert.ErrorIs(t, err, ErrTagExists)

	// Without the memo, the lagging search makes a new record.
	other := pushed(t, f, layout(t, "example.org/tool:1.2", authors), "example.org/tool:1.2")
	assert.Equal(t, ActionNewRecord, other.Action)
}
