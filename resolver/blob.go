package resolver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// openBlob returns a reader of length bytes (-1: to the end) of blob d of
// im from offset. A reader of a whole blob verifies it: the read that
// reaches its end returns no data and an error wrapping errdefs.ErrDataLoss
// when the content does not match the digest, so a corrupt blob is never
// delivered whole. Small blobs come from memory (read once); large ones
// are streamed, by the Image (BlobStreamer) or by reads of readSize bytes.
func openBlob(ctx context.Context, im *image, d ocispec.Descriptor, offset, length int64, readSize int) (io.ReadCloser, error) {
	if offset < 0 || offset > d.Size {
		return nil, fmt.Errorf("blob %s: offset %d out of range [0, %d]: %w", d.Digest, offset, d.Size, errdefs.ErrInvalidArgument)
	}
	if length < 0 || offset+length > d.Size {
		length = d.Size - offset
	}
	if _, ok := im.raw[d.Digest]; ok || d.Size <= maxSmallBlob {
		b, err := im.smallBlob(ctx, d)
		if err != nil {
			return nil, err
		}
		return io.NopCloser(bytes.NewReader(b[offset : offset+length])), nil
	}
	whole := offset == 0 && length == d.Size
	rc, err := streamBlob(ctx, im, d, offset, length)
	if err != nil {
		return nil, err
	}
	if rc == nil {
		ra, err := im.ReaderAt(ctx, d)
		if err != nil {
			return nil, fmt.Errorf("opening blob %s: %w", d.Digest, err)
		}
		if ra.Size() != d.Size {
			ra.Close()
			return nil, fmt.Errorf("blob %s is %d bytes in the archive, the manifest says %d: %w", d.Digest, ra.Size(), d.Size, errdefs.ErrDataLoss)
		}
		rc = newChunkReader(ctx, ra, offset, length, readSize)
	}
	if whole {
		return newVerifyReader(rc, d), nil
	}
	return rc, nil
}

// streamBlob opens a range of a blob with the Image's BlobStreamer. It
// returns nil, nil when the Image cannot stream it (no BlobStreamer, or
// errdefs.ErrNotImplemented): the caller reads through ReaderAt.
func streamBlob(ctx context.Context, im *image, d ocispec.Descriptor, offset, length int64) (io.ReadCloser, error) {
	bs, ok := im.Image.(BlobStreamer)
	if !ok {
		return nil, nil
	}
	rc, err := bs.OpenBlob(ctx, d, offset, length)
	if errdefs.IsNotImplemented(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("opening blob %s: %w", d.Digest, err)
	}
	return rc, nil
}

// chunkReader reads a range of a content.ReaderAt in order, readSize bytes
// per ReadAt, with the next read in flight while the current one is
// consumed (so a stream costs size/readSize upstream requests, and its
// throughput is not halved by waiting). It holds at most three reads.
type chunkReader struct {
	ra     content.ReaderAt
	cancel context.CancelFunc
	ch     <-chan chunk
	done   chan struct{}

	cur []byte
	err error
}

type chunk struct {
	data []byte
	err  error
}

// readAtContexter is implemented by readers whose reads can be cancelled
// (zenodo.ReaderAt).
type readAtContexter interface {
	ReadAtContext(ctx context.Context, p []byte, off int64) (int, error)
}

func newChunkReader(ctx context.Context, ra content.ReaderAt, offset, length int64, readSize int) *chunkReader {
	ctx, cancel := context.WithCancel(ctx)
	ch := make(chan chunk, 1)
	r := &chunkReader{ra: ra, cancel: cancel, ch: ch, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		defer close(ch)
		end := offset + length
		for pos := offset; pos < end; {
			n := int(min(int64(readSize), end-pos))
			buf := make([]byte, n)
			var k int
			var err error
			if rc, ok := ra.(readAtContexter); ok {
				k, err = rc.ReadAtContext(ctx, buf, pos)
			} else {
				k, err = ra.ReadAt(buf, pos)
			}
			if err == io.EOF && k == n {
				err = nil
			}
			if err == nil && k < n {
				err = io.ErrUnexpectedEOF
			}
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			if err != nil {
				k = 0 // a failed read (a digest mismatch, too) delivers nothing
			}
			select {
			case ch <- chunk{data: buf[:k], err: err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
			pos += int64(k)
		}
	}()
	return r
}

// Read implements io.Reader.
func (r *chunkReader) Read(p []byte) (int, error) {
	for len(r.cur) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		c, ok := <-r.ch
		if !ok {
			r.err = io.EOF
			return 0, io.EOF
		}
		r.cur, r.err = c.data, c.err
	}
	n := copy(p, r.cur)
	r.cur = r.cur[n:]
	return n, nil
}

// Close stops the reads and waits for the one in flight.
func (r *chunkReader) Close() error {
	r.cancel()
	<-r.done
	r.cur, r.err = nil, errClosed
	return r.ra.Close()
}

var errClosed = errors.New("read of a closed blob reader")

// verifyReader checks a whole blob against its digest and size; see
// openBlob.
type verifyReader struct {
	rc   io.ReadCloser
	d    ocispec.Descriptor
	h    hash.Hash
	n    int64
	err  error
	done bool
}

func newVerifyReader(rc io.ReadCloser, d ocispec.Descriptor) io.ReadCloser {
	if !d.Digest.Algorithm().Available() {
		return &verifyReader{rc: rc, d: d, err: fmt.Errorf("blob %s: digest algorithm unavailable: %w", d.Digest, errdefs.ErrNotImplemented)}
	}
	return &verifyReader{rc: rc, d: d, h: d.Digest.Algorithm().Hash()}
}

// Read implements io.Reader.
func (v *verifyReader) Read(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	if v.done {
		return 0, io.EOF
	}
	k, err := v.rc.Read(p)
	if int64(k) > v.d.Size-v.n {
		v.err = fmt.Errorf("blob %s is longer than its %d bytes: %w", v.d.Digest, v.d.Size, errdefs.ErrDataLoss)
		return 0, v.err
	}
	v.h.Write(p[:k])
	v.n += int64(k)
	if v.n == v.d.Size {
		if got := digest.NewDigest(v.d.Digest.Algorithm(), v.h); got != v.d.Digest {
			// Withhold the last bytes: the blob is never delivered whole.
			v.err = fmt.Errorf("blob %s: content has digest %s: %w", v.d.Digest, got, errdefs.ErrDataLoss)
			return 0, v.err
		}
		v.done = true
		return k, nil
	}
	if err == io.EOF {
		v.err = fmt.Errorf("blob %s: ended after %d of %d bytes: %w", v.d.Digest, v.n, v.d.Size, io.ErrUnexpectedEOF)
		return k, v.err
	}
	if err != nil {
		v.err = err
	}
	return k, err
}

// Close implements io.Closer.
func (v *verifyReader) Close() error { return v.rc.Close() }

// seekReader is an io.ReadSeekCloser over a blob that opens the stream
// lazily at the current offset and again after a Seek, as containerd's
// content.Copy uses to resume a download.
type seekReader struct {
	open func(offset int64) (io.ReadCloser, error)
	size int64

	mu  sync.Mutex
	pos int64
	rc  io.ReadCloser
}

var _ io.ReadSeekCloser = (*seekReader)(nil)

// Read implements io.Reader.
func (s *seekReader) Read(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pos >= s.size {
		return 0, io.EOF
	}
	if s.rc == nil {
		rc, err := s.open(s.pos)
		if err != nil {
			return 0, err
		}
		s.rc = rc
	}
	n, err := s.rc.Read(p)
	s.pos += int64(n)
	return n, err
}

// Seek implements io.Seeker.
func (s *seekReader) Seek(offset int64, whence int) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	abs := offset
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		abs += s.pos
	case io.SeekEnd:
		abs += s.size
	default:
		return s.pos, fmt.Errorf("seek: bad whence %d: %w", whence, errdefs.ErrInvalidArgument)
	}
	if abs < 0 {
		return s.pos, fmt.Errorf("seek: negative offset %d: %w", abs, errdefs.ErrInvalidArgument)
	}
	if abs != s.pos && s.rc != nil {
		s.rc.Close()
		s.rc = nil
	}
	s.pos = abs
	return abs, nil
}

// Close implements io.Closer.
func (s *seekReader) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rc == nil {
		return nil
	}
	err := s.rc.Close()
	s.rc = nil
	return err
}
