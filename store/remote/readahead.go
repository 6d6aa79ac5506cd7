package remote

import (
	"sort"
	"strings"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/seekable"
)

// Adaptive readahead, as the kernel's for files: a layer keeps a few
// streams, regions of the layer that on-demand misses progress through.
// A miss joins a stream when it lands within the stream's window of the span
// its requests covered, or inside the directory subtree its earlier misses
// were in (a package's files are adjacent in the tar); each miss of a stream
// doubles the size of its next request, from the minimum request up to the
// maximum, so importing a package costs a few large requests rather than
// many small ones one after another. A miss far from every stream starts a
// new one at the minimum request size (the least recently used stream makes
// way). At a stream's second miss, the rest of its directory region is
// fetched too, in the background by at most three parallel requests (with an
// on-disk cache to keep it in): a request's latency dominates its transfer,
// and imports read a package's files in no particular order.
const (
	// maxRAStreams is how many streams a layer follows at once (imports of
	// several packages interleave).
	maxRAStreams = 8
	// maxRegion bounds the compressed span of the directory subtree taken
	// as a stream's region: the largest ancestor directory of a missed file
	// whose files lie within it.
	maxRegion = 32 << 20
	// maxRegionScan bounds the TOC entries looked at to find a region.
	maxRegionScan = 1 << 14
	// maxPrefetchRuns bounds the requests prefetching one region: the
	// request budget, not bandwidth, bounds a large lazy start.
	maxPrefetchRuns = 3
)

// raStream is one region of the layer that misses progress through.
type raStream struct {
	lo, hi   int64  // compressed span covered by its requests
	rlo, rhi int64  // compressed span of its directory region; empty if none
	win      int64  // size of its next request
	used     uint64 // tick of its last miss
	misses   int
}

// readahead is a layer's set of streams. It is guarded by the layer's mutex.
type readahead struct {
	streams []raStream
	tick    uint64
}

// cspan is a compressed span [lo, hi) of the layer.
type cspan struct{ lo, hi int64 }

// window returns the size of the request for a miss at compressed offset
// off, of a file in directory region reg, and the index of the stream the
// miss belongs to (to be given to cover). It records the miss.
func (ra *readahead) window(off int64, reg cspan, minReq, maxReq int64) (int64, int) {
	ra.tick++
	best := -1
	for k, s := range ra.streams {
		near := off >= s.lo-s.win && off <= s.hi+s.win
		inRegion := s.rlo < s.rhi && off >= s.rlo && off < s.rhi
		if (near || inRegion) && (best < 0 || s.used > ra.streams[best].used) {
			best = k
		}
	}
	if best < 0 {
		s := raStream{lo: off, hi: off, rlo: reg.lo, rhi: reg.hi, win: minReq, used: ra.tick, misses: 1}
		if len(ra.streams) < maxRAStreams {
			ra.streams = append(ra.streams, s)
			return s.win, len(ra.streams) - 1
		}
		lru := 0
		for k, t := range ra.streams {
			if t.used < ra.streams[lru].used {
				lru = k
			}
		}
		ra.streams[lru] = s
		return s.win, lru
	}
	s := &ra.streams[best]
	s.win = min(max(2*s.win, minReq), maxReq)
	s.used = ra.tick
	s.misses++
	if reg.lo < reg.hi {
		if s.rlo < s.rhi {
			s.rlo, s.rhi = min(s.rlo, reg.lo), max(s.rhi, reg.hi)
		} else {
			s.rlo, s.rhi = reg.lo, reg.hi
		}
	}
	return s.win, best
}

// prefetch returns the region of stream k to fetch in the background: its
// directory region, at its second miss (once: the requests a lazy start
// makes are few).
func (ra *readahead) prefetch(k int) (cspan, bool) {
	if k < 0 || k >= len(ra.streams) {
		return cspan{}, false
	}
	s := &ra.streams[k]
	if s.misses != 2 || s.rlo >= s.rhi {
		return cspan{}, false
	}
	return cspan{s.rlo, s.rhi}, true
}

// cover records that stream k's request covered compressed span sp.
func (ra *readahead) cover(k int, sp cspan) {
	if k < 0 || k >= len(ra.streams) {
		return
	}
	s := &ra.streams[k]
	if s.lo == s.hi {
		s.lo, s.hi = sp.lo, sp.hi
		return
	}
	s.lo, s.hi = min(s.lo, sp.lo), max(s.hi, sp.hi)
}

// region returns the compressed span of the largest ancestor directory of
// file e whose entries are adjacent in the tar and lie within maxRegion, or
// an empty span. Its cost is bounded by maxRegionScan entries.
func region(toc *seekable.TOC, e *seekable.Entry) cspan {
	es, ms := toc.Entries, toc.Members
	if len(es) == 0 || len(ms) == 0 {
		return cspan{}
	}
	k := entryIndex(toc, e)
	if k < 0 {
		return cspan{}
	}
	memberOf := func(i int) int { return min(max(es[i].Member, 0), len(ms)-1) }
	startOf := func(i int) int64 { return ms[memberOf(i)].Offset }
	endOf := func(i int) int64 {
		m := ms[memberOf(i)]
		if es[i].Type == seekable.TypeReg && es[i].Size > 0 {
			_, last := toc.MemberRange(&es[i], es[i].Size-1, 1)
			if last >= 0 {
				m = ms[last]
			}
		}
		return m.Offset + m.Size
	}
	var best cspan
	a, b := k, k
	lo, hi := startOf(k), endOf(k)
	scanned := 0
	name := e.Name
	for {
		j := strings.LastIndexByte(name, '/')
		if j <= 0 {
			return best
		}
		name = name[:j]
		prefix := name + "/"
		for a > 0 && strings.HasPrefix(es[a-1].Name, prefix) {
			if scanned++; scanned > maxRegionScan {
				return best
			}
			a--
			lo = min(lo, startOf(a))
			if hi-lo > maxRegion {
				return best
			}
		}
		for b+1 < len(es) && strings.HasPrefix(es[b+1].Name, prefix) {
			if scanned++; scanned > maxRegionScan {
				return best
			}
			b++
			hi = max(hi, endOf(b))
			if hi-lo > maxRegion {
				return best
			}
		}
		best = cspan{lo, hi}
	}
}

// entryIndex returns the index of e in toc.Entries, or -1. Entries are in
// tar order, so their data offsets never decrease.
func entryIndex(toc *seekable.TOC, e *seekable.Entry) int {
	es := toc.Entries
	k := sort.Search(len(es), func(i int) bool { return es[i].Offset >= e.Offset })
	for ; k < len(es) && es[k].Offset == e.Offset; k++ {
		if &es[k] == e {
			return k
		}
	}
	return -1
}

// planRegionLocked plans background requests for the members of region sp
// neither cached nor being fetched, nearest to compressed offset near
// first: at most maxPrefetchRuns requests, each up to the maximum request
// (16 MiB at 25 MB/s streams in 0.7 s; a request costs budget), skipping stray members smaller than a quarter of the
// minimum request. Their flights are registered (no reader wants them yet).
// l.mu is held.
func (l *Layer) planRegionLocked(sp cspan, near int64) []run {
	ms := l.toc.Members
	a := sort.Search(len(ms), func(i int) bool { return ms[i].Offset >= sp.lo })
	b := sort.Search(len(ms), func(i int) bool { return ms[i].Offset >= sp.hi }) - 1
	free := func(j int) bool {
		return l.flights[j] == nil && l.hints[j] != hintCached && !l.mem.contains(ms[j].Digest)
	}
	// The free stretches of the region.
	var stretches []run
	for j := a; j <= b; j++ {
		if !free(j) {
			continue
		}
		r := run{j, j}
		for r.last+1 <= b && free(r.last+1) {
			r.last++
		}
		j = r.last
		if n := ms[r.last].Offset + ms[r.last].Size - ms[r.first].Offset; n >= l.o.minRequest/4 {
			stretches = append(stretches, r)
		}
	}
	if len(stretches) == 0 {
		return nil
	}
	sort.Slice(stretches, func(x, y int) bool {
		return dist(ms[stretches[x].first].Offset, near) < dist(ms[stretches[y].first].Offset, near)
	})
	chunk := l.o.maxRequest
	var runs []run
	for _, st := range stretches {
		for j := st.first; j <= st.last && len(runs) < maxPrefetchRuns; {
			r := run{j, j}
			n := ms[j].Size
			for r.last+1 <= st.last && n+ms[r.last+1].Size <= chunk {
				r.last++
				n += ms[r.last].Size
			}
			runs = append(runs, r)
			j = r.last + 1
		}
	}
	for _, r := range runs {
		for j := r.first; j <= r.last; j++ {
			l.flights[j] = &flight{done: make(chan struct{})}
		}
	}
	return runs
}

func dist(x, y int64) int64 {
	if x > y {
		return x - y
	}
	return y - x
}
