package integration

import (
	"os"
	"testing"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/integration/containerdtest"
)

// TestMain lists the tests that could not run here (no root, no FUSE, tools
// not built) and, with CI=true, fails the run if there are any. It is the
// package's only TestMain: add tests, not another TestMain.
func TestMain(m *testing.M) { os.Exit(containerdtest.Run(m)) }
