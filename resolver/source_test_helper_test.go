package resolver

import (
	"testing"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/store/remote"
	"github.com/zenodo-snapshotter/zenodo-snapshotter/zenodo"
)

// newTestSource is the Source the tests use over the fake Zenodo: the
// production one, store/remote's Opener.
func newTestSource(t testing.TB, c *zenodo.Client) Source {
	op := remote.NewOpener(c)
	t.Cleanup(func() { op.Close() })
	return NewRemoteSource(c, op)
}
