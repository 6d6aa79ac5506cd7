package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/zenodo"
)

// source reads byte ranges of an archive file.
type source interface {
	// openRange returns a reader of exactly bytes [off, off+n) of the file.
	openRange(ctx context.Context, off, n int64) (io.ReadCloser, error)
	// remote reports whether reads cost requests (and so are worth caching).
	remote() bool
}

// remoteSource reads a record's file by HTTP range, one request per call.
type remoteSource struct {
	client *zenodo.Client
	recID  string
	key    string
}

func (s *remoteSource) openRange(ctx context.Context, off, n int64) (io.ReadCloser, error) {
	return s.client.OpenRange(ctx, s.recID, s.key, off, n)
}

func (s *remoteSource) remote() bool { return true }

// localSource reads a local copy of the archive (a spool file).
type localSource struct {
	ra io.ReaderAt
}

func (s *localSource) openRange(ctx context.Context, off, n int64) (io.ReadCloser, error) {
	return io.NopCloser(io.NewSectionReader(s.ra, off, n)), nil
}

func (s *localSource) remote() bool { return false }

// span is a blob's byte range [off, end) in the archive.
type span struct{ off, end int64 }

// Bounds of archiveFile's read-ahead state.
const (
	maxBlocks      = 8
	maxStreams     = 4
	maxStreamSkip  = 1 << 20
	maxBlockCopies = 2
)

// archiveFile is the io.ReaderAt the archive package reads image.tar
// through, for everything but lazy layer reads (which Layer does itself):
// the metadata range from memory, sequential reads of a blob (a layer
// fetched whole through the content.Provider) from one streamed request,
// and other small reads (a tar header walk) from blocks of at least the
// minimum request size, of which the last few are kept.
type archiveFile struct {
	ctx        context.Context // the image's life; reads have no context of their own
	src        source
	size       int64
	meta       []byte
	blobs      []span // sorted by offset; nil when unknown (header walk)
	minRequest int64

	mu      sync.Mutex
	blocks  []block    // most recently used last
	streams []*seqRead // idle streams, most recently used last
	closed  bool
}

type block struct {
	off  int64
	data []byte
}

// seqRead is an open ranged request positioned at pos, ending at end.
type seqRead struct {
	rc       io.ReadCloser
	pos, end int64
}

func newArchiveFile(ctx context.Context, src source, size int64, meta []byte, blobs []span, minRequest int64) *archiveFile {
	sort.Slice(blobs, func(i, j int) bool { return blobs[i].off < blobs[j].off })
	return &archiveFile{ctx: ctx, src: src, size: size, meta: meta, blobs: blobs, minRequest: minRequest}
}

// ReadAt implements io.ReaderAt.
func (f *archiveFile) ReadAt(p []byte, off int64) (int, error) {
	return f.readAt(f.ctx, p, off)
}

func (f *archiveFile) readAt(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("reading archive at %d: %w", off, errdefs.ErrInvalidArgument)
	}
	if off >= f.size {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	want := len(p)
	if rest := f.size - off; int64(want) > rest {
		p = p[:rest]
	}
	if err := f.fill(ctx, p, off); err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("reading archive at %d: %w", off, errors.Join(context.Cause(ctx), err))
		}
		return 0, err
	}
	if len(p) < want {
		return len(p), io.EOF
	}
	return len(p), nil
}

// fill reads all of p from off, which lies inside the file.
func (f *archiveFile) fill(ctx context.Context, p []byte, off int64) error {
	end := off + int64(len(p))
	if end <= int64(len(f.meta)) {
		copy(p, f.meta[off:end])
		return nil
	}
	if f.fromBlocks(p, off) {
		return nil
	}
	if s := f.takeStream(off); s != nil {
		err := f.readStream(ctx, s, p, off)
		if err == nil {
			return nil
		}
		log.G(ctx).WithError(err).Debug("remote: archive stream broken, reading again")
	}
	b, ok := f.blobAt(off)
	switch {
	case ok && b.end-off > f.minRequest:
		// A large blob read through the content.Provider: stream it.
		return f.openStream(ctx, p, off, b.end)
	case !ok && f.blobs == nil && f.continuesBlock(off):
		// Blobs unknown, and reads go on where the last block ended.
		return f.openStream(ctx, p, off, f.size)
	}
	return f.fetchBlock(ctx, p, off)
}

func (f *archiveFile) fromBlocks(p []byte, off int64) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := len(f.blocks) - 1; i >= 0; i-- {
		b := f.blocks[i]
		if off >= b.off && off+int64(len(p)) <= b.off+int64(len(b.data)) {
			copy(p, b.data[off-b.off:])
			f.blocks = append(append(f.blocks[:i:i], f.blocks[i+1:]...), b)
			return true
		}
	}
	return false
}

// continuesBlock reports whether a kept block ends at off.
func (f *archiveFile) continuesBlock(off int64) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, b := range f.blocks {
		if b.off+int64(len(b.data)) == off {
			return true
		}
	}
	return false
}

// takeStream removes from the pool an idle stream that can serve off.
func (f *archiveFile) takeStream(off int64) *seqRead {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := len(f.streams) - 1; i >= 0; i-- {
		s := f.streams[i]
		if off >= s.pos && off-s.pos <= maxStreamSkip && off < s.end {
			f.streams = append(f.streams[:i:i], f.streams[i+1:]...)
			return s
		}
	}
	return nil
}

// readStream reads p at off from s, then returns s to the pool (or closes
// it when it is used up or broken).
func (f *archiveFile) readStream(ctx context.Context, s *seqRead, p []byte, off int64) error {
	n := min(int64(len(p)), s.end-off)
	var err error
	if skip := off - s.pos; skip > 0 {
		_, err = io.CopyN(io.Discard, s.rc, skip)
		s.pos += skip
	}
	if err == nil {
		var m int
		m, err = io.ReadFull(s.rc, p[:n])
		s.pos += int64(m)
	}
	if err != nil {
		s.rc.Close()
		return err
	}
	f.putStream(s)
	if int64(len(p)) > n {
		// The read runs past the stream's end (past its blob).
		return f.fill(ctx, p[n:], off+n)
	}
	return nil
}

func (f *archiveFile) putStream(s *seqRead) {
	if s.pos >= s.end {
		s.rc.Close()
		return
	}
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		s.rc.Close()
		return
	}
	f.streams = append(f.streams, s)
	var drop *seqRead
	if len(f.streams) > maxStreams {
		drop = f.streams[0]
		f.streams = f.streams[1:]
	}
	f.mu.Unlock()
	if drop != nil {
		drop.rc.Close()
	}
}

// openStream starts one request for [off, end) and reads p from it.
func (f *archiveFile) openStream(ctx context.Context, p []byte, off, end int64) error {
	rc, err := f.src.openRange(ctx, off, end-off)
	if err != nil {
		return fmt.Errorf("reading archive at %d: %w", off, err)
	}
	return f.readStream(ctx, &seqRead{rc: rc, pos: off, end: end}, p, off)
}

// blobAt returns the blob holding off, when blobs are known.
func (f *archiveFile) blobAt(off int64) (span, bool) {
	i := sort.Search(len(f.blobs), func(i int) bool { return f.blobs[i].end > off })
	if i < len(f.blobs) && f.blobs[i].off <= off {
		return f.blobs[i], true
	}
	return span{}, false
}

// fetchBlock reads at least the minimum request from off in one request,
// keeps it, and serves p from it.
func (f *archiveFile) fetchBlock(ctx context.Context, p []byte, off int64) error {
	n := min(max(int64(len(p)), f.minRequest), f.size-off)
	data, err := f.read(ctx, off, n)
	if err != nil {
		return err
	}
	copy(p, data)
	f.mu.Lock()
	f.blocks = append(f.blocks, block{off: off, data: data})
	if len(f.blocks) > maxBlocks {
		f.blocks = f.blocks[1:]
	}
	f.mu.Unlock()
	return nil
}

// read reads [off, off+n) with one request, trying again when the body is
// cut short.
func (f *archiveFile) read(ctx context.Context, off, n int64) ([]byte, error) {
	data := make([]byte, n)
	var got int64
	var lastErr error
	for attempt := 0; attempt <= maxBlockCopies && got < n; attempt++ {
		rc, err := f.src.openRange(ctx, off+got, n-got)
		if err != nil {
			return nil, fmt.Errorf("reading archive at %d: %w", off+got, err)
		}
		m, err := io.ReadFull(rc, data[got:])
		rc.Close()
		got += int64(m)
		lastErr = err
	}
	if got < n {
		return nil, fmt.Errorf("reading archive at %d: %w", off+got, lastErr)
	}
	return data, nil
}

// Close closes the idle streams.
func (f *archiveFile) Close() error {
	f.mu.Lock()
	streams := f.streams
	f.streams, f.blocks, f.closed = nil, nil, true
	f.mu.Unlock()
	for _, s := range streams {
		s.rc.Close()
	}
	return nil
}
