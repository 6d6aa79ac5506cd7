package fs

import (
	"bytes"
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/internal/testutil"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/seekable"
)

// blobLayer serves a seekable layer from its blob in memory, through
// seekable's own reader: the real TOC and data path minus cache and network.
type blobLayer struct {
	toc  *seekable.TOC
	blob *bytes.Reader
}

func (l *blobLayer) TOC() *seekable.TOC { return l.toc }

func (l *blobLayer) ReadAt(ctx context.Context, e *seekable.Entry, p []byte, off int64) (int, error) {
	return seekable.NewFileReader(l.blob, l.toc, e).ReadAt(p, off)
}

// TestMountSeekableLayer converts the sample tar with seekable.Convert and
// mounts its real TOC: the tree must match containerd's extraction.
func TestMountSeekableLayer(t *testing.T) {
	testutil.RequireFUSE(t)
	tarball := tarOf(t, sampleFiles())
	var blob bytes.Buffer
	res, err := seekable.Convert(context.Background(), &blob, bytes.NewReader(tarball))
	require.NoError(t, err)
	toc, err := seekable.ParseTOC(res.TOCJSON, res.Size)
	require.NoError(t, err)
	mnt := mountLayer(t, &blobLayer{toc: toc, blob: bytes.NewReader(blob.Bytes())})
	compareTrees(t, extract(t, tarball), mnt, true)
}
