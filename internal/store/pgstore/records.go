package pgstore

import (
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/kilnbuild/kiln/internal/store"
)

// A statement that fails aborts a PostgreSQL transaction, which the
// store.Tx contract cannot show its caller (an ErrExists is an answer, not
// the end of the transaction). So the Create methods look before they
// insert: with one writer (the advisory lock) nothing can come between.

// NextID returns the next value of the named sequence, starting at 1. The
// counter is a row of seqs, so it rolls back with the transaction and never
// repeats a committed value.
func (t *tx) NextID(sequence string) (uint64, error) {
	if err := t.write(); err != nil {
		return 0, err
	}
	if sequence == "" {
		return 0, invalid("empty sequence name")
	}
	var v int64
	err := t.queryRow(`INSERT INTO seqs AS s (name, value) VALUES ($1, 1)
		ON CONFLICT (name) DO UPDATE SET value = s.value + 1 RETURNING value`, sequence).Scan(&v)
	if err != nil {
		return 0, classify("sequence "+sequence, err)
	}
	return uint64(v), nil
}

// Project returns the project called name, or an error wrapping
// store.ErrNotFound.
func (t *tx) Project(name string) (*store.Project, error) {
	if err := t.read(); err != nil {
		return nil, err
	}
	p := new(store.Project)
	found, err := t.getRec("project", p, `SELECT rec FROM projects WHERE name = $1`, name)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, notFound("project", name)
	}
	return p, nil
}

// CreateProject stores p under p.Project.Name; ErrExists when taken.
func (t *tx) CreateProject(p *store.Project) error {
	if err := t.write(); err != nil {
		return err
	}
	name := p.GetProject().GetName()
	if name == "" {
		return invalid("project without a name")
	}
	taken, err := t.exists("project", `SELECT 1 FROM projects WHERE name = $1`, name)
	if err != nil {
		return err
	}
	if taken {
		return existsErr("project", name)
	}
	v, err := encode("project", p)
	if err != nil {
		return err
	}
	_, err = t.exec("create project", `INSERT INTO projects (name, rec) VALUES ($1, $2)`, name, v)
	return err
}

// Projects returns every project, ordered by name.
func (t *tx) Projects() ([]*store.Project, error) {
	if err := t.read(); err != nil {
		return nil, err
	}
	return collect(t, "projects", func() *store.Project { return new(store.Project) }, `SELECT rec FROM projects ORDER BY name`)
}

// BuildServer returns the build server called name. In an Update it is
// answered from memory when this transaction wrote it or the writer's
// cache holds it (serverCache).
func (t *tx) BuildServer(name string) (*store.BuildServer, error) {
	if err := t.read(); err != nil {
		return nil, err
	}
	if b := t.cachedServer(name); b != nil {
		t.sawServer(b)
		return b, nil
	}
	b := new(store.BuildServer)
	found, err := t.getRec("build server", b, `SELECT rec FROM build_servers WHERE name = $1`, name)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, notFound("build server", name)
	}
	t.sawServer(b)
	if t.cache != nil {
		// Not written by this transaction (cachedServer would have
		// answered): the committed record.
		t.cache.put(b)
	}
	return b, nil
}

// sawServer records that build server b exists in this transaction with
// its token hash (no Tx method deletes a build server).
func (t *tx) sawServer(b *store.BuildServer) {
	if t.servers == nil {
		t.servers = make(map[string]string)
	}
	t.servers[b.GetName()] = b.GetTokenHash()
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
	b := new(store.BuildServer)
	found, err := t.getRec("build server", b, `SELECT rec FROM build_servers WHERE token_hash = $1`, hash)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, notFound("build server with token hash", hash)
	}
	return b, nil
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
	taken, err := t.exists("build server", `SELECT 1 FROM build_servers WHERE name = $1`, b.Name)
	if err != nil {
		return err
	}
	if taken {
		return existsErr("build server", b.Name)
	}
	if err := t.tokenFree(b); err != nil {
		return err
	}
	v, err := encode("build server", b)
	if err != nil {
		return err
	}
	if _, err = t.exec("create build server", `INSERT INTO build_servers (name, token_hash, rec) VALUES ($1, $2, $3)`, b.Name, nullable(b.TokenHash), v); err != nil {
		return err
	}
	t.wroteServer(b)
	return nil
}

// tokenFree fails with ErrExists when another server than b has b's token
// hash.
func (t *tx) tokenFree(b *store.BuildServer) error {
	if b.TokenHash == "" {
		return nil
	}
	var owner string
	err := t.queryRow(`SELECT name FROM build_servers WHERE token_hash = $1`, b.TokenHash).Scan(&owner)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return classify("build server token hash", err)
	}
	if owner != b.Name {
		return existsErr("build server token hash used by", owner)
	}
	return nil
}

// PutBuildServer replaces the existing build server b.Name with its token
// hash. It fails with ErrNotFound when there is no such server and
// ErrExists when another server has the new hash. The update checks the
// hash itself, so the common case is one statement; only a refusal looks
// for its reason.
func (t *tx) PutBuildServer(b *store.BuildServer) error {
	if err := t.write(); err != nil {
		return err
	}
	if b.GetName() == "" {
		return invalid("build server without a name")
	}
	v, err := encode("build server", b)
	if err != nil {
		return err
	}
	if hash, ok := t.servers[b.Name]; ok && hash == b.TokenHash {
		// Read (or written) in this transaction with this very hash: it
		// exists and the hash is its own, so the update cannot be refused
		// and need not be waited for (the metaserver's read-modify-write
		// of a server's counters after each build).
		if err := t.later("put build server", `UPDATE build_servers SET rec = $2 WHERE name = $1`, b.Name, v); err != nil {
			return err
		}
		t.wroteServer(b)
		return nil
	}
	tag, err := t.exec("put build server", `UPDATE build_servers SET token_hash = $2, rec = $3 WHERE name = $1
		AND ($2::text IS NULL OR NOT EXISTS (SELECT 1 FROM build_servers o WHERE o.token_hash = $2 AND o.name <> $1))`,
		b.Name, nullable(b.TokenHash), v)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		if err := t.tokenFree(b); err != nil {
			return err
		}
		return notFound("build server", b.Name)
	}
	t.wroteServer(b)
	return nil
}

// BuildServers returns every build server, ordered by name.
func (t *tx) BuildServers() ([]*store.BuildServer, error) {
	if err := t.read(); err != nil {
		return nil, err
	}
	return collect(t, "build servers", func() *store.BuildServer { return new(store.BuildServer) }, `SELECT rec FROM build_servers ORDER BY name`)
}

// Pin returns the pin called name.
func (t *tx) Pin(name string) (*store.Pin, error) {
	if err := t.read(); err != nil {
		return nil, err
	}
	p := new(store.Pin)
	found, err := t.getRec("pin", p, `SELECT rec FROM pins WHERE name = $1`, name)
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
	taken, err := t.exists("pin", `SELECT 1 FROM pins WHERE name = $1`, p.Name)
	if err != nil {
		return err
	}
	if taken {
		return existsErr("pin", p.Name)
	}
	v, err := encode("pin", p)
	if err != nil {
		return err
	}
	_, err = t.exec("create pin", `INSERT INTO pins (name, rec) VALUES ($1, $2)`, p.Name, v)
	return err
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
	found, err := t.getRec("enrollment token", e, `SELECT rec FROM enroll_tokens WHERE token_hash = $1`, hash)
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
	taken, err := t.exists("enrollment token", `SELECT 1 FROM enroll_tokens WHERE token_hash = $1`, e.TokenHash)
	if err != nil {
		return err
	}
	if taken {
		return existsErr("enrollment token", e.TokenHash)
	}
	v, err := encode("enrollment token", e)
	if err != nil {
		return err
	}
	_, err = t.exec("create enrollment token", `INSERT INTO enroll_tokens (token_hash, rec) VALUES ($1, $2)`, e.TokenHash, v)
	return err
}

// PutEnrollToken replaces an existing enrollment token.
func (t *tx) PutEnrollToken(e *store.EnrollToken) error {
	if err := t.write(); err != nil {
		return err
	}
	v, err := encode("enrollment token", e)
	if err != nil {
		return err
	}
	tag, err := t.exec("put enrollment token", `UPDATE enroll_tokens SET rec = $2 WHERE token_hash = $1`, e.GetTokenHash(), v)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return notFound("enrollment token", e.GetTokenHash())
	}
	return nil
}

// Blob returns the inline artifact with this sha256.
func (t *tx) Blob(sha256 string) ([]byte, error) {
	if err := t.read(); err != nil {
		return nil, err
	}
	var v []byte
	err := t.queryRow(`SELECT data FROM blobs WHERE sha256 = $1`, sha256).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, notFound("blob", sha256)
	}
	if err != nil {
		return nil, classify("blob", err)
	}
	if v == nil {
		v = []byte{}
	}
	return v, nil
}

// PutBlob stores data under sha256 (idempotent).
func (t *tx) PutBlob(sha256 string, data []byte) error {
	if err := t.write(); err != nil {
		return err
	}
	if sha256 == "" {
		return invalid("blob without a digest")
	}
	err := t.later("put blob", `INSERT INTO blobs (sha256, data) VALUES ($1, $2)
		ON CONFLICT (sha256) DO UPDATE SET data = EXCLUDED.data`, sha256, nonNil(data))
	return err
}

// DeleteBlob removes the inline artifact with this sha256.
func (t *tx) DeleteBlob(sha256 string) error {
	if err := t.write(); err != nil {
		return err
	}
	tag, err := t.exec("delete blob", `DELETE FROM blobs WHERE sha256 = $1`, sha256)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return notFound("blob", sha256)
	}
	return nil
}

// Log returns the log of attempt of build buildID kept in the store.
func (t *tx) Log(buildID uint64, attempt int) ([]byte, error) {
	if err := t.read(); err != nil {
		return nil, err
	}
	var v []byte
	err := t.queryRow(`SELECT data FROM logs WHERE build_id = $1 AND attempt = $2`, int64(buildID), attempt).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, notFound("log", fmt.Sprintf("%d/%d", buildID, attempt))
	}
	if err != nil {
		return nil, classify("log", err)
	}
	if v == nil {
		v = []byte{}
	}
	return v, nil
}

// PutLog stores the whole log of attempt of build buildID.
func (t *tx) PutLog(buildID uint64, attempt int, data []byte) error {
	if err := t.write(); err != nil {
		return err
	}
	if buildID == 0 || attempt <= 0 || buildID > maxID {
		return invalid("log of build %d attempt %d", buildID, attempt)
	}
	err := t.later("put log", `INSERT INTO logs (build_id, attempt, data) VALUES ($1, $2, $3)
		ON CONFLICT (build_id, attempt) DO UPDATE SET data = EXCLUDED.data`, int64(buildID), attempt, nonNil(data))
	return err
}

// nonNil keeps an empty value from becoming SQL NULL.
func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// maxID is the largest id a bigint column holds.
const maxID = 1<<63 - 1
