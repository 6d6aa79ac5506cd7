// Package donodo pushes container images from containerd to citable Zenodo
// records, pulls them back into containerd or into a file, and inspects
// records without downloading their layers. It is the library behind the
// donodo command (cmd/donodo), a superset of the Python donodo and of the
// blob workflow of dxf.
//
// # Push
//
// [Push] archives an image (every platform whose content is present) from a
// [Source] (a containerd namespace, or an OCI layout) as the format v1
// image.tar of package store/archive, with its image.tar.index.json, into a
// Zenodo deposition titled "Docker image <name>" by default. The image's tag
// becomes the record's version. An existing published record with that
// title gets a new version; an unpublished draft with that title (left by
// an interrupted push) is resumed: files already uploaded with the same size
// and md5 are kept, others replaced. Nothing is published before every file
// is uploaded and checked. The description is the image's build manifest
// (package donodo/buildinfo), and each seekable layer carries the draft's
// reserved DOI under [AnnotationDOI] so the lazy snapshotter can find it.
//
// # Pull, inspect, blobs
//
// [OpenImage] finds the image archive of a record (DESIGN §4's file choice)
// and opens it: a format v1 archive by HTTP range (one request for its
// index, one for all its metadata), another uncompressed archive by walking
// its tar headers by range, a compressed one by streaming it once into a
// spool file. [Pull] imports it into containerd with the client's Pull;
// [Export] writes an archive `docker load` and `ctr import` accept;
// [Inspect], [ListVersions], [Image.Blob] and [Image.ConfigDigest] read
// metadata and single blobs.
//
// # Errors
//
// Errors wrap errdefs kinds (and the sentinels of this package and of
// package zenodo). [ExitCode] maps them onto the documented exit codes of
// the command.
package donodo
