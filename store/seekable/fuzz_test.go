package seekable

import (
	"archive/tar"
	"bytes"
	stdgzip "compress/gzip"
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fuzzTars are small tars for the seed corpora.
func fuzzTars(t testing.TB) [][]byte {
	xattr := reg("bin/ping", []byte("ping"))
	xattr.hdr.PAXRecords = map[string]string{"SCHILY.xattr.security.capability": "\x01\x00\x00\x02"}
	return [][]byte{
		buildTar(t, nil),
		buildTar(t, []tarEntry{reg("a", []byte("hello"))}),
		buildTar(t, []tarEntry{
			dir("./"), dir("etc/"), reg("etc/passwd", []byte(strings.Repeat("root:x:0:0\n", 50))),
			symlink("etc/link", "passwd"), hardlink("etc/hard", "etc/passwd"),
			{hdr: tar.Header{Typeflag: tar.TypeChar, Name: "dev/null", Devmajor: 1, Devminor: 3}},
			{hdr: tar.Header{Typeflag: tar.TypeFifo, Name: "fifo"}},
			reg("etc/.wh.gone", nil), reg(strings.Repeat("long/", 40)+"name", []byte("x")),
			xattr, reg("big", bytes.Repeat([]byte("0123456789"), 300)),
		}),
	}
}

func FuzzParseTOC(f *testing.F) {
	for _, tarBytes := range fuzzTars(f) {
		var out bytes.Buffer
		res, err := Convert(context.Background(), &out, bytes.NewReader(tarBytes), WithMinMemberSize(100), WithMaxMemberSize(1000))
		require.NoError(f, err)
		f.Add(res.TOCJSON, res.Size)
		f.Add(res.TOCJSON, res.Size+1)
		f.Add(CompressTOC(res.TOCJSON), res.Size)
	}
	f.Add([]byte(`{"version":1,"members":[{"offset":0,"size":30,"uoffset":0,"usize":10,"digest":"sha256:`+strings.Repeat("0", 64)+`"}],"entries":[{"name":"./a/","type":"dir","mode":493,"mtime":-5,"offset":3,"member":0,"inner_offset":3}]}`), int64(30))
	f.Add([]byte(`{"version":1,"members":null,"entries":[{},{}]}`), int64(1))
	f.Add([]byte(`[`), int64(-1))
	f.Fuzz(func(t *testing.T, data []byte, layerSize int64) {
		toc, err := ParseTOC(data, layerSize)
		if err != nil {
			require.ErrorIs(t, err, ErrInvalidTOC)
			return
		}
		for i := range toc.Entries {
			e := &toc.Entries[i]
			got, ok := toc.Lookup(e.Name)
			require.True(t, ok, e.Name)
			require.Equal(t, e.Name, got.Name)
			d := toc.Resolve(e)
			first, last := toc.MemberRange(d, 0, d.Size)
			if d.Size > 0 {
				require.True(t, 0 <= first && first <= last && last < len(toc.Members))
			}
		}
		again, err := toc.MarshalJSON()
		require.NoError(t, err)
		toc2, err := ParseTOC(again, layerSize)
		require.NoError(t, err)
		require.Equal(t, toc, toc2)
		if layerSize < 1<<20 {
			// Reading a layer of zeros fails verification, never panics.
			zeros := bytes.NewReader(make([]byte, layerSize))
			for i := range toc.Entries {
				_, err := io.ReadAll(NewFileReader(zeros, toc, &toc.Entries[i]))
				if err != nil {
					require.ErrorIs(t, err, ErrDigestMismatch)
				}
			}
		}
	})
}

func FuzzConvert(f *testing.F) {
	for _, tarBytes := range fuzzTars(f) {
		f.Add(tarBytes)
	}
	f.Add([]byte{})
	f.Add(make([]byte, 1024))
	f.Add([]byte("not a tar"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var out bytes.Buffer
		res, err := Convert(context.Background(), &out, bytes.NewReader(data), WithMinMemberSize(100), WithMaxMemberSize(700), WithConcurrency(2))
		if err != nil {
			require.True(t, errors.Is(err, ErrInvalidTar) || errors.Is(err, ErrUnsupported), "unexpected error kind: %v", err)
			return
		}
		zr, err := stdgzip.NewReader(bytes.NewReader(out.Bytes()))
		require.NoError(t, err)
		got, err := io.ReadAll(zr)
		require.NoError(t, err)
		require.True(t, bytes.Equal(data, got), "gunzip does not give back the input")
		toc, err := ParseTOC(res.TOCJSON, res.Size)
		require.NoError(t, err, "Convert wrote a TOC that ParseTOC rejects")
		assert.Equal(t, res.TOC, toc)
		for i := range toc.Entries {
			e := toc.Resolve(&toc.Entries[i])
			b, err := io.ReadAll(NewFileReader(bytes.NewReader(out.Bytes()), toc, e))
			require.NoError(t, err)
			if e.Type == TypeReg {
				require.Equal(t, e.Digest, digest.FromBytes(b), e.Name)
			}
		}
	})
}
