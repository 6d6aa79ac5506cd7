package testimage

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/integration/containerdtest"
)

// WriteArchive writes the OCI image layout in layoutDir to w as an OCI
// archive (a tar of the layout), as `ctr image import`, `skopeo copy
// oci-archive:` and client.Import read. Entries are in lexical order with
// fixed times, so the same layout gives the same archive.
func WriteArchive(w io.Writer, layoutDir string) error {
	tw := tar.NewWriter(w)
	err := filepath.WalkDir(layoutDir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(layoutDir, p)
		if err != nil || rel == "." {
			return err
		}
		hdr := &tar.Header{Name: filepath.ToSlash(rel), Mode: 0o644, ModTime: time.Unix(0, 0), Format: tar.FormatPAX}
		if e.IsDir() {
			hdr.Typeflag, hdr.Name, hdr.Mode = tar.TypeDir, hdr.Name+"/", 0o755
			return tw.WriteHeader(hdr)
		}
		if !e.Type().IsRegular() {
			return fmt.Errorf("%s: not a regular file", p)
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			return err
		}
		hdr.Typeflag, hdr.Size = tar.TypeReg, st.Size()
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		_, err = io.Copy(tw, f)
		return err
	})
	if err != nil {
		return fmt.Errorf("archiving image layout %s: %w", layoutDir, err)
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("archiving image layout %s: %w", layoutDir, err)
	}
	return nil
}

// Archive writes the layout in layoutDir as an OCI archive into a file in a
// temporary directory of t and returns its path.
func Archive(t testing.TB, layoutDir string) string {
	t.Helper()
	name := filepath.Join(t.TempDir(), "image.tar")
	f, err := os.Create(name)
	if err != nil {
		t.Fatalf("creating image archive: %v", err)
	}
	defer f.Close()
	if err := WriteArchive(f, layoutDir); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("writing image archive: %v", err)
	}
	return name
}

type importOptions struct {
	snapshotter string
	unpack      bool
	timeout     time.Duration
}

// ImportOption configures Import.
type ImportOption func(*importOptions)

// UnpackWith unpacks the image with the named snapshotter. The default is the
// daemon's default (containerdtest.WithSnapshotter), else containerd's
// (overlayfs).
func UnpackWith(snapshotter string) ImportOption {
	return func(o *importOptions) { o.snapshotter, o.unpack = snapshotter, true }
}

// NoUnpack only stores the image's content and name. The default is to unpack.
func NoUnpack() ImportOption { return func(o *importOptions) { o.unpack = false } }

// ImportTimeout bounds the import and unpack. The default is 5 minutes.
func ImportTimeout(d time.Duration) ImportOption { return func(o *importOptions) { o.timeout = d } }

// Import stores the image of the OCI layout in layoutDir (as Busybox writes)
// in d's content and image stores under name (the layout's name annotation
// if name is ""), through the containerd client, then unpacks it for the
// client's platform. It returns the stored image. Failures end the test.
func Import(t testing.TB, d *containerdtest.Daemon, layoutDir, name string, opts ...ImportOption) images.Image {
	t.Helper()
	o := importOptions{snapshotter: d.Snapshotter(), unpack: true, timeout: 5 * time.Minute}
	for _, opt := range opts {
		opt(&o)
	}
	if d.Client() == nil {
		t.Fatalf("importing image layout %s: containerd %s is stopped", layoutDir, d.Version().Name)
	}
	ctx, cancel := context.WithTimeout(d.Context(context.Background()), o.timeout)
	defer cancel()
	img, err := importLayout(ctx, d.Client(), layoutDir, name)
	if err != nil {
		t.Fatalf("importing image layout %s into %s: %v", layoutDir, d.Version().Name, err)
	}
	if o.unpack {
		if err := client.NewImage(d.Client(), img).Unpack(ctx, o.snapshotter); err != nil {
			t.Fatalf("unpacking %s with snapshotter %q on %s: %v", img.Name, o.snapshotter, d.Version().Name, err)
		}
	}
	return img
}

func importLayout(ctx context.Context, c *client.Client, layoutDir, name string) (images.Image, error) {
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(WriteArchive(pw, layoutDir)) }()
	imgs, err := c.Import(ctx, pr)
	pr.CloseWithError(io.ErrClosedPipe) // stops the writer if Import returned early
	if err != nil {
		return images.Image{}, err
	}
	if len(imgs) != 1 {
		return images.Image{}, fmt.Errorf("expected one image in the layout's index.json, imported %d", len(imgs))
	}
	img := imgs[0]
	if name == "" || name == img.Name {
		return img, nil
	}
	is := c.ImageService()
	renamed := images.Image{Name: name, Target: img.Target, Labels: img.Labels}
	stored, err := is.Update(ctx, renamed, "target")
	if err != nil {
		if stored, err = is.Create(ctx, renamed); err != nil {
			return images.Image{}, fmt.Errorf("naming the image %s: %w", name, err)
		}
	}
	if err := is.Delete(ctx, img.Name); err != nil {
		return images.Image{}, fmt.Errorf("removing the layout's name %s: %w", img.Name, err)
	}
	return stored, nil
}
