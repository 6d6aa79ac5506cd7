package zenodotest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"
)

const (
	stateFile   = "state.json"
	blobDir     = "blobs"
	tmpDir      = "tmp"
	stateFormat = 1
	// firstID is the first record id handed out; ids grow from there, a
	// concept recid just below its first version's id (fixtures 10, 36, 39).
	firstID = 100000
)

// state is everything the fake persists. Records are both drafts and
// published versions; a concept is the set of records sharing ConceptID.
type state struct {
	Format  int       `json:"format"`
	NextID  int64     `json:"next_id"`
	Records []*record `json:"records"`

	byID     map[int64]*record
	byBucket map[string]*record
}

// record is one deposition: a draft, or a published version.
type record struct {
	ID        int64 `json:"id"`
	ConceptID int64 `json:"concept_id"`
	Owner     int   `json:"owner"`
	// Bucket is the files bucket (links.bucket = /api/files/<Bucket>).
	Bucket string `json:"bucket"`
	// Metadata is the deposit metadata as last PUT (legacy field names).
	Metadata map[string]any `json:"metadata"`
	// PublishedMetadata is the metadata at the last publish.
	PublishedMetadata map[string]any `json:"published_metadata,omitempty"`
	Files             []*file        `json:"files"`
	Published         bool           `json:"published"`
	// Editing: a published record opened with actions/edit.
	Editing bool `json:"editing,omitempty"`
	// DOI is pids.doi: given in metadata.doi, or minted at publish.
	DOI string `json:"doi,omitempty"`
	// Index is the 0-based version index within the concept.
	Index       int       `json:"index"`
	Revision    int       `json:"revision"`
	Created     time.Time `json:"created"`
	Updated     time.Time `json:"updated"`
	PublishedAt time.Time `json:"published_at,omitzero"`
	// IndexedAt is when the record shows up in search (WithIndexDelay).
	IndexedAt time.Time `json:"indexed_at,omitzero"`
}

// file is one file of a record. Blob names the content under blobs/; a new
// version shares the blobs of the files it inherits.
type file struct {
	ID        string    `json:"id"`
	Key       string    `json:"key"`
	Size      int64     `json:"size"`
	MD5       string    `json:"md5"`
	Blob      string    `json:"blob"`
	VersionID string    `json:"version_id"`
	Created   time.Time `json:"created"`
	Updated   time.Time `json:"updated"`
}

func loadState(dir string) (*state, error) {
	st := &state{Format: stateFormat, NextID: firstID}
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("reading the fake's state: %w", err)
	default:
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.UseNumber()
		if err := dec.Decode(st); err != nil {
			return nil, fmt.Errorf("decoding %s: %w", filepath.Join(dir, stateFile), err)
		}
		if st.Format != stateFormat {
			return nil, fmt.Errorf("%s has format %d, want %d", filepath.Join(dir, stateFile), st.Format, stateFormat)
		}
	}
	st.reindex()
	return st, nil
}

func (st *state) reindex() {
	st.byID = make(map[int64]*record, len(st.Records))
	st.byBucket = make(map[string]*record, len(st.Records))
	for _, r := range st.Records {
		if r.Metadata == nil {
			r.Metadata = map[string]any{}
		}
		st.byID[r.ID] = r
		st.byBucket[r.Bucket] = r
	}
}

// save writes the state atomically: a temporary file, rename (with fsyncs
// of the file and the directory under WithDir). Called with s.mu held after
// every mutation.
func (s *Server) save() error {
	b, err := json.MarshalIndent(s.st, "", " ")
	if err != nil {
		return fmt.Errorf("%w: encoding: %v", errStateWrite, err)
	}
	tmp, err := os.CreateTemp(s.dir, stateFile+".*")
	if err != nil {
		return fmt.Errorf("%w: %v", errStateWrite, err)
	}
	_, werr := tmp.Write(b)
	var serr error
	if !s.ownDir { // a temporary directory needs no durability
		serr = tmp.Sync()
	}
	cerr := tmp.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("%w: writing %s: %v", errStateWrite, tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(s.dir, stateFile)); err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("%w: %v", errStateWrite, err)
	}
	if d, err := os.Open(s.dir); err == nil && !s.ownDir {
		_ = d.Sync()
		_ = d.Close()
	} else if err == nil {
		_ = d.Close()
	}
	return nil
}

func (st *state) newID() int64 {
	id := st.NextID
	st.NextID++
	return id
}

func (st *state) add(r *record) {
	st.Records = append(st.Records, r)
	st.byID[r.ID] = r
	st.byBucket[r.Bucket] = r
}

func (st *state) remove(r *record) {
	delete(st.byID, r.ID)
	delete(st.byBucket, r.Bucket)
	for i, x := range st.Records {
		if x == r {
			st.Records = append(st.Records[:i], st.Records[i+1:]...)
			break
		}
	}
}

// versions returns the published versions of a concept, oldest first.
func (st *state) versions(concept int64) []*record {
	var vs []*record
	for _, r := range st.Records {
		if r.ConceptID == concept && r.Published {
			vs = append(vs, r)
		}
	}
	sort.Slice(vs, func(i, j int) bool { return vs[i].Index < vs[j].Index })
	return vs
}

// latest returns the newest published version of a concept, or nil.
func (st *state) latest(concept int64) *record {
	vs := st.versions(concept)
	if len(vs) == 0 {
		return nil
	}
	return vs[len(vs)-1]
}

// openDraft returns the unpublished draft of a concept, or nil. Zenodo
// keeps at most one (newversion returns the existing one).
func (st *state) openDraft(concept int64) *record {
	for _, r := range st.Records {
		if r.ConceptID == concept && !r.Published {
			return r
		}
	}
	return nil
}

// isConcept reports whether id is a concept recid.
func (st *state) isConcept(id int64) bool {
	if _, ok := st.byID[id]; ok {
		return false
	}
	for _, r := range st.Records {
		if r.ConceptID == id {
			return true
		}
	}
	return false
}

// blobUsed reports whether any record still refers to blob.
func (st *state) blobUsed(blob string) bool {
	for _, r := range st.Records {
		for _, f := range r.Files {
			if f.Blob == blob {
				return true
			}
		}
	}
	return false
}

func (r *record) file(key string) *file {
	for _, f := range r.Files {
		if f.Key == key {
			return f
		}
	}
	return nil
}

func (r *record) fileByID(id string) *file {
	for _, f := range r.Files {
		if f.ID == id {
			return f
		}
	}
	return nil
}

func (r *record) totalSize(exceptKey string) int64 {
	var n int64
	for _, f := range r.Files {
		if f.Key != exceptKey {
			n += f.Size
		}
	}
	return n
}

// ownerOf maps a token to a stable Zenodo user id (the same token is the
// same user across restarts, whatever the order of WithTokens).
func ownerOf(token string) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(token))
	return 1 + int(h.Sum32()%1000000)
}

func (s *Server) blobPath(blob string) string {
	return filepath.Join(s.dir, blobDir, blob)
}

// gcBlob removes a blob no record refers to any more. Called with s.mu held.
func (s *Server) gcBlob(blob string) {
	if blob == "" || s.st.blobUsed(blob) {
		return
	}
	if err := os.Remove(s.blobPath(blob)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.logf("zenodotest: removing unused blob %s: %v", blob, err)
	}
}

// deepCopy copies a JSON-like value (maps, slices, scalars).
func deepCopy(v any) any {
	switch x := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[k] = deepCopy(e)
		}
		return m
	case []any:
		s := make([]any, len(x))
		for i, e := range x {
			s[i] = deepCopy(e)
		}
		return s
	default:
		return x
	}
}

func copyMap(m map[string]any) map[string]any {
	if m == nil {
		return map[string]any{}
	}
	return deepCopy(m).(map[string]any)
}
