package bolt

import (
	"fmt"

	"github.com/kilnbuild/kiln/internal/store"
)

// NextID returns the next value of the named sequence, starting at 1. Each
// sequence is the NextSequence counter of its own bucket under seq/, so it
// rolls back with the transaction and never repeats a committed value.
func (t *tx) NextID(sequence string) (uint64, error) {
	if err := t.write(); err != nil {
		return 0, err
	}
	if sequence == "" {
		return 0, invalid("empty sequence name")
	}
	b, err := t.bucket(bucketSeq).CreateBucketIfNotExists([]byte(sequence))
	if err != nil {
		return 0, fmt.Errorf("bolt: sequence %q: %w", sequence, err)
	}
	id, err := b.NextSequence()
	if err != nil {
		return 0, fmt.Errorf("bolt: sequence %q: %w", sequence, err)
	}
	return id, nil
}

// Project returns the project called name, or an error wrapping
// store.ErrNotFound.
func (t *tx) Project(name string) (*store.Project, error) {
	if err := t.read(); err != nil {
		return nil, err
	}
	p := new(store.Project)
	found, err := t.get(bucketProjects, []byte(name), p)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, notFound("project", name)
	}
	return p, nil
}

// CreateProject stores p under p.Project.Name.
func (t *tx) CreateProject(p *store.Project) error {
	if err := t.write(); err != nil {
		return err
	}
	name := p.GetProject().GetName()
	if name == "" {
		return invalid("project without a name")
	}
	if t.bucket(bucketProjects).Get([]byte(name)) != nil {
		return exists("project", name)
	}
	return t.put(bucketProjects, []byte(name), p)
}

// Projects returns every project, ordered by name.
func (t *tx) Projects() ([]*store.Project, error) {
	if err := t.read(); err != nil {
		return nil, err
	}
	var out []*store.Project
	err := t.bucket(bucketProjects).ForEach(func(k, v []byte) error {
		p := new(store.Project)
		if err := decode(bucketProjects, k, v, p); err != nil {
			return err
		}
		out = append(out, p)
		return nil
	})
	return out, err
}

// BuildServer returns the build server called name.
func (t *tx) BuildServer(name string) (*store.BuildServer, error) {
	if err := t.read(); err != nil {
		return nil, err
	}
	b := new(store.BuildServer)
	found, err := t.get(bucketBuildServers, []byte(name), b)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, notFound("build server", name)
	}
	return b, nil
}

// BuildServerByTokenHash finds a build server by its token hash. An empty
// hash never matches.
func (t *tx) BuildServerByTokenHash(hash string) (*store.BuildServer, error) {
	if err := t.read(); err != nil {
		return nil, err
	}
	if hash == "" {
		return nil, notFound("build server with token hash", `""`)
	}
	name := t.bucket(bucketBuildServersByToken).Get([]byte(hash))
	if name == nil {
		return nil, notFound("build server with token hash", hash)
	}
	return t.BuildServer(string(name))
}

// CreateBuildServer stores b under b.Name. It fails with ErrExists when the
// name is taken or another server has the same token hash.
func (t *tx) CreateBuildServer(b *store.BuildServer) error {
	if err := t.write(); err != nil {
		return err
	}
	if b.GetName() == "" {
		return invalid("build server without a name")
	}
	if t.bucket(bucketBuildServers).Get([]byte(b.Name)) != nil {
		return exists("build server", b.Name)
	}
	return t.putBuildServer(b, "")
}

// PutBuildServer replaces the existing build server b.Name, moving its token
// hash index entry if the hash changed. It fails with ErrNotFound when there
// is no such server and ErrExists when another server has the new hash.
func (t *tx) PutBuildServer(b *store.BuildServer) error {
	if err := t.write(); err != nil {
		return err
	}
	if b.GetName() == "" {
		return invalid("build server without a name")
	}
	// The common case (counters, last seen) keeps the token: when the index
	// already names this server for b's hash, that hash is the previous
	// one (a server has at most one index entry), so the previous record
	// need not be decoded.
	if b.TokenHash != "" && string(t.bucket(bucketBuildServersByToken).Get([]byte(b.TokenHash))) == b.Name &&
		t.bucket(bucketBuildServers).Get([]byte(b.Name)) != nil {
		return t.put(bucketBuildServers, []byte(b.Name), b)
	}
	prev := new(store.BuildServer)
	found, err := t.get(bucketBuildServers, []byte(b.Name), prev)
	if err != nil {
		return err
	}
	if !found {
		return notFound("build server", b.Name)
	}
	return t.putBuildServer(b, prev.TokenHash)
}

// putBuildServer writes b and its token index entry, replacing prevHash's.
func (t *tx) putBuildServer(b *store.BuildServer, prevHash string) error {
	if b.TokenHash != prevHash {
		if b.TokenHash != "" {
			owner := t.bucket(bucketBuildServersByToken).Get([]byte(b.TokenHash))
			if owner != nil && string(owner) != b.Name {
				return exists("build server token hash used by", string(owner))
			}
		}
		if prevHash != "" {
			if err := t.del(bucketBuildServersByToken, []byte(prevHash)); err != nil {
				return err
			}
		}
	}
	if b.TokenHash != "" {
		if err := t.bucket(bucketBuildServersByToken).Put([]byte(b.TokenHash), []byte(b.Name)); err != nil {
			return fmt.Errorf("bolt: index token hash: %w", err)
		}
	}
	return t.put(bucketBuildServers, []byte(b.Name), b)
}

// BuildServers returns every build server, ordered by name.
func (t *tx) BuildServers() ([]*store.BuildServer, error) {
	if err := t.read(); err != nil {
		return nil, err
	}
	var out []*store.BuildServer
	err := t.bucket(bucketBuildServers).ForEach(func(k, v []byte) error {
		b := new(store.BuildServer)
		if err := decode(bucketBuildServers, k, v, b); err != nil {
			return err
		}
		out = append(out, b)
		return nil
	})
	return out, err
}

// Pin returns the pin called name.
func (t *tx) Pin(name string) (*store.Pin, error) {
	if err := t.read(); err != nil {
		return nil, err
	}
	p := new(store.Pin)
	found, err := t.get(bucketPins, []byte(name), p)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, notFound("pin", name)
	}
	return p, nil
}

// CreatePin stores p under p.Name; a pin is never replaced.
func (t *tx) CreatePin(p *store.Pin) error {
	if err := t.write(); err != nil {
		return err
	}
	if p.GetName() == "" {
		return invalid("pin without a name")
	}
	if t.bucket(bucketPins).Get([]byte(p.Name)) != nil {
		return exists("pin", p.Name)
	}
	return t.put(bucketPins, []byte(p.Name), p)
}

// Pins calls fn for every pin in name order.
func (t *tx) Pins(fn func(*store.Pin) error) error {
	if err := t.read(); err != nil {
		return err
	}
	return t.each(bucketPins, nil, func(k, v []byte) error {
		p := new(store.Pin)
		if err := decode(bucketPins, k, v, p); err != nil {
			return err
		}
		return fn(p)
	})
}

// EnrollToken returns the enrollment token whose secret hashes to hash.
func (t *tx) EnrollToken(hash string) (*store.EnrollToken, error) {
	if err := t.read(); err != nil {
		return nil, err
	}
	if hash == "" {
		return nil, notFound("enrollment token", hash)
	}
	e := new(store.EnrollToken)
	found, err := t.get(bucketEnrollTokens, []byte(hash), e)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, notFound("enrollment token", hash)
	}
	return e, nil
}

// CreateEnrollToken stores e under its hash; ErrExists when taken.
func (t *tx) CreateEnrollToken(e *store.EnrollToken) error {
	if err := t.write(); err != nil {
		return err
	}
	if e.GetTokenHash() == "" {
		return invalid("enrollment token without a hash")
	}
	if t.bucket(bucketEnrollTokens).Get([]byte(e.TokenHash)) != nil {
		return exists("enrollment token", e.TokenHash)
	}
	return t.put(bucketEnrollTokens, []byte(e.TokenHash), e)
}

// PutEnrollToken replaces an existing enrollment token.
func (t *tx) PutEnrollToken(e *store.EnrollToken) error {
	if err := t.write(); err != nil {
		return err
	}
	if t.bucket(bucketEnrollTokens).Get([]byte(e.GetTokenHash())) == nil {
		return notFound("enrollment token", e.GetTokenHash())
	}
	return t.put(bucketEnrollTokens, []byte(e.TokenHash), e)
}

// Blob returns the inline artifact with this sha256.
func (t *tx) Blob(sha256 string) ([]byte, error) {
	if err := t.read(); err != nil {
		return nil, err
	}
	v := t.bucket(bucketBlobs).Get([]byte(sha256))
	if v == nil {
		return nil, notFound("blob", sha256)
	}
	return append([]byte(nil), v...), nil // bbolt's memory is valid only in the tx
}

// PutBlob stores data under sha256.
func (t *tx) PutBlob(sha256 string, data []byte) error {
	if err := t.write(); err != nil {
		return err
	}
	if sha256 == "" {
		return invalid("blob without a digest")
	}
	return t.bucket(bucketBlobs).Put([]byte(sha256), data)
}

// Log returns the log of attempt of build buildID kept in the store.
func (t *tx) Log(buildID uint64, attempt int) ([]byte, error) {
	if err := t.read(); err != nil {
		return nil, err
	}
	v := t.bucket(bucketLogs).Get(idIDKey(buildID, uint64(attempt)))
	if v == nil {
		return nil, notFound("log", fmt.Sprintf("%d/%d", buildID, attempt))
	}
	return append([]byte(nil), v...), nil // bbolt's memory is valid only in the tx
}

// PutLog stores the whole log of attempt of build buildID.
func (t *tx) PutLog(buildID uint64, attempt int, data []byte) error {
	if err := t.write(); err != nil {
		return err
	}
	if buildID == 0 || attempt <= 0 {
		return invalid("log of build %d attempt %d", buildID, attempt)
	}
	return t.bucket(bucketLogs).Put(idIDKey(buildID, uint64(attempt)), append([]byte{}, data...))
}

// DeleteBlob removes the inline artifact with this sha256.
func (t *tx) DeleteBlob(sha256 string) error {
	if err := t.write(); err != nil {
		return err
	}
	b := t.bucket(bucketBlobs)
	if b.Get([]byte(sha256)) == nil {
		return notFound("blob", sha256)
	}
	return b.Delete([]byte(sha256))
}
