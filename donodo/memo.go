package donodo

import (
	"encoding/json"
	"fmt"
	"sync"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/internal/fsutil"
)

// memoFile is the file under WithDepositionMemo's directory.
const memoFile = "depositions.json"

// maxMemoSize bounds the memo file read.
const maxMemoSize = 4 << 20

// memo remembers, per Zenodo instance and record title, the deposition the
// last push used, because Zenodo's search lists new depositions only after
// a delay: a push re-run right after an interruption, or the next tag
// pushed right after a publish, must still find it.
type memo struct {
	path string
	mu   sync.Mutex
}

func memoKey(baseURL, title string) string { return baseURL + " " + title }

// get returns the deposition id remembered for key, or "".
func (m *memo) get(key string) string {
	if m == nil {
		return ""
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.load()[key]
}

// put remembers id for key. Failures are returned for logging only.
func (m *memo) put(key, id string) error {
	if m == nil {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	entries := m.load()
	if entries[key] == id {
		return nil
	}
	entries[key] = id
	data, err := json.MarshalIndent(entries, "", "  ")
	if err != nil {
		return err
	}
	if err := fsutil.WriteFileAtomic(m.path, data, 0o600); err != nil {
		return fmt.Errorf("saving %s: %w", m.path, err)
	}
	return nil
}

// load reads the entries; a missing or unreadable file is empty.
func (m *memo) load() map[string]string {
	entries := map[string]string{}
	data, err := fsutil.ReadFileLimit(m.path, maxMemoSize)
	if err != nil {
		return entries
	}
	if json.Unmarshal(data, &entries) != nil {
		return map[string]string{}
	}
	return entries
}
