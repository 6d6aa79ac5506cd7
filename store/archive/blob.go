package archive

import (
	"context"
	"fmt"
	"hash"
	"io"
	"sync"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/internal/ctxio"
)

// blobLoc is where a blob's bytes are: a range of the archive, or (for
// blobs synthesized from a docker-save manifest.json) in memory.
type blobLoc struct {
	offset    int64
	size      int64
	data      []byte // synthesized blob; offset is meaningless
	mediaType string
}

// verifiedReaderAt is a content.ReaderAt over one blob that checks the
// blob's digest when it has been read in order from offset 0 to the end (as
// content.ReadBlob, content.NewReader and io.Copy do): the read that
// completes the blob fails with ErrCorrupt on a mismatch. Reads out of order
// are served unchecked.
type verifiedReaderAt struct {
	r    io.ReaderAt
	size int64
	dgst digest.Digest

	mu   sync.Mutex
	next int64     // bytes hashed so far, from offset 0
	h    hash.Hash // nil once done or if the algorithm is unavailable
	err  error     // sticky verification failure
}

var _ content.ReaderAt = (*verifiedReaderAt)(nil)

func newVerifiedReaderAt(r io.ReaderAt, size int64, dgst digest.Digest) *verifiedReaderAt {
	v := &verifiedReaderAt{r: r, size: size, dgst: dgst}
	if dgst.Algorithm().Available() {
		v.h = dgst.Algorithm().Hash()
	}
	if size == 0 {
		v.check()
	}
	return v
}

// ReadAt reads from the blob; see verifiedReaderAt.
func (v *verifiedReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("reading blob %s: negative offset: %w", v.dgst, errdefs.ErrInvalidArgument)
	}
	if off >= v.size {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	want := len(p)
	if rest := v.size - off; int64(want) > rest {
		p = p[:rest]
	}
	n, err := v.r.ReadAt(p, off)
	if err == io.EOF && n == len(p) {
		err = nil
	}
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return n, fmt.Errorf("reading blob %s at %d: %w", v.dgst, off, err)
	}
	v.mu.Lock()
	if v.h != nil && off <= v.next && off+int64(n) > v.next {
		v.h.Write(p[v.next-off : n])
		v.next = off + int64(n)
		if v.next == v.size {
			v.check()
		}
	}
	verr := v.err
	v.mu.Unlock()
	if verr != nil && off+int64(n) == v.size {
		return n, verr
	}
	if n < want {
		return n, io.EOF
	}
	return n, nil
}

// check compares the hash with the digest; v.mu held or not yet shared.
func (v *verifiedReaderAt) check() {
	if v.h == nil {
		return
	}
	got := digest.NewDigest(v.dgst.Algorithm(), v.h)
	v.h = nil
	if got != v.dgst {
		v.err = fmt.Errorf("blob %s: content has digest %s: %w", v.dgst, got, ErrCorrupt)
	}
}

// Size returns the blob's size.
func (v *verifiedReaderAt) Size() int64 { return v.size }

// Close releases nothing; the archive owns the underlying reader.
func (v *verifiedReaderAt) Close() error { return nil }

// verifyStream reads a whole blob and checks its digest.
func verifyStream(ctx context.Context, r io.Reader, size int64, dgst digest.Digest) error {
	if !dgst.Algorithm().Available() {
		return fmt.Errorf("blob %s: digest algorithm unavailable: %w", dgst, errdefs.ErrNotImplemented)
	}
	h := dgst.Algorithm().Hash()
	n, err := ctxio.Copy(ctx, h, r)
	if err != nil {
		return fmt.Errorf("reading blob %s: %w", dgst, err)
	}
	if n != size {
		return fmt.Errorf("blob %s: read %d bytes, want %d: %w", dgst, n, size, ErrCorrupt)
	}
	if got := digest.NewDigest(dgst.Algorithm(), h); got != dgst {
		return fmt.Errorf("blob %s: content has digest %s: %w", dgst, got, ErrCorrupt)
	}
	return nil
}
