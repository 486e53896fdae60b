// Package web renders Kiln's public status pages: the farm overview, the build
// servers, the builds, one build with its attempts, its log (followed live
// while the build runs) and its artifact download, the projects with their
// commit × platform matrix, and status badges.
//
// The package holds no state of its own. Every request reads the metaserver
// through the StatusService and CompileService gRPC clients given to
// [NewHandler], so any number of webstatus processes may serve the same farm.
//
// # Pages
//
//	/, /metaserverstatus        the farm at a glance, with its charts of the last day
//	/buildservers               every build server, its targets and what it builds
//	/builds                     builds newest first; ?state= &project= &arch= &page_token=
//	/build/<id>                 one build: platform, options, attempts, waiting reasons
//	/build/<id>/log             the log as HTML; streams while the build runs
//	/build/<id>/log?snapshot=1  the log so far; a small script follows it over SSE
//	/build/<id>/log/events      the log as server-sent events (resumable by offset)
//	/build/<id>/log.txt         the raw log; ?follow=1 streams while the build runs
//	/build/<id>/artifact        the artifact as an attachment
//	/projects                   the projects of the newest builds, passing and broken
//	/project/<name>             recent commits × platforms, where it broke, how to build it,
//	                            build times per platform, pins
//	/project/<name>/feed.atom   an Atom feed of its finished builds, failures with their log's end
//	/badge/<name>.svg           an SVG status badge; ?platform=arch=s390x,...
//	/healthz                    "ok"
//
// Pages are rendered on the server with html/template and need no JavaScript;
// charts are inline SVG drawn on the server (chart.go), bounded in points and
// rows whatever the metaserver returns.
// Every page is also served as JSON when the request's Accept header names
// application/json: proto messages are encoded with protojson (proto field
// names), the rest with encoding/json under stable snake_case names. Badges
// are SVG whatever the Accept header.
//
// # Errors
//
// An unknown build is a 404 page, a malformed id or query parameter a 400, an
// unreachable metaserver a 503 with a message saying so, any other metaserver
// failure a 502. Once an artifact download or a streamed log has sent its
// headers, a failure aborts the response (the client sees a broken transfer,
// never a silently truncated success).
//
// # Privacy
//
// The metaserver never returns requesters' email addresses, and nothing here
// asks for them; the tests check that rendered pages contain none.
package web
