package pgstore

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// DumpForTest runs pg_dump of url's current schema to path, whatever it
// holds (Backup refuses what is not a Kiln store).
func DumpForTest(ctx context.Context, url, path string) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	var schema string
	err = conn.QueryRow(ctx, `SELECT current_schema()`).Scan(&schema)
	conn.Close(ctx)
	if err != nil {
		return err
	}
	libpq, env, err := libpqURL(url)
	if err != nil {
		return err
	}
	_, err = run(ctx, env, "pg_dump", "--format=custom", "--no-owner", "--schema="+quoteIdent(schema), "--file="+path, "--dbname="+libpq)
	return err
}
