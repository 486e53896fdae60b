// Package translog is Kiln's transparency log: an append-only Merkle tree
// of provenance entries (RFC 6962 hashing through golang.org/x/mod/sumdb/tlog)
// kept in the metaserver's store, its signed checkpoints
// (golang.org/x/mod/sumdb/note) and tiles, and the checks a requester runs
// against them.
//
// # Durability and forks
//
// Append computes the new entry's stored hashes and writes entry, hashes
// and size in the caller's store transaction, the same one that records
// the result the entry belongs to: the entry is acknowledged exactly when
// the result is, and a crash before the commit leaves neither. The tree is
// a function of the entries, and a checkpoint is computed from the stored
// hashes when asked for (nothing else is stored), so there is no state that
// a crash could leave behind ahead of or apart from the entries: the log
// cannot fork. AppendTlog refuses an index other than the size.
//
// # Checkpoints
//
// A checkpoint is a note whose text is tlog.FormatTree (size and root
// hash), signed by the metaserver's ed25519 key under the log's name; a
// client pins the verifier key the first time and refuses a checkpoint
// that another key signed (another log).
package translog

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// TileHeight is the height of the tiles served (as in Go's checksum database).
const TileHeight = 8

// Reader reads the log in a store transaction (store.Tx implements it).
type Reader interface {
	TlogSize() (int64, error)
	TlogEntry(n int64) ([]byte, error)
	TlogHashes(indexes []int64) ([]tlog.Hash, error)
}

// Appender also appends (a writable store.Tx).
type Appender interface {
	Reader
	AppendTlog(n int64, entry []byte, hashes []tlog.Hash) error
}

// ErrBadEntry is returned by Append for an empty entry or one holding a
// newline (data tiles separate entries by newlines).
var ErrBadEntry = errors.New("translog: an entry must be non-empty and hold no newline")

// Append adds entry at the end of the log in tx and returns its index.
// Nothing is durable before tx commits.
func Append(tx Appender, entry []byte) (int64, error) {
	if len(entry) == 0 || bytes.IndexByte(entry, '\n') >= 0 {
		return 0, ErrBadEntry
	}
	n, err := tx.TlogSize()
	if err != nil {
		return 0, err
	}
	hashes, err := tlog.StoredHashes(n, entry, hashReader{tx})
	if err != nil {
		return 0, fmt.Errorf("translog: hashing entry %d: %w", n, err)
	}
	if err := tx.AppendTlog(n, entry, hashes); err != nil {
		return 0, err
	}
	return n, nil
}

// hashReader reads stored hashes from a transaction.
type hashReader struct{ r Reader }

func (h hashReader) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	return h.r.TlogHashes(indexes)
}

// Tree returns the log's current size and root hash.
func Tree(r Reader) (tlog.Tree, error) {
	n, err := r.TlogSize()
	if err != nil {
		return tlog.Tree{}, err
	}
	h, err := tlog.TreeHash(n, hashReader{r})
	if err != nil {
		return tlog.Tree{}, fmt.Errorf("translog: tree hash of %d entries: %w", n, err)
	}
	return tlog.Tree{N: n, Hash: h}, nil
}

// Notary is the metaserver's signing identity: an ed25519 key under the
// log's name. It signs checkpoints (as a note signer) and verification
// summaries (provenance.Seal with Key).
type Notary struct {
	// Key is the private key.
	Key ed25519.PrivateKey
	// Name is the log's name, the signer name of its checkpoints.
	Name string
	// VerifierKey is the note verifier key clients pin ("name+hash+base64").
	VerifierKey string
	signer      note.Signer
}

// NewNotary makes the notary of key under name (no '+', no spaces).
func NewNotary(name string, key ed25519.PrivateKey) (*Notary, error) {
	vkey, err := note.NewEd25519VerifierKey(name, key.Public().(ed25519.PublicKey))
	if err != nil {
		return nil, fmt.Errorf("translog: log name %q: %w", name, err)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return nil, err
	}
	// The note package reads a private key only in its text form.
	skey := fmt.Sprintf("PRIVATE+KEY+%s+%08x+%s", name, v.KeyHash(),
		base64.StdEncoding.EncodeToString(append([]byte{1}, key.Seed()...)))
	s, err := note.NewSigner(skey)
	if err != nil {
		return nil, err
	}
	return &Notary{Key: key, Name: name, VerifierKey: vkey, signer: s}, nil
}

// Checkpoint returns the signed checkpoint of the log's current tree.
func (n *Notary) Checkpoint(r Reader) ([]byte, tlog.Tree, error) {
	tree, err := Tree(r)
	if err != nil {
		return nil, tlog.Tree{}, err
	}
	msg, err := note.Sign(&note.Note{Text: string(tlog.FormatTree(tree))}, n.signer)
	if err != nil {
		return nil, tlog.Tree{}, err
	}
	return msg, tree, nil
}

// ErrNoTile is returned by Tile for a tile the log does not (yet) hold.
var ErrNoTile = errors.New("translog: no such tile in the log")

// Tile returns the tile at path (tlog.Tile.Path form, without any prefix).
// A data tile holds its entries, each followed by a newline.
func Tile(r Reader, path string) ([]byte, error) {
	t, err := tlog.ParseTilePath(path)
	if err != nil {
		return nil, err
	}
	if t.H != TileHeight {
		return nil, fmt.Errorf("translog: tile height %d, this log serves %d", t.H, TileHeight)
	}
	size, err := r.TlogSize()
	if err != nil {
		return nil, err
	}
	if t.L == -1 {
		first := t.N << uint(t.H)
		if first+int64(t.W) > size {
			return nil, ErrNoTile
		}
		var buf bytes.Buffer
		for i := first; i < first+int64(t.W); i++ {
			e, err := r.TlogEntry(i)
			if err != nil {
				return nil, err
			}
			buf.Write(e)
			buf.WriteByte('\n')
		}
		return buf.Bytes(), nil
	}
	// The tile's last hash is at level L*H, index N*2^H+W-1: it exists when
	// the leaves under it all do.
	last := (t.N<<uint(t.H) + int64(t.W)) << uint(t.L*t.H)
	if last > size {
		return nil, ErrNoTile
	}
	return tlog.ReadTileData(t, hashReader{r})
}
