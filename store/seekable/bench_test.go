package seekable

import (
	"bytes"
	stdgzip "compress/gzip"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/stretchr/testify/require"
)

// Benchmarks run on the tar named by $ZS_BENCH_TAR, else on ~50 MB of
// synthetic files (see benchTar). For example:
//
//	ZS_BENCH_TAR=/tmp/debian.tar go test -run '^$' -bench . ./store/seekable/

// countWriter counts bytes and drops them.
type countWriter struct{ n int64 }

func (w *countWriter) Write(p []byte) (int, error) {
	w.n += int64(len(p))
	return len(p), nil
}

// BenchmarkConvert measures Convert against single-member gzip of the same
// tar in the same run, and logs throughputs and the size overhead.
func BenchmarkConvert(b *testing.B) {
	tarBytes := benchTar(b)
	type outcome struct {
		size    int64
		perOp   time.Duration
		cpuOp   time.Duration
		members int
	}
	got := make(map[string]outcome)
	run := func(name string, f func(w io.Writer) (members int)) {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(tarBytes)))
			var cw countWriter
			var members int
			cpu0 := cpuTime(b)
			for range b.N {
				cw = countWriter{}
				members = f(&cw)
			}
			o := outcome{size: cw.n, perOp: b.Elapsed() / time.Duration(b.N), cpuOp: (cpuTime(b) - cpu0) / time.Duration(b.N), members: members}
			got[name] = o
			b.ReportMetric(float64(len(tarBytes))/o.cpuOp.Seconds()/1e6, "MB/cpu-s")
			b.ReportMetric(100*float64(o.size)/float64(len(tarBytes)), "%size")
			if members > 0 {
				b.ReportMetric(float64(members), "members")
			}
		})
	}
	seekable := func(opts ...Option) func(w io.Writer) int {
		return func(w io.Writer) int {
			res, err := Convert(context.Background(), w, bytes.NewReader(tarBytes), opts...)
			require.NoError(b, err)
			return len(res.TOC.Members)
		}
	}
	run("seekable", seekable())
	run("seekable-1thread", seekable(WithConcurrency(1)))
	run("gzip-klauspost", func(w io.Writer) int {
		zw, _ := gzip.NewWriterLevel(w, DefaultLevel)
		_, err := zw.Write(tarBytes)
		require.NoError(b, err)
		require.NoError(b, zw.Close())
		return 0
	})
	run("gzip-stdlib", func(w io.Writer) int {
		zw, _ := stdgzip.NewWriterLevel(w, DefaultLevel)
		_, err := zw.Write(tarBytes)
		require.NoError(b, err)
		require.NoError(b, zw.Close())
		return 0
	})

	base, ok := got["gzip-klauspost"]
	if !ok {
		return
	}
	mbps := func(o outcome) float64 { return float64(len(tarBytes)) / o.perOp.Seconds() / 1e6 }
	cpumbps := func(o outcome) float64 { return float64(len(tarBytes)) / o.cpuOp.Seconds() / 1e6 }
	b.Logf("tar: %.1f MB; one-member gzip (klauspost, level %d): %.1f MB (%.1f%%), %.1f MB/s, %.1f MB/cpu-s",
		float64(len(tarBytes))/1e6, DefaultLevel, float64(base.size)/1e6, 100*float64(base.size)/float64(len(tarBytes)), mbps(base), cpumbps(base))
	for _, name := range []string{"seekable", "seekable-1thread", "gzip-stdlib"} {
		if o, ok := got[name]; ok {
			b.Logf("%-17s %7.1f MB/s (%.2fx gzip-klauspost), %7.1f MB/cpu-s (%.2fx), size %+.2f%% vs one member, %d members",
				name+":", mbps(o), mbps(o)/mbps(base), cpumbps(o), cpumbps(o)/cpumbps(base), 100*(float64(o.size)/float64(base.size)-1), o.members)
		}
	}
}

// BenchmarkMemberSizes shows the size overhead and member count of the member
// rules, to tune them.
func BenchmarkMemberSizes(b *testing.B) {
	tarBytes := benchTar(b)
	var base countWriter
	zw, _ := gzip.NewWriterLevel(&base, DefaultLevel)
	_, err := zw.Write(tarBytes)
	require.NoError(b, err)
	require.NoError(b, zw.Close())
	for _, maxSize := range []int64{1 << 20, 4 << 20} {
		for _, minSize := range []int64{0, 16 << 10, 64 << 10, 256 << 10, 1 << 20} {
			if minSize > maxSize {
				continue
			}
			b.Run(fmt.Sprintf("min=%dK/max=%dM", minSize>>10, maxSize>>20), func(b *testing.B) {
				b.SetBytes(int64(len(tarBytes)))
				var res *Result
				for range b.N {
					var err error
					res, err = Convert(context.Background(), io.Discard, bytes.NewReader(tarBytes),
						WithMinMemberSize(minSize), WithMaxMemberSize(maxSize))
					require.NoError(b, err)
				}
				b.ReportMetric(100*(float64(res.Size)/float64(base.n)-1), "%overhead")
				b.ReportMetric(float64(len(res.TOC.Members)), "members")
				b.ReportMetric(float64(len(res.TOCJSON)), "TOC-bytes")
			})
		}
	}
}

// BenchmarkParseTOC measures ParseTOC on the benchmark layer's TOC.
func BenchmarkParseTOC(b *testing.B) {
	tarBytes := benchTar(b)
	res, err := Convert(context.Background(), io.Discard, bytes.NewReader(tarBytes))
	require.NoError(b, err)
	b.Run("parse", func(b *testing.B) {
		b.SetBytes(int64(len(res.TOCJSON)))
		b.ReportAllocs()
		for range b.N {
			_, err := ParseTOC(res.TOCJSON, res.Size)
			require.NoError(b, err)
		}
		b.ReportMetric(float64(len(res.TOC.Entries)), "entries")
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(max(len(res.TOC.Entries), 1)), "ns/entry")
	})
}

// BenchmarkRandomFileRead reads random regular files (whole, or 4 KiB at a
// random offset) through their TOC from an in-memory layer, and reports how
// many compressed bytes were fetched per byte read.
func BenchmarkRandomFileRead(b *testing.B) {
	tarBytes := benchTar(b)
	var out bytes.Buffer
	res, err := Convert(context.Background(), &out, bytes.NewReader(tarBytes))
	require.NoError(b, err)
	var files []*Entry
	for i := range res.TOC.Entries {
		if e := &res.TOC.Entries[i]; e.Type == TypeReg && e.Size > 0 {
			files = append(files, e)
		}
	}
	require.NotEmpty(b, files)
	for _, mode := range []string{"whole", "4KiB"} {
		b.Run(mode, func(b *testing.B) {
			rng := rand.New(rand.NewPCG(7, 7))
			ra := &countingReaderAt{ra: bytes.NewReader(out.Bytes())}
			buf := make([]byte, 4096)
			var read int64
			for range b.N {
				e := files[rng.IntN(len(files))]
				fr := NewFileReader(ra, res.TOC, e)
				if mode == "whole" {
					n, err := io.Copy(io.Discard, fr)
					require.NoError(b, err)
					read += n
					continue
				}
				n, err := fr.ReadAt(buf, rng.Int64N(e.Size))
				if err != io.EOF {
					require.NoError(b, err)
				}
				read += int64(n)
			}
			b.ReportMetric(float64(read)/b.Elapsed().Seconds()/1e6, "MB/s")
			b.ReportMetric(float64(ra.bytes)/float64(read), "fetched/B")
		})
	}
}

// cpuTime is the CPU time (user and system) used by the process so far. Wall
// time is unreliable on a shared machine; CPU time per byte is not.
func cpuTime(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	require.NoError(tb, syscall.Getrusage(syscall.RUSAGE_SELF, &ru))
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
