package cache

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
)

// Layout of a cache directory:
//
//	lock             flock'ed while a cache has the directory open
//	wip/             values being written (emptied at start)
//	v1/<xx>/<hash>   committed values; <hash> is the hex SHA-256 of the key,
//	                 <xx> its first two digits; mtime = last recorded use
const (
	lockName = "lock"
	wipDir   = "wip"
	dataDir  = "v1"
)

// NewDirectory opens (creating it if needed) an on-disk cache in dir. It
// takes an exclusive lock on the directory (a second cache on the same
// directory fails with an error wrapping errdefs.ErrUnavailable), deletes
// values left half-written by an earlier run, and rebuilds the LRU index from
// the committed values, least recently used first by modification time,
// evicting past the bounds. Files in dir other than its own are left alone.
//
// The byte bound counts the committed values' lengths; values being written
// (at most the bound each) come on top until they are committed or discarded.
func NewDirectory(dir string, opts ...Option) (_ Cache, retErr error) {
	o := makeOptions(DefaultDirectoryMaxBytes, DefaultDirectoryMaxEntries, opts)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating cache directory: %w", err)
	}
	lock, err := lockDirectory(dir)
	if err != nil {
		return nil, err
	}
	defer func() {
		if retErr != nil {
			lock.Close()
		}
	}()
	st := &dirStorage{
		wip:  filepath.Join(dir, wipDir),
		data: filepath.Join(dir, dataDir),
		lock: lock,
		sync: o.sync,
	}
	if err := os.RemoveAll(st.wip); err != nil {
		return nil, fmt.Errorf("removing unfinished cache entries: %w", err)
	}
	if err := os.Mkdir(st.wip, 0o700); err != nil {
		return nil, fmt.Errorf("creating cache directory: %w", err)
	}
	if err := os.MkdirAll(st.data, 0o700); err != nil {
		return nil, fmt.Errorf("creating cache directory: %w", err)
	}
	found, err := st.scan()
	if err != nil {
		return nil, err
	}
	c := newCache(st, o)
	for _, e := range found { // oldest first: each becomes the newest
		c.insert(e)
	}
	for _, e := range c.evictOver() {
		if err := st.remove(e.h); err != nil {
			return nil, fmt.Errorf("evicting cache entries past the bound: %w", err)
		}
	}
	return c, nil
}

func lockDirectory(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, lockName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening cache directory lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("cache directory %s is in use by another cache: %w", dir, errdefs.ErrUnavailable)
		}
		return nil, fmt.Errorf("locking cache directory %s: %w", dir, err)
	}
	return f, nil
}

type dirStorage struct {
	wip, data string
	lock      *os.File
	sync      bool
}

var _ storage = (*dirStorage)(nil)

func (s *dirStorage) path(h keyHash) string {
	name := h.String()
	return filepath.Join(s.data, name[:2], name)
}

// scan lists the committed values, least recently used first, and creates
// the fan-out sub-directories. Files that cannot be values are removed.
func (s *dirStorage) scan() ([]*entry, error) {
	var found []*entry
	for i := range 256 {
		sub := filepath.Join(s.data, fmt.Sprintf("%02x", i))
		ents, err := os.ReadDir(sub)
		if errors.Is(err, fs.ErrNotExist) {
			if err := os.Mkdir(sub, 0o700); err != nil {
				return nil, fmt.Errorf("creating cache directory: %w", err)
			}
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("reading cache directory: %w", err)
		}
		for _, de := range ents {
			var h keyHash
			p := filepath.Join(sub, de.Name())
			n, err := hex.Decode(h[:], []byte(de.Name()))
			if err != nil || n != len(h) || h.String() != de.Name() || de.Name()[:2] != filepath.Base(sub) || !de.Type().IsRegular() {
				if err := os.RemoveAll(p); err != nil {
					return nil, fmt.Errorf("removing stray file from cache directory: %w", err)
				}
				continue
			}
			info, err := de.Info()
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("reading cache directory: %w", err)
			}
			found = append(found, &entry{h: h, size: info.Size(), touched: info.ModTime().UnixNano()})
		}
	}
	slices.SortFunc(found, func(a, b *entry) int {
		if a.touched != b.touched {
			if a.touched < b.touched {
				return -1
			}
			return 1
		}
		return slices.Compare(a.h[:], b.h[:])
	})
	return found, nil
}

func (s *dirStorage) create() (pending, error) {
	f, err := os.CreateTemp(s.wip, "value-*")
	if err != nil {
		return nil, err
	}
	return &filePending{s: s, f: f}, nil
}

func (s *dirStorage) open(h keyHash, size int64) (Reader, error) {
	f, err := os.Open(s.path(h))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %w", err, errdefs.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	info, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if info.Size() != size {
		f.Close()
		return nil, fmt.Errorf("%s holds %d bytes, want %d: %w", f.Name(), info.Size(), size, errdefs.ErrNotFound)
	}
	return &fileReader{f: f, size: size}, nil
}

func (s *dirStorage) touch(h keyHash, t time.Time) error {
	return os.Chtimes(s.path(h), t, t)
}

func (s *dirStorage) remove(h keyHash) error {
	if err := os.Remove(s.path(h)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

func (s *dirStorage) close() error { return s.lock.Close() }

// filePending is a value written to a file in wip/, renamed into v1/ on
// publish.
type filePending struct {
	s      *dirStorage
	f      *os.File
	closed bool
}

func (p *filePending) Write(b []byte) (int, error) { return p.f.Write(b) }

func (p *filePending) contents(size int64) io.Reader { return io.NewSectionReader(p.f, 0, size) }

func (p *filePending) finish() error {
	if p.s.sync {
		if err := p.f.Sync(); err != nil {
			return err
		}
	}
	p.closed = true
	return p.f.Close()
}

func (p *filePending) publish(h keyHash, t time.Time) error {
	if err := os.Chtimes(p.f.Name(), t, t); err != nil {
		return err
	}
	return os.Rename(p.f.Name(), p.s.path(h))
}

func (p *filePending) discard() error {
	if !p.closed {
		p.closed = true
		p.f.Close()
	}
	if err := os.Remove(p.f.Name()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// fileReader reads a value from its open file; an unlinked file stays
// readable until closed.
type fileReader struct {
	f    *os.File
	size int64
}

func (r *fileReader) ReadAt(b []byte, off int64) (int, error) { return r.f.ReadAt(b, off) }
func (r *fileReader) Size() int64                             { return r.size }
func (r *fileReader) Close() error                            { return r.f.Close() }
