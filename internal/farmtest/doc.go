// Package farmtest runs the real Kiln programs (metaserver, buildserver,
// startcompile, webstatus) on loopback for end-to-end tests, in the manner
// of etcd's e2e framework.
//
// # Pieces
//
//   - Binaries builds the four programs once per test process with `go build`
//     and returns their paths; Binary builds just one.
//   - Process runs one program with its output in a log file, stops it by
//     PID (SIGTERM, bounded wait, SIGKILL), restarts it with the same
//     arguments, and prints the tail of its log when the test fails.
//   - Farm wires a metaserver, build servers, a webstatus and startcompile
//     runs together in the test's temporary directories and waits for each
//     to be ready by polling with a deadline.
//   - CProject and Commit make real git repositories with a small C project
//     to build.
//
// # Rules the package keeps
//
// Every address is 127.0.0.1. Every process a test starts is registered with
// t.Cleanup and stopped by its PID (its process group, so that its children
// go too). Every wait is a poll with a deadline (Eventually); nothing sleeps
// to synchronize.
//
// A minimal test:
//
//	func TestBuild(t *testing.T) {
//		f := farmtest.New(t)
//		f.StartMetaserver()
//		dir, head := farmtest.CProject(t, farmtest.CProjectOptions{Manifest: true})
//		f.AddProject("hello", "file://"+dir)
//		f.StartBuildserver(f.AddBuildServer("bs1"), "--sandbox", "none")
//		f.WaitBuildServers(1)
//		r := f.Startcompile("--project", "hello", "--revision", head, "--wait", "me@example.com")
//		if r.Exit != 0 { t.Fatalf("startcompile: %d\n%s", r.Exit, r.Stderr) }
//	}
//
// Test packages that use Binaries should call Main from TestMain so the
// built programs are removed when the test binary exits; without it they are
// removed by the next test process that builds them.
package farmtest
