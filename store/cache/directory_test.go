package cache

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fakeClock is a settable clock for LRU order on disk.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 8, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// files lists the regular files under dir, relative, sorted.
func files(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			rel, err := filepath.Rel(dir, p)
			if err != nil {
				return err
			}
			out = append(out, rel)
		}
		return nil
	})
	require.NoError(t, err)
	sort.Strings(out)
	return out
}

func valuePath(key string) string {
	h := hashKey(key).String()
	return filepath.Join(dataDir, h[:2], h)
}

func TestDirectoryRestart(t *testing.T) {
	v := bytes.Repeat([]byte("v"), 100)
	tests := []struct {
		name        string
		reopen      []Option
		add         []string // after the restart
		wantPresent []string
		wantMissing []string
	}{
		{
			name:        "entries and their LRU order survive",
			reopen:      []Option{WithMaxBytes(400)},
			add:         []string{"d", "e"},
			wantPresent: []string{"a", "c", "d", "e"},
			wantMissing: []string{"b"},
		},
		{
			name:        "a smaller bound evicts the least recently used at start",
			reopen:      []Option{WithMaxBytes(200)},
			wantPresent: []string{"a", "c"},
			wantMissing: []string{"b"},
		},
		{
			name:        "a smaller entry bound too",
			reopen:      []Option{WithMaxEntries(1)},
			wantPresent: []string{"a"},
			wantMissing: []string{"b", "c"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			clock := newFakeClock()
			c, err := NewDirectory(dir, withClock(clock.now))
			require.NoError(t, err)
			for _, k := range []string{"a", "b", "c"} {
				put(t, c, k, v)
				clock.advance(time.Hour)
			}
			_, err = get(t, c, "a") // a is now the most recently used
			require.NoError(t, err)
			require.NoError(t, c.Close())

			clock.advance(time.Hour)
			c, err = NewDirectory(dir, append(tt.reopen, withClock(clock.now))...)
			require.NoError(t, err)
			defer c.Close()
			for _, k := range tt.add {
				put(t, c, k, v)
			}
			for _, k := range tt.wantPresent {
				got, err := get(t, c, k)
				if assert.NoError(t, err, k) {
					assert.Equal(t, v, got)
				}
			}
			for _, k := range tt.wantMissing {
				_, err := get(t, c, k)
				assert.True(t, errdefs.IsNotFound(err), "%s: %v", k, err)
				assert.NoFileExists(t, filepath.Join(dir, valuePath(k)))
			}
			st := c.Stats()
			assert.Equal(t, len(tt.wantPresent), st.Entries)
			assert.Equal(t, int64(len(tt.wantPresent)*len(v)), st.Bytes)
		})
	}
}

// TestDirectoryHitTouchesFile checks that a hit refreshes the file's mtime at
// most once per touch interval.
func TestDirectoryHitTouchesFile(t *testing.T) {
	dir := t.TempDir()
	clock := newFakeClock()
	start := clock.now()
	c, err := NewDirectory(dir, withClock(clock.now))
	require.NoError(t, err)
	defer c.Close()
	put(t, c, "k", []byte("v"))
	mtime := func() time.Time {
		info, err := os.Stat(filepath.Join(dir, valuePath("k")))
		require.NoError(t, err)
		return info.ModTime().UTC()
	}
	assert.Equal(t, start, mtime())

	clock.advance(defaultTouchEvery / 2)
	_, err = get(t, c, "k")
	require.NoError(t, err)
	assert.Equal(t, start, mtime(), "touched too early")

	clock.advance(defaultTouchEvery / 2)
	_, err = get(t, c, "k")
	require.NoError(t, err)
	assert.Equal(t, start.Add(defaultTouchEvery), mtime())
}

// TestDirectoryCrash leaves what a killed process leaves (a half-written
// value, no Close) plus stray files, and reopens.
func TestDirectoryCrash(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	c, err := NewDirectory(dir)
	require.NoError(t, err)
	put(t, c, "kept", []byte("kept value"))
	w, err := c.Add(ctx, "half")
	require.NoError(t, err)
	_, err = w.Write([]byte("half a val"))
	require.NoError(t, err)
	// Crash: the process dies; only the kernel drops its lock.
	require.NoError(t, c.(*cache).st.(*dirStorage).lock.Close())

	kept := valuePath("kept")
	stray := []string{
		filepath.Join(dataDir, "ab", "not-a-hash"),
		filepath.Join(dataDir, "ab", strings.Repeat("cd", 32)), // wrong fan-out directory
		filepath.Join(dataDir, "ab", strings.Repeat("AB", 32)), // not the canonical name
	}
	for _, p := range stray {
		require.NoError(t, os.WriteFile(filepath.Join(dir, p), []byte("x"), 0o600))
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "user-file"), []byte("x"), 0o600))
	require.Len(t, files(t, filepath.Join(dir, wipDir)), 1, "the half-written value")

	c2, err := NewDirectory(dir)
	require.NoError(t, err)
	defer c2.Close()
	assert.Equal(t, []string{lockName, "user-file", kept}, files(t, dir),
		"wip and stray files removed, others left alone")
	got, err := get(t, c2, "kept")
	require.NoError(t, err)
	assert.Equal(t, []byte("kept value"), got)
	_, err = get(t, c2, "half")
	assert.True(t, errdefs.IsNotFound(err), "got %v", err)
	assert.Equal(t, 1, c2.Stats().Entries)
	// The dead process's writer cannot publish into the new cache.
	assert.Error(t, w.Commit())
	_, err = get(t, c2, "half")
	assert.True(t, errdefs.IsNotFound(err), "got %v", err)
}

func TestDirectoryLocked(t *testing.T) {
	dir := t.TempDir()
	c, err := NewDirectory(dir)
	require.NoError(t, err)
	_, err = NewDirectory(dir)
	require.True(t, errdefs.IsUnavailable(err), "second cache on the directory: %v", err)
	require.NoError(t, c.Close())
	c, err = NewDirectory(dir)
	require.NoError(t, err, "after Close")
	require.NoError(t, c.Close())
}

func TestDirectoryKeysNeverPaths(t *testing.T) {
	keys := []string{
		"../../../../etc/passwd",
		"/etc/passwd",
		"sha256:" + strings.Repeat("0", 64) + "/0-1048576",
		"a\x00b",
		".",
		"..",
		strings.Repeat("k", 10000),
		"wip",
		"lock",
	}
	dir := filepath.Join(t.TempDir(), "cache")
	c, err := NewDirectory(dir)
	require.NoError(t, err)
	defer c.Close()
	want := []string{lockName}
	for _, k := range keys {
		put(t, c, k, []byte(k))
		want = append(want, valuePath(k))
	}
	sort.Strings(want)
	assert.Equal(t, want, files(t, dir))
	entries, err := os.ReadDir(filepath.Dir(dir))
	require.NoError(t, err)
	assert.Len(t, entries, 1, "nothing written outside the cache directory")
	for _, k := range keys {
		got, err := get(t, c, k)
		require.NoError(t, err)
		assert.Equal(t, []byte(k), got)
	}
}

func TestDirectoryDamagedEntry(t *testing.T) {
	tests := []struct {
		name   string
		damage func(path string) error
	}{
		{"deleted", os.Remove},
		{"truncated", func(p string) error { return os.Truncate(p, 3) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			c, err := NewDirectory(dir)
			require.NoError(t, err)
			defer c.Close()
			put(t, c, "k", []byte("value"))
			require.NoError(t, tt.damage(filepath.Join(dir, valuePath("k"))))
			_, err = get(t, c, "k")
			assert.True(t, errdefs.IsNotFound(err), "got %v", err)
			assert.Equal(t, Stats{MaxBytes: DefaultDirectoryMaxBytes, Misses: 1, Commits: 1}, c.Stats())
			assert.NoFileExists(t, filepath.Join(dir, valuePath("k")))
			put(t, c, "k", []byte("value"))
			got, err := get(t, c, "k")
			require.NoError(t, err)
			assert.Equal(t, []byte("value"), got)
		})
	}
}

// FuzzKeyPath checks that every key maps to a file two levels under the
// data directory.
func FuzzKeyPath(f *testing.F) {
	for _, k := range []string{"", "..", "../x", "/abs", "sha256:abc/0-1", "a/../../b", "\x00"} {
		f.Add(k)
	}
	s := &dirStorage{data: "/cache/v1"}
	f.Fuzz(func(t *testing.T, key string) {
		p := s.path(hashKey(key))
		rel, err := filepath.Rel(s.data, p)
		require.NoError(t, err)
		parts := strings.Split(rel, string(filepath.Separator))
		require.Len(t, parts, 2, p)
		require.Len(t, parts[1], 64)
		require.Equal(t, parts[0], parts[1][:2])
		require.Equal(t, p, filepath.Clean(p))
	})
}
