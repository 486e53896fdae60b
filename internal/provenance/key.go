package provenance

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// KeyFile is the name of the private key file in a data directory.
const KeyFile = "provenance.key"

// ErrKeyPermissions is returned by LoadOrCreateKey for a key file that
// others than its owner may read or write: the key may have leaked.
var ErrKeyPermissions = errors.New("provenance: key file is accessible to others than its owner")

// LoadOrCreateKey returns the ed25519 key kept in path (its 32-byte seed),
// making one (mode 0600, written to a temporary file, synced, renamed) when
// the file does not exist. A file of another size or with group or other
// permissions is refused: nothing is overwritten.
func LoadOrCreateKey(path string) (ed25519.PrivateKey, error) {
	seed, err := os.ReadFile(path)
	if err == nil {
		fi, err := os.Stat(path)
		if err != nil {
			return nil, err
		}
		if fi.Mode().Perm()&0o077 != 0 {
			return nil, fmt.Errorf("%w: %s has mode %v, want 0600", ErrKeyPermissions, path, fi.Mode().Perm())
		}
		if len(seed) != ed25519.SeedSize {
			return nil, fmt.Errorf("provenance: %s holds %d bytes, not an ed25519 seed of %d", path, len(seed), ed25519.SeedSize)
		}
		return ed25519.NewKeyFromSeed(seed), nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("provenance: reading key: %w", err)
	}
	seed = make([]byte, ed25519.SeedSize)
	if _, err := rand.Read(seed); err != nil {
		return nil, err
	}
	if err := writeSecret(path, seed); err != nil {
		return nil, fmt.Errorf("provenance: saving new key: %w", err)
	}
	return ed25519.NewKeyFromSeed(seed), nil
}

// writeSecret writes data to path with mode 0600, durably, or not at all.
func writeSecret(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".key-*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	// A link, not a rename: a key another process made meanwhile is kept.
	if err := os.Link(f.Name(), path); err != nil {
		return err
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// KeyID is the DSSE key id of pub: the hex sha256 of the raw key.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:])
}
