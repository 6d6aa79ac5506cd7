package zenodotest

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"testing"
)

func benchServer(b *testing.B, size int, opts ...Option) (string, string) {
	b.Helper()
	s, ts := NewTestServer(b, opts...)
	pub, err := s.Publish(SeedRecord{Title: "bench", Files: []SeedFile{{Name: "layer", Data: pattern(size)}}})
	if err != nil {
		b.Fatal(err)
	}
	return ts.URL, ts.URL + "/records/" + pub.RecID + "/files/layer"
}

func get(b *testing.B, url, rng string) int64 {
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if rng != "" {
		req.Header.Set("Range", rng)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	n, err := io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if err != nil {
		b.Fatal(err)
	}
	return n
}

// BenchmarkDownload measures whole-file GETs, unshaped and shaped at
// 25 MB/s (Zenodo-like); the shaped MB/s shows the pacing's accuracy.
func BenchmarkDownload(b *testing.B) {
	for _, tc := range []struct {
		name string
		size int
		bw   int64
	}{
		{"unshaped/16MiB", 16 << 20, 0},
		{"25MBps/4MiB", 4 << 20, 25e6},
	} {
		b.Run(tc.name, func(b *testing.B) {
			_, url := benchServer(b, tc.size, WithBandwidth(tc.bw))
			b.SetBytes(int64(tc.size))
			b.ResetTimer()
			for range b.N {
				if n := get(b, url, ""); n != int64(tc.size) {
					b.Fatalf("got %d bytes", n)
				}
			}
		})
	}
}

// BenchmarkRangeRead measures 64 KiB ranged reads, the lazy-pull pattern.
func BenchmarkRangeRead(b *testing.B) {
	const size, chunk = 16 << 20, 64 << 10
	_, url := benchServer(b, size)
	b.SetBytes(chunk)
	b.ResetTimer()
	for i := range b.N {
		off := (i * chunk) % (size - chunk)
		if n := get(b, url, fmt.Sprintf("bytes=%d-%d", off, off+chunk-1)); n != chunk {
			b.Fatalf("got %d bytes", n)
		}
	}
}

// BenchmarkUpload measures bucket PUTs of 16 MiB (push throughput).
func BenchmarkUpload(b *testing.B) {
	const size = 16 << 20
	_, ts := NewTestServer(b)
	c := newAPI(b, ts.URL)
	dep := c.create(imageMetadata("bench", ""))
	data := pattern(size)
	b.SetBytes(size)
	b.ResetTimer()
	for i := range b.N {
		req, _ := http.NewRequest(http.MethodPut, link(b, dep, "bucket")+"/layer", bytes.NewReader(data))
		req.Header.Set("Authorization", "Bearer "+DefaultToken)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusCreated {
			b.Fatalf("upload %d: %s", i, res.Status)
		}
	}
}

// BenchmarkMetadataRoundTrip measures a small JSON request (GET record).
func BenchmarkMetadataRoundTrip(b *testing.B) {
	base, _ := benchServer(b, 10)
	url := base + "/api/records?q=bench"
	b.ResetTimer()
	for range b.N {
		get(b, url, "")
	}
}
