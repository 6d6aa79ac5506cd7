// Package resolver makes Zenodo records usable as container image
// references, both inside a Go program and for stock tools:
//
//   - NewResolver is a containerd remotes.Resolver for zenodo.org/<doi> and
//     sandbox.zenodo.org/<doi> references (any form zenodo.ParseReference
//     accepts), for containerd's client Pull (donodo pull).
//   - NewHandler is a read-only OCI distribution endpoint (the pull side of
//     the distribution spec) as an http.Handler: served on loopback, it lets
//     ctr, nerdctl, CRI, skopeo and any registry client pull
//     zenodo.org/<doi>:<tag> through a hosts.toml (HostsTOML, InstallHosts)
//     or a registries.conf.
//
// Both read the image archive of a record through a Source (store/remote in
// production, see NewRemoteSource): manifests and configs from the archive's
// metadata, layers by HTTP range from the record's image.tar, never the whole
// archive.
//
// # References and repositories
//
// A version DOI names exactly that version; a concept DOI, or the tag
// "latest", its newest published version; ":<tag>" the version whose
// metadata.version is the tag; "@sha256:…" pins a manifest, and is verified
// against the content read. The endpoint maps the repository
// "10.5281/zenodo.123" (also "zenodo.123" and "123") of the host containerd
// names in its ns= query (zenodo.org when absent, sandbox.zenodo.org for a
// 10.5072 DOI) to that record; a repository may also start with the host
// ("sandbox.zenodo.org/10.5072/zenodo.5"), for clients that cannot send ns=.
//
// # Zenodo requests
//
// Opened images are cached (WithCacheTTL, WithCacheSize) and concurrent
// look-ups of one reference share one Source.Open, so a pull through the
// endpoint costs the Source's set-up (store/remote: at most 3 requests) plus
// one ranged request of exactly each layer's bytes (an Image that cannot
// stream is read WithReadSize bytes per request), and a second pull within
// the TTL no record look-up at all. Manifests and small blobs (up to 1 MiB)
// are kept in memory per image and read once however many clients ask at
// the same time; HEAD requests never read a blob.
package resolver
