package pgstore

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"golang.org/x/mod/sumdb/tlog"
	"google.golang.org/protobuf/proto"

	"github.com/kilnbuild/kiln/internal/store"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// CheckError is Check's verdict on a store that is not whole: what is
// wrong, in words an operator can act on. It wraps store.ErrDamaged.
type CheckError struct {
	// Problems are the findings, at most maxProblems of them (the last
	// one then says how many more there were).
	Problems []string
}

func (e *CheckError) Error() string {
	return "pgstore: the store is not consistent: " + strings.Join(e.Problems, "; ")
}

// Unwrap makes errors.Is(err, store.ErrDamaged) hold.
func (e *CheckError) Unwrap() error { return store.ErrDamaged }

// ErrNoStore is returned by Check for a schema that holds no Kiln store
// (missing or empty): nothing to check.
var ErrNoStore = errors.New("pgstore: no Kiln store in this schema")

// maxProblems bounds what a check reports.
const maxProblems = 10

// CheckReport is what a check that found nothing wrong counted.
type CheckReport struct {
	Schema         string
	Version        int64
	Builds         int64
	Requests       int64
	Artifacts      int64
	InlineBlobs    int64
	TlogEntries    int64
	Records        int64 // every record decoded, all tables
	BlobsOutside   int64 // named blobs not kept inline
	BlobsVerified  int64 // of those, found by the blobs callback
	BlobsUnchecked bool  // no blobs callback: the ones outside were not looked for
}

// CheckOptions tune Check.
type CheckOptions struct {
	// Blob, when set, is asked about every blob an artifact or pin names
	// that the store does not keep inline; an error is a finding (the
	// blob store's Stat: cas.ErrNotFound when it is missing).
	Blob func(ctx context.Context, sha string) error
}

// tables are the tables of SchemaVersion (db.go's package doc).
var tables = []string{"kiln_meta", "seqs", "projects", "build_servers", "builds", "build_counts",
	"requests", "artifacts", "pins", "enroll_tokens", "blobs", "logs", "outbox", "kiln_writer",
	"operators", "samples", "request_groups", "tlog_entries", "tlog_hashes"}

// Check verifies the store at url without writing to it, in one read-only
// REPEATABLE READ transaction (a consistent snapshot, so it may run while a
// metaserver writes): the schema version is this build's, every table and
// the counting trigger are there, every record decodes and the columns
// beside it (ids, names, state, project, arch, source key, due times) say
// what the record says, the counts by state match the builds, every
// request's build exists, the sequences are past every id drawn from them,
// the transparency log holds as many entries and hashes as its size says,
// and every blob an artifact or pin names is kept inline or (with
// opts.Blob) found in the blob store.
//
// It returns a *CheckError (wrapping store.ErrDamaged) listing what is
// wrong, a *SchemaVersionError for a schema this build cannot read (newer,
// or another program's tables), ErrNoStore for an empty schema, and other
// errors when the database cannot be read.
func Check(ctx context.Context, url string, opts CheckOptions) (CheckReport, error) {
	var rep CheckReport
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return rep, fmt.Errorf("pgstore: connect: %w", err)
	}
	defer conn.Close(context.Background())
	// Belt and braces: the session itself refuses writes.
	if _, err := conn.Exec(ctx, `SET default_transaction_read_only = on`); err != nil {
		return rep, classify("read-only session", err)
	}
	ptx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return rep, classify("begin check", err)
	}
	defer func() { _ = ptx.Rollback(context.Background()) }()
	var schema *string
	if err := ptx.QueryRow(ctx, `SELECT current_schema()`).Scan(&schema); err != nil {
		return rep, classify("current schema", err)
	}
	if schema == nil {
		return rep, fmt.Errorf("%w: the search_path names no schema that exists", ErrNoStore)
	}
	rep.Schema = *schema
	v, err := storedVersion(ctx, ptx)
	if err != nil {
		return rep, err
	}
	switch {
	case v == 0:
		return rep, fmt.Errorf("%w (schema %s is empty)", ErrNoStore, *schema)
	case v > SchemaVersion:
		return rep, &SchemaVersionError{Found: v, Supported: SchemaVersion}
	case v < SchemaVersion:
		return rep, fmt.Errorf("pgstore: schema %s is at version %d, this build's is %d: `metaserver serve` migrates it when it opens it; check it after that", *schema, v, SchemaVersion)
	}
	rep.Version = v
	c := &checker{ctx: ctx, tx: ptx, t: &tx{q: ptx, ctx: ctx}, rep: &rep, opts: opts}
	if c.tables(); len(c.problems) > 0 {
		return rep, c.verdict()
	}
	for _, step := range []func() error{c.builds, c.requests, c.artifacts, c.others, c.sequences, c.tlog} {
		if err := step(); err != nil {
			return rep, err
		}
	}
	return rep, c.verdict()
}

// checker collects the findings of one Check.
type checker struct {
	ctx      context.Context
	tx       pgx.Tx
	t        *tx
	rep      *CheckReport
	opts     CheckOptions
	problems []string
	more     int
	// named are the blobs artifacts and pins name.
	named map[string]string
}

func (c *checker) addf(format string, args ...any) {
	if len(c.problems) < maxProblems {
		c.problems = append(c.problems, fmt.Sprintf(format, args...))
		return
	}
	c.more++
}

func (c *checker) verdict() error {
	if len(c.problems) == 0 {
		return nil
	}
	p := c.problems
	if c.more > 0 {
		p = append(p, fmt.Sprintf("and %d more", c.more))
	}
	return &CheckError{Problems: p}
}

// tables finds every table and the trigger that keeps build_counts.
func (c *checker) tables() {
	for _, name := range tables {
		var ok bool
		if err := c.tx.QueryRow(c.ctx, `SELECT to_regclass($1) IS NOT NULL`, name).Scan(&ok); err != nil || !ok {
			c.addf("table %s is missing", name)
		}
	}
	if len(c.problems) > 0 {
		return
	}
	var n int
	err := c.tx.QueryRow(c.ctx, `SELECT count(*) FROM pg_trigger WHERE tgrelid = 'builds'::regclass AND tgname = 'builds_count' AND tgenabled <> 'D'`).Scan(&n)
	if err != nil || n != 1 {
		c.addf("the trigger builds_count that keeps build_counts is missing or disabled")
	}
}

// scan runs sql and calls row with each row's columns (the last one a
// record, decoded into a new message from newRec).
func scan[T proto.Message](c *checker, what string, newRec func() T, sql string, row func(cols []any, rec T)) error {
	rows, err := c.tx.Query(c.ctx, sql)
	if err != nil {
		return classify("check "+what, err)
	}
	defer rows.Close()
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			return classify("check "+what, err)
		}
		raw, _ := vals[len(vals)-1].([]byte)
		rec := newRec()
		c.rep.Records++
		if err := proto.Unmarshal(raw, rec); err != nil {
			c.addf("%s %v: the record does not decode: %v", what, vals[0], err)
			continue
		}
		row(vals[:len(vals)-1], rec)
	}
	return classifyNil("check "+what, rows.Err())
}

func (c *checker) builds() error {
	counted := map[int64]int64{}
	err := scan(c, "build", func() *store.Build { return new(store.Build) },
		`SELECT id, state, project, arch, source_key, rec FROM builds ORDER BY id`,
		func(cols []any, b *store.Build) {
			id, state := cols[0].(int64), int64(cols[1].(int32))
			c.rep.Builds++
			counted[state]++
			switch {
			case int64(b.GetBuild().GetId()) != id:
				c.addf("build %d: its record says id %d", id, b.GetBuild().GetId())
			case int64(b.GetBuild().GetState()) != state:
				c.addf("build %d: indexed in state %v, its record says %v", id, kilnv1.BuildState(state), b.GetBuild().GetState())
			case b.GetBuild().GetProject() != cols[2].(string):
				c.addf("build %d: indexed under project %q, its record says %q", id, cols[2], b.GetBuild().GetProject())
			case store.BuildArch(b) != cols[3].(string):
				c.addf("build %d: indexed under arch %q, its record says %q", id, cols[3], store.BuildArch(b))
			case b.GetSourceKey() != cols[4].(string):
				c.addf("build %d: indexed under source key %q, its record says %q", id, cols[4], b.GetSourceKey())
			}
		})
	if err != nil {
		return err
	}
	rows, err := c.tx.Query(c.ctx, `SELECT state, n FROM build_counts WHERE n <> 0`)
	if err != nil {
		return classify("check build counts", err)
	}
	stored := map[int64]int64{}
	for rows.Next() {
		var s int32
		var n int64
		if err := rows.Scan(&s, &n); err != nil {
			rows.Close()
			return classify("check build counts", err)
		}
		stored[int64(s)] = n
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return classify("check build counts", err)
	}
	for s, n := range counted {
		if stored[s] != n {
			c.addf("build_counts says %d builds %v, there are %d", stored[s], kilnv1.BuildState(s), n)
		}
	}
	for s, n := range stored {
		if _, ok := counted[s]; !ok {
			c.addf("build_counts says %d builds %v, there are none", n, kilnv1.BuildState(s))
		}
	}
	return nil
}

func (c *checker) requests() error {
	err := scan(c, "request", func() *store.Request { return new(store.Request) },
		`SELECT id, build_id, rec FROM requests ORDER BY id`,
		func(cols []any, r *store.Request) {
			c.rep.Requests++
			if id := cols[0].(int64); int64(r.GetId()) != id || int64(r.GetBuildId()) != cols[1].(int64) {
				c.addf("request %d: indexed under build %d, its record says request %d of build %d", id, cols[1], r.GetId(), r.GetBuildId())
			}
		})
	if err != nil {
		return err
	}
	rows, err := c.tx.Query(c.ctx, `SELECT r.id, r.build_id FROM requests r LEFT JOIN builds b ON b.id = r.build_id WHERE b.id IS NULL ORDER BY r.id LIMIT `+fmt.Sprint(maxProblems+1))
	if err != nil {
		return classify("check requests' builds", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id, build int64
		if err := rows.Scan(&id, &build); err != nil {
			return classify("check requests' builds", err)
		}
		c.addf("request %d waits on build %d, which does not exist", id, build)
	}
	return classifyNil("check requests' builds", rows.Err())
}

// name records that what names blob sha.
func (c *checker) name(sha, what string) {
	if sha == "" {
		return
	}
	if c.named == nil {
		c.named = map[string]string{}
	}
	if _, ok := c.named[sha]; !ok {
		c.named[sha] = what
	}
}

func (c *checker) artifacts() error {
	err := scan(c, "artifact", func() *store.Artifact { return new(store.Artifact) },
		`SELECT cache_key, source_key, rec FROM artifacts ORDER BY cache_key`,
		func(cols []any, a *store.Artifact) {
			c.rep.Artifacts++
			key := cols[0].(string)
			if a.GetCacheKey() != key || a.GetSourceKey() != cols[1].(string) {
				c.addf("artifact %s: indexed under source key %q, its record says cache key %s, source key %q", key, cols[1], a.GetCacheKey(), a.GetSourceKey())
			}
			c.name(a.GetArtifact().GetSha256(), "artifact "+key)
			for _, k := range a.GetKeptSha256() {
				c.name(k, "artifact "+key+" (kept)")
			}
		})
	if err != nil {
		return err
	}
	err = scan(c, "pin", func() *store.Pin { return new(store.Pin) }, `SELECT name, rec FROM pins ORDER BY name`,
		func(cols []any, p *store.Pin) {
			if p.GetName() != cols[0].(string) {
				c.addf("pin %q: its record says %q", cols[0], p.GetName())
			}
			c.name(p.GetSha256(), "pin "+p.GetName())
		})
	if err != nil {
		return err
	}
	inline := map[string]bool{}
	rows, err := c.tx.Query(c.ctx, `SELECT sha256 FROM blobs`)
	if err != nil {
		return classify("check blobs", err)
	}
	for rows.Next() {
		var sha string
		if err := rows.Scan(&sha); err != nil {
			rows.Close()
			return classify("check blobs", err)
		}
		inline[sha] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return classify("check blobs", err)
	}
	c.rep.InlineBlobs = int64(len(inline))
	for sha, what := range c.named {
		if inline[sha] {
			continue
		}
		c.rep.BlobsOutside++
		if c.opts.Blob == nil {
			c.rep.BlobsUnchecked = true
			continue
		}
		if err := c.opts.Blob(c.ctx, sha); err != nil {
			c.addf("blob %s, named by %s, is not in the blob store: %v", sha, what, err)
			continue
		}
		c.rep.BlobsVerified++
	}
	return nil
}

// others checks the records whose only index is their key.
func (c *checker) others() error {
	steps := []func() error{
		func() error {
			return scan(c, "project", func() *store.Project { return new(store.Project) }, `SELECT name, rec FROM projects`,
				func(cols []any, p *store.Project) {
					if p.GetProject().GetName() != cols[0].(string) {
						c.addf("project %q: its record says %q", cols[0], p.GetProject().GetName())
					}
				})
		},
		func() error {
			return scan(c, "build server", func() *store.BuildServer { return new(store.BuildServer) }, `SELECT name, coalesce(token_hash, ''), rec FROM build_servers`,
				func(cols []any, b *store.BuildServer) {
					if b.GetName() != cols[0].(string) || b.GetTokenHash() != cols[1].(string) {
						c.addf("build server %q: indexed with token hash %q, its record says %q with %q", cols[0], cols[1], b.GetName(), b.GetTokenHash())
					}
				})
		},
		func() error {
			return scan(c, "enrollment token", func() *store.EnrollToken { return new(store.EnrollToken) }, `SELECT token_hash, rec FROM enroll_tokens`,
				func(cols []any, e *store.EnrollToken) {
					if e.GetTokenHash() != cols[0].(string) {
						c.addf("enrollment token %q: its record says %q", cols[0], e.GetTokenHash())
					}
				})
		},
		func() error {
			return scan(c, "operator", func() *store.Operator { return new(store.Operator) }, `SELECT name, rec FROM operators`,
				func(cols []any, o *store.Operator) {
					if o.GetName() != cols[0].(string) {
						c.addf("operator %q: its record says %q", cols[0], o.GetName())
					}
				})
		},
		func() error {
			return scan(c, "request group", func() *store.RequestGroup { return new(store.RequestGroup) }, `SELECT id, rec FROM request_groups`,
				func(cols []any, g *store.RequestGroup) {
					if g.GetId() != cols[0].(string) {
						c.addf("request group %q: its record says %q", cols[0], g.GetId())
					}
				})
		},
		func() error {
			return scan(c, "outbox message", func() *store.Outbox { return new(store.Outbox) }, `SELECT id, due_s, due_n, rec FROM outbox`,
				func(cols []any, m *store.Outbox) {
					due := m.GetNextAttemptAt()
					if int64(m.GetId()) != cols[0].(int64) || due.GetSeconds() != cols[1].(int64) || due.GetNanos() != cols[2].(int32) {
						c.addf("outbox message %d: indexed due at %d.%09d, its record says message %d due at %d.%09d", cols[0], cols[1], cols[2], m.GetId(), due.GetSeconds(), due.GetNanos())
					}
				})
		},
		func() error {
			return scan(c, "sample", func() *store.Sample { return new(store.Sample) }, `SELECT at_s, at_n, rec FROM samples`,
				func(cols []any, s *store.Sample) {
					if s.GetAt().GetSeconds() != cols[0].(int64) || s.GetAt().GetNanos() != cols[1].(int32) {
						c.addf("sample at %d.%09d: its record says %d.%09d", cols[0], cols[1], s.GetAt().GetSeconds(), s.GetAt().GetNanos())
					}
				})
		},
	}
	for _, s := range steps {
		if err := s(); err != nil {
			return err
		}
	}
	return nil
}

// sequences checks that NextID cannot hand out an id already used: the
// "request" and "outbox" sequences are at or past the largest id.
func (c *checker) sequences() error {
	for _, s := range []struct{ seq, table string }{{"request", "requests"}, {"outbox", "outbox"}} {
		var seq, top int64
		err := c.tx.QueryRow(c.ctx, `SELECT coalesce((SELECT value FROM seqs WHERE name = $1), 0), coalesce((SELECT max(id) FROM `+s.table+`), 0)`, s.seq).Scan(&seq, &top)
		if err != nil {
			return classify("check sequence "+s.seq, err)
		}
		if seq < top {
			c.addf("sequence %q is at %d but %s holds id %d: the next ids would collide", s.seq, seq, s.table, top)
		}
	}
	return nil
}

// tlog checks the transparency log's entries and stored hashes against its
// size, and each entry's leaf hash against the one stored for it.
func (c *checker) tlog() error {
	size, err := c.t.TlogSize()
	if err != nil {
		return err
	}
	c.rep.TlogEntries = size
	var entries, lastEntry, hashes, lastHash int64
	err = c.tx.QueryRow(c.ctx, `SELECT (SELECT count(*) FROM tlog_entries), coalesce((SELECT max(n) FROM tlog_entries), -1),
		(SELECT count(*) FROM tlog_hashes), coalesce((SELECT max(i) FROM tlog_hashes), -1)`).Scan(&entries, &lastEntry, &hashes, &lastHash)
	if err != nil {
		return classify("check tlog", err)
	}
	if entries != size || lastEntry != size-1 {
		c.addf("the transparency log's size is %d but it holds %d entries, the last numbered %d", size, entries, lastEntry)
	}
	if want := tlog.StoredHashCount(size); hashes != want || lastHash != want-1 {
		c.addf("the transparency log of %d entries holds %d stored hashes (last %d), want %d", size, hashes, lastHash, want)
	}
	rows, err := c.tx.Query(c.ctx, `SELECT n, entry FROM tlog_entries ORDER BY n`)
	if err != nil {
		return classify("check tlog entries", err)
	}
	defer rows.Close()
	leaves := map[int64]tlog.Hash{}
	for rows.Next() {
		var n int64
		var entry []byte
		if err := rows.Scan(&n, &entry); err != nil {
			return classify("check tlog entries", err)
		}
		leaves[tlog.StoredHashIndex(0, n)] = tlog.RecordHash(entry)
	}
	if err := rows.Err(); err != nil {
		return classify("check tlog entries", err)
	}
	rows.Close()
	idx := make([]int64, 0, len(leaves))
	for i := range leaves {
		idx = append(idx, i)
	}
	stored := map[int64]tlog.Hash{}
	if err := c.t.readTlogHashes(idx, stored); err != nil {
		return err
	}
	for i, h := range leaves {
		if s, ok := stored[i]; !ok || s != h {
			c.addf("the transparency log's stored hash %d is not the hash of its entry", i)
		}
	}
	return nil
}
