// Package buildinfo describes an image for humans: the packages installed in
// its final filesystem (found by reading package databases from the layers,
// without running the image) and the build manifest that donodo writes as a
// Zenodo record's description.
package buildinfo

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
)

// Package is one installed package.
type Package struct {
	// Manager is the package manager that installed it: dpkg, apk, conda or pip.
	Manager string `json:"manager"`
	Name    string `json:"name"`
	Version string `json:"version"`
	// Arch is the architecture, where the database records one.
	Arch string `json:"arch,omitempty"`
}

// LayerOpener opens one layer's uncompressed tar stream.
type LayerOpener func(ctx context.Context) (io.ReadCloser, error)

// Limits on what the scanner keeps in memory from one database file.
const (
	maxDBFile       = 64 << 20 // dpkg status, apk installed
	maxMetadataFile = 1 << 20  // conda-meta JSON, pip METADATA
)

// ScanLayers reads the layers' tar streams in order (lowest first), applies
// their whiteouts, and returns the packages the final filesystem holds,
// sorted by manager and name. Only package databases are kept in memory, each
// bounded in size.
func ScanLayers(ctx context.Context, layers []LayerOpener) ([]Package, error) {
	files := map[string][]byte{}
	for i, open := range layers {
		if err := scanLayer(ctx, open, files); err != nil {
			return nil, fmt.Errorf("scanning layer %d for packages: %w", i, err)
		}
	}
	return parseDatabases(files), nil
}

func scanLayer(ctx context.Context, open LayerOpener, files map[string][]byte) error {
	rc, err := open(ctx)
	if err != nil {
		return err
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading tar: %w", err)
		}
		name := path.Clean("/" + hdr.Name)[1:]
		dir, base := path.Split(name)
		switch {
		case base == ".wh..wh..opq":
			removeUnder(files, strings.TrimSuffix(dir, "/"))
			continue
		case strings.HasPrefix(base, ".wh."):
			target := dir + strings.TrimPrefix(base, ".wh.")
			delete(files, target)
			removeUnder(files, target)
			continue
		}
		limit, ok := interesting(name)
		if !ok {
			continue
		}
		if hdr.Typeflag != tar.TypeReg {
			delete(files, name)
			continue
		}
		if hdr.Size > limit {
			return fmt.Errorf("package database %s is %d bytes, more than the %d this scanner reads", name, hdr.Size, limit)
		}
		data, err := io.ReadAll(io.LimitReader(tr, limit))
		if err != nil {
			return fmt.Errorf("reading %s: %w", name, err)
		}
		files[name] = data
	}
}

func removeUnder(files map[string][]byte, dir string) {
	prefix := dir + "/"
	if dir == "" {
		prefix = ""
	}
	for name := range files {
		if strings.HasPrefix(name, prefix) {
			delete(files, name)
		}
	}
}

// interesting reports whether name is a package database file, and how much
// of it may be read.
func interesting(name string) (int64, bool) {
	switch {
	case name == "var/lib/dpkg/status", name == "lib/apk/db/installed":
		return maxDBFile, true
	case strings.HasPrefix(name, "var/lib/dpkg/status.d/") && !strings.HasSuffix(name, ".md5sums"):
		return maxMetadataFile, true
	case path.Base(path.Dir(name)) == "conda-meta" && strings.HasSuffix(name, ".json"):
		return maxMetadataFile, true
	case strings.HasSuffix(path.Dir(name), ".dist-info") && path.Base(name) == "METADATA":
		return maxMetadataFile, true
	case strings.HasSuffix(path.Dir(name), ".egg-info") && path.Base(name) == "PKG-INFO":
		return maxMetadataFile, true
	}
	return 0, false
}

func parseDatabases(files map[string][]byte) []Package {
	var pkgs []Package
	seen := map[Package]bool{}
	add := func(p Package) {
		if p.Name == "" || seen[p] {
			return
		}
		seen[p] = true
		pkgs = append(pkgs, p)
	}
	for name, data := range files {
		switch {
		case name == "var/lib/dpkg/status" || strings.HasPrefix(name, "var/lib/dpkg/status.d/"):
			for _, p := range parseDpkg(data) {
				add(p)
			}
		case name == "lib/apk/db/installed":
			for _, p := range parseApk(data) {
				add(p)
			}
		case strings.HasSuffix(name, ".json"):
			if p, ok := parseConda(data); ok {
				add(p)
			}
		default:
			if p, ok := parsePip(data); ok {
				add(p)
			}
		}
	}
	sort.Slice(pkgs, func(i, j int) bool {
		a, b := pkgs[i], pkgs[j]
		if a.Manager != b.Manager {
			return a.Manager < b.Manager
		}
		if a.Name != b.Name {
			return a.Name < b.Name
		}
		return a.Version < b.Version
	})
	return pkgs
}

// parseDpkg reads dpkg's status file: RFC 822 paragraphs; only packages whose
// Status ends in "installed" count (distroless status.d files have no Status).
func parseDpkg(data []byte) []Package {
	var pkgs []Package
	for _, para := range bytes.Split(data, []byte("\n\n")) {
		f := headerFields(para)
		if st, ok := f["Status"]; ok && !strings.HasSuffix(st, " installed") {
			continue
		}
		pkgs = append(pkgs, Package{Manager: "dpkg", Name: f["Package"], Version: f["Version"], Arch: f["Architecture"]})
	}
	return pkgs
}

// parseApk reads apk's installed database: "K:value" lines, blank line between packages.
func parseApk(data []byte) []Package {
	var pkgs []Package
	for _, para := range bytes.Split(data, []byte("\n\n")) {
		var p Package
		p.Manager = "apk"
		sc := bufio.NewScanner(bytes.NewReader(para))
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			if len(line) < 2 || line[1] != ':' {
				continue
			}
			switch line[0] {
			case 'P':
				p.Name = line[2:]
			case 'V':
				p.Version = line[2:]
			case 'A':
				p.Arch = line[2:]
			}
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

func parseConda(data []byte) (Package, bool) {
	var m struct {
		Name, Version, Subdir string
	}
	if err := json.Unmarshal(data, &m); err != nil || m.Name == "" {
		return Package{}, false
	}
	return Package{Manager: "conda", Name: m.Name, Version: m.Version, Arch: m.Subdir}, true
}

// parsePip reads the RFC 822 header of a wheel's METADATA or an egg's PKG-INFO.
func parsePip(data []byte) (Package, bool) {
	head, _, _ := bytes.Cut(data, []byte("\n\n"))
	f := headerFields(head)
	if f["Name"] == "" {
		return Package{}, false
	}
	return Package{Manager: "pip", Name: f["Name"], Version: f["Version"]}, true
}

// headerFields parses "Key: value" lines, skipping continuation lines.
func headerFields(para []byte) map[string]string {
	f := map[string]string{}
	for _, line := range strings.Split(string(para), "\n") {
		if line == "" || line[0] == ' ' || line[0] == '\t' {
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		if _, dup := f[k]; !dup {
			f[k] = strings.TrimSpace(v)
		}
	}
	return f
}
