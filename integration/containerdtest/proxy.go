package containerdtest

// WithProxySnapshotter declares the gRPC snapshotter listening on the unix
// socket address as containerd's proxy snapshotter name (containerd connects
// lazily: it need not listen yet). It exports
// enable_remote_snapshot_annotations = "true", without which containerd 2.x's
// transfer service (`ctr pull`, `ctr image import` without --local) does not
// pass the layers' annotations (containerd.io/snapshot/…) to Prepare; 1.6
// ignores exports, its client-side unpack always passes them. Combine it with
// WithSnapshotter(name) to make it the default. May be repeated; the default
// is no proxy snapshotter.
func WithProxySnapshotter(name, address string) Option {
	return func(o *options) {
		if o.proxies == nil {
			o.proxies = map[string]string{}
		}
		o.proxies[name] = address
	}
}

// proxyConfig is the proxy_plugins table for the proxy snapshotters.
func proxyConfig(proxies map[string]string) map[string]any {
	t := map[string]any{}
	for name, address := range proxies {
		t[name] = map[string]any{
			"type":    "snapshot",
			"address": address,
			"exports": map[string]any{"enable_remote_snapshot_annotations": "true"},
		}
	}
	return t
}
