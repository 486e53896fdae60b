// Package worker is the build server's side of Kiln: the long-lived session
// with the metaserver (Client) and the attempt runner that turns one
// Assignment into an AttemptResult (fetch, steps, log, pack, upload).
//
// # Session
//
// A Client holds one WorkerService.Session stream at a time. Each (re)connect
// is a full report of the build server's state, so a retry is just the next
// report:
//
//	         ┌──────────── backoff 100ms·2ⁿ (jitter, cap 10s) ◀───────────┐
//	         ▼                                                            │
//	dial ─▶ Hello(targets, slots, policy, running ids) ─▶ Welcome ─▶ serve ─┤ stream error
//	                                                                  │   │
//	                                                                  │   └─▶ UNAUTHENTICATED: stop (*AuthError)
//	                                                                  ▼
//	                        heartbeats every Welcome.heartbeat_interval_ms
//	                        Assignment ▶ start attempt (or RETURNED when full)
//	                        CancelAttempt ▶ cancel attempt (CANCELLED)
//	                        ResultAck ▶ forget result, delete build dir lazily
//
// After each Welcome the Client drops the attempts the metaserver no longer
// wants (Welcome.drop_attempt_ids), resends every kept attempt's log from
// offset 0 (the metaserver ignores what it already has) and resends every
// unacknowledged result. Results are written to DATA_DIR/results/<id>.pb
// before they are sent, so they also survive a restart of the build server.
//
// # Attempt
//
//	Assignment ─▶ policy check ─▶ FETCHING ─▶ BUILDING ─▶ CHECKING ─▶ PACKING ─▶ UPLOADING ─▶ SUCCEEDED
//	                  │              │            │            │           │           │
//	                  ▼              ▼            ▼            ▼           ▼           ▼
//	              REFUSED      SETUP_FAILED   FAILED / TIMED_OUT / SETUP_FAILED   SETUP_FAILED
//
// Any phase ends CANCELLED when the metaserver cancels the attempt, and
// RETURNED when the build server stops before the attempt finished.
//
// Before the steps, the target's files (CMake toolchain and Meson cross
// files, musl's kernel-header links; sysinfo.TargetSpec.Files) are written
// under $HOME/.kiln and named in the steps' environment, with KILN_JOBS,
// KILN_BUILD_TRIPLE and KILN_HOST_TRIPLE (stepEnv). Before packing, every
// ELF file of the artifact, and every ELF member of a static archive, must
// be for the target's measured machine, class, byte order and libc
// (checkArtifactELF); anything else ends the attempt FAILED with the file
// and both identities named.
//
// # Data directory
//
//	DATA_DIR/
//	  mirrors/<sha256(git url)[:16]>/  bare mirror, reused by every build of a project
//	  ccache/<sha256(git url)[:16]>/<target>/  the compiler cache of the
//	            project for one target (compilerCaches), bound at
//	            /tmp/kiln/ccache while a build of theirs runs
//	  builds/<attempt id>/
//	    src/    the source tree; the steps' working directory
//	    dest/   $KILN_DESTDIR
//	    home/   $HOME of the steps; home/.kiln holds the target's files
//	    log     the build log, kept until the result is acknowledged
//	    artifact.tar.gz
//	    result.tmp  the result, before it is renamed into results/
//	  results/<attempt id>.pb    AttemptResult not yet acknowledged
//	  spare/ready-<n>/  build directories prepared in advance (same layout,
//	            empty directories; a recycled one's files still hold an
//	            earlier build's content, which each writer writes over and
//	            cuts to its length), renamed to builds/<attempt id> when one
//	            starts
//	  spare/tree-<n>/   the same, but src holds, exactly as exported, the
//	            source tree of a commit a finished build left untouched:
//	            taken by the next build of that commit, which exports nothing
//	  trash/    build directories waiting for background deletion
//
// Files are created off the critical path where possible (creating an inode
// costs about 0.25 ms on the project's disk): the janitor prepares spare
// build directories and empties the trash in the background; result files
// are written without fsync (see resultStore.save for why that is safe).
// Small source trees of recent commits are kept in memory (treeCache), and
// a finished build's untouched source tree is kept in its recycled build
// directory (buildDirs.recycle), so repeated builds of one commit (the same
// source with other options) start no git process and create no files.
// Once no build has run for a second, the build server returns its free
// memory to the operating system (idleTrimmer).
package worker
