package pgstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Endpoint is where the process holding a store's writer lock serves its
// AdminService, and the secret a caller presents there (a bearer token).
// Whoever can read the database learns it: PostgreSQL's own
// authentication is what authorizes an administrator, who could change
// the tables directly anyway.
type Endpoint struct {
	// Addr is host:port of the writer's gRPC listener.
	Addr string
	// TLS tells whether it serves TLS.
	TLS bool
	// Secret is the bearer token, new at each start of the writer.
	Secret string
}

// Advertise records e as the writer's endpoint, replacing any earlier one.
// Only the writer can call it (it runs on the writer connection).
func (db *DB) Advertise(e Endpoint) error {
	db.mu.Lock()
	defer db.mu.Unlock()
	if db.lostErr != nil {
		return db.lostErr
	}
	_, err := db.conn.Exec(db.ctx, `INSERT INTO kiln_writer (one, addr, tls, secret) VALUES (1, $1, $2, $3)
		ON CONFLICT (one) DO UPDATE SET addr = EXCLUDED.addr, tls = EXCLUDED.tls, secret = EXCLUDED.secret, since = now()`,
		e.Addr, e.TLS, e.Secret)
	if err != nil {
		return db.connFailed("advertise", err)
	}
	return nil
}

// Writer reports whether a process holds the writer lock of the store at
// url and, if it advertised one, its endpoint. held is false when no
// process does (the caller may Open the store itself). It takes the lock
// for an instant to find out, and releases it at once.
func Writer(ctx context.Context, url string) (e Endpoint, held bool, err error) {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return Endpoint{}, false, fmt.Errorf("pgstore: connect: %w", err)
	}
	defer conn.Close(context.Background())
	var got bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock(`+lockKey+`)`).Scan(&got); err != nil {
		return Endpoint{}, false, fmt.Errorf("pgstore: writer lock: %w", err)
	}
	if got {
		_, err := conn.Exec(ctx, `SELECT pg_advisory_unlock(`+lockKey+`)`)
		return Endpoint{}, false, classifyNil("writer lock", err)
	}
	err = conn.QueryRow(ctx, `SELECT addr, tls, secret FROM kiln_writer WHERE one = 1`).Scan(&e.Addr, &e.TLS, &e.Secret)
	if errors.Is(err, pgx.ErrNoRows) {
		return Endpoint{}, true, nil
	}
	if err != nil {
		return Endpoint{}, true, classify("writer endpoint", err)
	}
	return e, true, nil
}
