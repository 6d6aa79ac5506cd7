package remote

import (
	"container/list"
	"sync"

	"github.com/opencontainers/go-digest"
)

// memCache is a bounded LRU of decompressed members, keyed by the digest of
// their compressed bytes (a digest always names the same bytes). Values are
// never modified once stored.
type memCache struct {
	max int64

	mu    sync.Mutex
	size  int64
	ll    *list.List // front: most recently used
	items map[digest.Digest]*list.Element
}

type memItem struct {
	key  digest.Digest
	data []byte
}

func newMemCache(max int64) *memCache {
	return &memCache{max: max, ll: list.New(), items: map[digest.Digest]*list.Element{}}
}

func (c *memCache) get(key digest.Digest) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[key]
	if !ok {
		return nil, false
	}
	c.ll.MoveToFront(el)
	return el.Value.(*memItem).data, true
}

func (c *memCache) contains(key digest.Digest) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.items[key]
	return ok
}

// add stores data (not copied) unless it is larger than the whole cache.
func (c *memCache) add(key digest.Digest, data []byte) {
	n := int64(len(data))
	if n > c.max {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[key]; ok {
		c.ll.MoveToFront(el)
		return
	}
	c.items[key] = c.ll.PushFront(&memItem{key: key, data: data})
	c.size += n
	for c.size > c.max {
		el := c.ll.Back()
		it := el.Value.(*memItem)
		c.ll.Remove(el)
		delete(c.items, it.key)
		c.size -= int64(len(it.data))
	}
}
