//go:build linux

package snapshot

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/containerd/log/logtest"
	"github.com/stretchr/testify/require"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/plugins/snapshots/overlay/overlayutils"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/internal/testutil"
)

// layerFile is the file the fake filesystems put in every lazy layer.
const layerFile = "zenodo-layer.txt"

type mountCall struct {
	Mountpoint string
	Labels     map[string]string
}

// dirFS is a FileSystem that mounts nothing: Mount writes layerFile (holding
// the layer's DOI) into the mountpoint directory, Unmount empties it. It
// records every call and fails on demand.
type dirFS struct {
	mu        sync.Mutex
	mounts    []mountCall
	unmounts  []string
	mounted   map[string]bool
	failMount error
	failCheck error
}

var _ FileSystem = (*dirFS)(nil)

func newDirFS() *dirFS { return &dirFS{mounted: map[string]bool{}} }

func (f *dirFS) Mount(_ context.Context, mp string, labels map[string]string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mounts = append(f.mounts, mountCall{Mountpoint: mp, Labels: maps.Clone(labels)})
	if f.failMount != nil {
		return f.failMount
	}
	if err := os.WriteFile(filepath.Join(mp, layerFile), []byte(labels[LabelDOI]), 0o644); err != nil {
		return err
	}
	f.mounted[mp] = true
	return nil
}

func (f *dirFS) Check(_ context.Context, mp string, _ map[string]string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failCheck != nil {
		return f.failCheck
	}
	if !f.mounted[mp] {
		return fmt.Errorf("%s is not mounted", mp)
	}
	return nil
}

func (f *dirFS) Unmount(_ context.Context, mp string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.unmounts = append(f.unmounts, mp)
	if !f.mounted[mp] {
		return fmt.Errorf("%s is not mounted", mp)
	}
	delete(f.mounted, mp)
	return os.Remove(filepath.Join(mp, layerFile))
}

func (f *dirFS) setFailMount(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failMount = err
}

func (f *dirFS) setFailCheck(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failCheck = err
}

func (f *dirFS) mountCalls() []mountCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]mountCall(nil), f.mounts...)
}

func (f *dirFS) unmountCalls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.unmounts...)
}

// dummyFS never mounts anything; for the conformance suite, which never
// passes lazy-layer labels.
type dummyFS struct{}

var errDummy = errors.New("dummy filesystem mounts nothing")

func (dummyFS) Mount(context.Context, string, map[string]string) error { return errDummy }
func (dummyFS) Check(context.Context, string, map[string]string) error { return errDummy }
func (dummyFS) Unmount(context.Context, string) error                  { return errDummy }

// events collects what a snapshotter reports to its observer.
type events struct {
	mu  sync.Mutex
	evs []Event
}

func (e *events) observe(ev Event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.evs = append(e.evs, ev)
}

func (e *events) kinds() []EventKind {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []EventKind
	for _, ev := range e.evs {
		out = append(out, ev.Kind)
	}
	return out
}

func (e *events) all() []Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]Event(nil), e.evs...)
}

func testContext(t *testing.T) context.Context {
	return logtest.WithT(context.Background(), t)
}

// newTestSnapshotter makes a snapshotter on root with fs, closed at the end
// of the test, and the events it reports.
func newTestSnapshotter(t *testing.T, root string, fs FileSystem, opts ...Opt) (snapshots.Snapshotter, *events) {
	t.Helper()
	evs := &events{}
	sn, err := NewSnapshotter(testContext(t), root, fs, append(opts, WithObserver(evs.observe))...)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, sn.Close()) })
	return sn, evs
}

// layerLabels are the labels containerd's unpacker passes to Prepare for a
// layer of ours whose chain ID is target.
func layerLabels(target, doi string) map[string]string {
	return map[string]string{
		snapshots.LabelSnapshotRef: target,
		LabelTOCDigest:             "sha256:" + fmt.Sprintf("%064x", len(doi)),
		LabelDOI:                   doi,
		LabelUncompressedSize:      "1234",
	}
}

// requireRootOverlay skips (or, with CI=true, fails) a test that needs root
// and a kernel with overlayfs.
func requireRootOverlay(t *testing.T) {
	t.Helper()
	testutil.RequireRoot(t, "mounting overlayfs")
	if err := overlayutils.Supported(t.TempDir()); err != nil {
		testutil.SkipOrFail(t, "overlayfs is not usable here: %v (run the tests as root on Linux with overlayfs to cover real mounts)", err)
	}
}
