package fsutil

import (
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		path string
		data string
		perm fs.FileMode
	}{
		{"new file", filepath.Join(dir, "a"), "one", 0o600},
		{"replaces", filepath.Join(dir, "a"), "two, longer", 0o644},
		{"creates the directory", filepath.Join(dir, "sub", "dir", "b"), "three", 0o600},
		{"empty", filepath.Join(dir, "c"), "", 0o600},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.NoError(t, WriteFileAtomic(tc.path, []byte(tc.data), tc.perm))
			got, err := os.ReadFile(tc.path)
			require.NoError(t, err)
			assert.Equal(t, tc.data, string(got))
			fi, err := os.Stat(tc.path)
			require.NoError(t, err)
			assert.Equal(t, tc.perm, fi.Mode().Perm())
			entries, err := os.ReadDir(filepath.Dir(tc.path))
			require.NoError(t, err)
			for _, e := range entries {
				assert.NotContains(t, e.Name(), ".tmp-", "temporary file left behind")
			}
		})
	}
}

func TestWriteFileAtomicFailureLeavesTheOldFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "a")
	require.NoError(t, WriteFileAtomic(path, []byte("old"), 0o600))
	// The target is now a non-empty directory: the rename fails.
	require.NoError(t, os.Remove(path))
	require.NoError(t, os.MkdirAll(filepath.Join(path, "x"), 0o700))
	require.Error(t, WriteFileAtomic(path, []byte("new"), 0o600))
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 1, "the temporary file is removed")
	assert.Equal(t, "a", entries[0].Name())
}

func TestReadFileLimit(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	require.NoError(t, os.WriteFile(path, []byte("12345"), 0o600))

	got, err := ReadFileLimit(path, 5)
	require.NoError(t, err)
	assert.Equal(t, "12345", string(got))

	_, err = ReadFileLimit(path, 4)
	assert.True(t, errdefs.IsInvalidArgument(err), "%v", err)

	_, err = ReadFileLimit(filepath.Join(dir, "missing"), 5)
	assert.ErrorIs(t, err, fs.ErrNotExist)
}
