package testutil

import (
	"strconv"
	"strings"
)

// PromText is a Prometheus text exposition, as a /metrics endpoint serves it.
type PromText string

// Sum adds the values of the samples of metric name whose labels contain
// the substring labels ("" matches every sample of the metric).
func (p PromText) Sum(name, labels string) float64 {
	var total float64
	for _, line := range strings.Split(string(p), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		series, value := line[:i], line[i+1:]
		metric, lbls, _ := strings.Cut(series, "{")
		if metric != name || !strings.Contains(lbls, labels) {
			continue
		}
		if v, err := strconv.ParseFloat(value, 64); err == nil {
			total += v
		}
	}
	return total
}
