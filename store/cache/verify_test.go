package cache

import (
	"strings"
	"testing"
	"testing/iotest"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/assert"
)

func TestVerifyDigest(t *testing.T) {
	data := "some chunk"
	tests := []struct {
		name    string
		key     string
		data    string
		wantErr error
	}{
		{"sha256 match", digest.FromString(data).String(), data, nil},
		{"sha512 match", digest.SHA512.FromString(data).String(), data, nil},
		{"sha256 mismatch", digest.FromString(data).String(), data + "!", errdefs.ErrFailedPrecondition},
		{"empty value", digest.FromString("").String(), "", nil},
		{"range key unchecked", digest.FromString(data).String() + "/0-10", "x", nil},
		{"plain key unchecked", "toc", "x", nil},
		{"unknown algorithm unchecked", "md5:" + strings.Repeat("0", 32), "x", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := VerifyDigest(tt.key, strings.NewReader(tt.data))
			if tt.wantErr == nil {
				assert.NoError(t, err)
			} else {
				assert.ErrorIs(t, err, tt.wantErr)
			}
		})
	}
	t.Run("read error", func(t *testing.T) {
		err := VerifyDigest(digest.FromString(data).String(), iotest.ErrReader(errdefs.ErrDataLoss))
		assert.ErrorIs(t, err, errdefs.ErrDataLoss)
	})
}
