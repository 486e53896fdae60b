package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/kilnbuild/kiln/internal/cas"
	"github.com/kilnbuild/kiln/internal/cas/s3blob"
	"github.com/kilnbuild/kiln/internal/config"
	"github.com/kilnbuild/kiln/internal/store"
	"github.com/kilnbuild/kiln/internal/store/bolt"
	"github.com/kilnbuild/kiln/internal/store/pgstore"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// storeFile is the store's file name in the data directory.
const storeFile = "kiln.db"

// openStore is the one factory of the metaserver's store: serve and the
// offline admin commands open it through it. With storeURL "" it is
// DIR/kiln.db, after bolt's checks of an existing file (size against its
// meta page, every page); a new one is created. A postgres:// (or
// postgresql://) URL opens that database instead (pgstore: schema
// migrated, writer lock taken). It is the one place that names the
// engines: callers see a store.Store. The blob store is the server's,
// opened through server.Config.OpenBlobs (openBlobs: the directory
// DIR/blobs or an S3 bucket); only serve opens it.
func openStore(storeURL, dataDir string) (store.Store, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return openStoreWaiting(ctx, storeURL, dataDir, 2*time.Second)
}

// openStoreWaiting is openStore waiting up to lockWait (or until ctx ends)
// for another process to release a PostgreSQL store: a standby metaserver
// waits for as long as the writer lives.
func openStoreWaiting(ctx context.Context, storeURL, dataDir string, lockWait time.Duration) (store.Store, error) {
	if storeURL != "" {
		db, err := pgstore.Open(ctx, storeURL, pgstore.Options{LockTimeout: lockWait})
		if err != nil {
			return nil, err // not a nil *pgstore.DB in the interface
		}
		return db, nil
	}
	db, err := bolt.Open(filepath.Join(dataDir, storeFile), bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, err // not a nil *bolt.DB in the interface
	}
	return db, nil
}

// checkStoreURL validates a --store value: "" (bbolt in --data-dir) or a
// postgres:// URL that parses.
func checkStoreURL(u string) error {
	if u == "" {
		return nil
	}
	if !strings.HasPrefix(u, "postgres://") && !strings.HasPrefix(u, "postgresql://") {
		return fmt.Errorf("--store %q: only postgres:// URLs are known (leave it out for bbolt in --data-dir)", redactURL(u))
	}
	if _, err := pgconn.ParseConfig(u); err != nil {
		return fmt.Errorf("--store: %w", err)
	}
	return nil
}

// redactURL hides a password in a URL for messages.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

// openBlobs returns server.Config.OpenBlobs for a --blobs value: nil (the
// server's default, the directory DIR/blobs) for "", an S3 bucket for an
// s3:// URL (credentials from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY;
// uploads spooled in DIR/blobs-spool; remembered verifications saved at a
// graceful stop in DIR/blobs-verified.memo, see package s3blob).
func openBlobs(blobsURL, dataDir string) func() (cas.BlobStore, error) {
	if blobsURL == "" {
		return nil
	}
	return func() (cas.BlobStore, error) {
		spool := filepath.Join(dataDir, "blobs-spool")
		if err := os.MkdirAll(spool, 0o700); err != nil {
			return nil, err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		s, err := s3blob.Open(ctx, blobsURL, s3blob.Options{SpoolDir: spool, MemoPath: filepath.Join(dataDir, s3MemoFile)})
		if err != nil {
			return nil, err // not a nil *s3blob.Store in the interface
		}
		return s, nil
	}
}

// s3MemoFile is, in the data directory, the file of the S3 blob store's
// remembered verifications.
const s3MemoFile = "blobs-verified.memo"

// checkBlobsURL validates a --blobs value: "" or an s3:// URL.
func checkBlobsURL(u string) error {
	if u == "" {
		return nil
	}
	if _, err := s3blob.ParseURL(u); err != nil {
		return fmt.Errorf("--blobs: %w", err)
	}
	return nil
}

// refused reports whether err is the store refusing its file or database
// (damaged, or of an unknown schema): the operator must act, so the exit
// status is 2, as for bad usage, and a restart loop will not help.
func refused(err error) bool {
	var sv *bolt.SchemaVersionError
	var pv *pgstore.SchemaVersionError
	return errors.Is(err, store.ErrDamaged) || errors.As(err, &sv) || errors.As(err, &pv)
}

// refusal prints why the store was refused and what to do, and returns
// exit status 2.
func refusal(cmd string, err error) int {
	fmt.Fprintf(os.Stderr, "metaserver %s: refusing the store: %v\n", cmd, err)
	if errors.Is(err, store.ErrDamaged) {
		fmt.Fprintln(os.Stderr, "The file was not changed. Restore the last backup (README, \"Backup and restore\"): stop the metaserver, move the damaged kiln.db aside, `metaserver check FILE` the backup, copy it to DIR/kiln.db.")
	}
	return 2
}

// checkCommand runs `metaserver check (--data-dir DIR | FILE)`: a full
// consistency check of a store file, read-only; or `metaserver check
// --store URL [--blobs s3://…]` of a PostgreSQL store (checkPostgres).
// Exit 0: whole; 2: damaged or bad usage; 1: the file cannot be read
// (missing, locked by serve).
func checkCommand(args []string) int {
	fs := flag.NewFlagSet("metaserver check", flag.ContinueOnError)
	dataDir := fs.String("data-dir", "", "check DIR/kiln.db (stop the metaserver first: it holds the file's lock)")
	storeURL := fs.String("store", "", "check the PostgreSQL store at this postgres:// URL instead (also while metaservers run)")
	blobsURL := fs.String("blobs", "", "with --store: look for every named blob outside the store in this s3:// bucket")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *storeURL != "" {
		if *dataDir != "" || fs.NArg() != 0 {
			fmt.Fprintf(os.Stderr, "metaserver check: give --store URL alone, or --data-dir DIR, or one FILE\n%s", usage)
			return 2
		}
		if err := errors.Join(checkStoreURL(*storeURL), checkBlobsURL(*blobsURL)); err != nil {
			fmt.Fprintln(os.Stderr, "metaserver check:", err)
			return 2
		}
		return checkPostgres(*storeURL, *blobsURL)
	}
	if *blobsURL != "" {
		fmt.Fprintln(os.Stderr, "metaserver check: --blobs goes with --store")
		return 2
	}
	var path string
	switch {
	case *dataDir != "" && fs.NArg() == 0:
		path = filepath.Join(*dataDir, storeFile)
	case *dataDir == "" && fs.NArg() == 1:
		path = fs.Arg(0)
	default:
		fmt.Fprintf(os.Stderr, "metaserver check: give --data-dir DIR or one FILE\n%s", usage)
		return 2
	}
	start := time.Now()
	err := bolt.CheckFile(path, 2*time.Second)
	switch {
	case refused(err):
		fmt.Fprintf(os.Stderr, "metaserver check: %v\n", err)
		return 2
	case err != nil:
		fmt.Fprintf(os.Stderr, "metaserver check: %v\n", err)
		return 1
	}
	fi, _ := os.Stat(path)
	fmt.Printf("%s: ok (%d bytes checked in %s)\n", path, fi.Size(), time.Since(start).Round(time.Millisecond))
	return 0
}

// backupCommand runs `metaserver backup --data-dir DIR FILE`: through the
// running metaserver's admin socket (consistent while it serves), or
// straight from the store when it is not running; or `metaserver backup
// --store URL FILE` of a PostgreSQL store (backupPostgres). FILE must not
// exist.
func backupCommand(args []string) int {
	fs := flag.NewFlagSet("metaserver backup", flag.ContinueOnError)
	fs.String("data-dir", os.Getenv("KILN_DATA_DIR"), "the metaserver's data directory (env KILN_DATA_DIR)")
	storeURL := fs.String("store", "", "back up the PostgreSQL store at this postgres:// URL instead (pg_dump archive; also while metaservers run)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	dataDir := fs.Lookup("data-dir").Value.String()
	if *storeURL != "" && fs.NArg() == 1 {
		if err := checkStoreURL(*storeURL); err != nil {
			fmt.Fprintln(os.Stderr, "metaserver backup:", err)
			return 2
		}
		dest, err := filepath.Abs(fs.Arg(0))
		if err != nil {
			fmt.Fprintln(os.Stderr, "metaserver backup:", err)
			return 2
		}
		return backupPostgres(*storeURL, dest)
	}
	if dataDir == "" || fs.NArg() != 1 {
		fmt.Fprintf(os.Stderr, "metaserver backup: needs --data-dir (or --store) and FILE\n%s", usage)
		return 2
	}
	// The running metaserver writes FILE: it must not depend on our directory.
	dest, err := filepath.Abs(fs.Arg(0))
	if err == nil {
		err = config.AbsPaths(fs, "data-dir")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "metaserver backup:", err)
		return 2
	}
	dataDir = fs.Lookup("data-dir").Value.String()
	if _, err := os.Lstat(dest); err == nil {
		fmt.Fprintf(os.Stderr, "metaserver backup: %s already exists; a backup never replaces a file\n", dest)
		return 2
	} else if !errors.Is(err, os.ErrNotExist) {
		fmt.Fprintln(os.Stderr, "metaserver backup:", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	admin, closeFn, err := adminClient(ctx, adminTarget{DataDir: dataDir})
	if err != nil {
		if refused(err) {
			return refusal("backup", err)
		}
		fmt.Fprintln(os.Stderr, "metaserver backup:", err)
		return 1
	}
	defer closeFn()
	resp, err := admin.Backup(ctx, &kilnv1.BackupRequest{Path: dest})
	if err != nil {
		fmt.Fprintln(os.Stderr, "metaserver backup:", status.Convert(err).Message())
		if c := status.Code(err); c == codes.AlreadyExists || c == codes.InvalidArgument {
			return 2
		}
		return 1
	}
	fmt.Printf("%s: %d bytes, checked\n", dest, resp.GetBytes())
	return 0
}

// lost returns a channel closed when st loses its writer lock (pgstore);
// nil, never ready, for a store whose lock cannot be lost (bbolt's file).
func lost(st store.Store) <-chan struct{} {
	if l, ok := st.(interface{ Lost() <-chan struct{} }); ok {
		return l.Lost()
	}
	return nil
}

// storeName and blobsName say which store serves, for the log.
func storeName(u string) string {
	if u == "" {
		return "bbolt"
	}
	return redactURL(u)
}

func blobsName(u string) string {
	if u == "" {
		return "directory"
	}
	return u
}

// advertise records, in a PostgreSQL store, where admin commands reach this
// writer's AdminService and the secret they present (pgstore.Endpoint).
// A bbolt store is administered over the admin socket only.
func advertise(st store.Store, cfg serveConfig, listening, secret string) error {
	db, ok := st.(*pgstore.DB)
	if !ok {
		return nil
	}
	addr := cfg.Advertise
	if addr == "" {
		addr = listening
	}
	if err := db.Advertise(pgstore.Endpoint{Addr: addr, TLS: cfg.TLSCert != "", Secret: secret}); err != nil {
		return fmt.Errorf("advertising the admin endpoint: %w", err)
	}
	return nil
}
