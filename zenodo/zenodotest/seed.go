package zenodotest

import (
	"bytes"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/containerd/errdefs"
)

// SeedRecord is a published record created directly with Publish, without
// going through the deposit API.
type SeedRecord struct {
	Title, Version, Description string
	// ConceptRecID makes the record a new version of that concept; "" makes
	// a new concept.
	ConceptRecID string
	Files        []SeedFile
	// Metadata, if set, is merged over the metadata built from the fields
	// above (legacy deposit field names: upload_type, creators, keywords...).
	Metadata map[string]any
}

// SeedFile is one file of a SeedRecord: Data, or the file at Path (copied).
type SeedFile struct {
	Name string
	Data []byte
	Path string
}

// Published names a record created by Publish.
type Published struct {
	RecID, ConceptRecID, DOI, ConceptDOI string
}

// Publish creates a published record owned by the first token's user, with
// the same limits as the deposit API (at least one file, none empty, at
// most WithMaxFiles, at most WithMaxRecordSize in total). Errors wrap
// errdefs kinds: ErrInvalidArgument, ErrNotFound (no such concept),
// ErrConflict (the concept has an open draft).
func (s *Server) Publish(sr SeedRecord) (Published, error) {
	if len(sr.Files) == 0 {
		return Published{}, fmt.Errorf("seeding %q: a record needs at least one file: %w", sr.Title, errdefs.ErrInvalidArgument)
	}
	if len(sr.Files) > s.maxFiles {
		return Published{}, fmt.Errorf("seeding %q: %d files, at most %d: %w", sr.Title, len(sr.Files), s.maxFiles, errdefs.ErrInvalidArgument)
	}
	seen := map[string]bool{}
	for _, f := range sr.Files {
		if fe := checkKey(f.Name); fe != nil || seen[f.Name] {
			return Published{}, fmt.Errorf("seeding %q: bad or repeated file name %q: %w", sr.Title, f.Name, errdefs.ErrInvalidArgument)
		}
		seen[f.Name] = true
	}

	now := s.now()
	var files []*file
	var total int64
	cleanup := func() {
		for _, f := range files {
			_ = os.Remove(s.blobPath(f.Blob))
		}
	}
	for _, sf := range sr.Files {
		f, err := s.storeSeedFile(sf, now)
		if err != nil {
			cleanup()
			return Published{}, fmt.Errorf("seeding %q: %w", sr.Title, err)
		}
		files = append(files, f)
		total += f.Size
	}
	if total > s.maxRecordSize {
		cleanup()
		return Published{}, fmt.Errorf("seeding %q: %d bytes, at most %d: %w", sr.Title, total, s.maxRecordSize, errdefs.ErrInvalidArgument)
	}

	md := map[string]any{
		"title":            sr.Title,
		"upload_type":      "software",
		"description":      sr.Description,
		"creators":         []any{map[string]any{"name": "zenodotest", "affiliation": nil}},
		"access_right":     "open",
		"publication_date": now.UTC().Format(time.DateOnly),
	}
	if sr.Version != "" {
		md["version"] = sr.Version
	}
	for k, v := range sr.Metadata {
		md[k] = deepCopy(v)
	}
	delete(md, "prereserve_doi")
	delete(md, "doi")

	s.mu.Lock()
	defer s.mu.Unlock()
	var concept int64
	if sr.ConceptRecID != "" {
		c, err := strconv.ParseInt(sr.ConceptRecID, 10, 64)
		if err != nil || s.st.latest(c) == nil || !s.st.isConcept(c) {
			cleanup()
			return Published{}, fmt.Errorf("seeding a new version of concept %q: %w", sr.ConceptRecID, errdefs.ErrNotFound)
		}
		if s.st.openDraft(c) != nil {
			cleanup()
			return Published{}, fmt.Errorf("seeding a new version of concept %q: the concept has an open draft: %w", sr.ConceptRecID, errdefs.ErrConflict)
		}
		concept = c
	} else {
		concept = s.st.newID()
	}
	id := s.st.newID()
	rec := &record{
		ID:                id,
		ConceptID:         concept,
		Owner:             ownerOf(s.tokens[0]),
		Bucket:            newUUID(),
		Metadata:          md,
		PublishedMetadata: copyMap(md),
		Files:             files,
		Published:         true,
		DOI:               s.doi(id),
		Index:             len(s.st.versions(concept)),
		Revision:          2,
		Created:           now,
		Updated:           now,
		PublishedAt:       now,
		IndexedAt:         now.Add(s.indexDelay),
	}
	s.st.add(rec)
	if err := s.save(); err != nil {
		s.st.remove(rec)
		cleanup()
		return Published{}, fmt.Errorf("seeding %q: %w", sr.Title, err)
	}
	return Published{
		RecID:        strconv.FormatInt(id, 10),
		ConceptRecID: strconv.FormatInt(concept, 10),
		DOI:          rec.DOI,
		ConceptDOI:   s.doi(concept),
	}, nil
}

func (s *Server) storeSeedFile(sf SeedFile, now time.Time) (*file, error) {
	var src io.Reader = bytes.NewReader(sf.Data)
	if sf.Path != "" {
		if sf.Data != nil {
			return nil, fmt.Errorf("file %q has both Data and Path: %w", sf.Name, errdefs.ErrInvalidArgument)
		}
		fh, err := os.Open(sf.Path)
		if err != nil {
			return nil, fmt.Errorf("opening %s: %w", sf.Path, err)
		}
		defer func() { _ = fh.Close() }()
		src = fh
	}
	tmp, err := os.CreateTemp(filepath.Join(s.dir, tmpDir), "seed-*")
	if err != nil {
		return nil, fmt.Errorf("storing %q: %w", sf.Name, err)
	}
	defer func() { _ = os.Remove(tmp.Name()) }()
	h := md5.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), io.LimitReader(src, s.maxRecordSize+1))
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	switch {
	case err != nil:
		return nil, fmt.Errorf("storing %q: %w", sf.Name, err)
	case n == 0:
		return nil, fmt.Errorf("file %q: %s: %w", sf.Name, msgEmptyFile, errdefs.ErrInvalidArgument)
	case n > s.maxRecordSize:
		return nil, fmt.Errorf("file %q: larger than %d bytes: %w", sf.Name, s.maxRecordSize, errdefs.ErrInvalidArgument)
	}
	blob := newUUID()
	if err := os.Rename(tmp.Name(), s.blobPath(blob)); err != nil {
		return nil, fmt.Errorf("storing %q: %w", sf.Name, err)
	}
	return &file{ID: newUUID(), Key: sf.Name, Size: n, MD5: hex.EncodeToString(h.Sum(nil)), Blob: blob, VersionID: newUUID(), Created: now, Updated: now}, nil
}

// NewTestServer starts New(opts...) on an httptest server; both are closed
// by t.Cleanup.
func NewTestServer(t testing.TB, opts ...Option) (*Server, *httptest.Server) {
	t.Helper()
	s, err := Open(opts...)
	if err != nil {
		t.Fatalf("zenodotest: %v", err)
	}
	ts := httptest.NewServer(s)
	t.Cleanup(func() {
		ts.Close()
		if err := s.Close(); err != nil {
			t.Errorf("zenodotest: %v", err)
		}
	})
	return s, ts
}
