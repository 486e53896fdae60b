package translog

import (
	"errors"
	"fmt"
	"sort"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// ErrOtherLog is wrapped by OpenCheckpoint's error for a checkpoint that
// the expected log's key did not sign.
var ErrOtherLog = errors.New("translog: checkpoint not signed by this log's key")

// ErrInconsistent is wrapped by the errors of CheckInclusion and
// CheckConsistency when the proof fails: the log dropped or rewrote an
// entry, or the tiles lie.
var ErrInconsistent = errors.New("translog: proof failed")

// OpenCheckpoint checks that msg is a checkpoint signed by the key
// verifierKey names and returns its tree.
func OpenCheckpoint(msg []byte, verifierKey string) (tlog.Tree, error) {
	v, err := note.NewVerifier(verifierKey)
	if err != nil {
		return tlog.Tree{}, fmt.Errorf("translog: verifier key: %w", err)
	}
	n, err := note.Open(msg, note.VerifierList(v))
	if err != nil {
		var unknown *note.UnknownVerifierError
		if errors.As(err, &unknown) {
			return tlog.Tree{}, fmt.Errorf("%w (signed by %s, expected %s)", ErrOtherLog, signerOf(err), v.Name())
		}
		return tlog.Tree{}, fmt.Errorf("%w: %v", ErrOtherLog, err)
	}
	tree, err := tlog.ParseTree([]byte(n.Text))
	if err != nil {
		return tlog.Tree{}, fmt.Errorf("translog: checkpoint text: %w", err)
	}
	return tree, nil
}

func signerOf(err error) string {
	var unknown *note.UnknownVerifierError
	if errors.As(err, &unknown) {
		return fmt.Sprintf("%s+%08x", unknown.Name, unknown.KeyHash)
	}
	return "another key"
}

// Tiles is a set of tiles by path; it reads as a tlog.TileReader that has
// nothing else, and records what it was asked for.
type Tiles struct {
	Data map[string][]byte
	// Fetch, when set, reads a tile missing from Data (and adds it).
	Fetch func(path string) ([]byte, error)
}

// Height implements tlog.TileReader.
func (t *Tiles) Height() int { return TileHeight }

// ReadTiles implements tlog.TileReader.
func (t *Tiles) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, tile := range tiles {
		p := tile.Path()
		d, ok := t.Data[p]
		if !ok && t.Fetch != nil {
			var err error
			if d, err = t.Fetch(p); err != nil {
				return nil, fmt.Errorf("translog: reading %s: %w", p, err)
			}
			if t.Data == nil {
				t.Data = map[string][]byte{}
			}
			t.Data[p] = d
			ok = true
		}
		if !ok {
			return nil, fmt.Errorf("translog: %s is not in the proof: %w", p, ErrMissingTile)
		}
		out[i] = d
	}
	return out, nil
}

// ErrMissingTile is wrapped when a proof needs a tile nobody gave.
var ErrMissingTile = errors.New("tile missing")

// SaveTiles implements tlog.TileReader (tiles are kept in Data already).
func (t *Tiles) SaveTiles([]tlog.Tile, [][]byte) {}

// Paths returns the paths held, sorted.
func (t *Tiles) Paths() []string {
	out := make([]string, 0, len(t.Data))
	for p := range t.Data {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// CheckInclusion checks that entry is entry n of the log whose tree is
// tree, reading the proof from tiles (authenticated against tree's hash).
func CheckInclusion(tree tlog.Tree, tiles tlog.TileReader, n int64, entry []byte) error {
	if n < 0 || n >= tree.N {
		return fmt.Errorf("%w: entry %d is not in a log of %d entries", ErrInconsistent, n, tree.N)
	}
	hr := tlog.TileHashReader(tree, tiles)
	p, err := tlog.ProveRecord(tree.N, n, hr)
	if err != nil {
		return proofErr(fmt.Sprintf("inclusion of entry %d", n), err)
	}
	if err := tlog.CheckRecord(p, tree.N, tree.Hash, n, tlog.RecordHash(entry)); err != nil {
		return fmt.Errorf("%w: entry %d is not the one the log holds at that index: %v", ErrInconsistent, n, err)
	}
	return nil
}

// CheckConsistency checks that the tree old is a prefix of tree: the log
// only grew since old was seen.
func CheckConsistency(tree tlog.Tree, tiles tlog.TileReader, old tlog.Tree) error {
	if old.N > tree.N {
		return fmt.Errorf("%w: the log has %d entries, fewer than the %d seen before", ErrInconsistent, tree.N, old.N)
	}
	if old.N == tree.N {
		if old.Hash != tree.Hash {
			return fmt.Errorf("%w: the log of %d entries has another root hash than the one seen before", ErrInconsistent, tree.N)
		}
		return nil
	}
	if old.N == 0 {
		return nil
	}
	hr := tlog.TileHashReader(tree, tiles)
	p, err := tlog.ProveTree(tree.N, old.N, hr)
	if err != nil {
		return proofErr(fmt.Sprintf("consistency with the tree of %d entries seen before", old.N), err)
	}
	if err := tlog.CheckTree(p, tree.N, tree.Hash, old.N, old.Hash); err != nil {
		return fmt.Errorf("%w: consistency proof from %d to %d entries fails: the log dropped or rewrote entries", ErrInconsistent, old.N, tree.N)
	}
	return nil
}

// proofErr says whether a proof could not be read (missing tile) or was
// refused (a tile that does not hash to the tree).
func proofErr(what string, err error) error {
	if errors.Is(err, ErrMissingTile) {
		return fmt.Errorf("translog: %s: %w", what, err)
	}
	return fmt.Errorf("%w: %s: %v", ErrInconsistent, what, err)
}

// Prove collects, from r, the tiles a client needs to check entries
// included in tree and tree consistent with a tree of size known (0: none).
func Prove(r Reader, tree tlog.Tree, entries []int64, known int64) (map[string][]byte, error) {
	tiles := &Tiles{Fetch: func(p string) ([]byte, error) { return Tile(r, p) }}
	hr := tlog.TileHashReader(tree, tiles)
	for _, n := range entries {
		if _, err := tlog.ProveRecord(tree.N, n, hr); err != nil {
			return nil, fmt.Errorf("translog: proving entry %d: %w", n, err)
		}
	}
	if known > 0 && known < tree.N {
		if _, err := tlog.ProveTree(tree.N, known, hr); err != nil {
			return nil, fmt.Errorf("translog: proving consistency from %d: %w", known, err)
		}
	}
	return tiles.Data, nil
}
