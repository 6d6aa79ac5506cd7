package remote

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/internal/fsutil"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/zenodo"
)

// stateDir is the layout of WithStateDir's directory:
//
//	records/<recid>.json                 a resolved record
//	refs/<sha256 of the reference>.json  the record a concept or tag resolved to
//	images/<recid>/<sha256 of the key>/  per archive file:
//	    index.json                        its image.tar.index.json
//	    metadata                          its bytes [0, MetadataEnd)
//	    spool.tar                         or: the whole archive, decompressed
//
// Files are written to a temporary name and renamed into place, so a file
// that exists is complete. Nothing read back is trusted more than what
// came from the network: blobs are verified by digest when read.
type stateDir struct {
	dir string // "" when there is none
}

// safeID matches the record ids used in state paths.
var safeID = regexp.MustCompile(`^[0-9A-Za-z_-]{1,64}$`)

// Sizes of state files read back into memory.
const maxStateRecord = 16 << 20

func (s stateDir) enabled() bool { return s.dir != "" }

func (s stateDir) recordPath(recID string) string {
	if !s.enabled() || !safeID.MatchString(recID) {
		return ""
	}
	return filepath.Join(s.dir, "records", recID+".json")
}

func (s stateDir) refPath(ref zenodo.Reference) string {
	if !s.enabled() {
		return ""
	}
	h := sha256.Sum256([]byte(refKey(ref)))
	return filepath.Join(s.dir, "refs", hex.EncodeToString(h[:])+".json")
}

// imageDir is where an archive file's state lives ("" without state).
func (s stateDir) imageDir(recID, key string) string {
	if !s.enabled() || !safeID.MatchString(recID) {
		return ""
	}
	h := sha256.Sum256([]byte(key))
	return filepath.Join(s.dir, "images", recID, hex.EncodeToString(h[:16]))
}

// loadRecord reads a stored record; ok is false when there is none.
func (s stateDir) loadRecord(recID string) (*zenodo.Record, bool) {
	p := s.recordPath(recID)
	if p == "" {
		return nil, false
	}
	data, err := fsutil.ReadFileLimit(p, maxStateRecord)
	if err != nil {
		return nil, false
	}
	var rec zenodo.Record
	if err := json.Unmarshal(data, &rec); err != nil || rec.RecordID() != recID {
		return nil, false
	}
	return &rec, true
}

func (s stateDir) saveRecord(rec *zenodo.Record) error {
	p := s.recordPath(rec.RecordID())
	if p == "" {
		return nil
	}
	data, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("encoding record %s: %w", rec.RecordID(), err)
	}
	return fsutil.WriteFileAtomic(p, data, 0o600)
}

// storedRef is what refs/ holds.
type storedRef struct {
	Ref    string `json:"ref"`
	Record string `json:"record"`
}

func (s stateDir) loadRef(ref zenodo.Reference) (string, bool) {
	p := s.refPath(ref)
	if p == "" {
		return "", false
	}
	data, err := fsutil.ReadFileLimit(p, 64<<10)
	if err != nil {
		return "", false
	}
	var sr storedRef
	if err := json.Unmarshal(data, &sr); err != nil || sr.Ref != refKey(ref) || !safeID.MatchString(sr.Record) {
		return "", false
	}
	return sr.Record, true
}

func (s stateDir) saveRef(ref zenodo.Reference, recID string) error {
	p := s.refPath(ref)
	if p == "" {
		return nil
	}
	data, err := json.Marshal(storedRef{Ref: refKey(ref), Record: recID})
	if err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(p, data, 0o600)
}

// refKey is a reference without its digest (which does not change which
// record it names).
func refKey(ref zenodo.Reference) string {
	ref.Digest = ""
	return ref.String()
}

// fileExists reports whether path is an existing regular file.
func fileExists(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular()
}
