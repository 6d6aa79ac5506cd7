package cache

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sync"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// impl is one Cache implementation under the shared suite.
type impl struct {
	name string
	open func(t testing.TB, opts ...Option) Cache
}

var impls = []impl{
	{"memory", func(t testing.TB, opts ...Option) Cache {
		c := NewMemory(opts...)
		t.Cleanup(func() { c.Close() })
		return c
	}},
	{"directory", func(t testing.TB, opts ...Option) Cache {
		c, err := NewDirectory(t.TempDir(), opts...)
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		return c
	}},
}

// forEach runs fn as a subtest on every implementation.
func forEach(t *testing.T, fn func(t *testing.T, open func(t testing.TB, opts ...Option) Cache)) {
	for _, im := range impls {
		t.Run(im.name, func(t *testing.T) { fn(t, im.open) })
	}
}

func put(t testing.TB, c Cache, key string, value []byte) {
	t.Helper()
	w, err := c.Add(context.Background(), key)
	require.NoError(t, err)
	_, err = w.Write(value)
	require.NoError(t, err)
	require.NoError(t, w.Commit())
}

// get returns the value of key, or the error of Get.
func get(t testing.TB, c Cache, key string) ([]byte, error) {
	t.Helper()
	r, err := c.Get(context.Background(), key)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return readAll(t, r), nil
}

func readAll(t testing.TB, r Reader) []byte {
	t.Helper()
	b := make([]byte, r.Size())
	n, err := r.ReadAt(b, 0)
	if err != io.EOF || n != len(b) {
		require.NoError(t, err)
	}
	return b[:n]
}

// recorder collects observer events.
type recorder struct {
	mu     sync.Mutex
	events []Event
}

func (r *recorder) observe(e Event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
}

func (r *recorder) kinds(k EventKind) []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Event
	for _, e := range r.events {
		if e.Kind == k {
			out = append(out, e)
		}
	}
	return out
}

func TestWriteCommitAbort(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name    string
		value   []byte
		finish  func(w Writer) error
		stored  bool
		wantErr error
	}{
		{"commit", []byte("hello"), Writer.Commit, true, nil},
		{"commit empty value", []byte{}, Writer.Commit, true, nil},
		{"abort", []byte("hello"), Writer.Abort, false, nil},
		{"close without commit", []byte("hello"), Writer.Close, false, nil},
		{"commit twice", []byte("hello"), func(w Writer) error {
			if err := w.Commit(); err != nil {
				return err
			}
			return w.Commit()
		}, true, errdefs.ErrFailedPrecondition},
		{"write after commit", []byte("hello"), func(w Writer) error {
			if err := w.Commit(); err != nil {
				return err
			}
			_, err := w.Write([]byte("more"))
			return err
		}, true, errdefs.ErrFailedPrecondition},
		{"abort after commit is a no-op", []byte("hello"), func(w Writer) error {
			if err := w.Commit(); err != nil {
				return err
			}
			return w.Abort()
		}, true, nil},
		{"commit after abort", []byte("hello"), func(w Writer) error {
			if err := w.Abort(); err != nil {
				return err
			}
			return w.Commit()
		}, false, errdefs.ErrFailedPrecondition},
	}
	forEach(t, func(t *testing.T, open func(testing.TB, ...Option) Cache) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				c := open(t)
				w, err := c.Add(ctx, "k")
				require.NoError(t, err)
				_, err = w.Write(tt.value)
				require.NoError(t, err)

				_, err = get(t, c, "k")
				require.True(t, errdefs.IsNotFound(err), "visible before commit: %v", err)

				err = tt.finish(w)
				if tt.wantErr != nil {
					require.ErrorIs(t, err, tt.wantErr)
				} else {
					require.NoError(t, err)
				}
				got, err := get(t, c, "k")
				if !tt.stored {
					require.True(t, errdefs.IsNotFound(err), "got %v", err)
					assert.Equal(t, Stats{MaxBytes: c.Stats().MaxBytes, Misses: 2}, c.Stats())
					return
				}
				require.NoError(t, err)
				assert.Equal(t, tt.value, got)
				st := c.Stats()
				assert.Equal(t, 1, st.Entries)
				assert.Equal(t, int64(len(tt.value)), st.Bytes)
				assert.Equal(t, uint64(1), st.Hits)
				assert.Equal(t, uint64(1), st.Commits)
			})
		}
	})
}

func TestGetNotFound(t *testing.T) {
	forEach(t, func(t *testing.T, open func(testing.TB, ...Option) Cache) {
		rec := &recorder{}
		c := open(t, WithObserver(rec.observe))
		put(t, c, "present", []byte("x"))
		_, err := c.Get(context.Background(), "absent")
		require.Error(t, err)
		assert.True(t, errdefs.IsNotFound(err), "got %v", err)
		assert.Contains(t, err.Error(), `"absent"`)
		assert.Equal(t, []Event{{Kind: EventMiss, Key: "absent"}}, rec.kinds(EventMiss))

		_, err = c.Get(context.Background(), "")
		assert.True(t, errdefs.IsInvalidArgument(err), "got %v", err)
		_, err = c.Add(context.Background(), "")
		assert.True(t, errdefs.IsInvalidArgument(err), "got %v", err)
	})
}

func TestReaderAt(t *testing.T) {
	forEach(t, func(t *testing.T, open func(testing.TB, ...Option) Cache) {
		c := open(t)
		put(t, c, "k", []byte("0123456789"))
		r, err := c.Get(context.Background(), "k")
		require.NoError(t, err)
		defer r.Close()
		assert.Equal(t, int64(10), r.Size())
		tests := []struct {
			off     int64
			n       int
			want    string
			wantEOF bool
		}{
			{0, 4, "0123", false},
			{6, 4, "6789", false},
			{8, 4, "89", true},
			{10, 1, "", true},
		}
		for _, tt := range tests {
			b := make([]byte, tt.n)
			n, err := r.ReadAt(b, tt.off)
			assert.Equal(t, tt.want, string(b[:n]), "ReadAt(%d, %d)", tt.n, tt.off)
			if tt.wantEOF {
				assert.ErrorIs(t, err, io.EOF)
			} else {
				assert.NoError(t, err)
			}
		}
	})
}

func TestEvictionLRU(t *testing.T) {
	v := bytes.Repeat([]byte("v"), 100)
	tests := []struct {
		name string
		opts []Option
		// steps: "+k" adds k, "k" gets k (must hit)
		steps       []string
		wantPresent []string
		wantEvicted []string
	}{
		{
			name:        "bytes bound evicts least recently added",
			opts:        []Option{WithMaxBytes(300)},
			steps:       []string{"+a", "+b", "+c", "+d"},
			wantPresent: []string{"b", "c", "d"},
			wantEvicted: []string{"a"},
		},
		{
			name:        "get refreshes an entry",
			opts:        []Option{WithMaxBytes(300)},
			steps:       []string{"+a", "+b", "+c", "a", "+d"},
			wantPresent: []string{"a", "c", "d"},
			wantEvicted: []string{"b"},
		},
		{
			name:        "one big value evicts several",
			opts:        []Option{WithMaxBytes(300)},
			steps:       []string{"+a", "+b", "+c", "a", "+big"},
			wantPresent: []string{"a", "big"},
			wantEvicted: []string{"b", "c"},
		},
		{
			name:        "entries bound",
			opts:        []Option{WithMaxEntries(2)},
			steps:       []string{"+a", "+b", "a", "+c", "+d"},
			wantPresent: []string{"c", "d"},
			wantEvicted: []string{"b", "a"},
		},
		{
			name:        "re-adding a present key refreshes it without storing twice",
			opts:        []Option{WithMaxBytes(300)},
			steps:       []string{"+a", "+b", "+c", "+a", "+d"},
			wantPresent: []string{"a", "c", "d"},
			wantEvicted: []string{"b"},
		},
	}
	forEach(t, func(t *testing.T, open func(testing.TB, ...Option) Cache) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				rec := &recorder{}
				c := open(t, append(tt.opts, WithObserver(rec.observe))...)
				for _, s := range tt.steps {
					if key, ok := bytes.CutPrefix([]byte(s), []byte("+")); ok {
						val := v
						if string(key) == "big" {
							val = bytes.Repeat([]byte("B"), 200)
						}
						put(t, c, string(key), val)
						continue
					}
					_, err := get(t, c, s)
					require.NoError(t, err, "get %s", s)
				}
				var evictedSizes []int64
				for _, e := range rec.kinds(EventEvict) {
					assert.Empty(t, e.Key)
					evictedSizes = append(evictedSizes, e.Size)
				}
				assert.Len(t, evictedSizes, len(tt.wantEvicted))
				st := c.Stats()
				assert.Equal(t, uint64(len(tt.wantEvicted)), st.Evictions)
				assert.Equal(t, len(tt.wantPresent), st.Entries)
				for _, k := range tt.wantEvicted {
					_, err := get(t, c, k)
					assert.True(t, errdefs.IsNotFound(err), "%s: got %v", k, err)
				}
				var total int64
				for _, k := range tt.wantPresent {
					got, err := get(t, c, k)
					if assert.NoError(t, err, k) {
						total += int64(len(got))
					}
				}
				assert.Equal(t, total, c.Stats().Bytes)
			})
		}
	})
}

func TestReaderSurvivesEviction(t *testing.T) {
	forEach(t, func(t *testing.T, open func(testing.TB, ...Option) Cache) {
		c := open(t, WithMaxEntries(1))
		put(t, c, "old", []byte("old value"))
		r, err := c.Get(context.Background(), "old")
		require.NoError(t, err)
		put(t, c, "new", []byte("new value"))
		_, err = c.Get(context.Background(), "old")
		require.True(t, errdefs.IsNotFound(err), "got %v", err)
		assert.Equal(t, []byte("old value"), readAll(t, r))
		require.NoError(t, r.Close())
		_, err = r.ReadAt(make([]byte, 1), 0)
		assert.Error(t, err, "read after close")
	})
}

func TestValueOverBound(t *testing.T) {
	forEach(t, func(t *testing.T, open func(testing.TB, ...Option) Cache) {
		c := open(t, WithMaxBytes(10))
		w, err := c.Add(context.Background(), "k")
		require.NoError(t, err)
		_, err = w.Write(make([]byte, 8))
		require.NoError(t, err)
		_, err = w.Write(make([]byte, 3))
		require.ErrorIs(t, err, errdefs.ErrResourceExhausted)
		require.NoError(t, w.Abort())
		put(t, c, "exact", make([]byte, 10))
		assert.Equal(t, int64(10), c.Stats().Bytes)
	})
}

func TestVerify(t *testing.T) {
	good := []byte("verified chunk")
	goodKey := digest.FromBytes(good).String()
	tests := []struct {
		name    string
		key     string
		value   []byte
		wantErr bool
	}{
		{"matching digest", goodKey, good, false},
		{"mismatching digest", goodKey, []byte("tampered chunk"), true},
		{"truncated value", goodKey, good[:5], true},
		{"not a digest is not checked", goodKey + "/0-14", []byte("anything"), false},
	}
	forEach(t, func(t *testing.T, open func(testing.TB, ...Option) Cache) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				rec := &recorder{}
				c := open(t, WithVerify(VerifyDigest), WithObserver(rec.observe))
				w, err := c.Add(context.Background(), tt.key)
				require.NoError(t, err)
				_, err = w.Write(tt.value)
				require.NoError(t, err)
				err = w.Commit()
				got, getErr := get(t, c, tt.key)
				if !tt.wantErr {
					require.NoError(t, err)
					require.NoError(t, getErr)
					assert.Equal(t, tt.value, got)
					return
				}
				require.ErrorIs(t, err, errdefs.ErrFailedPrecondition)
				assert.Contains(t, err.Error(), tt.key)
				assert.True(t, errdefs.IsNotFound(getErr), "got %v", getErr)
				assert.Equal(t, 0, c.Stats().Entries)
				assert.Len(t, rec.kinds(EventVerifyFailure), 1)
				assert.Empty(t, rec.kinds(EventCommit))
			})
		}
	})
}

func TestClosed(t *testing.T) {
	forEach(t, func(t *testing.T, open func(testing.TB, ...Option) Cache) {
		ctx := context.Background()
		c := open(t)
		put(t, c, "k", []byte("value"))
		r, err := c.Get(ctx, "k")
		require.NoError(t, err)
		w, err := c.Add(ctx, "pending")
		require.NoError(t, err)
		_, err = w.Write([]byte("p"))
		require.NoError(t, err)

		require.NoError(t, c.Close())
		require.NoError(t, c.Close(), "second Close")

		_, err = c.Get(ctx, "k")
		assert.True(t, errdefs.IsUnavailable(err), "Get: %v", err)
		_, err = c.Add(ctx, "k")
		assert.True(t, errdefs.IsUnavailable(err), "Add: %v", err)
		assert.True(t, errdefs.IsUnavailable(w.Commit()), "Commit of a pending writer")
		assert.Equal(t, []byte("value"), readAll(t, r), "open reader after Close")
		require.NoError(t, r.Close())
	})
}

// TestConcurrent runs writers and readers of shared and private keys at once;
// run it with -race.
func TestConcurrent(t *testing.T) {
	const (
		workers = 8
		rounds  = 20
	)
	value := func(key string) []byte { return bytes.Repeat([]byte(key), 64) }
	forEach(t, func(t *testing.T, open func(testing.TB, ...Option) Cache) {
		// Small enough that evictions run concurrently with reads.
		c := open(t, WithMaxEntries(workers*2), WithSync(false), WithVerify(func(key string, data io.Reader) error {
			b, err := io.ReadAll(data)
			if err != nil {
				return err
			}
			if !bytes.Equal(b, value(key)) {
				return fmt.Errorf("bad value for %s", key)
			}
			return nil
		}))
		ctx := context.Background()
		start := make(chan struct{})
		errs := make(chan error, workers*rounds*4)
		var wg sync.WaitGroup
		for i := range workers {
			wg.Go(func() {
				<-start
				for j := range rounds {
					for _, key := range []string{"shared", fmt.Sprintf("shared-%d", j%3), fmt.Sprintf("own-%d-%d", i, j)} {
						w, err := c.Add(ctx, key)
						if err != nil {
							errs <- err
							continue
						}
						if _, err := w.Write(value(key)); err != nil {
							errs <- err
						}
						if err := w.Commit(); err != nil {
							errs <- err
						}
						r, err := c.Get(ctx, key)
						if errdefs.IsNotFound(err) {
							continue // evicted by another worker already
						}
						if err != nil {
							errs <- err
							continue
						}
						b := make([]byte, r.Size())
						if _, err := r.ReadAt(b, 0); err != nil && err != io.EOF {
							errs <- err
						} else if !bytes.Equal(b, value(key)) {
							errs <- fmt.Errorf("%s: read %q", key, b)
						}
						r.Close()
					}
				}
			})
		}
		close(start)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		st := c.Stats()
		assert.LessOrEqual(t, st.Entries, workers*2)
		assert.Equal(t, uint64(workers*rounds*3), st.Hits+st.Misses)
		// Every stored entry is intact and counted once.
		var total int64
		for _, key := range []string{"shared", "shared-0", "shared-1", "shared-2"} {
			if got, err := get(t, c, key); err == nil {
				assert.Equal(t, value(key), got)
				total += int64(len(got))
			}
		}
		for i := range workers {
			for j := range rounds {
				key := fmt.Sprintf("own-%d-%d", i, j)
				if got, err := get(t, c, key); err == nil {
					assert.Equal(t, value(key), got)
					total += int64(len(got))
				}
			}
		}
		assert.Equal(t, st.Bytes, total)
	})
}

func TestEventKindString(t *testing.T) {
	var names []string
	for k := EventHit; k <= EventVerifyFailure+1; k++ {
		names = append(names, k.String())
	}
	assert.Equal(t, []string{"hit", "miss", "commit", "evict", "verify_failure", "EventKind(6)"}, names)
}

// TestObserver checks the events and that the observer may call the cache
// (it runs outside the cache's locks).
func TestObserver(t *testing.T) {
	forEach(t, func(t *testing.T, open func(testing.TB, ...Option) Cache) {
		var (
			c      Cache
			events []Event
			stats  []Stats
		)
		c = open(t, WithMaxEntries(1), WithObserver(func(e Event) {
			events = append(events, e)
			stats = append(stats, c.Stats())
		}))
		put(t, c, "a", []byte("aa"))
		_, err := get(t, c, "a")
		require.NoError(t, err)
		put(t, c, "b", []byte("bbb"))
		_, err = get(t, c, "a")
		require.Error(t, err)
		assert.Equal(t, []Event{
			{Kind: EventCommit, Key: "a", Size: 2},
			{Kind: EventHit, Key: "a", Size: 2},
			{Kind: EventCommit, Key: "b", Size: 3},
			{Kind: EventEvict, Size: 2},
			{Kind: EventMiss, Key: "a"},
		}, events)
		require.Len(t, stats, 5)
		assert.Equal(t, uint64(1), stats[4].Misses)
		assert.Equal(t, 1, stats[4].Entries)
	})
}
