// Package fsutil holds the small file helpers several packages share:
// atomic writes of small files (state, memos, config snippets) and bounded
// reads of files that may be hostile or damaged.
package fsutil

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/containerd/errdefs"
)

// WriteFileAtomic writes data to path with permissions perm through a
// temporary file in the same directory, synced and then renamed over path:
// readers see the old content or the new one, never a part. The directory
// is created (mode 0700) when missing. On failure the temporary file is
// removed and path is left as it was.
func WriteFileAtomic(path string, data []byte, perm fs.FileMode) (retErr error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	defer func() {
		if retErr != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Chmod(perm); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// ReadFileLimit reads the file path, which must hold at most limit bytes:
// a larger one is an error wrapping errdefs.ErrInvalidArgument, after
// reading no more than limit+1 bytes. Errors opening the file are os.Open's
// (a missing file matches fs.ErrNotExist): what a missing file means is the
// caller's to say.
func ReadFileLimit(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s is more than %d bytes: %w", path, limit, errdefs.ErrInvalidArgument)
	}
	return data, nil
}
