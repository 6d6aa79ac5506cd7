package archive

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"testing"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/stretchr/testify/require"
)

func FuzzParseIndex(f *testing.F) {
	ti := newTestImage(f, testImageOpts{tiny: true})
	_, idx := writeArchive(f, LayoutProvider(ti.dir), ti.root, WithImageName("busy:1"))
	good, err := MarshalIndex(idx)
	require.NoError(f, err)
	f.Add(good)
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"mediaType":"application/vnd.zenodo-snapshotter.archive.index.v1+json","version":1,"archiveSize":10,"root":{"digest":"sha256:` +
		"0000000000000000000000000000000000000000000000000000000000000000" + `","size":1},"blobs":[{"digest":"sha256:` +
		"0000000000000000000000000000000000000000000000000000000000000000" + `","offset":9,"size":1}]}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		idx, err := ParseIndex(data)
		if err != nil {
			require.True(t, isBadInput(err), "unclassified error: %v", err)
			return
		}
		enc, err := MarshalIndex(idx)
		require.NoError(t, err)
		again, err := ParseIndex(enc)
		require.NoError(t, err)
		require.Equal(t, idx.Blobs, again.Blobs)
		// An index that parses opens any archive of its size.
		_, err = Open(context.Background(), bytes.NewReader(make([]byte, 0)), idx.ArchiveSize, WithIndex(idx))
		require.NoError(t, err)
	})
}

// FuzzOpen feeds the tar walker, the OCI and docker-save readers and
// Verify with mutated archives: no panic, bounded work, and every error is
// one of the bad-input kinds.
func FuzzOpen(f *testing.F) {
	ti := newTestImage(f, testImageOpts{tiny: true})
	ours, _ := writeArchive(f, LayoutProvider(ti.dir), ti.root, WithImageName("busy:1"))
	f.Add(ours)
	preserved, _ := writeArchive(f, LayoutProvider(ti.dir), ti.root, WithPreserveLayers())
	f.Add(preserved)
	f.Add(legacyDockerSave(f, ti, "busy:1"))
	f.Add(rawTar(f, reg("index.json", []byte(`{"manifests":[{"digest":"sha256:`+
		"0000000000000000000000000000000000000000000000000000000000000000"+`","size":1},{"digest":"sha256:`+
		"1111111111111111111111111111111111111111111111111111111111111111"+`","size":1}]}`))))
	f.Add(rawTar(f, link("index.json", tar.TypeSymlink, "a"), link("a", tar.TypeLink, "index.json")))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		ctx := context.Background()
		a, err := Open(ctx, bytes.NewReader(data), int64(len(data)), WithMaxEntries(64))
		if err != nil {
			require.True(t, isBadInput(err), "unclassified error: %v", err)
			return
		}
		_ = a.Names()
		ms, err := a.Manifests(ctx)
		if err != nil {
			require.True(t, isBadInput(err), "unclassified error: %v", err)
		}
		for _, m := range ms {
			b, err := content.ReadBlob(ctx, a, m)
			if err != nil {
				continue
			}
			var mf struct{ Layers []json.RawMessage }
			_ = json.Unmarshal(b, &mf)
		}
		if err := a.Verify(ctx); err != nil {
			require.True(t, isBadInput(err), "unclassified error: %v", err)
		}
	})
}
