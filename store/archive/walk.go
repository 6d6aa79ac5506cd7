package archive

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"

	"github.com/containerd/errdefs"
)

const (
	// walkWindow is how much the header walker reads at a time: enough for
	// the last byte of an entry's data, its padding and the next header
	// (with a PAX header before it) in one ranged read.
	walkWindow = 4 << 10
	// maxHeaderBytes bounds the bytes one tar entry's headers (PAX and GNU
	// long-name records included) may take.
	maxHeaderBytes = 64 << 10
	// maxNameLen bounds the length of an entry name or link target.
	maxNameLen = 1024
	// maxLinkDepth bounds how many links are followed resolving a name.
	maxLinkDepth = 16
	// blockSize is the tar block size.
	blockSize = 512
)

// entry is a file of the outer tar.
type entry struct {
	typ    byte   // tar.TypeReg, tar.TypeSymlink or tar.TypeLink
	offset int64  // of the data, for regular files
	size   int64  // of the data, for regular files
	link   string // cleaned link target, archive-root relative
}

// errHeaderTooLarge is returned by the header reader when one entry's
// headers exceed maxHeaderBytes.
var errHeaderTooLarge = fmt.Errorf("tar header larger than %d bytes: %w", maxHeaderBytes, errdefs.ErrInvalidArgument)

// headerReader is an io.ReadSeeker over an io.ReaderAt for archive/tar: Seek
// does no I/O, reads go through a small window, so walking the headers reads
// only the header blocks and the last byte before each (tar checks it to
// detect truncation).
type headerReader struct {
	ra     io.ReaderAt
	size   int64
	pos    int64
	buf    []byte
	bufOff int64
	// budget is how many more bytes Read may return before the current
	// Next call must have finished; it bounds a single entry's headers.
	budget int64
}

func (r *headerReader) Read(p []byte) (int, error) {
	if r.pos >= r.size {
		return 0, io.EOF
	}
	if r.budget <= 0 {
		return 0, errHeaderTooLarge
	}
	if int64(len(p)) > r.budget {
		p = p[:r.budget]
	}
	if r.pos < r.bufOff || r.pos >= r.bufOff+int64(len(r.buf)) {
		n := max(int64(walkWindow), int64(len(p)))
		n = min(n, r.size-r.pos)
		if int64(cap(r.buf)) < n {
			r.buf = make([]byte, n)
		}
		r.buf = r.buf[:n]
		m, err := r.ra.ReadAt(r.buf, r.pos)
		r.buf = r.buf[:m]
		r.bufOff = r.pos
		if m == 0 {
			if err == nil || err == io.EOF {
				return 0, io.ErrUnexpectedEOF
			}
			return 0, &ioError{err}
		}
	}
	n := copy(p, r.buf[r.pos-r.bufOff:])
	r.pos += int64(n)
	r.budget -= int64(n)
	return n, nil
}

func (r *headerReader) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += r.pos
	case io.SeekEnd:
		offset += r.size
	default:
		return 0, fmt.Errorf("seek: bad whence %d: %w", whence, errdefs.ErrInvalidArgument)
	}
	if offset < 0 {
		return 0, fmt.Errorf("seek: negative offset: %w", errdefs.ErrInvalidArgument)
	}
	r.pos = offset
	return offset, nil
}

// walkResult is what a header walk found.
type walkResult struct {
	entries map[string]entry
}

// walk reads the tar headers of the archive in ra and returns its files. It
// rejects names that are absolute or contain "..", device files, sparse
// files and duplicates, and stops after maxEntries entries.
func walk(ctx context.Context, ra io.ReaderAt, size int64, maxEntries int) (*walkResult, error) {
	hr := &headerReader{ra: ra, size: size}
	tr := tar.NewReader(hr)
	res := &walkResult{entries: make(map[string]entry)}
	if size == 0 {
		return nil, fmt.Errorf("empty archive: %w", errdefs.ErrInvalidArgument)
	}
	// end is where the last entry's padded data ends; the two zero blocks
	// that end a tar must follow it.
	var end int64
	for n := 0; ; n++ {
		if n%256 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		// One entry's headers get maxHeaderBytes, plus the two bytes
		// tar reads to check the previous entry and its padding.
		hr.budget = maxHeaderBytes + 2
		hdr, err := tr.Next()
		if err == io.EOF {
			// archive/tar takes a stream cut in padding or at a header
			// boundary for a clean end; the end-of-archive blocks tell.
			if hr.pos < end+2*blockSize {
				return nil, fmt.Errorf("tar ends at offset %d without its end-of-archive blocks: archive truncated: %w", hr.pos, ErrCorrupt)
			}
			break
		}
		if err != nil {
			return nil, tarError(err, hr.pos)
		}
		if n >= maxEntries {
			return nil, fmt.Errorf("archive has more than %d entries: %w", maxEntries, errdefs.ErrInvalidArgument)
		}
		dataOff := hr.pos
		end = dataOff
		if hdr.Typeflag == tar.TypeReg || hdr.Typeflag == tar.TypeCont {
			end += (hdr.Size + blockSize - 1) / blockSize * blockSize
		}
		name, err := cleanName(hdr.Name)
		if err != nil {
			return nil, err
		}
		var e entry
		switch hdr.Typeflag {
		case tar.TypeReg, tar.TypeCont:
			if dataOff > size || hdr.Size > size-dataOff {
				return nil, fmt.Errorf("tar entry %q: %d bytes at offset %d run past the end of the archive (%d bytes): %w",
					hdr.Name, hdr.Size, dataOff, size, ErrCorrupt)
			}
			if isSparse(hdr) {
				return nil, fmt.Errorf("tar entry %q is a sparse file: %w", hdr.Name, errdefs.ErrInvalidArgument)
			}
			e = entry{typ: tar.TypeReg, offset: dataOff, size: hdr.Size}
		case tar.TypeSymlink:
			if path.IsAbs(hdr.Linkname) {
				return nil, fmt.Errorf("tar entry %q: symlink to absolute path %q: %w", hdr.Name, hdr.Linkname, errdefs.ErrInvalidArgument)
			}
			target, err := cleanName(path.Join(path.Dir(name), hdr.Linkname))
			if err != nil {
				return nil, fmt.Errorf("tar entry %q: symlink target %q: %w", hdr.Name, hdr.Linkname, err)
			}
			e = entry{typ: tar.TypeSymlink, link: target}
		case tar.TypeLink:
			target, err := cleanName(hdr.Linkname)
			if err != nil {
				return nil, fmt.Errorf("tar entry %q: hard link target: %w", hdr.Name, err)
			}
			e = entry{typ: tar.TypeLink, link: target}
		case tar.TypeDir, tar.TypeXGlobalHeader:
			continue
		case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
			return nil, fmt.Errorf("tar entry %q is a device or fifo (type %q): %w", hdr.Name, hdr.Typeflag, errdefs.ErrInvalidArgument)
		case tar.TypeGNUSparse:
			return nil, fmt.Errorf("tar entry %q is a sparse file: %w", hdr.Name, errdefs.ErrInvalidArgument)
		default:
			return nil, fmt.Errorf("tar entry %q has unsupported type %q: %w", hdr.Name, hdr.Typeflag, errdefs.ErrInvalidArgument)
		}
		if _, dup := res.entries[name]; dup {
			return nil, fmt.Errorf("tar entry %q appears twice: %w", name, errdefs.ErrInvalidArgument)
		}
		res.entries[name] = e
	}
	return res, nil
}

// ioError marks an error of the underlying io.ReaderAt, which archive/tar
// passes through, so that it is not mistaken for bad input.
type ioError struct{ err error }

func (e *ioError) Error() string { return e.err.Error() }
func (e *ioError) Unwrap() error { return e.err }

// tarError classifies an error from archive/tar.
func tarError(err error, pos int64) error {
	var ioe *ioError
	switch {
	case errors.As(err, &ioe):
		return fmt.Errorf("reading tar header near offset %d: %w", pos, ioe.err)
	case errors.Is(err, errdefs.ErrInvalidArgument), errors.Is(err, ErrCorrupt):
		return fmt.Errorf("reading tar header near offset %d: %w", pos, err)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("reading tar header near offset %d: archive truncated: %w", pos, ErrCorrupt)
	}
	// archive/tar reports malformed headers and fields with plain errors.
	return fmt.Errorf("reading tar header near offset %d: %v: %w", pos, err, ErrCorrupt)
}

// isSparse tells whether a header describes a sparse file, whose data in the
// archive is not its logical content.
func isSparse(hdr *tar.Header) bool {
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return true
		}
	}
	return false
}

// cleanName turns a tar entry name into the archive-relative form used as a
// key ("./blobs/sha256/x" and "blobs/sha256/x/" become "blobs/sha256/x"),
// rejecting absolute names, ".." components and names that are too long.
func cleanName(name string) (string, error) {
	if len(name) > maxNameLen {
		return "", fmt.Errorf("tar entry name of %d bytes, more than %d: %w", len(name), maxNameLen, errdefs.ErrInvalidArgument)
	}
	if strings.HasPrefix(name, "/") {
		return "", fmt.Errorf("tar entry %q has an absolute path: %w", name, errdefs.ErrInvalidArgument)
	}
	if strings.ContainsRune(name, 0) {
		return "", fmt.Errorf("tar entry %q contains NUL: %w", name, errdefs.ErrInvalidArgument)
	}
	for part := range strings.SplitSeq(name, "/") {
		if part == ".." {
			return "", fmt.Errorf("tar entry %q leaves the archive root: %w", name, errdefs.ErrInvalidArgument)
		}
	}
	c := path.Clean(name)
	if c == "." || c == "" {
		return "", fmt.Errorf("tar entry %q has an empty name: %w", name, errdefs.ErrInvalidArgument)
	}
	return c, nil
}

// resolve follows links from name to a regular file, returning it and its
// name.
func resolve(entries map[string]entry, name string) (entry, string, error) {
	orig := name
	for range maxLinkDepth {
		e, ok := entries[name]
		if !ok {
			return entry{}, "", fmt.Errorf("archive has no file %q: %w", orig, errdefs.ErrNotFound)
		}
		if e.typ == tar.TypeReg {
			return e, name, nil
		}
		name = e.link
	}
	return entry{}, "", fmt.Errorf("resolving %q: more than %d links: %w", orig, maxLinkDepth, errdefs.ErrInvalidArgument)
}
