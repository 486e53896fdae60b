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
// # Data directory
//
//	DATA_DIR/
//	  mirrors/<sha256(git url)[:16]>/  bare mirror, reused by every build of a project
//	  builds/<attempt id>/
//	    src/    the source tree; the steps' working directory
//	    dest/   $KILN_DESTDIR
//	    home/   $HOME of the steps
//	    log     the build log, kept until the result is acknowledged
//	    artifact.tar.gz
//	  results/<attempt id>.pb    AttemptResult not yet acknowledged
//	  trash/    build directories waiting for background deletion
package worker
