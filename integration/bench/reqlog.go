package bench

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	"github.com/containerd/errdefs"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/zenodo/zenodotest"
)

// maxLogLine bounds one line of a request log.
const maxLogLine = 1 << 20

// ReadRequestLog reads a request log written by `zenodotest --request-log`
// (one JSON zenodotest.Request per line). A missing file is an empty log.
func ReadRequestLog(path string) ([]zenodotest.Request, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("opening request log: %w", err)
	}
	defer f.Close()
	reqs, err := ParseRequestLog(f)
	if err != nil {
		return nil, fmt.Errorf("reading request log %s: %w", path, err)
	}
	return reqs, nil
}

// ParseRequestLog parses request log lines. A last line without its
// newline (a request being logged) is ignored; any other bad line is an
// error wrapping errdefs.ErrInvalidArgument.
func ParseRequestLog(r io.Reader) ([]zenodotest.Request, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	var reqs []zenodotest.Request
	for n := 1; ; n++ {
		line, err := readLine(br)
		if errors.Is(err, io.EOF) {
			return reqs, nil
		}
		if err != nil {
			return reqs, fmt.Errorf("line %d: %w", n, err)
		}
		if len(line) == 0 {
			continue
		}
		var req zenodotest.Request
		if err := json.Unmarshal(line, &req); err != nil {
			return reqs, fmt.Errorf("line %d: %v: %w", n, err, errdefs.ErrInvalidArgument)
		}
		reqs = append(reqs, req)
	}
}

// readLine returns the next complete line without its newline, io.EOF at
// the end (also after an incomplete last line), and an error for lines
// longer than maxLogLine.
func readLine(br *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > maxLogLine {
			return nil, fmt.Errorf("longer than %d bytes: %w", maxLogLine, errdefs.ErrInvalidArgument)
		}
		switch {
		case err == nil:
			return line[:len(line)-1], nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		default:
			return nil, err
		}
	}
}

// Traffic sums up requests to the emulator.
type Traffic struct {
	// Requests and Bytes (response bodies) in all.
	Requests int   `json:"requests"`
	Bytes    int64 `json:"bytes"`
	// TooMany counts 429 answers; Failed answers of 5xx or dropped
	// connections.
	TooMany int `json:"status_429"`
	Failed  int `json:"failed"`
	// MaxPerMinute is the most requests in any 60 s window.
	MaxPerMinute int `json:"max_requests_per_minute"`
	// PerMinute counts requests by minute since the start given to
	// Summarize (an empty slice for no requests).
	PerMinute []int `json:"requests_per_minute"`
}

// Summarize sums up reqs; PerMinute counts from start. A request's Time is
// when it arrived (the log line is written when it completes), which is
// what the emulator's rate limiter counts.
func Summarize(reqs []zenodotest.Request, start time.Time) Traffic {
	t := Traffic{Requests: len(reqs), PerMinute: []int{}}
	times := make([]time.Time, 0, len(reqs))
	for _, r := range reqs {
		t.Bytes += r.Bytes
		switch {
		case r.Status == 429:
			t.TooMany++
		case r.Status == 0 || r.Status >= 500:
			t.Failed++
		}
		times = append(times, r.Time)
		m := 0
		if d := r.Time.Sub(start); d > 0 {
			m = int(d / time.Minute)
		}
		for len(t.PerMinute) <= m {
			t.PerMinute = append(t.PerMinute, 0)
		}
		t.PerMinute[m]++
	}
	t.MaxPerMinute = MaxInWindow(times, time.Minute)
	return t
}

// MaxInWindow returns the largest number of times that fall in one window
// [t, t+window).
func MaxInWindow(times []time.Time, window time.Duration) int {
	ts := slices.Clone(times)
	slices.SortFunc(ts, func(a, b time.Time) int { return a.Compare(b) })
	best, lo := 0, 0
	for hi := range ts {
		for ts[hi].Sub(ts[lo]) >= window {
			lo++
		}
		best = max(best, hi-lo+1)
	}
	return best
}
