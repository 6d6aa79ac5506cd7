package archive

import (
	"bufio"
	"bytes"
	"fmt"
	"io"

	"github.com/containerd/errdefs"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

type compression int

const (
	compNone compression = iota
	compGzip
	compZstd
)

var (
	gzipMagic = []byte{0x1f, 0x8b}
	zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}
)

// maxZstdWindow bounds the memory a zstd stream may make the decoder use.
const maxZstdWindow = 128 << 20

// compressionOf tells the compression of a stream from its first bytes.
func compressionOf(magic []byte) compression {
	switch {
	case bytes.HasPrefix(magic, gzipMagic):
		return compGzip
	case bytes.HasPrefix(magic, zstdMagic):
		return compZstd
	}
	return compNone
}

// Decompress returns the decompressed content of r, whose compression is
// detected from its first bytes: gzip (a multi-member stream reads as one),
// zstd (with a window of at most 128 MiB, so memory stays bounded), or none
// (r as it is). It reads ahead of what it returns. A malformed header is an
// error wrapping errdefs.ErrInvalidArgument.
func Decompress(r io.Reader) (io.ReadCloser, error) {
	rc, _, err := decompress(r)
	return rc, err
}

// decompress is Decompress that also says which compression it found.
func decompress(r io.Reader) (io.ReadCloser, compression, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	magic, err := br.Peek(4)
	if err != nil && err != io.EOF {
		return nil, compNone, err
	}
	switch c := compressionOf(magic); c {
	case compGzip:
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, c, fmt.Errorf("reading gzip header: %v: %w", err, errdefs.ErrInvalidArgument)
		}
		return zr, c, nil
	case compZstd:
		zr, err := zstd.NewReader(br, zstd.WithDecoderMaxWindow(maxZstdWindow), zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, c, fmt.Errorf("reading zstd header: %v: %w", err, errdefs.ErrInvalidArgument)
		}
		return zr.IOReadCloser(), c, nil
	default:
		return io.NopCloser(br), c, nil
	}
}
