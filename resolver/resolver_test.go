package resolver

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/remotes"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestResolverResolve(t *testing.T) {
	f := newFixture(t, fixtureOpts{multi: true})
	r := NewResolver(f.src)
	ctx := context.Background()
	v1, v2 := f.v1.idx.Root, f.v2.idx.Root
	hostManifest, _ := f.v1.archivedManifest(t)

	tests := []struct {
		ref      string
		wantName string
		want     ocispec.Descriptor
	}{
		{"zenodo.org/" + f.pub1.DOI + ":1.0", "zenodo.org/" + f.pub1.DOI + ":1.0", v1},
		{"zenodo.org/" + f.pub1.DOI, "zenodo.org/" + f.pub1.DOI, v1},
		{"https://zenodo.org/records/" + f.pub1.RecID, "zenodo.org/" + f.pub1.DOI, v1},
		{"doi:" + f.pub1.ConceptDOI, "zenodo.org/" + f.pub1.ConceptDOI, v2},
		{"zenodo.org/" + f.pub1.ConceptDOI + ":latest", "zenodo.org/" + f.pub1.ConceptDOI + ":latest", v2},
		{"zenodo.org/" + f.pub1.ConceptDOI + ":1.0", "zenodo.org/" + f.pub1.ConceptDOI + ":1.0", v1},
		{"zenodo.org/" + f.pub2.DOI + ":1.0", "zenodo.org/" + f.pub2.DOI + ":1.0", v1}, // a sibling's tag
		{f.pub1.ConceptDOI + "@" + v1.Digest.String(), "zenodo.org/" + f.pub1.ConceptDOI + "@" + v1.Digest.String(), v1},
		{"zenodo.org/" + f.pub1.DOI + "@" + hostManifest.Digest.String(), "zenodo.org/" + f.pub1.DOI + "@" + hostManifest.Digest.String(), hostManifest},
		// The digest wins over the tag.
		{"zenodo.org/" + f.pub1.ConceptDOI + ":latest@" + v1.Digest.String(), "zenodo.org/" + f.pub1.ConceptDOI + ":latest@" + v1.Digest.String(), v1},
	}
	for _, tt := range tests {
		t.Run(tt.ref, func(t *testing.T) {
			name, desc, err := r.Resolve(ctx, tt.ref)
			require.NoError(t, err)
			assert.Equal(t, tt.wantName, name)
			assert.Equal(t, ocispec.Descriptor{MediaType: tt.want.MediaType, Digest: tt.want.Digest, Size: tt.want.Size}, desc)
		})
	}
}

func TestResolverErrors(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	r := NewResolver(f.src)
	ctx := context.Background()
	_, m := f.v1.archivedManifest(t)
	tests := []struct {
		ref  string
		kind func(error) bool
		is   error
		msg  string
	}{
		{"docker.io/library/busybox:latest", errdefs.IsInvalidArgument, nil, "accepted forms"},
		{"zenodo.org/10.5281/zenodo.99999999:1.0", errdefs.IsNotFound, nil, ""},
		{"zenodo.org/" + f.pub1.DOI + ":9.9", errdefs.IsNotFound, nil, "9.9"},
		{"zenodo.org/" + f.noImage.DOI, errdefs.IsNotFound, ErrNoImage, ""},
		{"zenodo.org/" + f.pub1.DOI + "@" + digest.FromString("x").String(), errdefs.IsNotFound, nil, "not in this record"},
		{"zenodo.org/" + f.pub1.DOI + "@" + m.Layers[0].Digest.String(), errdefs.IsNotFound, nil, "not a manifest"},
	}
	for _, tt := range tests {
		t.Run(tt.ref, func(t *testing.T) {
			_, _, err := r.Resolve(ctx, tt.ref)
			require.Error(t, err)
			assert.True(t, tt.kind(err), "%v", err)
			if tt.is != nil {
				assert.ErrorIs(t, err, tt.is)
			}
			assert.Contains(t, err.Error(), tt.msg)
		})
	}

	_, err := r.Pusher(ctx, "zenodo.org/"+f.pub1.DOI+":1.0")
	assert.True(t, errdefs.IsNotImplemented(err), "%v", err)
	_, err = r.Fetcher(ctx, "not a reference")
	assert.True(t, errdefs.IsInvalidArgument(err), "%v", err)
}

// TestResolverPull pulls with the resolver as containerd's client Pull
// does, then checks seeks and fetches by digest.
func TestResolverPull(t *testing.T) {
	f := newFixture(t, fixtureOpts{big: 3 << 20, multi: true})
	r := NewResolver(f.src, WithReadSize(256<<10))
	ctx := context.Background()
	ref := "zenodo.org/" + f.pub1.ConceptDOI + ":1.0"

	f.fake.ResetRequests()
	cs, name, desc := pullWith(t, r, ref)
	assert.Equal(t, ref, name)
	assert.Equal(t, f.v1.idx.Root.Digest, desc.Digest)
	reqs := f.fake.Requests()
	t.Logf("pull: %d Zenodo requests, %d bytes (archive %d bytes)", len(reqs), totalBytes(reqs), len(f.v1.tar))
	for _, b := range f.v1.idx.Blobs {
		if b.MediaType == "" || strings.Contains(b.MediaType, "toc") {
			continue
		}
		_, err := cs.Info(ctx, b.Digest)
		assert.NoError(t, err, "blob %s (%s)", b.Digest, b.MediaType)
	}

	// Seek and read, as content.Copy does to resume.
	_, m := f.v1.archivedManifest(t)
	big := m.Layers[len(m.Layers)-1]
	want, err := content.ReadBlob(ctx, cs, big)
	require.NoError(t, err)
	fe, err := r.Fetcher(ctx, name)
	require.NoError(t, err)
	rc, err := fe.Fetch(ctx, big)
	require.NoError(t, err)
	head := make([]byte, 100)
	_, err = io.ReadFull(rc, head)
	require.NoError(t, err)
	assert.Equal(t, want[:100], head)
	s, ok := rc.(io.Seeker)
	require.True(t, ok, "the reader is an io.Seeker")
	off, err := s.Seek(1<<20, io.SeekStart)
	require.NoError(t, err)
	assert.Equal(t, int64(1<<20), off)
	rest, err := io.ReadAll(rc)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(want[1<<20:], rest))
	require.NoError(t, rc.Close())

	// A size that differs from the image's.
	_, err = fe.Fetch(ctx, ocispec.Descriptor{Digest: big.Digest, Size: big.Size + 1})
	assert.True(t, errdefs.IsInvalidArgument(err), "%v", err)
	// A digest the record does not hold.
	_, err = fe.Fetch(ctx, ocispec.Descriptor{Digest: digest.FromString("x"), Size: 1})
	assert.True(t, errdefs.IsNotFound(err), "%v", err)

	fbd, ok := fe.(remotes.FetcherByDigest)
	require.True(t, ok)
	rc, d, err := fbd.FetchByDigest(ctx, m.Config.Digest)
	require.NoError(t, err)
	b, err := io.ReadAll(rc)
	require.NoError(t, err)
	rc.Close()
	assert.Equal(t, m.Config.Digest, digest.FromBytes(b))
	assert.Equal(t, ocispec.Descriptor{MediaType: m.Config.MediaType, Digest: m.Config.Digest, Size: m.Config.Size}, d)
}

// TestResolverCancel checks that a caller that gives up does not fail
// others waiting on the same look-up.
func TestResolverCancel(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	cs := &countingSource{Source: f.src, gate: make(chan struct{}), entered: make(chan struct{}, 1)}
	r := NewResolver(cs)
	ref := "zenodo.org/" + f.pub1.DOI + ":1.0"

	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, _, err := r.Resolve(ctx, ref)
		errc <- err
	}()
	<-cs.entered
	cancel()
	assert.True(t, errors.Is(<-errc, context.Canceled))
	close(cs.gate)
	_, desc, err := r.Resolve(context.Background(), ref)
	require.NoError(t, err)
	assert.Equal(t, f.v1.idx.Root.Digest, desc.Digest)
	assert.Equal(t, 1, cs.count(), "the abandoned look-up finished and was cached")
}
