// Package lazy is the FileSystem of the zenodo snapshotter (package
// store/snapshot): it turns the labels of a lazy layer's snapshot into a
// mounted FUSE layer (package store/fs) whose file contents are read on demand
// from the record's image.tar (package store/remote).
//
// Mount reads two labels, which containerd copies from the layer descriptor's
// annotations into the snapshot's labels:
//
//	containerd.io/snapshot/zenodo/doi         the version DOI of the record
//	containerd.io/snapshot/zenodo/toc.digest  the digest of the layer's TOC
//
// opens the record (from the state directory when it was opened before, so a
// restart needs no network), finds the layer whose descriptor carries that TOC
// digest, mounts it and starts its background fill (one sequential request
// streaming the layer into the on-disk cache; WithBackgroundFill switches it
// off). A layer mounted more than once (a snapshot of it in each of several
// namespaces, or in several records) shares one reader, keyed by TOC
// digest, so its members are fetched and cached once. A layer the labels cannot locate makes Mount fail;
// the snapshotter then falls back to a normal snapshot that containerd fills
// by a full download, and logs and counts it.
//
// Metrics are Prometheus collectors fed by the observer hooks of every layer
// of the stack (zenodo client, cache, remote reader, FUSE layer, snapshotter);
// see NewMetrics.
package lazy
