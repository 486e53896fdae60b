package pgstore

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5"
)

// A backup of a PostgreSQL store is what a PostgreSQL operator already
// knows: a pg_dump archive in its custom format of the store's one schema
// (Debian's postgresql-client). pg_dump reads every table in one
// REPEATABLE READ snapshot, so the archive holds exactly the transactions
// committed when it started (every build acknowledged by then) and none
// half; it blocks no writer. Restore is pg_restore into an empty schema,
// in one transaction, then Check. Both run the client programs found on
// PATH; the operator may as well run them by hand (docs/deploy.md).

// ErrRestoreRefused is wrapped by Restore's error for what it will not
// restore, or not there: a file that is not a Kiln backup's archive, an
// archive of another schema, a target that holds tables. Nothing was
// changed.
var ErrRestoreRefused = errors.New("restore refused")

// BackupReport describes an archive Backup wrote.
type BackupReport struct {
	Schema string
	Bytes  int64
	// Tables is how many of the store's tables the archive holds data of.
	Tables int
}

// schemaName accepts the schema names a pg_dump pattern can carry
// without quoting rules of its own.
var schemaName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_$]*$`)

// Backup writes a pg_dump archive of the store at url to path, which must
// not exist: first to a temporary file beside it, then, once pg_restore
// lists every table of the store in it and it is fsynced, under path. It
// refuses, writing nothing, a schema this build cannot read
// (*SchemaVersionError) or an empty one (ErrNoStore).
func Backup(ctx context.Context, url, path string) (BackupReport, error) {
	var rep BackupReport
	if _, err := os.Lstat(path); err == nil {
		return rep, fmt.Errorf("pgstore: backup: %s: %w", path, fs.ErrExist)
	}
	schema, err := storeSchema(ctx, url)
	if err != nil {
		return rep, err
	}
	rep.Schema = schema
	libpq, env, err := libpqURL(url)
	if err != nil {
		return rep, err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return rep, fmt.Errorf("pgstore: backup: %w", err)
	}
	tmp.Close()
	defer os.Remove(tmp.Name())
	if _, err := run(ctx, env, "pg_dump", "--format=custom", "--no-owner", "--no-privileges", "--lock-wait-timeout=60s",
		"--schema="+quoteIdent(schema), "--file="+tmp.Name(), "--dbname="+libpq); err != nil {
		return rep, fmt.Errorf("pgstore: backup: %w", err)
	}
	toc, err := readTOC(ctx, tmp.Name())
	if err != nil {
		return rep, fmt.Errorf("pgstore: backup: the archive does not read back: %w", err)
	}
	if toc.schema != schema || len(toc.data) < len(tables) {
		return rep, fmt.Errorf("pgstore: backup: the archive holds data of %d tables of schema %q, want the %d of %q", len(toc.data), toc.schema, len(tables), schema)
	}
	rep.Tables = len(toc.data)
	f, err := os.OpenFile(tmp.Name(), os.O_RDWR, 0)
	if err != nil {
		return rep, fmt.Errorf("pgstore: backup: %w", err)
	}
	err = f.Sync()
	fi, serr := f.Stat()
	f.Close()
	if err = errors.Join(err, serr); err != nil {
		return rep, fmt.Errorf("pgstore: backup: %w", err)
	}
	rep.Bytes = fi.Size()
	if err := os.Link(tmp.Name(), path); err != nil {
		return rep, fmt.Errorf("pgstore: backup: %w", err)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		err = d.Sync()
		d.Close()
		if err != nil {
			return rep, fmt.Errorf("pgstore: backup: sync %s: %w", filepath.Dir(path), err)
		}
	}
	return rep, nil
}

// Restore loads the archive at path (a Backup's) into the store at url,
// whose schema must be the archive's and empty or missing, in one
// transaction (all or nothing), holding the writer lock meanwhile so that
// no metaserver opens the half-restored store; then it checks the result
// (Check). It refuses, changing nothing, a target that holds tables, an
// archive of another schema or one that is not a Kiln store's.
func Restore(ctx context.Context, url, path string) (CheckReport, error) {
	toc, err := readTOC(ctx, path)
	if err != nil {
		return CheckReport{}, fmt.Errorf("pgstore: %w: %s is not a pg_dump archive: %w", ErrRestoreRefused, path, err)
	}
	if !toc.data["kiln_meta"] || !toc.data["builds"] {
		return CheckReport{}, fmt.Errorf("pgstore: %w: %s is not the backup of a Kiln store (no kiln_meta or builds table data in it)", ErrRestoreRefused, path)
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return CheckReport{}, fmt.Errorf("pgstore: connect: %w", err)
	}
	defer conn.Close(context.Background())
	target, exists, err := targetSchema(ctx, conn)
	if err != nil {
		return CheckReport{}, err
	}
	if target != toc.schema {
		return CheckReport{}, fmt.Errorf("pgstore: %w: the archive holds schema %q, the URL names %q: restore it under its own name (?search_path=%s), in another database if that one is taken", ErrRestoreRefused, toc.schema, target, toc.schema)
	}
	var got bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock(hashtextextended('kiln-store-writer:' || $1, 0))`, target).Scan(&got); err != nil {
		return CheckReport{}, fmt.Errorf("pgstore: writer lock: %w", err)
	}
	if !got {
		return CheckReport{}, fmt.Errorf("%w: a metaserver has the target store open", ErrLocked)
	}
	if exists {
		var n int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_class WHERE relnamespace = $1::regnamespace AND relkind IN ('r', 'p', 'v', 'S')`, quoteIdent(target)).Scan(&n); err != nil {
			return CheckReport{}, classify("restore target", err)
		}
		if n > 0 {
			return CheckReport{}, fmt.Errorf("pgstore: %w: schema %q already holds %d tables: a restore goes into an empty schema, never over a store", ErrRestoreRefused, target, n)
		}
	}
	libpq, env, err := libpqURL(url)
	if err != nil {
		return CheckReport{}, err
	}
	if err := checkDefinitions(ctx, conn, libpq, env, path, toc); err != nil {
		return CheckReport{}, err
	}
	args := []string{"--single-transaction", "--exit-on-error", "--no-owner", "--no-privileges", "--dbname=" + libpq}
	if exists && toc.schemaLine != "" {
		// The schema is there (empty): restore everything but its creation.
		list, err := os.CreateTemp("", "kiln-restore-*.list")
		if err != nil {
			return CheckReport{}, fmt.Errorf("pgstore: restore: %w", err)
		}
		defer os.Remove(list.Name())
		_, err = list.WriteString(strings.Replace(toc.list, toc.schemaLine, ";"+toc.schemaLine, 1))
		if cerr := list.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return CheckReport{}, fmt.Errorf("pgstore: restore: %w", err)
		}
		args = append(args, "--use-list="+list.Name())
	}
	if _, err := run(ctx, env, "pg_restore", append(args, path)...); err != nil {
		return CheckReport{}, fmt.Errorf("pgstore: restore (nothing was restored): %w", err)
	}
	return Check(ctx, url, CheckOptions{})
}

// checkDefinitions refuses an archive that would do more than create the
// tables, indexes, constraints, function and trigger of a Kiln schema (as
// one of this build's migrations leaves it) and fill its tables: pg_restore
// runs what the archive holds as the restoring role, and a function planted
// in a backed-up schema, called by a CHECK constraint, would run for every
// row copied, able to change any other store in the database. The
// archive's definitions (pg_restore --schema-only) must equal, schema
// names aside, pg_dump's of a scratch schema that the migrations create
// (dropped afterwards); its data entries must each be table data of its
// own schema.
func checkDefinitions(ctx context.Context, conn *pgx.Conn, libpq string, env []string, path string, t toc) error {
	if len(t.other) > 0 {
		return fmt.Errorf("pgstore: %w: %s holds an entry that is no Kiln table's data: %q", ErrRestoreRefused, path, t.other[0])
	}
	out, err := run(ctx, env, "pg_restore", "--schema-only", "--no-owner", "--no-privileges", "--file=-", path)
	if err != nil {
		return fmt.Errorf("pgstore: %w: %s: %w", ErrRestoreRefused, path, err)
	}
	got := definitions(string(out), t.schema)
	var refVersion string
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return err
	}
	scratch := "kiln_restore_ref_" + hex.EncodeToString(b[:])
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+scratch); err != nil {
		return classify("restore: scratch schema", err)
	}
	defer func() { _, _ = conn.Exec(context.WithoutCancel(ctx), "DROP SCHEMA "+scratch+" CASCADE") }()
	for v, m := range migrations {
		if _, err := conn.Exec(ctx, "SET search_path = "+scratch+"; "+m+"; RESET search_path"); err != nil {
			return fmt.Errorf("pgstore: restore: scratch schema at version %d: %w", v+1, err)
		}
		ref, err := run(ctx, env, "pg_dump", "--schema-only", "--no-owner", "--no-privileges", "--schema="+scratch, "--dbname="+libpq)
		if err != nil {
			return fmt.Errorf("pgstore: restore: %w", err)
		}
		if definitions(string(ref), scratch) == got {
			return checkData(ctx, env, path, t.schema, string(out))
		}
		refVersion = dumpedBy(string(ref))
	}
	hint := ""
	if v := dumpedBy(string(out)); v != refVersion {
		hint = fmt.Sprintf(" (the archive was written by pg_dump %s, this machine's is %s: restore it with that version's client programs)", v, refVersion)
	}
	return fmt.Errorf("pgstore: %w: the definitions in %s (tables, functions, triggers, constraints) are not those of any Kiln schema version up to %d: it may run code of its own%s", ErrRestoreRefused, path, SchemaVersion, hint)
}

// dumpedBy returns the pg_dump version a script names in its header.
func dumpedBy(sql string) string {
	const tag = "-- Dumped by pg_dump version "
	if _, after, ok := strings.Cut(sql, tag); ok {
		v, _, _ := strings.Cut(after, "\n")
		return strings.TrimSpace(v)
	}
	return "unknown"
}

// copyLine is the statement of a table's data in a pg_restore script: a
// COPY of named columns, nothing else (the statement is the archive's
// text, which pg_restore runs whatever it says).
var copyLine = regexp.MustCompile(`^COPY ([A-Za-z_][A-Za-z0-9_$]*|"[A-Za-z_][A-Za-z0-9_$]*")\.[a-z_][a-z0-9_]* \([a-z_][a-z0-9_]*(, [a-z_][a-z0-9_]*)*\) FROM stdin;$`)

// checkData reads the script of the archive's data section (pg_restore
// --data-only, streamed) and refuses it unless every line outside the
// rows is a comment, a setting line of the already compared definitions
// script (defs), or a COPY of columns into a table of schema, its rows
// ending at their "\." line.
func checkData(ctx context.Context, env []string, path, schema, defs string) error {
	settings := map[string]bool{}
	for _, line := range strings.Split(defs, "\n") {
		if strings.HasPrefix(line, "SET ") || strings.HasPrefix(line, "SELECT pg_catalog.set_config(") {
			settings[line] = true
		}
	}
	prog, err := exec.LookPath("pg_restore")
	if err != nil {
		return fmt.Errorf("pg_restore not found on PATH (Debian: apt-get install postgresql-client): %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmd := exec.CommandContext(ctx, prog, "--data-only", "--no-owner", "--no-privileges", "--file=-", path)
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("pg_restore: %w", err)
	}
	bad := scanData(bufio.NewReaderSize(stdout, 64<<10), schema, settings)
	if bad != "" && bad != rowsCut {
		cancel()
		_ = cmd.Wait()
		if len(bad) > 200 {
			bad = bad[:200] + "…"
		}
		return fmt.Errorf("pgstore: %w: the data section of %s holds a statement that is no COPY of a Kiln table's rows: %q", ErrRestoreRefused, path, bad)
	}
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("pgstore: restore (nothing was restored): %w: %s does not read whole: pg_restore: %w: %s", ErrRestoreRefused, path, err, strings.TrimSpace(stderr.String()))
	}
	if bad != "" {
		return fmt.Errorf("pgstore: %w: in the data section of %s, %s", ErrRestoreRefused, path, bad)
	}
	return nil
}

// rowsCut is scanData's answer for a script ending inside a COPY's rows.
const rowsCut = "the rows of a COPY do not end"

// scanData returns the first line of a data-only script that checkData
// refuses, or "" when there is none.
func scanData(r *bufio.Reader, schema string, settings map[string]bool) string {
	inRows := false
	for {
		line, long, err := readLine(r)
		if err != nil {
			if inRows {
				return rowsCut
			}
			return ""
		}
		switch {
		case inRows:
			inRows = long || line != `\.`
		case long:
			return line
		case strings.HasPrefix(line, "--") || strings.TrimSpace(line) == "" || psqlRestrict.MatchString(line) || settings[line]:
		default:
			m := copyLine.FindStringSubmatch(line)
			if m == nil || (m[1] != schema && m[1] != quoteIdent(schema)) {
				return line
			}
			inRows = true
		}
	}
}

// readLine reads one line of r without its newline; a line longer than
// r's buffer comes back cut, with long set (the rest is skipped).
func readLine(r *bufio.Reader) (line string, long bool, err error) {
	b, err := r.ReadSlice('\n')
	line = strings.TrimSuffix(string(b), "\n")
	for errors.Is(err, bufio.ErrBufferFull) {
		long = true
		_, err = r.ReadSlice('\n')
	}
	if err == io.EOF && line != "" {
		err = nil
	}
	return line, long, err
}

// psqlRestrict is a psql \restrict or \unrestrict line of a script.
var psqlRestrict = regexp.MustCompile(`^\\(un)?restrict [A-Za-z0-9]+$`)

// publicComment is the comment pg_dump keeps on schema public.
const publicComment = `COMMENT ON SCHEMA SCHEMA IS 'standard public schema';`

// definitions is a schema-only SQL script with its comments, blank lines
// and psql's \restrict lines (a random key per script) dropped and
// schema's qualified name replaced, to compare scripts of schemas named
// differently.
func definitions(sql, schema string) string {
	var b strings.Builder
	for _, line := range strings.Split(sql, "\n") {
		if strings.HasPrefix(line, "--") || psqlRestrict.MatchString(line) || strings.TrimSpace(line) == "" {
			continue
		}
		for _, q := range []string{quoteIdent(schema), schema} {
			line = strings.ReplaceAll(line, q+".", "SCHEMA.")
			line = strings.ReplaceAll(line, "SCHEMA "+q+";", "SCHEMA SCHEMA;")
			line = strings.ReplaceAll(line, "SCHEMA "+q+" IS ", "SCHEMA SCHEMA IS ")
		}
		if line == publicComment {
			continue // a store in schema public: its archive says what it is
		}
		b.WriteString(line)
		b.WriteByte('\n')
	}
	return b.String()
}

// storeSchema returns the current schema of url, refusing one that holds
// no Kiln store of a version this build reads.
func storeSchema(ctx context.Context, url string) (string, error) {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return "", fmt.Errorf("pgstore: connect: %w", err)
	}
	defer conn.Close(context.Background())
	ptx, err := conn.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly})
	if err != nil {
		return "", classify("begin", err)
	}
	defer func() { _ = ptx.Rollback(context.Background()) }()
	var schema *string
	if err := ptx.QueryRow(ctx, `SELECT current_schema()`).Scan(&schema); err != nil {
		return "", classify("current schema", err)
	}
	if schema == nil {
		return "", fmt.Errorf("%w: the search_path names no schema that exists", ErrNoStore)
	}
	v, err := storedVersion(ctx, ptx)
	switch {
	case err != nil:
		return "", err
	case v == 0:
		return "", fmt.Errorf("%w (schema %s is empty)", ErrNoStore, *schema)
	case v > SchemaVersion:
		return "", &SchemaVersionError{Found: v, Supported: SchemaVersion}
	}
	if !schemaName.MatchString(*schema) {
		return "", fmt.Errorf("pgstore: backup: schema name %q: only letters, digits, _ and $ are supported", *schema)
	}
	return *schema, nil
}

// targetSchema returns the schema a store at conn's URL lives in (the
// first of its search_path, as Open creates it) and whether it exists.
func targetSchema(ctx context.Context, conn *pgx.Conn) (string, bool, error) {
	var current *string
	if err := conn.QueryRow(ctx, `SELECT current_schema()`).Scan(&current); err != nil {
		return "", false, classify("current schema", err)
	}
	if current != nil {
		return *current, true, nil
	}
	first := strings.Trim(strings.TrimSpace(strings.Split(conn.Config().RuntimeParams["search_path"], ",")[0]), `"`)
	if first == "" || strings.HasPrefix(first, "$") {
		return "", false, errors.New("pgstore: no schema to restore into: the search_path names none")
	}
	return first, false, nil
}

// quoteIdent quotes a schema name for SQL and pg_dump's --schema pattern
// (names schemaName accepts hold no pattern characters).
func quoteIdent(s string) string { return pgx.Identifier{s}.Sanitize() }

// toc is what Backup and Restore read of an archive's table of contents.
type toc struct {
	list       string          // pg_restore --list output
	schema     string          // the schema its tables are in
	schemaLine string          // its "SCHEMA - name" entry, if any
	data       map[string]bool // tables with a TABLE DATA entry
	// other are the data-section entries that are not table data of
	// schema (sequence values, large objects, another schema's data).
	other []string
}

// readTOC lists the archive at path with pg_restore --list.
func readTOC(ctx context.Context, path string) (toc, error) {
	out, err := run(ctx, nil, "pg_restore", "--list", path)
	if err != nil {
		return toc{}, err
	}
	t := toc{list: string(out), data: map[string]bool{}}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, ";") {
			continue
		}
		// "ID; CATALOG OID TYPE SCHEMA NAME OWNER", TYPE possibly two words.
		_, rest, ok := strings.Cut(line, "; ")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		switch {
		case len(f) >= 5 && f[2] == "SCHEMA" && f[3] == "-":
			t.schemaLine, t.schema = line, f[4]
		case len(f) >= 6 && f[2] == "TABLE" && f[3] == "DATA":
			t.data[f[5]] = true
			if t.schema == "" {
				t.schema = f[4]
			}
			if f[4] != t.schema {
				t.other = append(t.other, line)
			}
		case len(f) >= 4 && (f[2]+" "+f[3] == "SEQUENCE SET" || strings.HasPrefix(f[2], "BLOB") ||
			f[2]+" "+f[3] == "LARGE OBJECT" || (f[2] == "MATERIALIZED" && strings.Contains(rest, "VIEW DATA"))):
			t.other = append(t.other, line)
		}
	}
	if len(t.data) == 0 {
		return toc{}, errors.New("it lists no table data")
	}
	return t, nil
}

// run runs a PostgreSQL client program with env added to this process's
// environment and returns its standard output; its error carries the
// program's own message.
func run(ctx context.Context, env []string, prog string, args ...string) ([]byte, error) {
	path, err := exec.LookPath(prog)
	if err != nil {
		return nil, fmt.Errorf("%s not found on PATH (Debian: apt-get install postgresql-client): %w", prog, err)
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s: %w: %s", prog, err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

// libpqParams are the query parameters libpq's programs understand; a
// --store URL may carry others that only pgx reads (search_path, which
// the programs get as --schema or from the archive).
var libpqParams = map[string]bool{
	"host": true, "hostaddr": true, "port": true, "dbname": true, "user": true, "password": true,
	"passfile": true, "channel_binding": true, "connect_timeout": true, "client_encoding": true,
	"options": true, "application_name": true, "keepalives": true, "keepalives_idle": true,
	"keepalives_interval": true, "keepalives_count": true, "tcp_user_timeout": true,
	"gssencmode": true, "sslmode": true, "sslcert": true, "sslkey": true, "sslpassword": true,
	"sslrootcert": true, "sslcrl": true, "sslcrldir": true, "sslsni": true, "requirepeer": true,
	"ssl_min_protocol_version": true, "ssl_max_protocol_version": true, "krbsrvname": true,
	"gsslib": true, "service": true, "target_session_attrs": true,
}

// libpqURL returns url without the query parameters libpq refuses and
// without its password, which the programs get from the environment
// (PGPASSWORD, as the URL's or as given to this process), not from a
// command line every local user can read.
func libpqURL(raw string) (string, []string, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return "", nil, errors.New("pgstore: backup and restore take a postgres:// URL")
	}
	q := u.Query()
	for k := range q {
		if !libpqParams[k] {
			q.Del(k)
		}
	}
	var env []string
	if pw := q.Get("password"); pw != "" {
		env = append(env, "PGPASSWORD="+pw)
		q.Del("password")
	}
	if u.User != nil {
		if pw, ok := u.User.Password(); ok {
			env = append(env, "PGPASSWORD="+pw)
			u.User = url.User(u.User.Username())
		}
	}
	u.RawQuery = q.Encode()
	return u.String(), env, nil
}
