package cache

import (
	"bytes"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/errdefs"
)

// NewMemory returns a cache that keeps values in memory, for tests. It
// behaves as the on-disk cache (same bounds, verification, events), but
// forgets everything when dropped.
func NewMemory(opts ...Option) Cache {
	o := makeOptions(DefaultMemoryMaxBytes, DefaultMemoryMaxEntries, opts)
	return newCache(&memStorage{values: make(map[keyHash][]byte)}, o)
}

type memStorage struct {
	mu     sync.RWMutex
	values map[keyHash][]byte
}

var _ storage = (*memStorage)(nil)

func (s *memStorage) create() (pending, error) { return &memPending{s: s}, nil }

func (s *memStorage) open(h keyHash, size int64) (Reader, error) {
	s.mu.RLock()
	v, ok := s.values[h]
	s.mu.RUnlock()
	if !ok || int64(len(v)) != size {
		return nil, fmt.Errorf("value %s missing: %w", h, errdefs.ErrNotFound)
	}
	return &memReader{r: bytes.NewReader(v)}, nil
}

func (s *memStorage) touch(keyHash, time.Time) error { return nil }

func (s *memStorage) remove(h keyHash) error {
	s.mu.Lock()
	delete(s.values, h)
	s.mu.Unlock()
	return nil
}

func (s *memStorage) close() error { return nil }

type memPending struct {
	s   *memStorage
	buf bytes.Buffer
}

func (p *memPending) Write(b []byte) (int, error) { return p.buf.Write(b) }
func (p *memPending) contents(int64) io.Reader    { return bytes.NewReader(p.buf.Bytes()) }
func (p *memPending) finish() error               { return nil }
func (p *memPending) discard() error              { p.buf = bytes.Buffer{}; return nil }
func (p *memPending) publish(h keyHash, _ time.Time) error {
	v := bytes.Clone(p.buf.Bytes()) // exact size: the bound counts len
	if v == nil {
		v = []byte{}
	}
	p.s.mu.Lock()
	p.s.values[h] = v
	p.s.mu.Unlock()
	p.buf = bytes.Buffer{}
	return nil
}

// memReader reads a value that stays alive while referenced, evicted or not.
type memReader struct {
	r      *bytes.Reader
	closed atomic.Bool
}

func (r *memReader) ReadAt(b []byte, off int64) (int, error) {
	if r.closed.Load() {
		return 0, fmt.Errorf("reading cache entry: %w", errdefs.ErrFailedPrecondition)
	}
	return r.r.ReadAt(b, off)
}

func (r *memReader) Size() int64 { return r.r.Size() }

func (r *memReader) Close() error {
	r.closed.Store(true)
	return nil
}
