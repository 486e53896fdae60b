package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kilnbuild/kiln/internal/config"
	"github.com/kilnbuild/kiln/internal/store"
	"github.com/kilnbuild/kiln/internal/store/bolt"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// storeFile is the store's file name in the data directory.
const storeFile = "kiln.db"

// openStore is the one factory of the metaserver's store: serve and the
// offline admin commands open DIR/kiln.db through it, after bolt's checks
// of an existing file (size against its meta page, every page); a new one
// is created. It is the one place that names the engine: callers see a
// store.Store, and another engine (PostgreSQL) is chosen here. The blob
// store is the server's, opened through server.Config.OpenBlobs (default:
// the directory DIR/blobs); only serve opens it.
func openStore(dataDir string) (store.Store, error) {
	db, err := bolt.Open(filepath.Join(dataDir, storeFile), bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, err // not a nil *bolt.DB in the interface
	}
	return db, nil
}

// refused reports whether err is the store refusing its file (damaged, or
// of an unknown schema): the operator must act, so the exit status is 2,
// as for bad usage, and a restart loop will not help.
func refused(err error) bool {
	var sv *bolt.SchemaVersionError
	return errors.Is(err, store.ErrDamaged) || errors.As(err, &sv)
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
// consistency check of a store file, read-only. Exit 0: whole; 2: damaged
// or bad usage; 1: the file cannot be read (missing, locked by serve).
func checkCommand(args []string) int {
	fs := flag.NewFlagSet("metaserver check", flag.ContinueOnError)
	dataDir := fs.String("data-dir", "", "check DIR/kiln.db (stop the metaserver first: it holds the file's lock)")
	if err := fs.Parse(args); err != nil {
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
// straight from the store when it is not running. FILE must not exist.
func backupCommand(args []string) int {
	fs := flag.NewFlagSet("metaserver backup", flag.ContinueOnError)
	fs.String("data-dir", os.Getenv("KILN_DATA_DIR"), "the metaserver's data directory (env KILN_DATA_DIR)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	dataDir := fs.Lookup("data-dir").Value.String()
	if dataDir == "" || fs.NArg() != 1 {
		fmt.Fprintf(os.Stderr, "metaserver backup: needs --data-dir and FILE\n%s", usage)
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
	admin, closeFn, err := adminClient(ctx, dataDir)
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
