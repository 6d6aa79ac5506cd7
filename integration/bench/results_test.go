package bench

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func sampleResults() *Results {
	return &Results{
		Schema: SchemaVersion, Mode: "full", Started: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC), Commit: "abc123",
		Link: Link{LatencyMS: 100, BandwidthBytesPerSecond: 25e6, RateLimitPerMinute: 60},
		Images: []ImageResult{
			{Name: "python", Command: []string{"python3", "-c", "print(42)"}, Cases: []Case{
				{Kind: KindBaseline, FirstOutputSeconds: 12, Traffic: Traffic{MaxPerMinute: 2}},
				{Kind: KindDonodoPull, FirstOutputSeconds: 6},
				{Kind: KindLazy, FirstOutputSeconds: 1.2, Requests: 9, Traffic: Traffic{MaxPerMinute: 10}},
			}},
			{Name: "scipy", Cases: []Case{
				{Kind: KindBaseline, FirstOutputSeconds: 60},
				{Kind: KindLazy, FirstOutputSeconds: 7.5, Requests: 40, Traffic: Traffic{MaxPerMinute: 61}},
			}, Push: PushResult{Traffic: Traffic{MaxPerMinute: 5}}},
		},
	}
}

func TestFinish(t *testing.T) {
	r := sampleResults()
	r.Finish()
	assert.InDelta(t, 1.0, r.Images[0].Cases[0].Speedup, 1e-9)
	assert.InDelta(t, 2.0, r.Images[0].Cases[1].Speedup, 1e-9)
	assert.InDelta(t, 10.0, r.Images[0].Cases[2].Speedup, 1e-9)
	assert.InDelta(t, 8.0, r.Image("scipy").Case(KindLazy).Speedup, 1e-9)

	want := []Target{
		{Name: "python: lazy first output", Want: "≤ 1.5 s", Got: "1.20 s", Met: true},
		{Name: "python: lazy requests until first output", Want: "≤ 12", Got: "9", Met: true},
		{Name: "scipy: lazy first output vs baseline", Want: "≥ 10x faster", Got: "8.0x", Met: false},
		{Name: "no case over the rate limit", Want: "≤ 60 requests in any minute", Got: "61 (scipy lazy)", Met: false},
	}
	assert.Equal(t, want, r.Targets)
}

func TestFinishPartial(t *testing.T) {
	tests := []struct {
		name    string
		results Results
		targets int
	}{
		{name: "nothing ran", results: Results{Link: Link{RateLimitPerMinute: 60}}, targets: 1},
		{name: "no rate limit", results: Results{}, targets: 0},
		{name: "python without lazy case", results: Results{Images: []ImageResult{{Name: "python", Cases: []Case{{Kind: KindBaseline, FirstOutputSeconds: 3}}}}}, targets: 0},
		{name: "lazy case that failed", results: Results{Images: []ImageResult{{Name: "python", Cases: []Case{{Kind: KindLazy}}}}}, targets: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tt.results
			r.Finish()
			assert.Len(t, r.Targets, tt.targets)
			for _, tg := range r.Targets {
				if tg.Name != "no case over the rate limit" {
					assert.False(t, tg.Met, tg.Name)
				}
			}
		})
	}
}

func TestWriteMarkdown(t *testing.T) {
	r := sampleResults()
	r.Finish()
	var b bytes.Buffer
	require.NoError(t, r.WriteMarkdown(&b))
	out := b.String()
	for _, s := range []string{
		"## make bench (full), abc123",
		"### python: `python3 -c 'print(42)'`",
		"| lazy: pull with snapshotter zenodo | — | 1.20 s | 10.0x | 9 (0 in all) |",
		"| scipy: lazy first output vs baseline | ≥ 10x faster | 8.0x | no |",
		"100 ms before the first byte of every response, 25.0 MB/s per connection, 60 requests/min",
	} {
		assert.Contains(t, out, s)
	}
}

func TestResultsJSONRoundTrip(t *testing.T) {
	r := sampleResults()
	r.Finish()
	b, err := json.Marshal(r)
	require.NoError(t, err)
	var got Results
	require.NoError(t, json.Unmarshal(b, &got))
	assert.Equal(t, r.Images, got.Images)
	assert.Equal(t, r.Targets, got.Targets)
	assert.Contains(t, string(b), `"first_output_seconds":1.2`)
}

func TestShellJoin(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"python3", "-c", "print(42)"}, `python3 -c 'print(42)'`},
		{[]string{"sh", "-c", "echo 'hi'"}, `sh -c 'echo '\''hi'\'''`},
		{[]string{"a", ""}, `a ''`},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, shellJoin(tt.args))
	}
}
