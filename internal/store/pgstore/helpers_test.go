package pgstore_test

import (
	"testing"

	"github.com/jackc/pgx/v5"
)

func countTables(t *testing.T, url string) int {
	t.Helper()
	return queryInt(t, url, `SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()`)
}

// queryInt runs a query of one integer on url.
func queryInt(t *testing.T, url, sql string) int {
	t.Helper()
	c, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(t.Context())
	var n int
	if err := c.QueryRow(t.Context(), sql).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// killWriters terminates every session holding an advisory lock.
func killWriters(t *testing.T, adminURL string) {
	t.Helper()
	c, err := pgx.Connect(t.Context(), adminURL)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(t.Context())
	var n int
	if err := c.QueryRow(t.Context(), `SELECT count(pg_terminate_backend(pid)) FROM pg_locks WHERE locktype = 'advisory' AND granted`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatal("no session held an advisory lock")
	}
}

func queryBool(t *testing.T, url, sql string) bool {
	t.Helper()
	c, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(t.Context())
	var v bool
	if err := c.QueryRow(t.Context(), sql).Scan(&v); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return v
}
