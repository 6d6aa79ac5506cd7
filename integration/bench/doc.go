// Package bench is `make bench`: it measures, in one run, how an image
// archived on Zenodo gets into containerd and runs, against the Zenodo
// emulator (bin/zenodotest) shaped like the real Zenodo: 100 ms before the
// first byte of every response (one round trip, the emulator's --latency),
// 25 MB/s per connection, 60 requests per minute per client.
//
// BenchmarkImages (bench_test.go) runs, for each image of the mode (quick:
// python; full: python and scipy; see Specs), with a fresh containerd for
// every case and a fresh emulator process (same records, fresh rate-limit
// window, its own request log) for every case:
//
//   - the closing notes of the archive format: archive.Write of the image in
//     process (image.tar size and MB/s of unpacked layer) against the
//     original gzip layer and single-threaded gzip -6 of the same tar, and the
//     TOC's size, gzipped and not;
//   - push: `donodo push --auto-publish` from a containerd holding the image;
//   - baseline, the Python donodo's pull: download image.tar.gz (a gzipped
//     docker save archive, published as its own record), gunzip it, `ctr
//     images import` it;
//   - `donodo pull` (full download and unpack);
//   - lazy: bin/zenodo-snapshotter serve as containerd's proxy snapshotter,
//     the image pulled with containerd's client through the daemon's
//     registry endpoint and unpacked with the zenodo snapshotter (as nerdctl
//     pulls);
//
// and in every case runs the image's command with `ctr run`, timing its
// first output line from the pull's start. The lazy case then waits for the
// background fill and reads the daemon's peak RSS (VmHWM). Requests and
// bytes come from the emulator's request log (and, until the first output of
// the lazy case, from the daemon's metrics).
//
// It prints a markdown table with the targets marked as met or not,
// and writes results.json (Results), results.md and a copy of the JSON named
// after the commit and time into bench/out/ (gitignored), with the request
// logs and daemon logs of every case under bench/out/logs/<image>/.
//
// Images are Debian root filesystems made by mmdebstrap and turned into
// one-layer images by Prepare, all cached under $CACHE/bench. The benchmark
// needs root, FUSE, runc and the binaries of `make build`; scripts/bench.sh
// quick|full builds those and runs it. Its environment (ZS_BENCH_*) is listed
// there and on the config type.
package bench
