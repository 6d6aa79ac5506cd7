package seekable

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/containerd/errdefs"
	"github.com/klauspost/compress/gzip"
)

// maxFetch bounds the compressed bytes one ReadAt on the layer asks for when
// a read spans several members.
const maxFetch = 16 << 20

// DecompressMember verifies the compressed bytes of member m against its size
// and digest (ErrDigestMismatch) and returns its uncompressed bytes, checking
// they are one gzip member of exactly m.USize bytes (ErrCorrupt).
func DecompressMember(compressed []byte, m Member) ([]byte, error) {
	if m.USize < 0 || m.USize > MaxMemberUSize {
		return nil, fmt.Errorf("member at offset %d: uncompressed size %d: %w", m.Offset, m.USize, errdefs.ErrInvalidArgument)
	}
	if err := verifyMember(compressed, m); err != nil {
		return nil, err
	}
	return decompress(new(gzip.Reader), nil, compressed, m)
}

// verifyMember checks compressed bytes against m's size and digest.
func verifyMember(compressed []byte, m Member) error {
	if int64(len(compressed)) != m.Size {
		return fmt.Errorf("%w: member at offset %d has %d bytes, want %d", ErrDigestMismatch, m.Offset, len(compressed), m.Size)
	}
	if got := digestAlgorithm.FromBytes(compressed); got != m.Digest {
		return fmt.Errorf("%w: member at offset %d is %s, want %s", ErrDigestMismatch, m.Offset, got, m.Digest)
	}
	return nil
}

// decompress gunzips one verified member into dst (reused if large enough).
func decompress(zr *gzip.Reader, dst, compressed []byte, m Member) ([]byte, error) {
	br := bytes.NewReader(compressed)
	if err := zr.Reset(br); err != nil {
		return nil, fmt.Errorf("%w: member at offset %d: %w", ErrCorrupt, m.Offset, err)
	}
	zr.Multistream(false)
	if int64(cap(dst)) < m.USize {
		dst = make([]byte, m.USize)
	}
	dst = dst[:m.USize]
	if _, err := io.ReadFull(zr, dst); err != nil {
		return nil, fmt.Errorf("%w: member at offset %d: short of %d bytes: %w", ErrCorrupt, m.Offset, m.USize, err)
	}
	var one [1]byte
	if n, err := zr.Read(one[:]); n > 0 || err != io.EOF {
		if err == nil || err == io.EOF {
			err = errors.New("more data than its uncompressed size")
		}
		return nil, fmt.Errorf("%w: member at offset %d: %w", ErrCorrupt, m.Offset, err)
	}
	if br.Len() != 0 {
		return nil, fmt.Errorf("%w: member at offset %d: %d bytes after the gzip member", ErrCorrupt, m.Offset, br.Len())
	}
	return dst, nil
}

// NewFileReader returns a reader of the content of entry e of t (for a
// hardlink, of the entry it links to; other non-regular entries read as
// empty), reading the layer blob from ra. Each ReadAt fetches only the
// members holding the bytes asked for, with one ra.ReadAt per run of
// consecutive members (at most 16 MiB), and verifies every member before using
// it. The last member decompressed is kept, so small sequential reads fetch
// each member once. The reader is safe for concurrent use; reads are
// serialised.
func NewFileReader(ra io.ReaderAt, t *TOC, e *Entry) *io.SectionReader {
	e = t.Resolve(e)
	size := e.Size
	if e.Type != TypeReg {
		size = 0
	}
	return io.NewSectionReader(&fileReader{ra: ra, t: t, e: e, cached: -1}, 0, size)
}

type fileReader struct {
	ra io.ReaderAt
	t  *TOC
	e  *Entry

	mu     sync.Mutex
	zr     gzip.Reader
	cbuf   []byte // compressed bytes of the last fetch
	cached int    // index of the member in ubuf, or -1
	ubuf   []byte
}

// ReadAt implements io.ReaderAt over the file's content.
func (r *fileReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("reading %q at offset %d: %w", r.e.Name, off, errdefs.ErrInvalidArgument)
	}
	if off >= r.e.Size {
		return 0, io.EOF
	}
	n := min(int64(len(p)), r.e.Size-off)
	first, last := r.t.MemberRange(r.e, off, n)
	start := r.e.Offset + off // in the tar

	r.mu.Lock()
	defer r.mu.Unlock()
	for i := first; i <= last; {
		if i == r.cached {
			r.copyOut(p[:n], start, i)
			i++
			continue
		}
		// Fetch the run of members i..j in one read.
		j, total := i, r.t.Members[i].Size
		for j < last && j+1 != r.cached && total+r.t.Members[j+1].Size <= maxFetch {
			j++
			total += r.t.Members[j].Size
		}
		if int64(cap(r.cbuf)) < total {
			r.cbuf = make([]byte, total)
		}
		buf := r.cbuf[:total]
		base := r.t.Members[i].Offset
		if k, err := r.ra.ReadAt(buf, base); k < len(buf) {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return 0, fmt.Errorf("reading members %d-%d of %q: %w", i, j, r.e.Name, err)
		}
		for ; i <= j; i++ {
			m := r.t.Members[i]
			cdata := buf[m.Offset-base : m.Offset-base+m.Size]
			if err := verifyMember(cdata, m); err != nil {
				return 0, fmt.Errorf("reading %q: member %d: %w", r.e.Name, i, err)
			}
			r.cached = -1
			ubuf, err := decompress(&r.zr, r.ubuf, cdata, m)
			if err != nil {
				return 0, fmt.Errorf("reading %q: member %d: %w", r.e.Name, i, err)
			}
			r.ubuf, r.cached = ubuf, i
			r.copyOut(p[:n], start, i)
		}
	}
	if n < int64(len(p)) {
		return int(n), io.EOF
	}
	return int(n), nil
}

// copyOut copies the part of cached member i that overlaps p (which starts
// at tar offset start) into p.
func (r *fileReader) copyOut(p []byte, start int64, i int) {
	m := r.t.Members[i]
	from := max(m.UOffset, start)
	to := min(m.UOffset+m.USize, start+int64(len(p)))
	if from < to {
		copy(p[from-start:to-start], r.ubuf[from-m.UOffset:to-m.UOffset])
	}
}
