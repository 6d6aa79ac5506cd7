package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/donodo"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/integration/testimage"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/zenodo"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/zenodo/zenodotest"
)

// published starts a fake Zenodo holding one pushed test image.
func published(t *testing.T) (url string, res *donodo.PushResult) {
	t.Helper()
	_, ts := zenodotest.NewTestServer(t)
	zc, err := zenodo.New(ts.URL, zenodo.WithToken(zenodotest.DefaultToken), zenodo.WithRateLimit(0, 0), zenodo.WithRetry(1, time.Millisecond))
	require.NoError(t, err)
	dir := t.TempDir()
	testimage.Busybox(t, dir, testimage.WithName("example.org/cli:1.0"), testimage.WithRandomLayer(2, 1),
		testimage.WithLabels(map[string]string{donodo.LabelAuthors: "Jane Smith"}))
	src, err := donodo.LayoutSource(dir)
	require.NoError(t, err)
	res, err = donodo.Push(t.Context(), zc, src, "example.org/cli:1.0", donodo.WithAutoPublish(), donodo.WithPushTempDir(t.TempDir()))
	require.NoError(t, err)
	return ts.URL, res
}

// donodoRun runs the command line and returns its exit code and outputs.
func donodoRun(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	code := run(ctx, args, strings.NewReader(""), &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func TestCommands(t *testing.T) {
	t.Setenv("ZENODO_TOKEN", "")
	url, res := published(t)
	z := "--zenodo-url=" + url
	ref := res.Reference

	t.Run("inspect", func(t *testing.T) {
		code, out, errOut := donodoRun(t, z, "inspect", ref)
		require.Equal(t, 0, code, errOut)
		assert.Contains(t, out, res.ConfigDigest.String())
		assert.Contains(t, out, res.ManifestDigest.String())
		assert.Contains(t, out, "example.org/cli:1.0")
		assert.Empty(t, errOut)
	})
	t.Run("inspect --json", func(t *testing.T) {
		code, out, errOut := donodoRun(t, z, "--json", "inspect", res.ConceptDOI)
		require.Equal(t, 0, code, errOut)
		var ins donodo.Inspection
		require.NoError(t, json.Unmarshal([]byte(out), &ins))
		assert.Equal(t, res.ConfigDigest, ins.Images[0].ConfigDigest)
		assert.Equal(t, ref, ins.Reference)
	})
	t.Run("versions", func(t *testing.T) {
		code, out, errOut := donodoRun(t, z, "versions", res.ConceptDOI)
		require.Equal(t, 0, code, errOut)
		assert.Contains(t, out, "* 1.0")
		assert.Contains(t, out, res.DOI)
		code, out, _ = donodoRun(t, z, "-q", "versions", res.ConceptDOI)
		require.Equal(t, 0, code)
		assert.Equal(t, ref+"\n", out)
	})
	t.Run("digest", func(t *testing.T) {
		code, out, errOut := donodoRun(t, z, "digest", ref)
		require.Equal(t, 0, code, errOut)
		assert.Equal(t, res.ConfigDigest.String()+"\n", out)
		code, out, _ = donodoRun(t, z, "digest", "--manifest", ref)
		require.Equal(t, 0, code)
		assert.Equal(t, res.RootDigest.String()+"\n", out)
	})
	t.Run("blob", func(t *testing.T) {
		code, out, errOut := donodoRun(t, z, "blob", "get", ref, res.ConfigDigest.String())
		require.Equal(t, 0, code, errOut)
		assert.Equal(t, res.ConfigDigest, digest.FromString(out))

		file := filepath.Join(t.TempDir(), "config.json")
		code, _, errOut = donodoRun(t, z, "blob", "get", "-o", file, ref, res.ConfigDigest.String())
		require.Equal(t, 0, code, errOut)
		data, err := os.ReadFile(file)
		require.NoError(t, err)
		assert.Equal(t, res.ConfigDigest, digest.FromBytes(data))

		code, out, errOut = donodoRun(t, z, "blob", "size", ref, res.ConfigDigest.String())
		require.Equal(t, 0, code, errOut)
		assert.Equal(t, len(data), atoi(t, out))
		code, out, errOut = donodoRun(t, z, "blob", "size", ref)
		require.Equal(t, 0, code, errOut)
		assert.Greater(t, atoi(t, out), 2<<20)

		code, _, errOut = donodoRun(t, z, "blob", "get", ref, digest.FromString("x").String())
		assert.Equal(t, donodo.ExitNotFound, code, errOut)
		code, _, _ = donodoRun(t, z, "blob", "get", ref, "sha256:nothex")
		assert.Equal(t, donodo.ExitUsage, code)
	})
	t.Run("pull -o", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "image.tar")
		code, out, errOut := donodoRun(t, z, "pull", "-o", file, ref)
		require.Equal(t, 0, code, errOut)
		assert.Contains(t, out, "docker load")
		fi, err := os.Stat(file)
		require.NoError(t, err)
		assert.Equal(t, res.ArchiveSize, fi.Size())
	})
	for _, tt := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{name: "unknown DOI", args: []string{z, "inspect", "10.5281/zenodo.987654"}, code: donodo.ExitNotFound, want: "no such record on Zenodo"},
		{name: "unknown tag", args: []string{z, "pull", "-o", "/dev/null", res.ConceptDOI + ":9"}, code: donodo.ExitNotFound, want: `"9"`},
		{name: "bad reference", args: []string{z, "inspect", "docker.io/library/busybox"}, code: donodo.ExitUsage, want: "accepted forms"},
		{name: "no token", args: []string{z, "push", "example.org/cli:1.1"}, code: donodo.ExitAuth, want: "ZENODO_TOKEN"},
		{name: "missing token file", args: []string{z, "--token-file", "/nonexistent/token", "push", "example.org/cli:1.1"}, code: donodo.ExitAuth},
		{name: "latest", args: []string{z, "push", "example.org/cli:latest"}, code: donodo.ExitUsage, want: "latest"},
		{name: "bad templates", args: []string{z, "push", "--templates", "/nonexistent.json", "example.org/cli:1.1"}, code: donodo.ExitUsage, want: "templates"},
		{name: "unreachable", args: []string{"--zenodo-url=http://127.0.0.1:1", "inspect", ref}, code: donodo.ExitError, want: "could not be reached"},
		{name: "unknown command", args: []string{"frobnicate"}, code: donodo.ExitUsage, want: "unknown command"},
		{name: "missing argument", args: []string{"pull"}, code: donodo.ExitUsage, want: "accepts 1 arg"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := donodoRun(t, tt.args...)
			assert.Equal(t, tt.code, code, "stdout %q, stderr %q", out, errOut)
			assert.Contains(t, errOut, tt.want)
			first, _, _ := strings.Cut(errOut, "\n")
			assert.True(t, strings.HasPrefix(first, "donodo: "), errOut)
		})
	}
}

func TestTokenNeverPrinted(t *testing.T) {
	const secret = "s3cr3t-t0ken-value"
	t.Setenv("ZENODO_TOKEN", secret)
	url, res := published(t)
	tokenFile := filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(tokenFile, []byte(secret+"\n"), 0o600))
	for _, args := range [][]string{
		{"--zenodo-url=" + url, "--log-level=debug", "inspect", res.Reference},
		{"--zenodo-url=" + url, "--log-level=debug", "--token-file", tokenFile, "versions", res.DOI},
		{"--zenodo-url=" + url, "--log-level=debug", "push", "--address", "/nonexistent.sock", "example.org/cli:2.0"},
	} {
		_, out, errOut := donodoRun(t, args...)
		assert.NotContains(t, out+errOut, secret)
	}
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	var n int
	_, err := fmt.Sscan(strings.TrimSpace(s), &n)
	require.NoError(t, err, "%q", s)
	return n
}
