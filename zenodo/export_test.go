package zenodo

// Test-only exports for the external tests (fake_test.go).

// FakeClock is fakeClock for the external tests.
type FakeClock = fakeClock

// NewFakeClock returns a clock whose Sleep returns at once and moves it on.
func NewFakeClock() *FakeClock { return newFakeClock() }

// WithFakeClock makes the client use c.
func WithFakeClock(c *FakeClock) Option { return withClock(c) }
