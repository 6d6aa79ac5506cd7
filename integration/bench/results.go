package bench

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// SchemaVersion versions the JSON of Results; bump it when a field changes
// meaning so comparisons across commits can tell.
const SchemaVersion = 1

// Case kinds, in the order they run and are printed.
const (
	// KindBaseline is the Python donodo's way: download image.tar.gz,
	// gunzip it, ctr import it.
	KindBaseline = "baseline"
	// KindDonodoPull is `donodo pull` into containerd (full download).
	KindDonodoPull = "donodo-pull"
	// KindLazy is a pull through the registry endpoint unpacked by the
	// zenodo snapshotter, then the command run from the lazy layers.
	KindLazy = "lazy"
)

// Results is everything one benchmark run measured: what `make bench`
// prints as a table and writes as JSON.
type Results struct {
	Schema  int       `json:"schema"`
	Mode    string    `json:"mode"`
	Started time.Time `json:"started"`
	// Seconds is how long the whole run took.
	Seconds float64 `json:"seconds"`
	// Commit is `git describe --always --dirty` of the tree measured.
	Commit  string        `json:"commit"`
	Machine Machine       `json:"machine"`
	Link    Link          `json:"link"`
	Images  []ImageResult `json:"images"`
	Targets []Target      `json:"targets"`
}

// Machine describes where the run happened.
type Machine struct {
	CPUs        int    `json:"cpus"`
	MemoryBytes int64  `json:"memory_bytes"`
	Kernel      string `json:"kernel"`
	Go          string `json:"go"`
	Containerd  string `json:"containerd"`
	// Load1Start and Load1End are the 1-minute load averages when the run
	// started and ended: other work on the machine skews every figure.
	Load1Start float64 `json:"load1_start"`
	Load1End   float64 `json:"load1_end"`
}

// Link is how the emulator was shaped.
type Link struct {
	// Latency is added before the first byte of every response: one
	// round trip.
	LatencyMS float64 `json:"latency_ms"`
	// BandwidthBytesPerSecond applies to each connection, both ways.
	BandwidthBytesPerSecond int64 `json:"bandwidth_bytes_per_second"`
	// RateLimitPerMinute is the emulator's 429 threshold per client.
	RateLimitPerMinute int `json:"rate_limit_per_minute"`
}

// ImageResult is what was measured on one image.
type ImageResult struct {
	Name    string   `json:"name"`
	Command []string `json:"command"`
	// UnpackedBytes is the uncompressed layer's size, Files its regular
	// files.
	UnpackedBytes int64         `json:"unpacked_bytes"`
	Files         int           `json:"files"`
	Archive       ArchiveResult `json:"archive"`
	Push          PushResult    `json:"push"`
	Cases         []Case        `json:"cases"`
}

// ArchiveResult compares the image.tar archive.Write makes (in process,
// without network) with plain gzip of the same layer.
type ArchiveResult struct {
	// ArchiveBytes is image.tar; SeekableLayerBytes its layer blob.
	ArchiveBytes       int64 `json:"archive_bytes"`
	SeekableLayerBytes int64 `json:"seekable_layer_bytes"`
	// MetadataBytes is the range a lazy start reads first (manifests,
	// configs, TOCs).
	MetadataBytes int64 `json:"metadata_bytes"`
	// OriginalLayerBytes is the image's gzip layer (compress/gzip, default
	// level); OneMemberGzipBytes is gzip -6 of the same tar;
	// ImageTarGzBytes the Python donodo's image.tar.gz.
	OriginalLayerBytes int64 `json:"original_layer_bytes"`
	OneMemberGzipBytes int64 `json:"one_member_gzip_bytes"`
	ImageTarGzBytes    int64 `json:"image_tar_gz_bytes"`
	// WriteSeconds is archive.Write's time; WriteMBps the unpacked layer
	// bytes it converted per second (MB = 10^6 bytes).
	WriteSeconds float64 `json:"write_seconds"`
	WriteMBps    float64 `json:"write_mbps"`
	// GzipSeconds and GzipMBps are the same for single-threaded gzip -6.
	GzipSeconds float64 `json:"gzip_seconds"`
	GzipMBps    float64 `json:"gzip_mbps"`
	// TOCBytes is the layer TOC's JSON, TOCGzipBytes as stored (gzipped);
	// Members the seekable gzip members, Entries the tar entries.
	TOCBytes     int64 `json:"toc_bytes"`
	TOCGzipBytes int64 `json:"toc_gzip_bytes"`
	Members      int   `json:"members"`
	Entries      int   `json:"entries"`
}

// PushResult is `donodo push` from containerd to the emulator.
type PushResult struct {
	Seconds      float64 `json:"seconds"`
	ArchiveBytes int64   `json:"archive_bytes"`
	// UploadMBps is archive bytes per second of the whole push, against
	// LinkMBps, the emulator's bandwidth.
	UploadMBps float64 `json:"upload_mbps"`
	LinkMBps   float64 `json:"link_mbps"`
	// UnpackedMBps is unpacked layer bytes per second of the whole push,
	// against GzipMBps, single-threaded gzip -6 of the same tar here.
	UnpackedMBps float64 `json:"unpacked_mbps"`
	GzipMBps     float64 `json:"gzip_mbps"`
	Traffic      Traffic `json:"traffic"`
	// PeakRSSBytes is donodo's maximum resident set.
	PeakRSSBytes int64  `json:"peak_rss_bytes"`
	Reference    string `json:"reference"`
}

// Case is one way of getting the image and running its command.
type Case struct {
	Kind string `json:"kind"`
	// ReadySeconds is from the pull's start until the image is in
	// containerd (for the lazy case: until the pull with unpack returned).
	ReadySeconds float64 `json:"ready_seconds"`
	// FirstOutputSeconds is from the pull's start until the command's
	// first output line; Output is that line.
	FirstOutputSeconds float64 `json:"first_output_seconds"`
	Output             string  `json:"output"`
	// Speedup is the baseline's FirstOutputSeconds over this case's.
	Speedup float64 `json:"speedup"`
	// Steps are the parts of the case, in seconds (baseline: download,
	// gunzip, import; every case: run).
	Steps map[string]float64 `json:"steps,omitempty"`
	// Requests and Bytes went to the emulator until the first output
	// (lazy: the snapshotter's own count; the others: everything).
	Requests int   `json:"requests"`
	Bytes    int64 `json:"bytes"`
	// Traffic is every request of the case from the emulator's log (lazy:
	// background fill included).
	Traffic Traffic `json:"traffic"`
	// OnDemandRequests and OnDemandBytes are the lazy case's ranged reads
	// of layer data for the command until its first output (not the
	// fill), as the snapshotter counts them.
	OnDemandRequests int   `json:"on_demand_requests,omitempty"`
	OnDemandBytes    int64 `json:"on_demand_bytes,omitempty"`
	// RateLimitWaits and RateLimitWaitSeconds are the lazy case's requests
	// the snapshotter's own request budget delayed, and for how long in
	// all, until the first output.
	RateLimitWaits       int     `json:"rate_limit_waits,omitempty"`
	RateLimitWaitSeconds float64 `json:"rate_limit_wait_seconds,omitempty"`
	// FillSeconds is, for the lazy case, from the pull's start until the
	// background fill ended (0: not seen).
	FillSeconds float64 `json:"fill_seconds,omitempty"`
	// PeakRSSBytes is the peak resident set of PeakRSSOf (the snapshotter
	// for the lazy case, donodo for its pull; none for the baseline).
	PeakRSSBytes int64  `json:"peak_rss_bytes,omitempty"`
	PeakRSSOf    string `json:"peak_rss_of,omitempty"`
}

// Target is one goal of the issue, checked.
type Target struct {
	Name string `json:"name"`
	Want string `json:"want"`
	Got  string `json:"got"`
	Met  bool   `json:"met"`
}

// Case returns the image's case of kind, or nil.
func (r *ImageResult) Case(kind string) *Case {
	for i := range r.Cases {
		if r.Cases[i].Kind == kind {
			return &r.Cases[i]
		}
	}
	return nil
}

// Image returns the result of the image named name, or nil.
func (r *Results) Image(name string) *ImageResult {
	for i := range r.Images {
		if r.Images[i].Name == name {
			return &r.Images[i]
		}
	}
	return nil
}

// Finish computes each case's speed-up and checks the targets.
func (r *Results) Finish() {
	for i := range r.Images {
		img := &r.Images[i]
		base := img.Case(KindBaseline)
		for j := range img.Cases {
			c := &img.Cases[j]
			if base != nil && c.FirstOutputSeconds > 0 {
				c.Speedup = base.FirstOutputSeconds / c.FirstOutputSeconds
			}
		}
	}
	r.Targets = r.checkTargets()
}

// The targets.
const (
	targetPythonSeconds  = 1.5
	targetPythonRequests = 12
	targetSciPySpeedup   = 10
)

func (r *Results) checkTargets() []Target {
	var ts []Target
	if img := r.Image("python"); img != nil {
		if c := img.Case(KindLazy); c != nil {
			ts = append(ts,
				Target{Name: "python: lazy first output", Want: fmt.Sprintf("≤ %.1f s", targetPythonSeconds),
					Got: fmt.Sprintf("%.2f s", c.FirstOutputSeconds), Met: c.FirstOutputSeconds > 0 && c.FirstOutputSeconds <= targetPythonSeconds},
				Target{Name: "python: lazy requests until first output", Want: fmt.Sprintf("≤ %d", targetPythonRequests),
					Got: fmt.Sprint(c.Requests), Met: c.FirstOutputSeconds > 0 && c.Requests <= targetPythonRequests})
		}
	}
	if img := r.Image("scipy"); img != nil {
		if c := img.Case(KindLazy); c != nil {
			ts = append(ts, Target{Name: "scipy: lazy first output vs baseline", Want: fmt.Sprintf("≥ %dx faster", targetSciPySpeedup),
				Got: fmt.Sprintf("%.1fx", c.Speedup), Met: c.Speedup >= targetSciPySpeedup})
		}
	}
	worst, where := 0, ""
	for _, img := range r.Images {
		if n := img.Push.Traffic.MaxPerMinute; n > worst {
			worst, where = n, img.Name+" push"
		}
		for _, c := range img.Cases {
			if c.Traffic.MaxPerMinute > worst {
				worst, where = c.Traffic.MaxPerMinute, img.Name+" "+c.Kind
			}
		}
	}
	if r.Link.RateLimitPerMinute > 0 {
		got := fmt.Sprint(worst)
		if where != "" {
			got += " (" + where + ")"
		}
		ts = append(ts, Target{Name: "no case over the rate limit", Want: fmt.Sprintf("≤ %d requests in any minute", r.Link.RateLimitPerMinute),
			Got: got, Met: worst <= r.Link.RateLimitPerMinute})
	}
	return ts
}

// caseTitle names a case kind in the table.
func caseTitle(kind string) string {
	switch kind {
	case KindBaseline:
		return "baseline: download image.tar.gz, gunzip, ctr import"
	case KindDonodoPull:
		return "donodo pull (full)"
	case KindLazy:
		return "lazy: pull with snapshotter zenodo"
	}
	return kind
}

// WriteMarkdown prints the results as markdown tables.
func (r *Results) WriteMarkdown(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "## make bench (%s), %s, %s\n\n", r.Mode, r.Commit, r.Started.Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(&b, "Machine: %d CPUs, %s RAM, kernel %s, %s, %s; load average %.1f at the start, %.1f at the end. ",
		r.Machine.CPUs, mb(r.Machine.MemoryBytes), r.Machine.Kernel, r.Machine.Go, r.Machine.Containerd, r.Machine.Load1Start, r.Machine.Load1End)
	fmt.Fprintf(&b, "Emulator link: %.0f ms before the first byte of every response, %s/s per connection, %d requests/min per client. Run took %s.\n",
		r.Link.LatencyMS, mb(r.Link.BandwidthBytesPerSecond), r.Link.RateLimitPerMinute, secs(r.Seconds))

	for _, img := range r.Images {
		fmt.Fprintf(&b, "\n### %s: `%s`\n\n", img.Name, shellJoin(img.Command))
		fmt.Fprintf(&b, "%s unpacked, %d files; original gzip layer %s; image.tar.gz %s.\n\n",
			mb(img.UnpackedBytes), img.Files, mb(img.Archive.OriginalLayerBytes), mb(img.Archive.ImageTarGzBytes))
		b.WriteString("| case | image ready | first output | speed-up vs baseline | requests | bytes | max req/min | 429s | peak RSS |\n")
		b.WriteString("|---|--:|--:|--:|--:|--:|--:|--:|--:|\n")
		for _, c := range img.Cases {
			reqs, bytes := fmt.Sprint(c.Requests), mb(c.Bytes)
			if c.Kind == KindLazy {
				reqs = fmt.Sprintf("%d (%d in all)", c.Requests, c.Traffic.Requests)
				bytes = fmt.Sprintf("%s (%s in all)", mb(c.Bytes), mb(c.Traffic.Bytes))
			}
			rss := "—"
			if c.PeakRSSBytes > 0 {
				rss = fmt.Sprintf("%s (%s)", mb(c.PeakRSSBytes), c.PeakRSSOf)
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %.1fx | %s | %s | %d | %d | %s |\n", caseTitle(c.Kind),
				secs(c.ReadySeconds), secs(c.FirstOutputSeconds), c.Speedup, reqs, bytes, c.Traffic.MaxPerMinute, c.Traffic.TooMany, rss)
		}
		b.WriteString("\n")
		for _, c := range img.Cases {
			fmt.Fprintf(&b, "- %s: steps %s; first output %q", c.Kind, steps(c.Steps), c.Output)
			if c.Kind == KindLazy {
				if c.FillSeconds > 0 {
					fmt.Fprintf(&b, "; background fill done %s after the pull started", secs(c.FillSeconds))
				} else {
					b.WriteString("; background fill not seen to end")
				}
				fmt.Fprintf(&b, "; until the first output %d on-demand range reads (%s) and %d requests delayed %s by the snapshotter's request budget",
					c.OnDemandRequests, mb(c.OnDemandBytes), c.RateLimitWaits, secs(c.RateLimitWaitSeconds))
				fmt.Fprintf(&b, "; requests per minute from the pull's start: %v", c.Traffic.PerMinute)
			}
			b.WriteString("\n")
		}
		p := img.Push
		fmt.Fprintf(&b, "- push: `donodo push` %s for a %s archive: %s/s uploaded (link %s/s), %s/s of unpacked layer (single-threaded gzip -6 here: %s/s); %d requests, max %d/min, %d 429s; donodo peak RSS %s\n",
			secs(p.Seconds), mb(p.ArchiveBytes), mb(int64(p.UploadMBps*1e6)), mb(int64(p.LinkMBps*1e6)),
			mb(int64(p.UnpackedMBps*1e6)), mb(int64(p.GzipMBps*1e6)), p.Traffic.Requests, p.Traffic.MaxPerMinute, p.Traffic.TooMany, mb(p.PeakRSSBytes))
		a := img.Archive
		fmt.Fprintf(&b, "- archive: image.tar %s (seekable layer %s, %+.1f%% vs the original gzip layer %s, %+.1f%% vs one-member gzip -6 %s; metadata range %s); ",
			mb(a.ArchiveBytes), mb(a.SeekableLayerBytes), pct(a.SeekableLayerBytes, a.OriginalLayerBytes), mb(a.OriginalLayerBytes),
			pct(a.SeekableLayerBytes, a.OneMemberGzipBytes), mb(a.OneMemberGzipBytes), kb(a.MetadataBytes))
		fmt.Fprintf(&b, "archive.Write %s (%s/s of unpacked layer) vs single-threaded gzip -6 %s (%s/s); TOC %s, %s gzipped as stored, for %d entries in %d members\n",
			secs(a.WriteSeconds), mb(int64(a.WriteMBps*1e6)), secs(a.GzipSeconds), mb(int64(a.GzipMBps*1e6)),
			kb(a.TOCBytes), kb(a.TOCGzipBytes), a.Entries, a.Members)
	}

	if len(r.Targets) > 0 {
		b.WriteString("\n### Targets\n\n| target | want | got | met |\n|---|---|---|---|\n")
		for _, t := range r.Targets {
			met := "no"
			if t.Met {
				met = "yes"
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", t.Name, t.Want, t.Got, met)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func mb(n int64) string { return fmt.Sprintf("%.1f MB", float64(n)/1e6) }
func kb(n int64) string { return fmt.Sprintf("%.1f kB", float64(n)/1e3) }

func secs(s float64) string {
	if s == 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f s", s)
}

func pct(n, of int64) float64 {
	if of == 0 {
		return 0
	}
	return 100 * (float64(n) - float64(of)) / float64(of)
}

// steps lists a case's steps in the order they happen.
func steps(m map[string]float64) string {
	var parts []string
	for _, k := range []string{"download", "gunzip", "import", "pull", "run"} {
		if v, ok := m[k]; ok {
			parts = append(parts, fmt.Sprintf("%s %s", k, secs(v)))
		}
	}
	if len(parts) == 0 {
		return "—"
	}
	return strings.Join(parts, ", ")
}

// shellJoin quotes args as a shell would need them.
func shellJoin(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " '\"()$;,\\*?[]{}|&<>!#") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		q[i] = a
	}
	return strings.Join(q, " ")
}
