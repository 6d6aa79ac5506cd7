package resolver

import (
	"testing"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/zenodo"
)

// newTestSource is the Source the tests use over the fake Zenodo.
func newTestSource(t testing.TB, c *zenodo.Client) Source {
	return clientSource{c: c}
}
