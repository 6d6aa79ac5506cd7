package bench

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"
)

// imageFormat versions what Prepare derives from a root filesystem: bump it
// when the derivation changes so cached images are rebuilt.
const imageFormat = 2

// Spec describes a benchmark image: a Debian root filesystem made by
// mmdebstrap, and the command whose first output is timed.
type Spec struct {
	// Name names the image in results and cache files ("python").
	Name string `json:"name"`
	// Suite is the Debian suite mmdebstrap installs ("bookworm").
	Suite string `json:"suite"`
	// Packages are installed on top of the apt variant.
	Packages []string `json:"packages"`
	// Command is run in the image; the time to its first output line is
	// measured.
	Command []string `json:"command"`
}

// Python is the small benchmark image: Debian bookworm with python3 (about
// 210 MB unpacked).
func Python() Spec {
	return Spec{
		Name:     "python",
		Suite:    "bookworm",
		Packages: []string{"python3"},
		Command:  []string{"python3", "-c", "print(42)"},
	}
}

// SciPy is the large benchmark image: python3 with SciPy, pandas,
// matplotlib and R (about 1.3 GB unpacked). Its command opens about 1,700
// files.
func SciPy() Spec {
	return Spec{
		Name:     "scipy",
		Suite:    "bookworm",
		Packages: []string{"python3", "python3-scipy", "python3-pandas", "python3-matplotlib", "r-base-core"},
		Command:  []string{"python3", "-c", "import pandas, scipy.stats; print(pandas.__version__)"},
	}
}

// Specs returns the images of a benchmark mode: "quick" is Python only,
// "full" both.
func Specs(mode string) ([]Spec, error) {
	switch mode {
	case "quick":
		return []Spec{Python()}, nil
	case "full":
		return []Spec{Python(), SciPy()}, nil
	}
	return nil, fmt.Errorf("benchmark mode %q (want quick or full): %w", mode, errdefs.ErrInvalidArgument)
}

// MmdebstrapArgs returns the mmdebstrap command line that builds the root
// filesystem tar of spec into out. No mirror is named: mmdebstrap uses
// Debian's default.
func (s Spec) MmdebstrapArgs(out string) []string {
	return []string{"--variant=apt", "--format=tar", "--include=" + strings.Join(s.Packages, ","), s.Suite, out}
}

// Image is a benchmark image prepared from its root filesystem: a one-layer
// OCI image layout (the layer gzipped as registries serve it), the layer
// uncompressed, and the docker save archive, gzipped as a whole, that the
// Python donodo uploads as image.tar.gz.
type Image struct {
	Spec Spec `json:"spec"`
	// Name is the image's name in containerd ("zenodo-bench.example/python:1.0").
	Name string `json:"name"`
	// Dir holds the files below; the others are paths inside it.
	Dir string `json:"-"`
	// Layout is the OCI image layout directory.
	Layout string `json:"-"`
	// LayerTar is the uncompressed layer.
	LayerTar string `json:"-"`
	// DockerArchiveGz is the gzipped docker save archive (image.tar.gz).
	DockerArchiveGz string `json:"-"`

	// Manifest is the layout's image manifest.
	Manifest ocispec.Descriptor `json:"manifest"`
	// Layer is the gzipped layer; DiffID its uncompressed digest.
	Layer  ocispec.Descriptor `json:"layer"`
	DiffID digest.Digest      `json:"diff_id"`
	// LayerSize is the uncompressed layer's size, Files its count of
	// regular files.
	LayerSize int64 `json:"layer_size"`
	Files     int   `json:"files"`
	// DockerArchiveGzSize is the size of image.tar.gz.
	DockerArchiveGzSize int64 `json:"docker_archive_gz_size"`
	// Key identifies the root filesystem and derivation the files come
	// from; a mismatch rebuilds them.
	Key string `json:"key"`
}

// Tag is the tag of every benchmark image.
const Tag = "1.0"

// imageName is the name of spec's image in containerd.
func imageName(spec Spec) string { return "zenodo-bench.example/" + spec.Name + ":" + Tag }

// Prepare returns spec's image, building what is missing under cacheDir:
// the root filesystem tar (<name>-rootfs.tar, by mmdebstrap, which needs
// root and Debian's apt mirror) and the image files derived from it
// (<name>-image/). Each is built under a temporary name and renamed, and a
// lock file keeps concurrent benchmarks from building the same image
// twice. logf reports the slow steps.
func Prepare(ctx context.Context, cacheDir string, spec Spec, logf func(format string, args ...any)) (_ *Image, retErr error) {
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return nil, fmt.Errorf("creating benchmark cache %s: %w", cacheDir, err)
	}
	unlock, err := lockFile(ctx, filepath.Join(cacheDir, "."+spec.Name+".lock"))
	if err != nil {
		return nil, err
	}
	defer unlock()

	rootfs := filepath.Join(cacheDir, spec.Name+"-rootfs.tar")
	st, err := os.Stat(rootfs)
	if errors.Is(err, os.ErrNotExist) {
		logf("building %s with mmdebstrap (%s); this takes minutes", rootfs, strings.Join(spec.Packages, ", "))
		if err := buildRootfs(ctx, spec, rootfs); err != nil {
			return nil, err
		}
		st, err = os.Stat(rootfs)
	}
	if err != nil {
		return nil, fmt.Errorf("reading root filesystem of %s: %w", spec.Name, err)
	}
	cfg, err := json.Marshal(spec.Command)
	if err != nil {
		return nil, err
	}
	key := fmt.Sprintf("format=%d rootfs=%d/%d cmd=%s arch=%s", imageFormat, st.Size(), st.ModTime().UnixNano(), cfg, runtime.GOARCH)

	dir := filepath.Join(cacheDir, spec.Name+"-image")
	if img, err := loadImage(dir); err == nil && img.Key == key {
		return img, nil
	}
	logf("deriving the %s image from %s (OCI layout, layer, image.tar.gz)", spec.Name, rootfs)
	tmp := dir + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return nil, fmt.Errorf("removing %s: %w", tmp, err)
	}
	defer func() {
		if retErr != nil {
			_ = os.RemoveAll(tmp)
		}
	}()
	img, err := deriveImage(ctx, rootfs, tmp, spec, st.ModTime())
	if err != nil {
		return nil, fmt.Errorf("deriving the %s image: %w", spec.Name, err)
	}
	img.Key = key
	b, err := json.MarshalIndent(img, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(tmp, "image.json"), b, 0o644); err != nil {
		return nil, fmt.Errorf("writing image description: %w", err)
	}
	if err := os.RemoveAll(dir); err != nil {
		return nil, fmt.Errorf("removing stale %s: %w", dir, err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return nil, fmt.Errorf("renaming %s: %w", tmp, err)
	}
	return loadImage(dir)
}

// loadImage reads the description Prepare left in dir.
func loadImage(dir string) (*Image, error) {
	b, err := os.ReadFile(filepath.Join(dir, "image.json"))
	if err != nil {
		return nil, err
	}
	var img Image
	if err := json.Unmarshal(b, &img); err != nil {
		return nil, fmt.Errorf("reading %s/image.json: %w", dir, err)
	}
	img.Dir = dir
	img.Layout = filepath.Join(dir, "oci")
	img.LayerTar = filepath.Join(dir, "layer.tar")
	img.DockerArchiveGz = filepath.Join(dir, "image.tar.gz")
	for _, p := range []string{img.Layout, img.LayerTar, img.DockerArchiveGz} {
		if _, err := os.Stat(p); err != nil {
			return nil, err
		}
	}
	return &img, nil
}

// lockFile takes an exclusive flock on path, waiting until ctx ends.
func lockFile(ctx context.Context, path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening lock %s: %w", path, err)
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { _ = f.Close() }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			_ = f.Close()
			return nil, fmt.Errorf("locking %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			_ = f.Close()
			return nil, fmt.Errorf("waiting for lock %s: %w", path, ctx.Err())
		case <-tick.C:
		}
	}
}

// buildRootfs runs mmdebstrap into out.tmp and renames it to out.
func buildRootfs(ctx context.Context, spec Spec, out string) error {
	if _, err := exec.LookPath("mmdebstrap"); err != nil {
		return fmt.Errorf("building the %s image needs mmdebstrap (apt-get install mmdebstrap): %w", spec.Name, err)
	}
	tmp := out + ".tmp"
	cmd := exec.CommandContext(ctx, "mmdebstrap", spec.MmdebstrapArgs(tmp)...)
	b, err := cmd.CombinedOutput()
	if err != nil {
		_ = os.Remove(tmp)
		const tail = 4000
		if len(b) > tail {
			b = b[len(b)-tail:]
		}
		return fmt.Errorf("mmdebstrap %s: %w\n%s", strings.Join(cmd.Args[1:], " "), err, b)
	}
	if err := os.Rename(tmp, out); err != nil {
		return fmt.Errorf("renaming %s: %w", tmp, err)
	}
	return nil
}

// deriveImage writes into dir: layer.tar (the root filesystem without
// device nodes, which images do not carry), the OCI layout oci/ of a
// one-layer image whose layer is that tar gzipped (compress/gzip, default
// level, as containerd and buildkit compress), and image.tar.gz (a docker
// save archive of the image, gzipped by gzip(1) as the Python donodo's
// `docker save | gzip` does).
func deriveImage(ctx context.Context, rootfs, dir string, spec Spec, created time.Time) (*Image, error) {
	img := &Image{Spec: spec, Name: imageName(spec), Dir: dir,
		Layout: filepath.Join(dir, "oci"), LayerTar: filepath.Join(dir, "layer.tar"), DockerArchiveGz: filepath.Join(dir, "image.tar.gz")}
	blobs := filepath.Join(img.Layout, "blobs", "sha256")
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		return nil, err
	}

	in, err := os.Open(rootfs)
	if err != nil {
		return nil, err
	}
	defer in.Close()
	layerTar, err := os.Create(img.LayerTar)
	if err != nil {
		return nil, err
	}
	defer layerTar.Close()
	gzPath := filepath.Join(blobs, "layer.tmp")
	gzFile, err := os.Create(gzPath)
	if err != nil {
		return nil, err
	}
	defer gzFile.Close()
	gzHash := sha256.New()
	gzCount := &countWriter{}
	zw := gzip.NewWriter(io.MultiWriter(gzFile, gzHash, gzCount))
	diffHash := sha256.New()
	rawCount := &countWriter{}
	files, err := FilterLayer(ctx, io.MultiWriter(layerTar, diffHash, rawCount, zw), in)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", rootfs, err)
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	for _, f := range []*os.File{gzFile, layerTar} {
		if err := f.Close(); err != nil {
			return nil, err
		}
	}
	img.DiffID = digestOf(diffHash)
	img.LayerSize, img.Files = rawCount.n, files
	img.Layer = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digestOf(gzHash), Size: gzCount.n}
	if err := os.Rename(gzPath, filepath.Join(blobs, img.Layer.Digest.Encoded())); err != nil {
		return nil, err
	}

	config := ocispec.Image{
		Created:  &created,
		Platform: ocispec.Platform{Architecture: runtime.GOARCH, OS: "linux"},
		Config: ocispec.ImageConfig{
			Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
			Cmd: []string{"python3"},
			// donodo push takes the record's creators from it.
			Labels: map[string]string{"org.opencontainers.image.authors": "zenodo-snapshotter bench <bench@example.org>"},
		},
		RootFS: ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{img.DiffID}},
		History: []ocispec.History{{Created: &created,
			CreatedBy: "mmdebstrap " + strings.Join(spec.MmdebstrapArgs("rootfs.tar"), " ")}},
	}
	configDesc, configJSON, err := writeJSONBlob(blobs, ocispec.MediaTypeImageConfig, config)
	if err != nil {
		return nil, err
	}
	manifest := ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    configDesc,
		Layers:    []ocispec.Descriptor{img.Layer},
	}
	img.Manifest, _, err = writeJSONBlob(blobs, ocispec.MediaTypeImageManifest, manifest)
	if err != nil {
		return nil, err
	}
	root := img.Manifest
	root.Platform = &config.Platform
	root.Annotations = map[string]string{
		ocispec.AnnotationRefName:  Tag,
		"io.containerd.image.name": img.Name,
	}
	index := ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{root}}
	if err := writeJSON(filepath.Join(img.Layout, "index.json"), index); err != nil {
		return nil, err
	}
	if err := writeJSON(filepath.Join(img.Layout, ocispec.ImageLayoutFile), ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion}); err != nil {
		return nil, err
	}

	img.DockerArchiveGzSize, err = writeDockerArchiveGz(ctx, img, configDesc.Digest, configJSON)
	if err != nil {
		return nil, fmt.Errorf("writing image.tar.gz: %w", err)
	}
	return img, nil
}

// FilterLayer copies the tar stream r to w without device nodes and FIFOs
// (a root filesystem's /dev entries, which images leave to the runtime) and
// returns how many regular files it wrote.
func FilterLayer(ctx context.Context, w io.Writer, r io.Reader) (int, error) {
	tr := tar.NewReader(r)
	tw := tar.NewWriter(w)
	files := 0
	for {
		if err := ctx.Err(); err != nil {
			return files, err
		}
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return files, fmt.Errorf("reading tar: %w", err)
		}
		switch h.Typeflag {
		case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
			continue
		case tar.TypeReg:
			files++
		}
		if err := tw.WriteHeader(h); err != nil {
			return files, fmt.Errorf("writing %s: %w", h.Name, err)
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return files, fmt.Errorf("copying %s: %w", h.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return files, err
	}
	return files, nil
}

// writeDockerArchiveGz writes the image as `docker save` does (config,
// <id>/layer.tar uncompressed, manifest.json, repositories), piped through
// gzip(1), and returns the compressed size.
func writeDockerArchiveGz(ctx context.Context, img *Image, configDigest digest.Digest, configJSON []byte) (int64, error) {
	out, err := os.Create(img.DockerArchiveGz)
	if err != nil {
		return 0, err
	}
	defer out.Close()
	cmd := exec.CommandContext(ctx, "gzip", "-c", "-n", "-6")
	cmd.Stdout = out
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return 0, err
	}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("starting gzip: %w", err)
	}
	werr := writeDockerArchive(stdin, img, configDigest, configJSON)
	cerr := stdin.Close()
	if err := cmd.Wait(); err != nil {
		return 0, fmt.Errorf("gzip: %w", err)
	}
	if werr != nil {
		return 0, werr
	}
	if cerr != nil {
		return 0, cerr
	}
	if err := out.Close(); err != nil {
		return 0, err
	}
	st, err := os.Stat(img.DockerArchiveGz)
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

func writeDockerArchive(w io.Writer, img *Image, configDigest digest.Digest, configJSON []byte) error {
	tw := tar.NewWriter(w)
	mtime := time.Unix(0, 0)
	id := img.DiffID.Encoded()
	repo, tag, _ := strings.Cut(img.Name, ":")
	manifest, err := json.Marshal([]map[string]any{{
		"Config":   configDigest.Encoded() + ".json",
		"RepoTags": []string{img.Name},
		"Layers":   []string{id + "/layer.tar"},
	}})
	if err != nil {
		return err
	}
	repositories, err := json.Marshal(map[string]map[string]string{repo: {tag: id}})
	if err != nil {
		return err
	}
	small := func(name string, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: mtime, Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Name: id + "/", Mode: 0o755, ModTime: mtime, Typeflag: tar.TypeDir}); err != nil {
		return err
	}
	if err := small(id+"/VERSION", []byte("1.0")); err != nil {
		return err
	}
	layer, err := os.Open(img.LayerTar)
	if err != nil {
		return err
	}
	defer layer.Close()
	if err := tw.WriteHeader(&tar.Header{Name: id + "/layer.tar", Mode: 0o644, Size: img.LayerSize, ModTime: mtime, Typeflag: tar.TypeReg}); err != nil {
		return err
	}
	if _, err := io.Copy(tw, layer); err != nil {
		return fmt.Errorf("copying the layer: %w", err)
	}
	if err := small(configDigest.Encoded()+".json", configJSON); err != nil {
		return err
	}
	if err := small("manifest.json", manifest); err != nil {
		return err
	}
	if err := small("repositories", repositories); err != nil {
		return err
	}
	return tw.Close()
}

// writeJSONBlob stores v as a blob of the layout and returns its
// descriptor and bytes.
func writeJSONBlob(blobs, mediaType string, v any) (ocispec.Descriptor, []byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return ocispec.Descriptor{}, nil, err
	}
	d := digest.FromBytes(b)
	if err := os.WriteFile(filepath.Join(blobs, d.Encoded()), b, 0o644); err != nil {
		return ocispec.Descriptor{}, nil, err
	}
	return ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(b))}, b, nil
}

func writeJSON(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

func digestOf(h hash.Hash) digest.Digest {
	return digest.NewDigestFromEncoded(digest.SHA256, hex.EncodeToString(h.Sum(nil)))
}

// countWriter counts the bytes written to it.
type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return len(p), nil
}
