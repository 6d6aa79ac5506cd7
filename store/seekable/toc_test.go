package seekable

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// smallLayer converts the small standard layer with small members, so the
// TOC has several members.
func smallLayer(t *testing.T) ([]byte, *Result) {
	tarBytes := buildTar(t, standardEntries(false))
	return convert(t, tarBytes, WithMinMemberSize(4096), WithMaxMemberSize(64<<10))
}

func TestParseTOCRejects(t *testing.T) {
	_, res := smallLayer(t)
	require.Greater(t, len(res.TOC.Members), 3)
	idx := func(toc *TOC, name string) int {
		i, ok := toc.names[name]
		require.True(t, ok, name)
		return i
	}
	tests := []struct {
		name   string
		mutate func(toc *TOC, size *int64)
	}{
		{"version 2", func(toc *TOC, _ *int64) { toc.Version = 2 }},
		{"no members", func(toc *TOC, _ *int64) { toc.Members = nil }},
		{"member gap", func(toc *TOC, _ *int64) { toc.Members[1].Offset++ }},
		{"member overlap", func(toc *TOC, _ *int64) { toc.Members[1].Offset-- }},
		{"first member not at 0", func(toc *TOC, _ *int64) { toc.Members[0].Offset = 1 }},
		{"zero-size member", func(toc *TOC, _ *int64) { toc.Members[0].Size = 0 }},
		{"negative member size", func(toc *TOC, _ *int64) { toc.Members[0].Size = -5 }},
		{"members past the layer", func(_ *TOC, size *int64) { *size-- }},
		{"members short of the layer", func(_ *TOC, size *int64) { *size++ }},
		{"zero layer size", func(_ *TOC, size *int64) { *size = 0 }},
		{"negative layer size", func(_ *TOC, size *int64) { *size = -1 }},
		{"uncompressed gap", func(toc *TOC, _ *int64) { toc.Members[2].UOffset++ }},
		{"huge member", func(toc *TOC, _ *int64) {
			toc.Members[len(toc.Members)-1].USize = MaxMemberUSize + 1
		}},
		{"negative usize", func(toc *TOC, _ *int64) { toc.Members[len(toc.Members)-1].USize = -1 }},
		{"compressed size no member can have", func(toc *TOC, size *int64) {
			// A layer (of a hostile record) whose last member claims 1 TiB:
			// readers would allocate that much before verifying it.
			m := &toc.Members[len(toc.Members)-1]
			*size += 1<<40 - m.Size
			m.Size = 1 << 40
		}},
		{"empty member", func(toc *TOC, _ *int64) {
			prev, last := &toc.Members[len(toc.Members)-2], &toc.Members[len(toc.Members)-1]
			prev.USize += last.USize
			last.UOffset, last.USize = prev.UOffset+prev.USize, 0
		}},
		{"bad member digest", func(toc *TOC, _ *int64) { toc.Members[0].Digest = "sha256:xyz" }},
		{"member digest not sha256", func(toc *TOC, _ *int64) { toc.Members[0].Digest = digest.Digest("sha512:" + strings.Repeat("ab", 64)) }},
		{"dot-dot name", func(toc *TOC, _ *int64) { toc.Entries[3].Name = "../x" }},
		{"escaping name", func(toc *TOC, _ *int64) { toc.Entries[3].Name = "a/../../x" }},
		{"absolute name", func(toc *TOC, _ *int64) { toc.Entries[3].Name = "/etc/x" }},
		{"empty name", func(toc *TOC, _ *int64) { toc.Entries[3].Name = "" }},
		{"NUL in name", func(toc *TOC, _ *int64) { toc.Entries[3].Name = "a\x00b" }},
		{"unknown type", func(toc *TOC, _ *int64) { toc.Entries[1].Type = "socket" }},
		{"root not a dir", func(toc *TOC, _ *int64) { toc.Entries[0].Type = TypeFifo }},
		{"hardlink to missing", func(toc *TOC, _ *int64) { toc.Entries[idx(toc, "usr/bin/hard")].Linkname = "nothere" }},
		{"hardlink to later", func(toc *TOC, _ *int64) { toc.Entries[idx(toc, "usr/bin/hard")].Linkname = "dev/null" }},
		{"hardlink to dir", func(toc *TOC, _ *int64) { toc.Entries[idx(toc, "usr/bin/hard")].Linkname = "usr/lib" }},
		{"hardlink escaping", func(toc *TOC, _ *int64) { toc.Entries[idx(toc, "usr/bin/hard")].Linkname = "../../etc/passwd" }},
		{"hardlink to itself", func(toc *TOC, _ *int64) { toc.Entries[idx(toc, "usr/bin/hard")].Linkname = "usr/bin/hard" }},
		{"below a non-dir", func(toc *TOC, _ *int64) {
			e := &toc.Entries[idx(toc, "usr/lib")]
			e.Type, e.Digest = TypeReg, toc.Members[0].Digest
		}},
		{"below a symlink", func(toc *TOC, _ *int64) { toc.Entries[idx(toc, "usr/bin/sh")].Name = "usr/bin/ping/sh" }},
		{"member index too big", func(toc *TOC, _ *int64) { toc.Entries[3].Member = len(toc.Members) }},
		{"member index negative", func(toc *TOC, _ *int64) { toc.Entries[3].Member = -1 }},
		{"inner offset past member", func(toc *TOC, _ *int64) {
			e := &toc.Entries[idx(toc, "usr/lib/a64k")]
			e.InnerOffset = toc.Members[e.Member].USize
			e.Offset = toc.Members[e.Member].UOffset + e.InnerOffset
		}},
		{"negative inner offset", func(toc *TOC, _ *int64) {
			e := &toc.Entries[idx(toc, "usr/lib/a64k")]
			e.InnerOffset, e.Offset = -1, e.Offset-e.InnerOffset-1
		}},
		{"inconsistent offset", func(toc *TOC, _ *int64) { toc.Entries[idx(toc, "usr/lib/a64k")].Offset++ }},
		{"data past the end", func(toc *TOC, _ *int64) { toc.Entries[idx(toc, "usr/lib/a64k")].Size = 1 << 40 }},
		{"negative size", func(toc *TOC, _ *int64) { toc.Entries[idx(toc, "usr/lib/a64k")].Size = -1 }},
		{"file without digest", func(toc *TOC, _ *int64) { toc.Entries[idx(toc, "usr/lib/a64k")].Digest = "" }},
		{"dir with size", func(toc *TOC, _ *int64) { toc.Entries[idx(toc, "usr/lib")].Size = 10 }},
		{"symlink with digest", func(toc *TOC, _ *int64) {
			toc.Entries[idx(toc, "usr/bin/sh")].Digest = toc.Members[0].Digest
		}},
		{"dir with link target", func(toc *TOC, _ *int64) { toc.Entries[idx(toc, "usr/lib")].Linkname = "x" }},
		{"mode too big", func(toc *TOC, _ *int64) { toc.Entries[3].Mode = 0o10000 }},
		{"negative uid", func(toc *TOC, _ *int64) { toc.Entries[3].UID = -1 }},
		{"uid too big", func(toc *TOC, _ *int64) { toc.Entries[3].GID = 1 << 33 }},
		{"device numbers on a file", func(toc *TOC, _ *int64) { toc.Entries[idx(toc, "usr/lib/a64k")].Devmajor = 1 }},
		{"device out of range", func(toc *TOC, _ *int64) { toc.Entries[idx(toc, "dev/null")].Devminor = -1 }},
		{"empty xattr name", func(toc *TOC, _ *int64) { toc.Entries[3].Xattrs = map[string]string{"": "x"} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			toc, err := ParseTOC(res.TOCJSON, res.Size)
			require.NoError(t, err)
			size := res.Size
			tt.mutate(toc, &size)
			data, err := toc.MarshalJSON()
			require.NoError(t, err)
			_, err = ParseTOC(data, size)
			require.Error(t, err)
			assert.ErrorIs(t, err, ErrInvalidTOC)
			assert.True(t, errdefs.IsInvalidArgument(err))
			t.Log(err)
		})
	}
}

func TestParseTOCRejectsJSON(t *testing.T) {
	_, res := smallLayer(t)
	valid := string(res.TOCJSON)
	member := `{"offset":0,"size":30,"uoffset":0,"usize":0,"digest":"sha256:` + strings.Repeat("0", 64) + `"}`
	entry := `{"name":"x","type":"dir","mode":493,"mtime":0,"offset":0,"member":0,"inner_offset":0}`
	small := limits{tocSize: 10000, entries: 3, members: 2, memberUSize: 100}
	tests := []struct {
		name string
		data string
		lim  limits
	}{
		{name: "empty", data: ""},
		{name: "not JSON", data: "hello"},
		{name: "array", data: "[]"},
		{name: "empty object", data: "{}"},
		{name: "trailing data", data: valid + "{}"},
		{name: "trailing garbage", data: valid + "x"},
		{name: "truncated", data: valid[:len(valid)/2]},
		{name: "duplicate key", data: `{"version":1,"version":1}`},
		{name: "members not an array", data: `{"version":1,"members":{}}`},
		{name: "entries not an array", data: `{"version":1,"members":[` + member + `],"entries":"x"}`},
		{name: "bad member", data: `{"version":1,"members":[{"offset":"x"}]}`},
		{name: "bad entry", data: `{"version":1,"members":[` + member + `],"entries":[{"mode":"x"}]}`},
		{name: "nsec out of range", data: `{"version":1,"members":[` + member + `],"entries":[` + strings.Replace(entry, `"mtime":0`, `"mtime":0,"mtime_nsec":1000000000`, 1) + `]}`},
		{name: "name twice", data: `{"version":1,"members":[` + member + `],"entries":[` + strings.Replace(entry, `"name":"x"`, `"name":"x","name_b64":"eA=="`, 1) + `]}`},
		{name: "bad base64", data: `{"version":1,"members":[` + member + `],"entries":[` + strings.Replace(entry, `"name":"x"`, `"name_b64":"!!"`, 1) + `]}`},
		{name: "too big", data: `{"version":1,"x":"` + strings.Repeat("x", 10000) + `"}`, lim: small},
		{name: "too many members", data: `{"version":1,"members":[` + strings.Repeat(member+",", 2) + member + `]}`, lim: small},
		{name: "too many entries", data: `{"version":1,"members":[` + member + `],"entries":[{},{},{},{}]}`, lim: small},
		{name: "member too big", data: `{"version":1,"members":[` + strings.Replace(member, `"usize":0`, `"usize":101`, 1) + `]}`, lim: small},
		{name: "deep nesting", data: `{"version":1,"x":` + strings.Repeat("[", 100000) + strings.Repeat("]", 100000) + `}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lim := tt.lim
			if lim == (limits{}) {
				lim = defaultLimits()
			}
			_, err := parseTOC([]byte(tt.data), 30, lim)
			require.Error(t, err)
			t.Log(err)
			if tt.lim == (limits{}) {
				_, err = ParseTOC([]byte(tt.data), 30)
				require.Error(t, err)
				assert.ErrorIs(t, err, ErrInvalidTOC)
			}
		})
	}
}

func TestParseTOCAccepts(t *testing.T) {
	member := `{"offset":0,"size":30,"uoffset":0,"usize":10,"digest":"sha256:` + strings.Repeat("0", 64) + `"}`
	entry := func(name, typ string, extra string) string {
		return fmt.Sprintf(`{"name":%q,"type":%q,"mode":420,"mtime":0,"offset":0,"member":0,"inner_offset":0%s}`, name, typ, extra)
	}
	data := `{"version":1,"later":{"a":[1,2]},"members":[` + member + `],"entries":[` +
		entry("./", TypeDir, "") + "," +
		entry("./etc/", TypeDir, "") + "," +
		entry("etc//x", TypeFifo, "") + "," +
		entry("etc/x", TypeReg, `,"size":10,"digest":"sha256:`+strings.Repeat("1", 64)+`"`) + "," +
		entry("etc/y", TypeHardlink, `,"linkname":"./etc/x"`) + "," +
		entry("etc/x", TypeSymlink, `,"linkname":"/anything/../at/all"`) + "," +
		entry("", TypeDir, `,"name_b64":"Y2Fm6Q=="`) + "," +
		entry("a/b/c", TypeChar, `,"devmajor":1,"devminor":3,"xattrs":{"user.x":"AAE="}`) +
		`]}`
	toc, err := ParseTOC([]byte(data), 30)
	require.NoError(t, err)
	root, ok := toc.Lookup("/")
	require.True(t, ok)
	assert.Equal(t, ".", root.Name)
	x, ok := toc.Lookup("/etc/x")
	require.True(t, ok)
	assert.Equal(t, TypeSymlink, x.Type, "the last entry wins")
	assert.Equal(t, "/anything/../at/all", x.Linkname, "symlink targets are verbatim")
	y, _ := toc.Lookup("etc/y")
	assert.Equal(t, "etc/x", y.Linkname)
	assert.Equal(t, TypeReg, toc.Resolve(y).Type, "the hardlink keeps the file it linked to")
	assert.Equal(t, toc.Resolve(x), x)
	caf, ok := toc.Lookup("caf\xe9")
	require.True(t, ok)
	assert.Equal(t, TypeDir, caf.Type)
	dev, _ := toc.Lookup("a/b/c")
	assert.Equal(t, "\x00\x01", dev.Xattrs["user.x"])
	_, ok = toc.Lookup("a/b")
	assert.False(t, ok, "implicit directories have no entry")
	_, ok = toc.Lookup("../etc/x")
	assert.False(t, ok)

	// A marshalled TOC parses back to the same value.
	again, err := toc.MarshalJSON()
	require.NoError(t, err)
	toc2, err := ParseTOC(again, 30)
	require.NoError(t, err)
	assert.Equal(t, toc, toc2)
}

func TestMemberRange(t *testing.T) {
	toc := &TOC{Members: []Member{
		{UOffset: 0, USize: 100},
		{UOffset: 100, USize: 100},
		{UOffset: 200, USize: 100},
		{UOffset: 300, USize: 50},
	}}
	e := &Entry{Type: TypeReg, Offset: 150, Size: 180, Member: 1, InnerOffset: 50}
	tests := []struct {
		name        string
		off, n      int64
		first, last int
	}{
		{"whole", 0, 180, 1, 3},
		{"more than the file", 0, 1000, 1, 3},
		{"first byte", 0, 1, 1, 1},
		{"up to a boundary", 0, 50, 1, 1},
		{"from a boundary", 50, 1, 2, 2},
		{"across a boundary", 49, 2, 1, 2},
		{"last byte", 179, 1, 3, 3},
		{"past the end", 180, 10, 0, -1},
		{"empty", 10, 0, 0, -1},
		{"negative offset", -1, 10, 0, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			first, last := toc.MemberRange(e, tt.off, tt.n)
			assert.Equal(t, tt.first, first)
			assert.Equal(t, tt.last, last)
		})
	}
	first, last := toc.MemberRange(nil, 0, 10)
	assert.Greater(t, first, last)
}

func TestCompressedTOC(t *testing.T) {
	_, res := smallLayer(t)
	z := CompressTOC(res.TOCJSON)
	assert.Less(t, len(z), len(res.TOCJSON)/2)
	toc, err := ParseTOC(z, res.Size)
	require.NoError(t, err)
	assert.Equal(t, res.TOC, toc)

	small := limits{tocSize: 10000, entries: 10, members: 10, memberUSize: 100}
	_, err = parseTOC(CompressTOC([]byte(strings.Repeat(" ", 10001))), 30, small)
	assert.ErrorContains(t, err, "more than the limit")
	bad := bytes.Clone(z)
	bad[len(bad)-5] ^= 1 // the CRC
	_, err = ParseTOC(bad, res.Size)
	assert.ErrorIs(t, err, ErrInvalidTOC)
	_, err = ParseTOC(z[:len(z)/2], res.Size)
	assert.ErrorIs(t, err, ErrInvalidTOC)
}

func TestCheckDigest(t *testing.T) {
	hex := strings.Repeat("0a", 32)
	for d, ok := range map[string]bool{
		"sha256:" + hex:                  true,
		"sha256:" + strings.ToUpper(hex): false,
		"sha256:" + hex[1:]:              false,
		"sha256:" + hex + "0":            false,
		"sha256:" + hex[1:] + "g":        false,
		"sha512:" + hex + hex:            false,
		"SHA256:" + hex:                  false,
		hex:                              false,
		"":                               false,
		"sha256+b64u:" + hex:             false,
	} {
		err := checkDigest(digest.Digest(d))
		assert.Equal(t, ok, err == nil, "%q: %v", d, err)
		assert.Equal(t, digest.Digest(d).Validate() == nil && digest.Digest(d).Algorithm() == digest.SHA256, ok, d)
	}
}
