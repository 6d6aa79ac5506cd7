package seekable

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"path"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/klauspost/compress/gzip"
	"github.com/opencontainers/go-digest"
)

// TOC is the table of contents of a seekable layer. A TOC returned by
// ParseTOC or Convert is valid and indexed; do not modify it.
type TOC struct {
	// Version is the TOC format version, TOCVersion.
	Version int
	// Members are the gzip members of the layer blob, in order. They are
	// contiguous both in the blob and in the uncompressed tar.
	Members []Member
	// Entries are the tar entries, in tar order. Names are normalised
	// (relative, cleaned, no trailing slash; the root is ".").
	Entries []Entry

	// names maps each name to the index of its last entry.
	names map[string]int
	// usize is the size of the uncompressed tar.
	usize int64
}

// Member is one gzip member of a seekable layer.
type Member struct {
	// Offset and Size locate the compressed member within the layer blob.
	Offset int64 `json:"offset"`
	Size   int64 `json:"size"`
	// UOffset and USize locate its uncompressed bytes within the layer tar.
	UOffset int64 `json:"uoffset"`
	USize   int64 `json:"usize"`
	// Digest is the sha256 of the compressed member bytes.
	Digest digest.Digest `json:"digest"`
}

// Entry is one entry of a layer tar.
type Entry struct {
	// Name is the normalised path of the entry: relative to the layer root,
	// cleaned, without trailing slash. The root directory is ".".
	Name string
	// Type is one of TypeReg, TypeDir, TypeSymlink, TypeHardlink, TypeChar,
	// TypeBlock and TypeFifo.
	Type string
	// Linkname is the target of a symlink (verbatim, may be anything) or of a
	// hardlink (a normalised name of an earlier entry of the layer).
	Linkname string
	// Mode holds the permission bits, with setuid, setgid and sticky bits
	// (at most 07777).
	Mode         int64
	UID, GID     int
	Uname, Gname string
	// Size is the size of a regular file's content; 0 for other types.
	Size    int64
	ModTime time.Time
	// Xattrs are the extended attributes from the tar's PAX records
	// (SCHILY.xattr.*). Values are raw bytes.
	Xattrs map[string]string
	// Devmajor and Devminor are set for char and block devices.
	Devmajor, Devminor int64
	// Offset is the offset of the entry's data within the uncompressed tar
	// (for entries without data, where the data would start).
	Offset int64
	// Member is the index of the member holding the data's first byte.
	Member int
	// InnerOffset is the offset of the data within that member's
	// uncompressed bytes.
	InnerOffset int64
	// Digest is the sha256 of a regular file's content.
	Digest digest.Digest

	// target is 1 + the index of the entry holding a hardlink's data.
	target int
}

// UncompressedSize returns the size of the layer's uncompressed tar.
func (t *TOC) UncompressedSize() int64 { return t.usize }

// Lookup returns the entry of a name, as tar extraction would leave it: when a
// name occurs more than once in the layer, the last entry wins. The name is
// normalised first: "/usr/bin/", "./usr/bin" and "usr/bin" are the same; "",
// "/" and "." name the root.
func (t *TOC) Lookup(name string) (*Entry, bool) {
	name = strings.TrimLeft(name, "/")
	if name == "" {
		name = "."
	}
	i, ok := t.names[path.Clean(name)]
	if !ok {
		return nil, false
	}
	return &t.Entries[i], true
}

// Resolve returns the entry holding the data of e: for a hardlink, the
// (regular, symlink, device or fifo) entry it links to, as it was when the
// hardlink was extracted; for anything else, e itself.
func (t *TOC) Resolve(e *Entry) *Entry {
	if e.target > 0 && e.target <= len(t.Entries) {
		return &t.Entries[e.target-1]
	}
	return e
}

// MemberRange returns the indexes of the first and last member holding bytes
// [off, off+n) of the content of the regular file e, clipped to its size. For
// an empty range it returns first > last. For hardlinks, pass t.Resolve(e).
func (t *TOC) MemberRange(e *Entry, off, n int64) (first, last int) {
	if e == nil || off < 0 || n <= 0 || off >= e.Size || len(t.Members) == 0 {
		return 0, -1
	}
	n = min(n, e.Size-off)
	start := e.Offset + off
	end := start + n
	first = sort.Search(len(t.Members), func(i int) bool { return t.Members[i].UOffset > start }) - 1
	last = sort.Search(len(t.Members), func(i int) bool { return t.Members[i].UOffset >= end }) - 1
	return max(first, 0), last
}

// MarshalJSON encodes the TOC as its JSON blob (MediaTypeTOC).
func (t *TOC) MarshalJSON() ([]byte, error) {
	members, entries := t.Members, t.Entries
	if members == nil {
		members = []Member{}
	}
	if entries == nil {
		entries = []Entry{}
	}
	return json.Marshal(struct {
		Version int      `json:"version"`
		Members []Member `json:"members"`
		Entries []Entry  `json:"entries"`
	}{t.Version, members, entries})
}

// jsonEntry is the JSON form of an Entry. Strings that are not valid UTF-8
// (tar names are bytes) go into the _b64 fields instead, base64-encoded, as
// JSON strings cannot hold them.
type jsonEntry struct {
	Name        string            `json:"name"`
	NameB64     []byte            `json:"name_b64,omitempty"`
	Type        string            `json:"type"`
	Linkname    string            `json:"linkname,omitempty"`
	LinknameB64 []byte            `json:"linkname_b64,omitempty"`
	Mode        int64             `json:"mode"`
	UID         int               `json:"uid,omitempty"`
	GID         int               `json:"gid,omitempty"`
	Uname       string            `json:"uname,omitempty"`
	UnameB64    []byte            `json:"uname_b64,omitempty"`
	Gname       string            `json:"gname,omitempty"`
	GnameB64    []byte            `json:"gname_b64,omitempty"`
	Size        int64             `json:"size,omitempty"`
	ModTime     int64             `json:"mtime"`
	ModTimeNsec int64             `json:"mtime_nsec,omitempty"`
	Xattrs      map[string][]byte `json:"xattrs,omitempty"`
	Devmajor    int64             `json:"devmajor,omitempty"`
	Devminor    int64             `json:"devminor,omitempty"`
	Offset      int64             `json:"offset"`
	Member      int               `json:"member"`
	InnerOffset int64             `json:"inner_offset"`
	Digest      digest.Digest     `json:"digest,omitempty"`
}

// splitUTF8 returns s as a JSON string if it is valid UTF-8, else as bytes.
func splitUTF8(s string) (string, []byte) {
	if utf8.ValidString(s) {
		return s, nil
	}
	return "", []byte(s)
}

// joinUTF8 is the inverse of splitUTF8.
func joinUTF8(field, s string, b []byte) (string, error) {
	if b == nil {
		return s, nil
	}
	if s != "" {
		return "", fmt.Errorf("both %s and %s_b64 are set", field, field)
	}
	return string(b), nil
}

// MarshalJSON encodes e as a TOC entry.
func (e Entry) MarshalJSON() ([]byte, error) {
	j := jsonEntry{
		Type:        e.Type,
		Mode:        e.Mode,
		UID:         e.UID,
		GID:         e.GID,
		Size:        e.Size,
		ModTime:     e.ModTime.Unix(),
		ModTimeNsec: int64(e.ModTime.Nanosecond()),
		Devmajor:    e.Devmajor,
		Devminor:    e.Devminor,
		Offset:      e.Offset,
		Member:      e.Member,
		InnerOffset: e.InnerOffset,
		Digest:      e.Digest,
	}
	j.Name, j.NameB64 = splitUTF8(e.Name)
	j.Linkname, j.LinknameB64 = splitUTF8(e.Linkname)
	j.Uname, j.UnameB64 = splitUTF8(e.Uname)
	j.Gname, j.GnameB64 = splitUTF8(e.Gname)
	if len(e.Xattrs) > 0 {
		j.Xattrs = make(map[string][]byte, len(e.Xattrs))
		for k, v := range e.Xattrs {
			if !utf8.ValidString(k) {
				return nil, fmt.Errorf("xattr name %q is not UTF-8: %w", k, ErrUnsupported)
			}
			j.Xattrs[k] = []byte(v)
		}
	}
	return json.Marshal(&j)
}

// UnmarshalJSON decodes a TOC entry. It checks only the encoding; ParseTOC
// validates the entry.
func (e *Entry) UnmarshalJSON(data []byte) error {
	var j jsonEntry
	if err := json.Unmarshal(data, &j); err != nil {
		return err
	}
	return j.entry(e)
}

// entry converts j into *e.
func (j *jsonEntry) entry(e *Entry) error {
	if j.ModTimeNsec < 0 || j.ModTimeNsec >= int64(time.Second) {
		return fmt.Errorf("mtime_nsec %d out of range", j.ModTimeNsec)
	}
	*e = Entry{
		Type:        internType(j.Type),
		Mode:        j.Mode,
		UID:         j.UID,
		GID:         j.GID,
		Size:        j.Size,
		ModTime:     time.Unix(j.ModTime, j.ModTimeNsec).UTC(),
		Devmajor:    j.Devmajor,
		Devminor:    j.Devminor,
		Offset:      j.Offset,
		Member:      j.Member,
		InnerOffset: j.InnerOffset,
		Digest:      j.Digest,
	}
	var err error
	if e.Name, err = joinUTF8("name", j.Name, j.NameB64); err != nil {
		return err
	}
	if e.Linkname, err = joinUTF8("linkname", j.Linkname, j.LinknameB64); err != nil {
		return err
	}
	if e.Uname, err = joinUTF8("uname", j.Uname, j.UnameB64); err != nil {
		return err
	}
	if e.Gname, err = joinUTF8("gname", j.Gname, j.GnameB64); err != nil {
		return err
	}
	if len(j.Xattrs) > 0 {
		e.Xattrs = make(map[string]string, len(j.Xattrs))
		for k, v := range j.Xattrs {
			e.Xattrs[k] = string(v)
		}
	}
	return nil
}

// internType returns the constant for a known type name, so that a TOC does
// not hold a million copies of "reg".
func internType(s string) string {
	for _, t := range [...]string{TypeReg, TypeDir, TypeSymlink, TypeHardlink, TypeChar, TypeBlock, TypeFifo} {
		if s == t {
			return t
		}
	}
	return s
}

// limits bound what a TOC may hold. Tests lower them.
type limits struct {
	tocSize     int
	entries     int
	members     int
	memberUSize int64
}

func defaultLimits() limits {
	return limits{tocSize: MaxTOCSize, entries: MaxEntries, members: MaxMembers, memberUSize: MaxMemberUSize}
}

// ParseTOC decodes and validates the TOC of a layer blob of layerSize bytes.
// It rejects, with an error matching ErrInvalidTOC: blobs over MaxTOCSize,
// more than MaxEntries entries or MaxMembers members, members that do not
// cover the layer blob and its uncompressed tar contiguously, entries whose
// data lies outside the members, absolute names and names that escape the
// root through "..", hardlinks whose target is not an earlier entry (or is a
// directory), entries below a non-directory, and fields that do not fit the
// entry's type. Names are normalised ("./usr/" becomes "usr"). A name may
// occur more than once: the last entry wins, as in tar extraction. Symlink
// targets are not checked; whoever follows them must confine them.
func ParseTOC(data []byte, layerSize int64) (*TOC, error) {
	t, err := parseTOC(data, layerSize, defaultLimits())
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidTOC, err)
	}
	return t, nil
}

func parseTOC(data []byte, layerSize int64, lim limits) (*TOC, error) {
	if len(data) > lim.tocSize {
		return nil, fmt.Errorf("%d bytes, more than the limit of %d", len(data), lim.tocSize)
	}
	if bytes.HasPrefix(data, gzipMagic) {
		var err error
		if data, err = gunzipTOC(data, lim.tocSize); err != nil {
			return nil, err
		}
	}
	if layerSize <= 0 {
		return nil, fmt.Errorf("layer size %d", layerSize)
	}
	t, err := decodeTOC(data, lim)
	if err != nil {
		return nil, err
	}
	if t.Version != TOCVersion {
		return nil, fmt.Errorf("unsupported version %d (want %d)", t.Version, TOCVersion)
	}
	if err := t.checkMembers(layerSize, lim); err != nil {
		return nil, err
	}
	if err := t.index(); err != nil {
		return nil, err
	}
	for i := range t.Entries {
		if err := t.checkEntry(&t.Entries[i]); err != nil {
			return nil, fmt.Errorf("entries[%d] %q: %w", i, t.Entries[i].Name, err)
		}
	}
	return t, nil
}

// gzipMagic starts every gzip stream and no JSON text.
var gzipMagic = []byte{0x1f, 0x8b}

// CompressTOC returns a TOC blob gzip-compressed, a blob of media type
// MediaTypeTOCGzip. ParseTOC reads both forms. Compression divides the size of
// a typical TOC by about four.
func CompressTOC(tocJSON []byte) []byte {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression) // a valid level: no error
	zw.Write(tocJSON)                                        // writes to a bytes.Buffer do not fail
	zw.Close()
	return buf.Bytes()
}

// gunzipTOC decompresses a gzip-compressed TOC of at most limit bytes.
func gunzipTOC(data []byte, limit int) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("decompressing: %w", err)
	}
	out, err := io.ReadAll(io.LimitReader(zr, int64(limit)+1))
	if err != nil {
		return nil, fmt.Errorf("decompressing: %w", err)
	}
	if len(out) > limit {
		return nil, fmt.Errorf("more than the limit of %d bytes uncompressed", limit)
	}
	return out, nil
}

// decodeTOC decodes the JSON object element by element, so that the number
// of members and entries is bounded before they are allocated.
func decodeTOC(data []byte, lim limits) (*TOC, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := expectDelim(dec, '{'); err != nil {
		return nil, err
	}
	t := &TOC{}
	seen := make(map[string]bool, 3)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		key, _ := tok.(string)
		if seen[key] {
			return nil, fmt.Errorf("duplicate key %q", key)
		}
		seen[key] = true
		switch key {
		case "version":
			err = dec.Decode(&t.Version)
		case "members":
			err = decodeArray(dec, key, lim.members, func() error {
				var m Member
				if err := dec.Decode(&m); err != nil {
					return err
				}
				t.Members = append(t.Members, m)
				return nil
			})
		case "entries":
			owners := make(map[string]string) // interned user and group names
			intern := func(s string) string {
				if v, ok := owners[s]; ok {
					return v
				}
				if len(owners) < 1024 {
					owners[s] = s
				}
				return s
			}
			err = decodeArray(dec, key, lim.entries, func() error {
				var j jsonEntry
				if err := dec.Decode(&j); err != nil {
					return err
				}
				t.Entries = append(t.Entries, Entry{})
				e := &t.Entries[len(t.Entries)-1]
				if err := j.entry(e); err != nil {
					return err
				}
				e.Uname, e.Gname = intern(e.Uname), intern(e.Gname)
				return nil
			})
		default: // unknown keys are for later versions
			var skip json.RawMessage
			err = dec.Decode(&skip)
		}
		if err != nil {
			return nil, fmt.Errorf("decoding %q: %w", key, err)
		}
	}
	if err := expectDelim(dec, '}'); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("trailing data after the TOC object")
	}
	return t, nil
}

func expectDelim(dec *json.Decoder, want json.Delim) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if tok != want {
		return fmt.Errorf("got %v, want %q", tok, want)
	}
	return nil
}

// decodeArray calls elem for each element of a JSON array (null is empty),
// failing past limit elements.
func decodeArray(dec *json.Decoder, name string, limit int, elem func() error) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if tok == nil {
		return nil
	}
	if tok != json.Delim('[') {
		return fmt.Errorf("%s is not an array", name)
	}
	for n := 0; dec.More(); n++ {
		if n >= limit {
			return fmt.Errorf("more than %d %s", limit, name)
		}
		if err := elem(); err != nil {
			return fmt.Errorf("%s[%d]: %w", name, n, err)
		}
	}
	return expectDelim(dec, ']')
}

// checkMembers checks that the members cover the layer blob and the
// uncompressed tar contiguously, and sets t.usize.
func (t *TOC) checkMembers(layerSize int64, lim limits) error {
	if len(t.Members) == 0 {
		return errors.New("no members")
	}
	var off, uoff int64
	for i, m := range t.Members {
		switch {
		case m.Offset != off:
			return fmt.Errorf("members[%d]: offset %d, want %d", i, m.Offset, off)
		case m.Size <= 0 || m.Size > layerSize-off:
			return fmt.Errorf("members[%d]: size %d at offset %d does not fit a layer of %d bytes", i, m.Size, off, layerSize)
		case m.UOffset != uoff:
			return fmt.Errorf("members[%d]: uncompressed offset %d, want %d", i, m.UOffset, uoff)
		case m.USize < 0 || m.USize > lim.memberUSize:
			return fmt.Errorf("members[%d]: uncompressed size %d out of range [0, %d]", i, m.USize, lim.memberUSize)
		case m.USize == 0 && len(t.Members) > 1:
			return fmt.Errorf("members[%d]: empty", i)
		case m.Size > maxCompressedSize(m.USize):
			// Readers allocate a member's compressed bytes before they can
			// verify them: a size no gzip member of USize bytes can have
			// would make them allocate up to the layer's size.
			return fmt.Errorf("members[%d]: compressed size %d is more than a gzip member of %d bytes can take", i, m.Size, m.USize)
		}
		if err := checkDigest(m.Digest); err != nil {
			return fmt.Errorf("members[%d]: %w", i, err)
		}
		off += m.Size
		uoff += m.USize
	}
	if off != layerSize {
		return fmt.Errorf("members end at %d, the layer at %d", off, layerSize)
	}
	t.usize = uoff
	return nil
}

// maxCompressedSize bounds the size of a gzip member holding usize bytes:
// deflate's stored blocks add 5 bytes per 64 KiB, and the gzip header and
// trailer 18 bytes plus optional fields, which the slack leaves room for.
func maxCompressedSize(usize int64) int64 {
	return usize + usize/64 + 64<<10
}

// checkDigest checks that d is a sha256 digest (without go-digest's regexp,
// which would dominate ParseTOC).
func checkDigest(d digest.Digest) error {
	hex, ok := strings.CutPrefix(string(d), string(digestAlgorithm)+":")
	if !ok {
		return fmt.Errorf("digest %q is not %s", d, digestAlgorithm)
	}
	if len(hex) != 64 {
		return fmt.Errorf("digest %q: %d hex digits, want 64", d, len(hex))
	}
	for i := 0; i < len(hex); i++ {
		if c := hex[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return fmt.Errorf("digest %q: not lowercase hex", d)
		}
	}
	return nil
}

// checkEntry checks the fields of an indexed entry against its type and the
// members.
func (t *TOC) checkEntry(e *Entry) error {
	if e.Mode < 0 || e.Mode > 0o7777 {
		return fmt.Errorf("mode %#o out of range", e.Mode)
	}
	if e.UID < 0 || e.UID > math.MaxUint32 || e.GID < 0 || e.GID > math.MaxUint32 {
		return fmt.Errorf("uid/gid %d/%d out of range", e.UID, e.GID)
	}
	for k := range e.Xattrs {
		if k == "" || strings.IndexByte(k, 0) >= 0 {
			return fmt.Errorf("xattr name %q", k)
		}
	}
	isDev := e.Type == TypeChar || e.Type == TypeBlock
	switch {
	case e.Type != TypeReg && e.Size != 0:
		return fmt.Errorf("size %d on a %s", e.Size, e.Type)
	case e.Size < 0:
		return fmt.Errorf("size %d", e.Size)
	case e.Type != TypeSymlink && e.Type != TypeHardlink && e.Linkname != "":
		return fmt.Errorf("link target on a %s", e.Type)
	case !isDev && (e.Devmajor != 0 || e.Devminor != 0):
		return fmt.Errorf("device numbers on a %s", e.Type)
	case isDev && (e.Devmajor < 0 || e.Devmajor > math.MaxUint32 || e.Devminor < 0 || e.Devminor > math.MaxUint32):
		return fmt.Errorf("device %d:%d out of range", e.Devmajor, e.Devminor)
	case e.Type != TypeReg && e.Digest != "":
		return fmt.Errorf("digest on a %s", e.Type)
	}
	if e.Type == TypeReg {
		if err := checkDigest(e.Digest); err != nil {
			return err
		}
	}
	if e.Member < 0 || e.Member >= len(t.Members) {
		return fmt.Errorf("member %d out of range [0, %d)", e.Member, len(t.Members))
	}
	m := t.Members[e.Member]
	if e.InnerOffset < 0 || e.InnerOffset > m.USize || (e.Size > 0 && e.InnerOffset == m.USize) {
		return fmt.Errorf("offset %d inside member %d of %d bytes", e.InnerOffset, e.Member, m.USize)
	}
	if e.Offset != m.UOffset+e.InnerOffset {
		return fmt.Errorf("offset %d, but member %d starts at %d and the data %d bytes into it", e.Offset, e.Member, m.UOffset, e.InnerOffset)
	}
	if e.Size > t.usize-e.Offset {
		return fmt.Errorf("%d bytes at offset %d run past the end of the layer (%d bytes)", e.Size, e.Offset, t.usize)
	}
	return nil
}

// errNoLinkTarget means a hardlink's target is not an earlier entry.
var errNoLinkTarget = errors.New("hardlink target is not an earlier entry of the layer")

// index normalises the entries' names, resolves hardlinks and builds the name
// index.
func (t *TOC) index() error {
	t.names = make(map[string]int, len(t.Entries))
	for i := range t.Entries {
		if err := t.add(i); err != nil {
			return fmt.Errorf("entries[%d] %q: %w", i, t.Entries[i].Name, err)
		}
	}
	return t.checkTree()
}

// add indexes entry i, whose predecessors are indexed.
func (t *TOC) add(i int) error {
	e := &t.Entries[i]
	name, err := cleanName(e.Name)
	if err != nil {
		return err
	}
	e.Name = name
	switch e.Type {
	case TypeReg, TypeDir, TypeSymlink, TypeHardlink, TypeChar, TypeBlock, TypeFifo:
	default:
		return fmt.Errorf("unknown type %q", e.Type)
	}
	if name == "." && e.Type != TypeDir {
		return fmt.Errorf("the root is a %s, not a directory", e.Type)
	}
	e.target = 0
	if e.Type == TypeHardlink {
		ln, err := cleanName(e.Linkname)
		if err != nil {
			return fmt.Errorf("hardlink target: %w", err)
		}
		e.Linkname = ln
		j, ok := t.names[ln]
		if !ok {
			return fmt.Errorf("%q: %w", ln, errNoLinkTarget)
		}
		if te := &t.Entries[j]; te.target > 0 {
			j = te.target - 1
		}
		if t.Entries[j].Type == TypeDir {
			return fmt.Errorf("hardlink to directory %q", ln)
		}
		e.target = j + 1
	}
	t.names[name] = i
	return nil
}

// checkTree checks that no name lies below a name whose last entry is not a
// directory. Ancestors without an entry are implicit directories.
func (t *TOC) checkTree() error {
	for i := range t.Entries {
		name := t.Entries[i].Name
		if t.names[name] != i {
			continue // overridden
		}
		for p := path.Dir(name); p != "."; p = path.Dir(p) {
			j, ok := t.names[p]
			if !ok {
				continue
			}
			if t.Entries[j].Type != TypeDir {
				return fmt.Errorf("entries[%d] %q: below %q, which is a %s", i, name, p, t.Entries[j].Type)
			}
			break // p's own ancestors are checked with p
		}
	}
	return nil
}

// cleanName normalises a tar entry name: relative to the root, cleaned, no
// trailing slash; the root is ".". Absolute names and names escaping the root
// are errors.
func cleanName(name string) (string, error) {
	switch {
	case name == "":
		return "", errors.New("empty name")
	case strings.IndexByte(name, 0) >= 0:
		return "", fmt.Errorf("name %q contains NUL", name)
	case name[0] == '/':
		return "", fmt.Errorf("name %q is absolute", name)
	}
	c := path.Clean(name)
	if c == ".." || strings.HasPrefix(c, "../") {
		return "", fmt.Errorf("name %q escapes the layer root", name)
	}
	return c, nil
}
