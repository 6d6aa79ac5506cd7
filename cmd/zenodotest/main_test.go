package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// syncBuffer is a bytes.Buffer safe for the server goroutine and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestRun(t *testing.T) {
	dir := t.TempDir()
	logPath := filepath.Join(dir, "requests.jsonl")
	layer := filepath.Join(dir, "image.tar")
	require.NoError(t, os.WriteFile(layer, []byte("layer bytes"), 0o644))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr syncBuffer
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{
			"--listen", "127.0.0.1:0", "--dir", filepath.Join(dir, "data"), "--token", "a,b",
			"--doi-prefix", "10.5072", "--bandwidth", "10MiB", "--rate-limit", "100",
			"--request-log", logPath, "--seed-file", layer, "--seed-title", "Docker image t", "--seed-version", "1",
		}, &stdout, &stderr, ready)
	}()
	var base string
	select {
	case base = <-ready:
	case err := <-done:
		t.Fatalf("run: %v (%s)", err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	require.Len(t, lines, 2)
	assert.Equal(t, base, lines[0], "the first line is the base URL")
	assert.True(t, strings.HasPrefix(base, "http://127.0.0.1:"))
	fields := strings.Fields(lines[1])
	require.Len(t, fields, 4)
	assert.Equal(t, "seeded", fields[0])
	assert.Equal(t, "10.5072/zenodo."+fields[1], fields[2])

	res, err := http.Get(base + "/records/" + fields[1] + "/files/image.tar")
	require.NoError(t, err)
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	assert.Equal(t, "layer bytes", string(body))
	assert.Equal(t, "100", res.Header.Get("X-RateLimit-Limit"))
	req, _ := http.NewRequest(http.MethodGet, base+"/api/deposit/depositions", nil)
	req.Header.Set("Authorization", "Bearer b")
	res, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	res.Body.Close()
	assert.Equal(t, http.StatusOK, res.StatusCode)

	cancel()
	require.NoError(t, <-done)
	b, err := os.ReadFile(logPath)
	require.NoError(t, err)
	logLines := strings.Split(strings.TrimSpace(string(b)), "\n")
	require.Len(t, logLines, 2)
	var first map[string]any
	require.NoError(t, json.Unmarshal([]byte(logLines[0]), &first))
	assert.Equal(t, "GET", first["method"])
	assert.EqualValues(t, 200, first["status"])
	assert.EqualValues(t, len("layer bytes"), first["bytes"])
	_, err = os.Stat(filepath.Join(dir, "data", "state.json"))
	assert.NoError(t, err, "--dir keeps the records")
}

func TestRunErrors(t *testing.T) {
	for _, args := range [][]string{
		{"--bandwidth", "fast"},
		{"--listen", "nowhere:-1"},
		{"extra"},
		{"--seed-file", "/does/not/exist"},
	} {
		var out, errb syncBuffer
		err := run(context.Background(), args, &out, &errb, nil)
		assert.Error(t, err, "%v", args)
	}
}

func TestParseBytes(t *testing.T) {
	for in, want := range map[string]int64{
		"1000": 1000, "25MB": 25e6, "25MiB": 25 << 20, "2G": 2e9, "1.5KB": 1500, "25MB/s": 25e6, "512B": 512, "1kib": 1024,
	} {
		got, err := parseBytes(in)
		require.NoError(t, err, in)
		assert.Equal(t, want, got, in)
	}
	for _, in := range []string{"", "x", "-1", "MB", "30Mbps"} {
		_, err := parseBytes(in)
		assert.Error(t, err, in)
	}
}
