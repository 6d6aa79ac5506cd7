package fs

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/containerd/containerd/v2/pkg/archive"
	"github.com/stretchr/testify/require"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/seekable"
)

// memLayer is an in-memory Layer: a TOC and the contents of its regular
// files, by entry name. readAt, when set, replaces the normal ReadAt.
type memLayer struct {
	toc    *seekable.TOC
	data   map[string][]byte
	readAt func(ctx context.Context, e *seekable.Entry, p []byte, off int64) (int, error)
	reads  atomic.Int64
}

var _ Layer = (*memLayer)(nil)

func (l *memLayer) TOC() *seekable.TOC { return l.toc }

func (l *memLayer) ReadAt(ctx context.Context, e *seekable.Entry, p []byte, off int64) (int, error) {
	l.reads.Add(1)
	if l.readAt != nil {
		return l.readAt(ctx, e, p, off)
	}
	d, ok := l.data[e.Name]
	if !ok || e.Type != typeReg {
		return 0, fmt.Errorf("no contents for %q (%s)", e.Name, e.Type)
	}
	if off < 0 || off > int64(len(d)) {
		return 0, fmt.Errorf("offset %d out of range", off)
	}
	n := copy(p, d[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// file is one tar entry of a test layer.
type file struct {
	hdr  tar.Header
	body []byte
}

func tarOf(tb testing.TB, files []file) []byte {
	tb.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		h := f.hdr
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(f.body))
		}
		if h.Format == tar.FormatUnknown {
			h.Format = tar.FormatPAX
		}
		require.NoError(tb, tw.WriteHeader(&h), h.Name)
		if len(f.body) > 0 {
			_, err := tw.Write(f.body)
			require.NoError(tb, err)
		}
	}
	require.NoError(tb, tw.Close())
	return buf.Bytes()
}

// layerOf makes the TOC of a tar the way store/seekable does (names cleaned,
// root ".", hardlink targets cleaned, xattrs from SCHILY.xattr.*), with the
// contents in memory.
func layerOf(tb testing.TB, tarball []byte) *memLayer {
	tb.Helper()
	l := &memLayer{toc: &seekable.TOC{Version: 1}, data: map[string][]byte{}}
	clean := func(n string) string {
		c := path.Clean("/" + n)[1:]
		if c == "" {
			return "."
		}
		return c
	}
	tr := tar.NewReader(bytes.NewReader(tarball))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(tb, err)
		e := seekable.Entry{
			Name:     clean(h.Name),
			Linkname: h.Linkname,
			Mode:     h.Mode & 0o7777,
			UID:      h.Uid,
			GID:      h.Gid,
			Uname:    h.Uname,
			Gname:    h.Gname,
			ModTime:  h.ModTime,
			Devmajor: h.Devmajor,
			Devminor: h.Devminor,
		}
		switch h.Typeflag {
		case tar.TypeReg:
			e.Type, e.Size = typeReg, h.Size
			body, err := io.ReadAll(tr)
			require.NoError(tb, err)
			l.data[e.Name] = body
		case tar.TypeDir:
			e.Type = typeDir
		case tar.TypeSymlink:
			e.Type = typeSymlink
		case tar.TypeLink:
			e.Type, e.Linkname = typeHardlink, clean(h.Linkname)
		case tar.TypeChar:
			e.Type = typeChar
		case tar.TypeBlock:
			e.Type = typeBlock
		case tar.TypeFifo:
			e.Type = typeFifo
		default:
			tb.Fatalf("tar type %c not in test TOCs", h.Typeflag)
		}
		for k, v := range h.PAXRecords {
			if x, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
				if e.Xattrs == nil {
					e.Xattrs = map[string]string{}
				}
				e.Xattrs[x] = v
			}
		}
		l.toc.Entries = append(l.toc.Entries, e)
	}
	return l
}

// extract unpacks a tar as containerd's overlay snapshotter does: the
// reference for what the FUSE layer must look like.
func extract(tb testing.TB, tarball []byte) string {
	tb.Helper()
	dir := tb.TempDir()
	_, err := archive.Apply(context.Background(), dir, bytes.NewReader(tarball),
		archive.WithConvertWhiteout(archive.OverlayConvertWhiteout))
	require.NoError(tb, err)
	return dir
}

// mountLayer mounts l on a fresh directory, unmounted at cleanup.
func mountLayer(tb testing.TB, l Layer, opts ...Option) string {
	tb.Helper()
	mnt := tb.TempDir()
	m, err := Mount(context.Background(), mnt, l, opts...)
	require.NoError(tb, err)
	tb.Cleanup(func() {
		if err := m.Unmount(); err != nil {
			tb.Errorf("unmounting %s: %v", mnt, err)
		}
	})
	return mnt
}

// observed collects observer events.
type observed struct {
	mu     sync.Mutex
	events []Event
}

func (o *observed) observe(e Event) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.events = append(o.events, e)
}

func (o *observed) all() []Event {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]Event(nil), o.events...)
}
