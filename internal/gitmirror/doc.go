// Package gitmirror keeps bare mirrors of git repositories, driven by the git
// command-line tool.
//
// The metaserver uses a mirror per registered project to resolve revisions
// (branch, tag, abbreviated or full commit, ranges "A..B") and to read
// kiln.yaml at a commit; the buildserver uses one per project as a persistent
// source cache, so that a second build of a project fetches only the new
// objects and exports the tree at a commit into a fresh build directory.
//
// # Mirrors on disk
//
// A mirror is a bare repository created by "git clone --mirror" into a
// temporary sibling of its directory and renamed into place, so a crash never
// leaves a half-written mirror behind. Every git process runs with the
// system and global configuration ignored (GIT_CONFIG_NOSYSTEM,
// GIT_CONFIG_GLOBAL=/dev/null), terminal prompts disabled
// (GIT_TERMINAL_PROMPT=0), the dangerous ext:: transport refused, and the
// repository-location variables of the caller's environment (GIT_DIR and
// friends) removed, so the result does not depend on the user running it.
//
// # Fetching
//
// Fetches are coalesced: concurrent callers of [Mirror.Fetch] share one git
// process. [Mirror.Resolve] skips the fetch when the last successful one
// started less than [Options.FetchFreshness] ago, and a full commit id that
// is already present resolves without any fetch (and, once seen, without any
// git process at all).
//
// # Resolving names without a process
//
// After each successful fetch, on the first Resolve that needs it, the
// mirror lists its refs once (git for-each-ref, with annotated tags peeled,
// and git symbolic-ref HEAD) into an immutable in-memory table. Within the
// freshness window Resolve answers ref names ("", HEAD, branches, tags,
// refs/...) from that table in git's disambiguation order, with no git
// process; what the table cannot answer for certain (abbreviated ids,
// expressions, tags of tags, pseudo-refs) goes to git rev-parse as before.
//
// # Exporting without git
//
// [Mirror.ExportTree] exports like [Mirror.Export] and also returns the tree
// in memory (git archive's tar stream) when it is small; [Tree.Extract]
// writes that tree again, with the same checks, without a git process. The
// buildserver keeps a few such trees, so repeated builds of one commit (the
// same source with other options) start no git at all.
//
// # Concurrency
//
// A *Mirror is safe for concurrent use by multiple goroutines. Two *Mirror
// values (or two processes) on the same directory are safe too, as far as git
// itself is: git's ref and pack updates are atomic, but fetches are then not
// coalesced between them.
package gitmirror
