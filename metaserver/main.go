// Command metaserver is Kiln's central server: it owns the store of
// projects, build servers, requests, builds and artifacts, dispatches builds
// to volunteers' build servers and answers requesters.
//
//	metaserver serve --data-dir DIR [--listen 127.0.0.1:7070] [flags]
//	metaserver serve --data-dir DIR --store postgres://... --blobs s3://... [--standby] [flags]
//	metaserver project add --data-dir DIR NAME GIT_URL
//	metaserver project list --data-dir DIR
//	metaserver operator add --data-dir DIR NAME
//	metaserver buildserver add --data-dir DIR [--operator NAME] NAME
//	metaserver buildserver revoke --data-dir DIR [--purge] NAME
//	metaserver pin --data-dir DIR NAME BUILD_ID
//	metaserver enroll-token create --data-dir DIR [--operator NAME] [--ttl 168h]
//	metaserver cancel --data-dir DIR [--reason TEXT] BUILD_ID
//	metaserver backup (--data-dir DIR | --store URL) FILE
//	metaserver check (--data-dir DIR | FILE | --store URL [--blobs s3://...])
//	metaserver restore --store URL FILE
//
// The admin commands talk to a running serve over DIR/admin.sock, or open the
// store directly when serve is not running; cancel needs the running serve.
// Given --store URL in place of --data-dir, they reach the metaserver
// holding that PostgreSQL store at the address and with the secret it
// recorded there, or the database itself when none runs.
// backup is consistent while serve runs; check reads a store file that no
// serve holds (a stopped one's, or a backup). Every command that opens the
// store refuses a damaged file with exit status 2, leaving it as it was.
// On PostgreSQL, backup is a pg_dump archive, restore loads one into an
// empty schema, and check reads one snapshot beside running metaservers.
package main

import (
	"fmt"
	"os"
)

const usage = `usage:
  metaserver serve --data-dir DIR [--listen 127.0.0.1:7070] [--metrics-listen ADDR] [flags]
  metaserver serve --data-dir DIR --store postgres://USER@HOST:PORT/DB?sslmode=... --blobs s3://BUCKET?endpoint=URL [--standby] [flags]
  (admin commands below take --store URL in place of --data-dir)
  metaserver project add --data-dir DIR NAME GIT_URL
  metaserver project list --data-dir DIR
  metaserver operator add --data-dir DIR NAME
  metaserver buildserver add --data-dir DIR [--operator NAME] NAME
  metaserver buildserver revoke --data-dir DIR [--purge] NAME
  metaserver pin --data-dir DIR NAME BUILD_ID
  metaserver enroll-token create --data-dir DIR [--operator NAME] [--ttl 168h]
  metaserver cancel --data-dir DIR [--reason TEXT] BUILD_ID   (needs the running serve)
  metaserver backup --data-dir DIR FILE     (a consistent copy, also while serve runs)
  metaserver backup --store URL FILE        (pg_dump archive of a PostgreSQL store, also while serving)
  metaserver check (--data-dir DIR | FILE)  (consistency check; not while serve holds DIR)
  metaserver check --store URL [--blobs s3://BUCKET?endpoint=URL]  (read-only, also while serving)
  metaserver restore --store URL FILE       (a backup's archive into an empty schema, then check)
Run a command with -h for its flags.
`

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, usage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "serve":
		return serve(rest)
	case "project", "buildserver", "enroll-token", "operator":
		if len(rest) == 0 {
			fmt.Fprint(os.Stderr, usage)
			return 2
		}
		return adminCommand(cmd+" "+rest[0], rest[1:])
	case "pin", "cancel":
		return adminCommand(cmd, rest)
	case "backup":
		return backupCommand(rest)
	case "check":
		return checkCommand(rest)
	case "restore":
		return restoreCommand(rest)
	case "-h", "--help", "help":
		fmt.Print(usage)
		return 0
	}
	fmt.Fprintf(os.Stderr, "metaserver: unknown command %q\n%s", cmd, usage)
	return 2
}
