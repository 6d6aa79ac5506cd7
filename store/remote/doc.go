// Package remote reads images archived in Zenodo records lazily, by HTTP
// range: the content.Provider of an image's blobs and the lazy layer reader
// behind the FUSE filesystem (package store/fs).
//
// An Opener resolves a reference to a record, picks its archive file and
// opens it. A format v1 archive (DESIGN.md §4) costs at most 3 requests
// for a version DOI: the record, image.tar.index.json, and one ranged GET
// of the metadata range at the start of image.tar that holds every index,
// manifest, config and layer TOC. With a state directory, the record,
// index and metadata are kept on disk, so the image opens again without
// network after a restart. Archives without index are read by walking
// their tar headers by range; compressed archives (the Python donodo's
// image.tar.gz) and servers that ignore Range are downloaded once into a
// spool file.
//
// A Layer serves file reads of a seekable layer: each read maps to whole
// gzip members, served from a bounded memory cache of decompressed members,
// then from the on-disk cache (package store/cache, keyed by member
// digest), then from the network, where a miss is coalesced with the
// neighbouring uncached members into one ranged request of at least
// WithMinRequest bytes. Concurrent misses on the same members are fetched
// once, independent misses in parallel (WithConcurrency per layer), and
// every member is verified against the digest its TOC gives before it is
// used or cached. Layer.StartFill streams the rest of a layer into the
// cache with one sequential request, which on-demand reads overtake.
//
// Every request goes through the zenodo.Client, whose budget, retries and
// timeouts apply. Events (WithObserver, Stats) report requests, bytes,
// cache hits and read latencies.
package remote
