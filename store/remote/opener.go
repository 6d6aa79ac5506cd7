package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/singleflight"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/internal/fsutil"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/archive"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/zenodo"
)

// Opener opens images archived in Zenodo records for lazy reads, and keeps
// them open: opening the same record again costs nothing. It is safe for
// concurrent use.
type Opener struct {
	client *zenodo.Client
	o      *options
	state  stateDir
	mem    *memCache
	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc

	sf singleflight.Group

	mu      sync.Mutex
	refs    map[string]refEntry       // resolved references, by refKey
	images  map[string]*Image         // by record id and file key
	opened  map[string]*zenodo.Record // records of the open images, by id
	tempDir string                    // spool files without a state directory
	closed  bool
}

type refEntry struct {
	rec     *zenodo.Record
	expires time.Time
}

// NewOpener returns an Opener reading records through client (whose request
// budget, retries and timeouts every request goes through).
func NewOpener(client *zenodo.Client, opts ...Option) *Opener {
	o := makeOptions(opts)
	ctx, cancel := context.WithCancel(context.Background())
	return &Opener{
		client: client,
		o:      o,
		state:  stateDir{dir: o.stateDir},
		mem:    newMemCache(o.memCache),
		ctx:    ctx,
		cancel: cancel,
		refs:   map[string]refEntry{},
		images: map[string]*Image{},
		opened: map[string]*zenodo.Record{},
	}
}

// Close closes every image the Opener opened: background fills stop, reads
// fail, and spool files outside the state directory are removed. The cache
// given with WithCache is not closed.
func (op *Opener) Close() error {
	op.mu.Lock()
	if op.closed {
		op.mu.Unlock()
		return nil
	}
	op.closed = true
	imgs := op.images
	op.images = map[string]*Image{}
	tmp := op.tempDir
	op.mu.Unlock()
	op.cancel()
	var errs []error
	for _, img := range imgs {
		errs = append(errs, img.close())
	}
	if tmp != "" {
		errs = append(errs, os.RemoveAll(tmp))
	}
	return errors.Join(errs...)
}

// OpenByDOI opens the image of the record a DOI names ("10.5281/zenodo.123",
// or any form zenodo.ParseReference accepts), as the snapshotter finds it
// in a layer's labels. A version DOI opened before with the same state
// directory (WithStateDir) is opened from there without any request, so it
// works offline.
func (op *Opener) OpenByDOI(ctx context.Context, doi string) (*Image, error) {
	ref, err := zenodo.ParseReference(doi)
	if err != nil {
		return nil, err
	}
	return op.Open(ctx, ref)
}

// Open opens the image of the record ref names. The record is resolved
// (a version DOI costs one request, a concept or a tag what zenodo's
// Resolve needs; resolutions are remembered for the TTL), and its archive
// file chosen as the Python donodo does: the file image.tar, else the one
// file whose name starts with "image.tar", else the one file whose name
// contains ".tar" (a record with none is ErrNoImage, one with several
// ErrAmbiguous). Then:
//
//   - format v1 (image.tar with image.tar.index.json): one GET of the index
//     and one ranged GET of all metadata blobs, kept in memory and in the
//     state directory: at most 3 requests for a version DOI, 0 when it is
//     in the state directory;
//   - a .tar without index: the tar headers are read by range;
//   - a compressed archive (.tar.gz, the Python donodo's image.tar.gz), or
//     a server that ignores Range: the file is downloaded once into a spool
//     file (under the state directory, where it survives restarts) and
//     served from there.
//
// A pinned digest (ref.Digest) must be the root or one of its manifests.
// Concurrent Opens of the same reference share one opening; ctx bounds the
// wait, not the shared work (which the Opener's Close bounds).
func (op *Opener) Open(ctx context.Context, ref zenodo.Reference) (*Image, error) {
	op.mu.Lock()
	closed := op.closed
	op.mu.Unlock()
	if closed {
		return nil, fmt.Errorf("opening %s: opener closed: %w", ref, errdefs.ErrUnavailable)
	}
	ch := op.sf.DoChan("ref\x00"+refKey(ref), func() (any, error) {
		// The shared work keeps ctx's values but runs for every caller: the
		// Opener's Close, not ctx, cancels it.
		work, cancel := context.WithCancel(context.WithoutCancel(ctx))
		stop := context.AfterFunc(op.ctx, cancel)
		defer stop()
		defer cancel()
		return op.open(work, ref)
	})
	var img *Image
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		img = r.Val.(*Image)
	case <-ctx.Done():
		return nil, fmt.Errorf("opening %s: %w", ref, context.Cause(ctx))
	}
	if err := img.checkPin(ctx, ref.Digest); err != nil {
		return nil, fmt.Errorf("opening %s: %w", ref, err)
	}
	return img, nil
}

func (op *Opener) open(ctx context.Context, ref zenodo.Reference) (*Image, error) {
	start := time.Now()
	rec, err := op.resolve(ctx, ref)
	if err != nil {
		return nil, err
	}
	file, err := chooseFile(rec)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", ref, err)
	}
	k := rec.RecordID() + "\x00" + file.Key
	op.mu.Lock()
	img := op.images[k]
	op.mu.Unlock()
	if img != nil {
		return img, nil
	}
	v, err, _ := op.sf.Do("image\x00"+k, func() (any, error) {
		op.mu.Lock()
		img := op.images[k]
		op.mu.Unlock()
		if img != nil {
			return img, nil
		}
		img, err := op.openImage(ctx, rec, file)
		op.o.emit(Event{Kind: EventOpen, Record: rec.RecordID(), Mode: modeOf(img), Duration: time.Since(start), Err: err})
		if err != nil {
			return nil, err
		}
		op.mu.Lock()
		defer op.mu.Unlock()
		if op.closed {
			img.close()
			return nil, fmt.Errorf("opening %s: opener closed: %w", ref, errdefs.ErrUnavailable)
		}
		op.images[k] = img
		op.opened[rec.RecordID()] = rec
		return img, nil
	})
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", ref, err)
	}
	return v.(*Image), nil
}

func modeOf(img *Image) string {
	if img == nil {
		return ""
	}
	return img.mode
}

// resolve finds the record ref names: from the state directory for a
// version DOI seen before, from memory within the TTL, else from Zenodo
// (falling back to the state directory when Zenodo is unreachable).
func (op *Opener) resolve(ctx context.Context, ref zenodo.Reference) (*zenodo.Record, error) {
	if ref.Tag == "" {
		// A record id that is a version's: it names that version forever.
		op.mu.Lock()
		rec := op.opened[ref.RecID]
		op.mu.Unlock()
		if rec != nil {
			return rec, nil
		}
		if rec, ok := op.state.loadRecord(ref.RecID); ok {
			return rec, nil
		}
	}
	key := refKey(ref)
	now := time.Now()
	op.mu.Lock()
	e, ok := op.refs[key]
	op.mu.Unlock()
	if ok && now.Before(e.expires) {
		return e.rec, nil
	}
	rec, err := op.client.Resolve(ctx, ref)
	if err != nil {
		if !errdefs.IsNotFound(err) && !errdefs.IsInvalidArgument(err) {
			if recID, ok := op.state.loadRef(ref); ok {
				if rec, ok := op.state.loadRecord(recID); ok {
					log.G(ctx).WithError(err).WithFields(log.Fields{"ref": key, "record": recID}).
						Warn("remote: Zenodo unreachable, using the record this reference resolved to before")
					return rec, nil
				}
			}
		}
		return nil, err
	}
	op.mu.Lock()
	if len(op.refs) >= op.o.maxRecords {
		for k, e := range op.refs {
			if !now.Before(e.expires) || len(op.refs) >= op.o.maxRecords {
				delete(op.refs, k)
			}
		}
	}
	op.refs[key] = refEntry{rec: rec, expires: now.Add(op.o.ttl)}
	op.mu.Unlock()
	if err := op.state.saveRecord(rec); err != nil {
		log.G(ctx).WithError(err).Warn("remote: saving record in the state directory")
	}
	if rec.RecordID() != ref.RecID || ref.Tag != "" {
		if err := op.state.saveRef(ref, rec.RecordID()); err != nil {
			log.G(ctx).WithError(err).Warn("remote: saving reference in the state directory")
		}
	}
	return rec, nil
}

// chooseFile picks the archive file of a record, as the Python donodo does.
func chooseFile(rec *zenodo.Record) (zenodo.File, error) {
	if f, ok := rec.File(archive.ArchiveFileName); ok {
		return f, nil
	}
	var byPrefix, byTar []zenodo.File
	for _, f := range rec.Files {
		if strings.HasSuffix(f.Key, ".index.json") {
			continue
		}
		if strings.HasPrefix(f.Key, archive.ArchiveFileName) {
			byPrefix = append(byPrefix, f)
		}
		if strings.Contains(f.Key, ".tar") {
			byTar = append(byTar, f)
		}
	}
	names := func(fs []zenodo.File) string {
		var n []string
		for _, f := range fs {
			n = append(n, fmt.Sprintf("%q", f.Key))
		}
		slices.Sort(n)
		return strings.Join(n, ", ")
	}
	switch {
	case len(byPrefix) == 1:
		return byPrefix[0], nil
	case len(byPrefix) > 1:
		return zenodo.File{}, fmt.Errorf("record %s: files %s all start with %q: %w", rec.RecordID(), names(byPrefix), archive.ArchiveFileName, ErrAmbiguous)
	case len(byTar) == 1:
		return byTar[0], nil
	case len(byTar) > 1:
		return zenodo.File{}, fmt.Errorf("record %s: files %s could all be the image archive: %w", rec.RecordID(), names(byTar), ErrAmbiguous)
	}
	var all []string
	for _, f := range rec.Files {
		all = append(all, fmt.Sprintf("%q", f.Key))
	}
	if len(all) == 0 {
		all = []string{"none"}
	}
	return zenodo.File{}, fmt.Errorf("record %s: no file named %s* or containing .tar among its files (%s): %w",
		rec.RecordID(), archive.ArchiveFileName, strings.Join(all, ", "), ErrNoImage)
}

// compressedName reports whether a file name says it is a compressed archive.
func compressedName(key string) bool {
	k := strings.ToLower(key)
	for _, s := range []string{".gz", ".tgz", ".zst", ".zstd"} {
		if strings.HasSuffix(k, s) {
			return true
		}
	}
	return false
}

// openImage opens the archive file of a record.
func (op *Opener) openImage(ctx context.Context, rec *zenodo.Record, file zenodo.File) (_ *Image, retErr error) {
	recID := rec.RecordID()
	ictx, cancel := context.WithCancel(op.ctx)
	img := &Image{op: op, o: op.o, ctx: ictx, cancel: cancel, rec: rec, file: file,
		layers: map[digest.Digest]*Layer{}, byTOC: map[digest.Digest]ocispec.Descriptor{}}
	defer func() {
		if retErr != nil {
			cancel()
		}
	}()
	dir := op.state.imageDir(recID, file.Key)
	remote := &remoteSource{client: op.client, recID: recID, key: file.Key}
	spoolPath := ""
	if dir != "" {
		spoolPath = filepath.Join(dir, "spool.tar")
	}

	// From the state directory.
	if dir != "" {
		if fileExists(spoolPath) {
			if err := op.openSpooled(ctx, img, spoolPath, false); err == nil {
				img.mode = ModeState
				return img, nil
			} else {
				log.G(ctx).WithError(err).Warn("remote: stored spool file unusable, downloading again")
			}
		}
		idxData, err1 := fsutil.ReadFileLimit(filepath.Join(dir, "index.json"), archive.MaxIndexSize)
		meta, err2 := fsutil.ReadFileLimit(filepath.Join(dir, "metadata"), op.o.maxMetadata)
		if err1 == nil && err2 == nil {
			if err := op.openIndexed(ctx, img, remote, idxData, meta); err == nil {
				img.mode = ModeState
				return img, nil
			} else {
				log.G(ctx).WithError(err).Warn("remote: stored archive index unusable, fetching it again")
			}
		}
	}

	idxFile, hasIndex := rec.File(file.Key + ".index.json")
	var fallback error
	switch {
	case compressedName(file.Key):
		fallback = fmt.Errorf("%s is compressed", file.Key)
	case hasIndex:
		err := op.fetchIndexed(ctx, img, remote, idxFile, dir)
		if err == nil {
			img.mode = ModeIndex
			return img, nil
		}
		if !errors.Is(err, zenodo.ErrRangeUnsupported) {
			return nil, err
		}
		fallback = err
	default:
		err := op.openWalk(ctx, img, remote)
		if err == nil {
			img.mode = ModeWalk
			return img, nil
		}
		if !errors.Is(err, zenodo.ErrRangeUnsupported) {
			return nil, err
		}
		fallback = err
	}
	op.o.emit(Event{Kind: EventFallback, Record: recID, Mode: ModeSpool, Err: fallback})
	log.G(ctx).WithError(fallback).WithFields(log.Fields{"record": recID, "file": file.Key}).Info("remote: downloading the archive whole")
	if err := op.openSpooled(ctx, img, spoolPath, true); err != nil {
		return nil, err
	}
	img.mode = ModeSpool
	return img, nil
}

// fetchIndexed opens a format v1 archive: its index (1 request) and its
// metadata range (1 request), stored in dir when there is one.
func (op *Opener) fetchIndexed(ctx context.Context, img *Image, src *remoteSource, idxFile zenodo.File, dir string) error {
	recID := img.rec.RecordID()
	if idxFile.Size > archive.MaxIndexSize {
		return fmt.Errorf("%s of record %s is %d bytes, more than %d: %w", idxFile.Key, recID, idxFile.Size, archive.MaxIndexSize, errdefs.ErrInvalidArgument)
	}
	rc, err := op.client.Open(ctx, recID, idxFile.Key)
	if err != nil {
		return fmt.Errorf("fetching archive index: %w", err)
	}
	idxData, err := io.ReadAll(io.LimitReader(rc, archive.MaxIndexSize+1))
	rc.Close()
	if err != nil {
		return fmt.Errorf("fetching %s of record %s: %w", idxFile.Key, recID, err)
	}
	idx, err := archive.ParseIndex(idxData)
	if err != nil {
		return fmt.Errorf("%s of record %s: %w", idxFile.Key, recID, err)
	}
	if idx.ArchiveSize != img.file.Size {
		return fmt.Errorf("%s of record %s is for an archive of %d bytes, %s has %d: %w",
			idxFile.Key, recID, idx.ArchiveSize, img.file.Key, img.file.Size, errdefs.ErrInvalidArgument)
	}
	var meta []byte
	if n := idx.MetadataEnd; n > 0 && n <= op.o.maxMetadata {
		meta = make([]byte, n)
		rc, err := src.openRange(ctx, 0, n)
		if err != nil {
			return fmt.Errorf("fetching metadata of %s of record %s: %w", img.file.Key, recID, err)
		}
		_, err = io.ReadFull(rc, meta)
		rc.Close()
		if err != nil {
			return fmt.Errorf("fetching metadata of %s of record %s: %w", img.file.Key, recID, err)
		}
	}
	if err := op.openIndexed(ctx, img, src, idxData, meta); err != nil {
		return err
	}
	if meta == nil && img.file.Size > 0 {
		// No metadata range was read: probe for range support.
		if err := img.af.fetchBlock(ctx, make([]byte, 1), 0); err != nil {
			img.af.Close()
			return err
		}
	}
	if dir != "" {
		err := errors.Join(fsutil.WriteFileAtomic(filepath.Join(dir, "metadata"), meta, 0o600), fsutil.WriteFileAtomic(filepath.Join(dir, "index.json"), idxData, 0o600))
		if err != nil {
			log.G(ctx).WithError(err).Warn("remote: saving archive index in the state directory")
		}
	}
	return nil
}

// openIndexed opens a format v1 archive from its index and metadata bytes.
func (op *Opener) openIndexed(ctx context.Context, img *Image, src *remoteSource, idxData, meta []byte) error {
	idx, err := archive.ParseIndex(idxData)
	if err != nil {
		return err
	}
	if idx.ArchiveSize != img.file.Size {
		return fmt.Errorf("archive index is for %d bytes, %s has %d: %w", idx.ArchiveSize, img.file.Key, img.file.Size, errdefs.ErrInvalidArgument)
	}
	if int64(len(meta)) > idx.MetadataEnd {
		meta = meta[:idx.MetadataEnd]
	}
	blobs := make([]span, 0, len(idx.Blobs))
	for _, b := range idx.Blobs {
		blobs = append(blobs, span{b.Offset, b.Offset + b.Size})
	}
	af := newArchiveFile(img.ctx, src, img.file.Size, meta, blobs, op.o.minRequest)
	a, err := archive.Open(ctx, af, img.file.Size, archive.WithIndex(idx))
	if err != nil {
		af.Close()
		return fmt.Errorf("opening %s of record %s: %w", img.file.Key, img.rec.RecordID(), err)
	}
	img.arch, img.af, img.src = a, af, src
	return nil
}

// openWalk opens an archive without index by reading its tar headers by
// range. The first read (one block) is the range probe.
func (op *Opener) openWalk(ctx context.Context, img *Image, src *remoteSource) error {
	af := newArchiveFile(img.ctx, src, img.file.Size, nil, nil, op.o.minRequest)
	if img.file.Size > 0 {
		if err := af.fetchBlock(ctx, make([]byte, 1), 0); err != nil {
			af.Close()
			return err
		}
	}
	a, err := archive.Open(ctx, af, img.file.Size)
	if err != nil {
		af.Close()
		return fmt.Errorf("opening %s of record %s: %w", img.file.Key, img.rec.RecordID(), err)
	}
	img.arch, img.af, img.src = a, af, src
	return nil
}

// openSpooled opens an archive from a spool file, downloading it first when
// download is set. path "" means a temporary file.
func (op *Opener) openSpooled(ctx context.Context, img *Image, path string, download bool) (retErr error) {
	temp := path == ""
	if temp {
		dir, err := op.spoolTempDir()
		if err != nil {
			return err
		}
		f, err := os.CreateTemp(dir, "spool-*.tar")
		if err != nil {
			return fmt.Errorf("creating spool file: %w", err)
		}
		path = f.Name()
		f.Close()
		defer func() {
			if retErr != nil {
				os.Remove(path)
			}
		}()
	}
	if download {
		if _, err := op.spool(ctx, img.rec.RecordID(), img.file, path); err != nil {
			return err
		}
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("opening spool file: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("opening spool file: %w", err)
	}
	a, err := archive.Open(ctx, f, fi.Size())
	if err != nil {
		f.Close()
		return fmt.Errorf("opening %s of record %s: %w", img.file.Key, img.rec.RecordID(), err)
	}
	img.arch, img.src = a, &localSource{ra: f}
	img.closer = f.Close
	if temp {
		img.closer = removeFile(f)
	}
	return nil
}

// spoolTempDir is the directory of spool files without a state directory.
func (op *Opener) spoolTempDir() (string, error) {
	op.mu.Lock()
	defer op.mu.Unlock()
	if op.tempDir == "" {
		d, err := os.MkdirTemp("", "zenodo-remote-spool-")
		if err != nil {
			return "", fmt.Errorf("creating spool directory: %w", err)
		}
		op.tempDir = d
	}
	return op.tempDir, nil
}
