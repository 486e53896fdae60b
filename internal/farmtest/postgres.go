package farmtest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Postgres is a throwaway PostgreSQL cluster for a test: initdb into a new
// directory, the server on 127.0.0.1 at a free port (and a unix socket in
// that directory), stopped by its PID and removed when the test ends. As
// root it runs as the unprivileged "postgres" user (or "nobody"), as
// PostgreSQL refuses to run as root.
type Postgres struct {
	// Proc is the postgres server process (Stop, Kill, Restart).
	Proc *Process
	// Port is its TCP port on 127.0.0.1.
	Port int
	// User and Password are the superuser's, for URLs.
	User, Password string
}

// pgBinDir finds the directory of initdb and postgres: PATH first, then
// Debian's /usr/lib/postgresql/VERSION/bin. "" when PostgreSQL is absent.
func pgBinDir() string {
	if p, err := exec.LookPath("initdb"); err == nil {
		if r, err := filepath.EvalSymlinks(p); err == nil {
			return filepath.Dir(r)
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	for i := len(dirs) - 1; i >= 0; i-- {
		if _, err := os.Stat(filepath.Join(dirs[i], "postgres")); err == nil {
			return dirs[i]
		}
	}
	return ""
}

// StartPostgres starts a fresh cluster and waits until it accepts
// connections. It skips the test, with a message, when PostgreSQL is not
// installed (scripts/setup.sh installs Debian's postgresql).
func StartPostgres(t testing.TB) *Postgres {
	t.Helper()
	bin := pgBinDir()
	if bin == "" {
		t.Skip("PostgreSQL is not installed (initdb not found on PATH or in /usr/lib/postgresql/*/bin); scripts/setup.sh installs it")
	}
	// Not t.TempDir(): its parents are mode 0700, out of the unprivileged
	// user's reach.
	dir, err := os.MkdirTemp("", "kiln-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	data := filepath.Join(dir, "data")
	pw := "kiln-test-" + strconv.Itoa(os.Getpid())
	pwFile := filepath.Join(dir, "pw")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("farmtest: postgres: %v", err)
		}
	}
	must(os.WriteFile(pwFile, []byte(pw+"\n"), 0o600))
	must(os.Mkdir(data, 0o700))
	cred := pgCredential(t)
	if cred != nil {
		// The directory holds the unix socket and its lock file too.
		must(os.Chown(dir, int(cred.Uid), int(cred.Gid)))
		must(os.Chown(data, int(cred.Uid), int(cred.Gid)))
		must(os.Chown(pwFile, int(cred.Uid), int(cred.Gid)))
	}
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-U", "kiln", "--pwfile", pwFile,
		"--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync", "--no-instructions")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		t.Fatalf("farmtest: initdb: %v\n%s", err, out)
	}
	port := FreePort(t)
	p := NewProcess(t, "postgres", filepath.Join(bin, "postgres"), "-D", data, "-p", strconv.Itoa(port),
		"-k", dir, "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200")
	p.Credential = cred
	p.StopTimeout = 20 * time.Second
	must(p.Start())
	pg := &Postgres{Proc: p, Port: port, User: "kiln", Password: pw}
	Eventually(t, 60*time.Second, func() error {
		if !p.Running() {
			t.Fatalf("farmtest: postgres exited at start:\n%s", tail(p.Logs(), 30))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, pg.URL("postgres"))
		if err != nil {
			return err
		}
		return c.Close(ctx)
	})
	return pg
}

// pgCredential is the user postgres runs as: nil (this process's user)
// unless this process is root.
func pgCredential(t testing.TB) *syscall.Credential {
	if os.Geteuid() != 0 {
		return nil
	}
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	t.Skip("running as root and no unprivileged user (postgres, nobody) to run PostgreSQL as")
	return nil
}

// URL returns a libpq URL of database db over TCP, with the password.
func (pg *Postgres) URL(db string) string {
	u := url.URL{Scheme: "postgres", User: url.UserPassword(pg.User, pg.Password),
		Host: "127.0.0.1:" + strconv.Itoa(pg.Port), Path: "/" + db, RawQuery: "sslmode=disable"}
	return u.String()
}

// CreateDatabase creates database name and returns its URL.
func (pg *Postgres) CreateDatabase(t testing.TB, name string) string {
	t.Helper()
	pg.exec(t, "postgres", "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	return pg.URL(name)
}

// SchemaURL creates (if needed) in database db a schema named after key
// (hashed, so any string will do) and returns a URL whose connections use
// it: a fresh, separate store per key at the cost of one statement.
func (pg *Postgres) SchemaURL(t testing.TB, db, key string) string {
	t.Helper()
	sum := sha256.Sum256([]byte(key))
	schema := "t_" + hex.EncodeToString(sum[:8])
	pg.exec(t, db, "CREATE SCHEMA IF NOT EXISTS "+schema)
	return pg.URL(db) + "&search_path=" + schema
}

// exec runs one statement in database db as the superuser.
func (pg *Postgres) exec(t testing.TB, db, sql string) {
	t.Helper()
	ExecSQL(t, pg.URL(db), sql)
}

// ExecSQL runs statements on the database at url (a test's own SQL,
// behind Kiln's back: damage, planted rows, set-up), failing t on error.
func ExecSQL(t testing.TB, url, sql string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("farmtest: postgres: %v", err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, sql); err != nil {
		t.Fatalf("farmtest: postgres: %s: %v", sql, err)
	}
}

// String describes the cluster for logs.
func (pg *Postgres) String() string { return fmt.Sprintf("postgres on 127.0.0.1:%d", pg.Port) }
