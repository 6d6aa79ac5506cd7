// Package archive writes and reads image archives: the image.tar format v1
// (DESIGN.md §4) and the archives other tools make.
//
// # Format v1
//
// image.tar is one uncompressed tar that is at once an OCI image layout
// (oci-layout, index.json, blobs/sha256/…) and a `docker save` archive
// (manifest.json and repositories pointing at the same blob files). Entries
// come in this order:
//
//	oci-layout, index.json, manifest.json, repositories, blobs/, blobs/sha256/
//	metadata blobs: indexes, manifests, configs, layer TOCs
//	layer blobs
//
// so every blob is one contiguous byte range of image.tar and all metadata
// sits in one range at its start. Layers are seekable gzip (package
// store/seekable) unless written with [WithPreserveLayers]; their descriptors
// carry the TOC digest and uncompressed size as annotations. Configs are
// never changed, so diff_ids and the image ID stay equal to the source's.
//
// A second, small file, image.tar.index.json ([Index], [MarshalIndex],
// [ParseIndex]) lists the offset and size of every blob inside image.tar so
// a reader needs no header walk. It needs no trust: everything it points to
// is verified by digest when read.
//
// # Reading
//
// [Open] reads format v1 with its index ([WithIndex]) without touching the
// tar headers, and any other OCI or docker-save archive (docker, podman,
// nerdctl, ctr export, skopeo oci-archive:/docker-archive:) by walking the
// tar headers with ranged reads of the header blocks only. [OpenStream]
// accepts a compressed stream (.tar.gz, .tar.zst, the Python donodo's
// image.tar.gz), spools it to disk and opens that.
//
// The package does no network I/O; the reader works over any io.ReaderAt.
package archive
