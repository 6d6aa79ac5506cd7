package testutil

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestPseudoRandom(t *testing.T) {
	a, b := PseudoRandom(1, 1000), PseudoRandom(1, 1000)
	assert.Equal(t, a, b, "the same for the same seed")
	assert.NotEqual(t, a, PseudoRandom(2, 1000))
	assert.Len(t, PseudoRandom(3, 0), 0)
	assert.Equal(t, a[:10], PseudoRandom(1, 10), "a prefix of a longer run")
	assert.Less(t, bytes.Count(a, a[:1]), 20, "not a repeated byte")
}
