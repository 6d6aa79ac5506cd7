// Package seekable writes and reads seekable gzip layers: the format core of
// lazy pulling.
//
// A seekable layer is a standard gzip stream made of many gzip members. Any
// gzip reader reads it as one stream and gets back, byte for byte, the
// original uncompressed layer tar, so a layer's diff_id does not change when
// it is converted. Convert cuts a new member at the content start of the first
// regular file once the current member holds at least the minimum member size
// (64 KiB by default), and always once a member reaches the maximum member size
// (4 MiB of uncompressed data by default).
//
// Each layer has a TOC (table of contents, a JSON blob of media type
// MediaTypeTOC): every tar entry with its metadata and where its data is (the
// member holding its first byte and the offset inside it), plus a sha256 per
// member and per regular file. The layer descriptor carries the TOC's digest in
// the AnnotationTOCDigest annotation, so trust flows from the manifest digest
// to the TOC and from the TOC to every member: every member read through this
// package is verified before its bytes are used.
//
// ParseTOC validates a TOC completely (it may come from anywhere, and may be
// gzip-compressed, see CompressTOC) and builds the name index of the layer as
// tar extraction would see it:
//
//   - names are relative and clean ("./usr/" is "usr", the root is "."); a
//     name that is absolute or escapes the root through ".." is an error;
//   - when a name occurs more than once, the last entry wins, whatever the
//     types (a directory repeated keeps its children and takes the last
//     metadata); a hardlink keeps the data of the entry its target named when
//     it was written;
//   - an entry below a name whose last entry is not a directory is an error
//     (tar extraction would have removed it, or failed); ancestors without
//     an entry of their own are implicit directories;
//   - hardlink targets must name an earlier entry that is not a directory;
//     symlink targets may be anything, whoever follows them confines them.
//
// Convert applies the same rules to the tar it reads, so what it writes
// always parses. NewFileReader reads a file's content through any io.ReaderAt
// over the layer blob, fetching only the members that hold the bytes asked
// for; DecompressMember verifies and decompresses one member, for callers
// that fetch and cache members themselves.
package seekable

import "github.com/opencontainers/go-digest"

// Media types of a seekable layer's TOC blob: JSON, or JSON compressed with
// gzip (see CompressTOC). ParseTOC reads both.
const (
	MediaTypeTOC     = "application/vnd.zenodo-snapshotter.toc.v1+json"
	MediaTypeTOCGzip = "application/vnd.zenodo-snapshotter.toc.v1+json+gzip"
)

// Annotations on a seekable layer's descriptor. containerd copies every layer
// annotation under containerd.io/snapshot/ into the labels it passes to the
// snapshotter's Prepare.
const (
	// AnnotationTOCDigest holds the digest of the layer's TOC blob.
	AnnotationTOCDigest = "containerd.io/snapshot/zenodo/toc.digest"
	// AnnotationUncompressedSize holds the size of the layer's uncompressed
	// tar, in decimal.
	AnnotationUncompressedSize = "containerd.io/snapshot/zenodo/uncompressed-size"
)

// TOCVersion is the only TOC version this package writes and reads.
const TOCVersion = 1

// Limits that bound the memory a TOC can make a reader spend. Convert refuses
// layers whose TOC would exceed them, ParseTOC refuses TOCs that do.
const (
	// MaxTOCSize is the largest TOC blob, in bytes.
	MaxTOCSize = 256 << 20
	// MaxEntries is the largest number of entries in a TOC.
	MaxEntries = 1 << 20
	// MaxMembers is the largest number of members in a TOC.
	MaxMembers = 1 << 20
	// MaxMemberUSize is the largest uncompressed size of one member. It is
	// also the largest value WithMaxMemberSize accepts.
	MaxMemberUSize = 64 << 20
)

// Type names of TOC entries.
const (
	TypeReg      = "reg"
	TypeDir      = "dir"
	TypeSymlink  = "symlink"
	TypeHardlink = "hardlink"
	TypeChar     = "char"
	TypeBlock    = "block"
	TypeFifo     = "fifo"
)

// digestAlgorithm is the algorithm of every digest in a TOC.
const digestAlgorithm = digest.SHA256
