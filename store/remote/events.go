package remote

import (
	"strconv"
	"time"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
)

// EventKind says what an Event reports.
type EventKind int

// Event kinds.
const (
	// EventOpen: an image was opened. Mode says how ("index", "walk",
	// "spool", or "state" when it came from the state directory without
	// network), Duration how long it took, Err why it failed.
	EventOpen EventKind = iota + 1
	// EventFetch: one ranged request for layer members ended. Fill tells a
	// background fill from an on-demand fetch; Members is how many members
	// it was for (the coalesced count), Bytes how many bytes it brought,
	// Duration how long it took from the request to its last byte.
	EventFetch
	// EventMemoryHit: a member was served from the memory cache.
	EventMemoryHit
	// EventCacheHit: a member was served from the on-disk cache; Bytes is
	// its compressed size.
	EventCacheHit
	// EventCacheMiss: a member an on-demand read needs was in neither cache
	// and had to be fetched (or waited for).
	EventCacheMiss
	// EventRead: an on-demand Layer.ReadAt ended. Bytes is what it
	// returned, Duration its latency, Err its error.
	EventRead
	// EventFillDone: a background fill ended; Bytes is what it fetched, Err
	// why it stopped early (nil when the layer is all cached).
	EventFillDone
	// EventFallback: an archive could not be read by range and is being
	// downloaded whole (Mode "spool"); Err says why.
	EventFallback
)

// String returns the kind's lower-case name, fit for a metric label.
func (k EventKind) String() string {
	switch k {
	case EventOpen:
		return "open"
	case EventFetch:
		return "fetch"
	case EventMemoryHit:
		return "memory-hit"
	case EventCacheHit:
		return "cache-hit"
	case EventCacheMiss:
		return "cache-miss"
	case EventRead:
		return "read"
	case EventFillDone:
		return "fill-done"
	case EventFallback:
		return "fallback"
	}
	return "EventKind(" + strconv.Itoa(int(k)) + ")"
}

// Event is what WithObserver's callback receives.
type Event struct {
	Kind EventKind
	// Record is the record id of the image.
	Record string
	// Layer is the layer's digest, for layer events.
	Layer digest.Digest
	// Mode is how an image is read: "index", "walk", "spool" or "state".
	Mode string
	// Offset is where a fetch starts in the layer blob.
	Offset int64
	// Fill is true for requests of a background fill.
	Fill bool
	// Members is how many members a fetch covered.
	Members int
	// Bytes is a size in bytes; see the kinds.
	Bytes    int64
	Duration time.Duration
	Err      error
}

// Modes of an opened image (Event.Mode).
const (
	ModeIndex = "index" // format v1: index file and one metadata range
	ModeWalk  = "walk"  // no index: tar headers read by range
	ModeSpool = "spool" // downloaded whole into a spool file
	ModeState = "state" // from the state directory (index and metadata, or spool file), without network
)

func (o *options) emit(e Event) {
	if o.observer != nil {
		o.observer(e)
	}
}

// Errors of this package, checkable with errors.Is. Each also matches the
// errdefs kind named in its comment.
var (
	// ErrNoImage: the record has no file that could be an image archive
	// (errdefs.ErrNotFound).
	ErrNoImage error = &kindError{"record has no image", errdefs.ErrNotFound}
	// ErrAmbiguous: the record has several files that could be the image
	// archive (errdefs.ErrInvalidArgument).
	ErrAmbiguous error = &kindError{"record has several image archives", errdefs.ErrInvalidArgument}
	// ErrNoTOC: the layer is not seekable, so it cannot be read lazily
	// (errdefs.ErrNotFound).
	ErrNoTOC error = &kindError{"layer has no TOC", errdefs.ErrNotFound}
)

type kindError struct {
	msg  string
	kind error
}

func (e *kindError) Error() string { return e.msg }
func (e *kindError) Unwrap() error { return e.kind }
