package seekable

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"math"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/containerd/log"
	"github.com/klauspost/compress/gzip"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"
)

// Result describes a layer written by Convert.
type Result struct {
	// TOC is the layer's table of contents, valid and indexed.
	TOC *TOC
	// TOCJSON is the TOC blob (MediaTypeTOC) and TOCDigest its digest.
	TOCJSON   []byte
	TOCDigest digest.Digest
	// DiffID is the sha256 of the uncompressed tar, which Convert leaves
	// byte for byte as it was.
	DiffID digest.Digest
	// Digest and Size describe the seekable gzip blob written.
	Digest digest.Digest
	Size   int64
	// UncompressedSize is the size of the uncompressed tar.
	UncompressedSize int64
}

// Convert re-compresses a layer's uncompressed tar stream into a seekable
// gzip written to w, and returns its TOC. The gzip stream decompresses to the
// exact bytes read from tarStream, including anything after the tar's end
// marker. Members are compressed in parallel (see WithConcurrency); memory
// stays bounded by the options, and by MaxEntries and MaxTOCSize for the TOC.
//
// A malformed tar, including one with headers over archive/tar's limits,
// gives an error matching ErrInvalidTar; a tar the TOC cannot describe
// (sparse files, hardlinks to files outside the layer, unknown entry types,
// non-UTF-8 xattr names, more than MaxEntries entries) one matching
// ErrUnsupported. Errors reading tarStream or writing w are returned wrapped.
// On error, w holds a partial stream.
func Convert(ctx context.Context, w io.Writer, tarStream io.Reader, opts ...Option) (*Result, error) {
	o, err := makeOptions(opts)
	if err != nil {
		return nil, fmt.Errorf("converting layer: %w", err)
	}
	g, gctx := errgroup.WithContext(ctx)
	c := newConverter(gctx, o, tarStream)
	for range o.concurrency {
		g.Go(c.compressLoop)
	}
	g.Go(func() error { return c.writeLoop(w) })
	g.Go(func() error {
		defer close(c.order)
		defer close(c.jobs)
		return c.readTar()
	})
	if err := g.Wait(); err != nil {
		return nil, err
	}

	toc := &TOC{Version: TOCVersion, Members: c.members, Entries: c.entries, names: c.names, usize: c.pos}
	if err := toc.checkTree(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidTar, err)
	}
	tocJSON, err := toc.MarshalJSON()
	if err != nil {
		return nil, fmt.Errorf("encoding TOC: %w", err)
	}
	if len(tocJSON) > MaxTOCSize {
		return nil, fmt.Errorf("%w: TOC of %d bytes is over the limit of %d", ErrUnsupported, len(tocJSON), MaxTOCSize)
	}
	res := &Result{
		TOC:              toc,
		TOCJSON:          tocJSON,
		TOCDigest:        digestAlgorithm.FromBytes(tocJSON),
		DiffID:           digest.NewDigest(digestAlgorithm, c.diffID),
		Digest:           digest.NewDigest(digestAlgorithm, c.outHash),
		Size:             c.written,
		UncompressedSize: c.pos,
	}
	log.G(ctx).WithFields(log.Fields{
		"diff_id": res.DiffID, "digest": res.Digest, "size": res.Size, "uncompressed_size": res.UncompressedSize,
		"members": len(toc.Members), "entries": len(toc.Entries),
	}).Debug("converted layer to seekable gzip")
	return res, nil
}

// job is one member on its way through the pipeline.
type job struct {
	index   int
	uoffset int64
	udata   []byte
	cdata   bytes.Buffer
	digest  digest.Digest
	err     error
	done    chan struct{}
}

// converter is the state of one Convert call. readTar runs in one goroutine
// and fills members in order; compressLoop runs in several; writeLoop writes
// the members in order.
type converter struct {
	ctx context.Context
	o   *options
	src io.Reader

	free  chan *job // jobs ready for reuse; bounds the pipeline
	jobs  chan *job // to the compressors
	order chan *job // to the writer, in member order

	// Owned by readTar.
	cur      *job  // member being filled, or nil
	nmembers int   // members sealed so far
	uoff     int64 // uncompressed offset of the member being filled
	pos      int64 // uncompressed bytes read so far
	srcErr   error // error from src other than io.EOF
	pipeErr  error // error from the pipeline while reading
	entries  []Entry
	names    map[string]int
	tocBytes int64 // estimate of the TOC's JSON size
	copyBuf  []byte
	fileHash hash.Hash

	// Owned by writeLoop.
	members []Member
	written int64
	diffID  hash.Hash
	outHash hash.Hash
}

func newConverter(ctx context.Context, o *options, src io.Reader) *converter {
	n := o.concurrency + 2
	c := &converter{
		ctx:      ctx,
		o:        o,
		src:      src,
		free:     make(chan *job, n),
		jobs:     make(chan *job, n),
		order:    make(chan *job, n),
		names:    make(map[string]int),
		copyBuf:  make([]byte, 32<<10),
		fileHash: sha256.New(),
		diffID:   sha256.New(),
		outHash:  sha256.New(),
	}
	for range n {
		c.free <- &job{}
	}
	return c
}

// Read feeds the tar reader, appending every byte it reads to the member
// being filled: the layer goes through unchanged.
func (c *converter) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		c.pipeErr = err
		return 0, err
	}
	n, err := c.src.Read(p)
	if n > 0 {
		if aerr := c.appendData(p[:n]); aerr != nil {
			c.pipeErr = aerr
			return 0, aerr
		}
	}
	if err != nil && err != io.EOF {
		c.srcErr = err
	}
	return n, err
}

func (c *converter) appendData(b []byte) error {
	c.pos += int64(len(b))
	for len(b) > 0 {
		if c.cur == nil {
			if err := c.take(); err != nil {
				return err
			}
		}
		k := min(int64(len(b)), c.o.maxMember-int64(len(c.cur.udata)))
		c.cur.udata = append(c.cur.udata, b[:k]...)
		b = b[k:]
		if int64(len(c.cur.udata)) == c.o.maxMember {
			if err := c.seal(); err != nil {
				return err
			}
		}
	}
	return nil
}

// take makes a free job the member being filled.
func (c *converter) take() error {
	select {
	case j := <-c.free:
		j.udata = j.udata[:0]
		j.cdata.Reset()
		j.err = nil
		j.done = make(chan struct{})
		c.cur = j
		return nil
	case <-c.ctx.Done():
		return c.ctx.Err()
	}
}

// seal sends the member being filled (possibly empty) to be compressed and
// written.
func (c *converter) seal() error {
	if c.cur == nil {
		if err := c.take(); err != nil {
			return err
		}
	}
	if c.nmembers >= MaxMembers {
		return fmt.Errorf("%w: more than %d members", ErrUnsupported, MaxMembers)
	}
	j := c.cur
	j.index, j.uoffset = c.nmembers, c.uoff
	c.cur = nil
	c.nmembers++
	c.uoff += int64(len(j.udata))
	select {
	case c.order <- j:
	case <-c.ctx.Done():
		return c.ctx.Err()
	}
	select {
	case c.jobs <- j:
		return nil
	case <-c.ctx.Done():
		return c.ctx.Err()
	}
}

func (c *converter) compressLoop() error {
	zw, err := gzip.NewWriterLevel(io.Discard, c.o.level)
	if err != nil {
		return fmt.Errorf("creating gzip writer: %w", err)
	}
	h := sha256.New()
	for j := range c.jobs {
		if err := c.ctx.Err(); err != nil {
			j.err = err
			close(j.done)
			continue
		}
		zw.Reset(&j.cdata)
		if _, err := zw.Write(j.udata); err != nil {
			j.err = fmt.Errorf("compressing member %d: %w", j.index, err)
		} else if err := zw.Close(); err != nil {
			j.err = fmt.Errorf("compressing member %d: %w", j.index, err)
		}
		h.Reset()
		h.Write(j.cdata.Bytes())
		j.digest = digest.NewDigest(digestAlgorithm, h)
		close(j.done)
	}
	return nil
}

func (c *converter) writeLoop(w io.Writer) error {
	for j := range c.order {
		select {
		case <-j.done:
		case <-c.ctx.Done():
			return c.ctx.Err()
		}
		if j.err != nil {
			return j.err
		}
		c.diffID.Write(j.udata)
		cdata := j.cdata.Bytes()
		if _, err := w.Write(cdata); err != nil {
			return fmt.Errorf("writing member %d of the seekable layer: %w", j.index, err)
		}
		c.outHash.Write(cdata)
		c.members = append(c.members, Member{
			Offset:  c.written,
			Size:    int64(len(cdata)),
			UOffset: j.uoffset,
			USize:   int64(len(j.udata)),
			Digest:  j.digest,
		})
		c.written += int64(len(cdata))
		c.free <- j // never blocks: free has room for every job
	}
	return nil
}

// readTar reads the tar stream entry by entry, cutting members and recording
// entries, then passes on what follows the tar's end marker.
func (c *converter) readTar() error {
	tr := tar.NewReader(c)
	for {
		start := c.pos
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return c.tarError(err, "reading header at offset %d", start)
		}
		if err := c.entry(tr, hdr); err != nil {
			return err
		}
	}
	if _, err := io.CopyBuffer(io.Discard, c, c.copyBuf); err != nil {
		return c.tarError(err, "reading past the end of the tar at offset %d", c.pos)
	}
	if c.cur != nil || c.nmembers == 0 {
		return c.seal()
	}
	return nil
}

// tarError classifies an error seen while reading the tar.
func (c *converter) tarError(err error, format string, args ...any) error {
	switch {
	case c.pipeErr != nil:
		return c.pipeErr
	case c.srcErr != nil:
		return fmt.Errorf("reading layer tar: %w", c.srcErr)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w: truncated at offset %d", ErrInvalidTar, c.pos)
	}
	return fmt.Errorf("%w: %s: %w", ErrInvalidTar, fmt.Sprintf(format, args...), err)
}

// entry records the entry hdr, reading its content.
func (c *converter) entry(tr *tar.Reader, hdr *tar.Header) error {
	typ, err := entryType(hdr)
	if err != nil || typ == "" {
		return err
	}
	if len(c.entries) >= MaxEntries {
		return fmt.Errorf("%w: more than %d entries", ErrUnsupported, MaxEntries)
	}
	name, err := cleanName(hdr.Name)
	if err != nil {
		return fmt.Errorf("%w: entry %d: %w", ErrInvalidTar, len(c.entries), err)
	}
	if hdr.Uid < 0 || hdr.Uid > math.MaxUint32 || hdr.Gid < 0 || hdr.Gid > math.MaxUint32 {
		return fmt.Errorf("%w: %q: uid/gid %d/%d out of range", ErrInvalidTar, name, hdr.Uid, hdr.Gid)
	}
	e := Entry{
		Name:     name,
		Type:     typ,
		Mode:     hdr.Mode & 0o7777,
		UID:      hdr.Uid,
		GID:      hdr.Gid,
		Uname:    hdr.Uname,
		Gname:    hdr.Gname,
		ModTime:  time.Unix(hdr.ModTime.Unix(), int64(hdr.ModTime.Nanosecond())).UTC(),
		Linkname: hdr.Linkname,
	}
	switch typ {
	case TypeReg:
		e.Size = hdr.Size
	case TypeChar, TypeBlock:
		if hdr.Devmajor < 0 || hdr.Devmajor > math.MaxUint32 || hdr.Devminor < 0 || hdr.Devminor > math.MaxUint32 {
			return fmt.Errorf("%w: %q: device %d:%d out of range", ErrInvalidTar, name, hdr.Devmajor, hdr.Devminor)
		}
		e.Devmajor, e.Devminor = hdr.Devmajor, hdr.Devminor
	}
	if typ != TypeSymlink && typ != TypeHardlink {
		e.Linkname = ""
	}
	c.tocBytes += 256 + 2*int64(len(e.Name)+len(e.Linkname)+len(e.Uname)+len(e.Gname))
	for k, v := range hdr.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return fmt.Errorf("%w: %q is a sparse file", ErrUnsupported, name)
		}
		xn, ok := strings.CutPrefix(k, "SCHILY.xattr.")
		if !ok {
			continue
		}
		if xn == "" || strings.IndexByte(xn, 0) >= 0 || !utf8.ValidString(xn) {
			return fmt.Errorf("%w: %q: xattr name %q", ErrUnsupported, name, xn)
		}
		if e.Xattrs == nil {
			e.Xattrs = make(map[string]string)
		}
		e.Xattrs[xn] = v
		c.tocBytes += 2 * int64(len(k)+len(v))
	}
	if c.tocBytes > MaxTOCSize {
		return fmt.Errorf("%w: its TOC would be over the limit of %d bytes", ErrUnsupported, MaxTOCSize)
	}

	// A new member at the content start of a regular file, once the
	// current member is big enough.
	if typ == TypeReg && e.Size > 0 && c.cur != nil && len(c.cur.udata) > 0 && int64(len(c.cur.udata)) >= c.o.minMember {
		if err := c.seal(); err != nil {
			return err
		}
	}
	e.Offset, e.Member, e.InnerOffset = c.pos, c.nmembers, c.pos-c.uoff
	if typ == TypeReg {
		c.fileHash.Reset()
		n, err := io.CopyBuffer(c.fileHash, tr, c.copyBuf)
		if err != nil {
			return c.tarError(err, "reading content of %q", name)
		}
		if n != e.Size {
			return fmt.Errorf("%w: %q: read %d of %d bytes", ErrInvalidTar, name, n, e.Size)
		}
		e.Digest = digest.NewDigest(digestAlgorithm, c.fileHash)
	}

	i := len(c.entries)
	c.entries = append(c.entries, e)
	t := TOC{Entries: c.entries, names: c.names}
	if err := t.add(i); err != nil {
		c.entries = c.entries[:i]
		if errors.Is(err, errNoLinkTarget) {
			return fmt.Errorf("%w: hardlink %q: %w", ErrUnsupported, name, err)
		}
		return fmt.Errorf("%w: %q: %w", ErrInvalidTar, name, err)
	}
	return nil
}

// entryType returns the TOC type of a tar entry, or "" for entries the TOC
// leaves out (PAX global headers).
func entryType(hdr *tar.Header) (string, error) {
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeCont:
		return TypeReg, nil
	case tar.TypeDir:
		return TypeDir, nil
	case tar.TypeSymlink:
		return TypeSymlink, nil
	case tar.TypeLink:
		return TypeHardlink, nil
	case tar.TypeChar:
		return TypeChar, nil
	case tar.TypeBlock:
		return TypeBlock, nil
	case tar.TypeFifo:
		return TypeFifo, nil
	case tar.TypeXGlobalHeader:
		return "", nil
	case tar.TypeGNUSparse:
		return "", fmt.Errorf("%w: %q is a sparse file", ErrUnsupported, hdr.Name)
	}
	return "", fmt.Errorf("%w: %q has tar type %q", ErrUnsupported, hdr.Name, hdr.Typeflag)
}
