package remote

import (
	"sync/atomic"
	"time"
)

// Stats adds Events up into counters, for metrics exporters and tests:
//
//	var st remote.Stats
//	op := remote.NewOpener(client, remote.WithObserver(st.Observe))
//	... st.Snapshot().FetchRequests ...
//
// The zero value is ready to use; it is safe for concurrent use.
type Stats struct {
	fetchRequests, fillRequests, fetchErrors atomic.Int64
	fetchBytes, fillBytes                    atomic.Int64
	fetchMembers, fillMembers                atomic.Int64
	memoryHits, cacheHits, cacheMisses       atomic.Int64
	reads, readErrors, readNanos             atomic.Int64
	opens, openErrors, fallbacks             atomic.Int64
	fills, fillErrors                        atomic.Int64
}

// StatsSnapshot is a copy of Stats' counters.
type StatsSnapshot struct {
	// FetchRequests and FillRequests count ranged requests for layer members,
	// on demand and by background fills; FetchErrors those that failed.
	FetchRequests, FillRequests, FetchErrors int64
	// FetchBytes and FillBytes are the bytes they brought.
	FetchBytes, FillBytes int64
	// FetchMembers counts the members on-demand requests delivered
	// (FetchMembers/FetchRequests is the mean coalescing), FillMembers
	// those fills delivered.
	FetchMembers, FillMembers int64
	// MemoryHits, CacheHits and CacheMisses count members looked up by
	// on-demand reads.
	MemoryHits, CacheHits, CacheMisses int64
	// Reads and ReadErrors count on-demand reads; ReadTime is their total
	// latency.
	Reads, ReadErrors int64
	ReadTime          time.Duration
	// Opens, OpenErrors and Fallbacks count image openings, failed ones,
	// and archives downloaded whole.
	Opens, OpenErrors, Fallbacks int64
	// Fills and FillErrors count background fills ended, and those that
	// gave up.
	Fills, FillErrors int64
}

// Observe adds an Event; pass it to WithObserver.
func (s *Stats) Observe(e Event) {
	failed := int64(0)
	if e.Err != nil {
		failed = 1
	}
	switch e.Kind {
	case EventFetch:
		if e.Fill {
			s.fillRequests.Add(1)
			s.fillBytes.Add(e.Bytes)
			s.fillMembers.Add(int64(e.Members))
		} else {
			s.fetchRequests.Add(1)
			s.fetchBytes.Add(e.Bytes)
			s.fetchMembers.Add(int64(e.Members))
		}
		s.fetchErrors.Add(failed)
	case EventMemoryHit:
		s.memoryHits.Add(1)
	case EventCacheHit:
		s.cacheHits.Add(1)
	case EventCacheMiss:
		s.cacheMisses.Add(1)
	case EventRead:
		s.reads.Add(1)
		s.readErrors.Add(failed)
		s.readNanos.Add(int64(e.Duration))
	case EventOpen:
		s.opens.Add(1)
		s.openErrors.Add(failed)
	case EventFallback:
		s.fallbacks.Add(1)
	case EventFillDone:
		s.fills.Add(1)
		s.fillErrors.Add(failed)
	}
}

// Snapshot returns the counters.
func (s *Stats) Snapshot() StatsSnapshot {
	return StatsSnapshot{
		FetchRequests: s.fetchRequests.Load(), FillRequests: s.fillRequests.Load(), FetchErrors: s.fetchErrors.Load(),
		FetchBytes: s.fetchBytes.Load(), FillBytes: s.fillBytes.Load(), FetchMembers: s.fetchMembers.Load(), FillMembers: s.fillMembers.Load(),
		MemoryHits: s.memoryHits.Load(), CacheHits: s.cacheHits.Load(), CacheMisses: s.cacheMisses.Load(),
		Reads: s.reads.Load(), ReadErrors: s.readErrors.Load(), ReadTime: time.Duration(s.readNanos.Load()),
		Opens: s.opens.Load(), OpenErrors: s.openErrors.Load(), Fallbacks: s.fallbacks.Load(),
		Fills: s.fills.Load(), FillErrors: s.fillErrors.Load(),
	}
}
