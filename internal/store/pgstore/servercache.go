package pgstore

import (
	"google.golang.org/protobuf/proto"

	"github.com/kilnbuild/kiln/internal/store"
)

// serverCache holds the committed build server records the writer read
// or wrote, so that the read-modify-write of a server's counters after
// each build costs no round trip. It is coherent because the writer is
// the only one to write the store (the advisory lock; tools go through
// it): an entry is the committed record, added when read outside a
// transaction's own writes, replaced by a transaction's writes only once
// it committed. Views do not use it (they read their own snapshot). Its
// size is the farm's number of build servers. Only Update (under db.mu)
// touches it.
type serverCache map[string]*store.BuildServer

func (c serverCache) put(b *store.BuildServer) {
	c[b.GetName()] = proto.Clone(b).(*store.BuildServer)
}

// cachedServer returns a copy of build server name as this transaction
// sees it, from memory, or nil when it must be read.
func (t *tx) cachedServer(name string) *store.BuildServer {
	if b, ok := t.serverWrites[name]; ok {
		return proto.Clone(b).(*store.BuildServer)
	}
	if b, ok := t.cache[name]; ok {
		return proto.Clone(b).(*store.BuildServer)
	}
	return nil
}

// wroteServer records a build server this transaction wrote: seen with
// its hash (sawServer), and for the cache once committed.
func (t *tx) wroteServer(b *store.BuildServer) {
	t.sawServer(b)
	if t.cache == nil {
		return
	}
	if t.serverWrites == nil {
		t.serverWrites = make(map[string]*store.BuildServer)
	}
	t.serverWrites[b.GetName()] = proto.Clone(b).(*store.BuildServer)
}

// committed moves this transaction's build server writes into the cache;
// Update calls it once the commit succeeded.
func (t *tx) committed() {
	for name, b := range t.serverWrites {
		t.cache[name] = b
	}
}
