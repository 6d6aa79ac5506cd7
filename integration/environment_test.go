package integration

import (
	"path/filepath"
	"regexp"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/zenodo-snapshotter/zenodo-snapshotter/integration/containerdtest"
)

// TestEnvironment checks that everything the integration tests need is here
// (in CI, where nothing may be skipped, it fails otherwise), and that every
// containerd accepts a proxy snapshotter declared with WithProxySnapshotter.
func TestEnvironment(t *testing.T) {
	containerdtest.RequiresFUSE(t)
	t.Logf("nerdctl: %s", containerdtest.NerdctlPath(t))
	for _, v := range containerdtest.Versions(t) {
		t.Run(v.Name, func(t *testing.T) {
			t.Parallel()
			sock := filepath.Join(t.TempDir(), "zenodo.sock") // nobody listens: containerd connects lazily
			d := containerdtest.Start(t, containerdtest.WithVersion(v),
				containerdtest.WithProxySnapshotter("zenodo", sock))
			plugins := d.Ctr(t, "plugins", "ls")
			assert.Regexp(t, regexp.MustCompile(`io\.containerd\.snapshotter\.v1\s+zenodo\s`), plugins)
		})
	}
}
