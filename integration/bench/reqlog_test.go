package bench

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/zenodo/zenodotest"
)

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func logLine(t testing.TB, r zenodotest.Request) string {
	b, err := json.Marshal(r)
	require.NoError(t, err)
	return string(b) + "\n"
}

func TestParseRequestLog(t *testing.T) {
	a := zenodotest.Request{Method: "GET", Path: "/api/records/1", Status: 200, Bytes: 10, Time: t0}
	c := zenodotest.Request{Method: "GET", Path: "/records/1/files/image.tar", Range: "bytes=0-99", Status: 206, Bytes: 100, Time: t0.Add(time.Second)}
	tests := []struct {
		name    string
		in      string
		want    []zenodotest.Request
		wantErr bool
	}{
		{name: "empty", in: ""},
		{name: "two lines", in: logLine(t, a) + logLine(t, c), want: []zenodotest.Request{a, c}},
		{name: "blank lines skipped", in: "\n" + logLine(t, a) + "\n", want: []zenodotest.Request{a}},
		{name: "incomplete last line ignored", in: logLine(t, a) + `{"method":"GE`, want: []zenodotest.Request{a}},
		{name: "bad line", in: logLine(t, a) + "not json\n", want: []zenodotest.Request{a}, wantErr: true},
		{name: "line too long", in: `{"path":"` + strings.Repeat("x", maxLogLine) + "\"}\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseRequestLog(strings.NewReader(tt.in))
			if tt.wantErr {
				require.Error(t, err)
				assert.ErrorIs(t, err, errdefs.ErrInvalidArgument)
			} else {
				require.NoError(t, err)
			}
			require.Len(t, got, len(tt.want))
			for i := range tt.want {
				assert.True(t, tt.want[i].Time.Equal(got[i].Time))
				got[i].Time = tt.want[i].Time
				assert.Equal(t, tt.want[i], got[i])
			}
		})
	}
}

func TestReadRequestLog(t *testing.T) {
	dir := t.TempDir()
	reqs, err := ReadRequestLog(filepath.Join(dir, "missing.jsonl"))
	require.NoError(t, err)
	assert.Empty(t, reqs)

	p := filepath.Join(dir, "log.jsonl")
	require.NoError(t, os.WriteFile(p, []byte(logLine(t, zenodotest.Request{Method: "GET", Status: 200, Time: t0})), 0o644))
	reqs, err = ReadRequestLog(p)
	require.NoError(t, err)
	assert.Len(t, reqs, 1)
}

func FuzzParseRequestLog(f *testing.F) {
	f.Add(logLine(f, zenodotest.Request{Method: "GET", Path: "/x", Status: 200, Bytes: 1, Time: t0}))
	f.Add("\n\n{}\n")
	f.Add(`{"time":"bad"}` + "\n")
	f.Fuzz(func(t *testing.T, in string) {
		reqs, err := ParseRequestLog(strings.NewReader(in))
		if err != nil {
			assert.ErrorIs(t, err, errdefs.ErrInvalidArgument)
		}
		assert.LessOrEqual(t, len(reqs), strings.Count(in, "\n"))
		_ = Summarize(reqs, t0)
	})
}

func TestMaxInWindow(t *testing.T) {
	at := func(secs ...float64) []time.Time {
		var ts []time.Time
		for _, s := range secs {
			ts = append(ts, t0.Add(time.Duration(s*float64(time.Second))))
		}
		return ts
	}
	tests := []struct {
		name  string
		times []time.Time
		want  int
	}{
		{name: "none", want: 0},
		{name: "one", times: at(5), want: 1},
		{name: "all in one minute", times: at(0, 10, 59.9), want: 3},
		{name: "window is half open", times: at(0, 60), want: 1},
		{name: "sliding, not fixed", times: at(50, 55, 65, 70, 130), want: 4},
		{name: "unsorted", times: at(70, 0, 65, 200, 55), want: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, MaxInWindow(tt.times, time.Minute))
		})
	}
}

func TestSummarize(t *testing.T) {
	reqs := []zenodotest.Request{
		{Status: 200, Bytes: 100, Time: t0.Add(-time.Second)}, // before the start: minute 0
		{Status: 206, Bytes: 50, Time: t0.Add(30 * time.Second)},
		{Status: 429, Time: t0.Add(61 * time.Second)},
		{Status: 503, Time: t0.Add(150 * time.Second)},
		{Status: 0, Time: t0.Add(170 * time.Second)},
	}
	got := Summarize(reqs, t0)
	assert.Equal(t, Traffic{Requests: 5, Bytes: 150, TooMany: 1, Failed: 2, MaxPerMinute: 2, PerMinute: []int{2, 1, 2}}, got)
	assert.Equal(t, Traffic{PerMinute: []int{}}, Summarize(nil, t0))
}
