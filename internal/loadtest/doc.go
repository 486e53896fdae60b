// Command loadtest is Kiln's load harness (issue 9): it starts the real
// programs (metaserver, buildserver, startcompile, built from this
// repository into a temporary directory, or taken from --bin DIR) on free
// loopback ports with their data in a temporary directory, drives them with
// real build servers or with simulated ones that speak the real gRPC
// protocol over their own connections, and prints every figure beside its
// target, the command that produced it and, where a figure is a share of
// what the machine can do, the machine's own bound measured in the same run.
//
// Usage:
//
//	go run ./internal/loadtest SCENARIO [flags]
//
// Scenarios: noop, throughput, sim, cachehit, idle, rest, upload, download,
// and all (each in turn). `go run ./internal/loadtest` without arguments
// lists them with every flag. BENCHMARKS.md records the figures.
//
// # Processes
//
// Every process the harness starts runs in its own process group, dies with
// the harness (Pdeathsig) and is stopped by its PID (SIGTERM, then SIGKILL
// of the group) when its scenario ends, on error, on timeout (--timeout) and
// on SIGINT/SIGTERM. Logs stay in the run directory, which is kept when a
// scenario fails or with --keep.
//
// # Simulated build servers
//
// A simulated build server has its own credential (created through the
// metaserver's AdminService on its unix socket, what `metaserver buildserver
// add` does while serve runs), its own gRPC connection and Session stream:
// Hello, Welcome, Heartbeats at the interval Welcome gives. On an
// Assignment it uploads a small artifact unique to the build through
// UploadArtifact and sends a SUCCEEDED AttemptResult; the build is complete
// when the ResultAck accepts it. Nothing inside the metaserver is bypassed.
//
// # Requests
//
// Each request sets the load project's int option n to a new value, so it
// is a distinct build (a cache miss), pins this machine's platform the way
// startcompile does by default, names the commit by its full id, and comes
// from its own requester address: the metaserver rate-limits each address
// (30 requests a minute), and a load test stands for many requesters.
//
// # Profiles
//
// With --pprof the harness builds metaserver and buildserver with an extra
// file added through `go build -overlay` (their sources are untouched) that
// serves net/http/pprof when KILN_PPROF_ADDR is set, and saves a CPU profile
// of each measuring window in the run directory with its top functions.
package main
