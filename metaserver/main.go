// Command metaserver is Kiln's central server: it owns the store of
// projects, build servers, requests, builds and artifacts, dispatches builds
// to volunteers' build servers and answers requesters.
//
//	metaserver serve --data-dir DIR [--listen 127.0.0.1:7070] [flags]
//	metaserver project add --data-dir DIR NAME GIT_URL
//	metaserver project list --data-dir DIR
//	metaserver buildserver add --data-dir DIR NAME
//	metaserver buildserver revoke --data-dir DIR NAME
//	metaserver pin --data-dir DIR NAME BUILD_ID
//	metaserver enroll-token create --data-dir DIR
//	metaserver cancel --data-dir DIR [--reason TEXT] BUILD_ID
//
// The admin commands talk to a running serve over DIR/admin.sock, or open the
// store directly when serve is not running; cancel needs the running serve.
package main

import (
	"fmt"
	"os"
)

const usage = `usage:
  metaserver serve --data-dir DIR [--listen 127.0.0.1:7070] [--metrics-listen ADDR] [flags]
  metaserver project add --data-dir DIR NAME GIT_URL
  metaserver project list --data-dir DIR
  metaserver buildserver add --data-dir DIR NAME
  metaserver buildserver revoke --data-dir DIR NAME
  metaserver pin --data-dir DIR NAME BUILD_ID
  metaserver enroll-token create --data-dir DIR
  metaserver cancel --data-dir DIR [--reason TEXT] BUILD_ID   (needs the running serve)
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
	case "project", "buildserver", "enroll-token":
		if len(rest) == 0 {
			fmt.Fprint(os.Stderr, usage)
			return 2
		}
		return adminCommand(cmd+" "+rest[0], rest[1:])
	case "pin", "cancel":
		return adminCommand(cmd, rest)
	case "-h", "--help", "help":
		fmt.Print(usage)
		return 0
	}
	fmt.Fprintf(os.Stderr, "metaserver: unknown command %q\n%s", cmd, usage)
	return 2
}
