// Package compilecli is the startcompile command: it asks a Kiln metaserver
// for builds through CompileService, follows them, downloads and unpacks
// their artifacts, and runs matrix checks across every platform the
// connected build servers offer. The program in startcompile/ only wires
// the process (signals, stdio, the local system prober) to Run.
//
// # Commands
//
//	startcompile [flags] EMAIL                   submit one request
//	startcompile status [flags] BUILD_ID         show (or follow) a build
//	startcompile cancel --email EMAIL BUILD_ID   withdraw your wait on a build
//	startcompile log [-f|--follow] BUILD_ID      print a build's log
//	startcompile check [flags] EMAIL             build one revision on every platform
//
// cancel withdraws only the caller's own wait: the build goes on while
// another requester waits on it, and is cancelled when nobody does.
//
// Flags and positional arguments may be mixed; "--" ends the flags.
//
// # Platform constraints
//
// A request pins os, arch, endian, data model and libc to the values measured
// on this machine (sysinfo.LocalPinned) unless the matching flag says otherwise;
// "any" frees a field. libc version, compiler and compiler version are free
// unless given.
//
// # Exit status
//
//	0  the build succeeded, or (without --wait) the request was accepted
//	1  the build failed or was cancelled
//	2  the request was invalid or refused (bad flag or option, unknown
//	   project, permission denied, quota): the server's message is printed
//	3  infrastructure trouble: metaserver unreachable, deadline exceeded,
//	   internal error, build state ERROR, artifact that fails verification
//
// Progress goes to stderr, results to stdout; --json replaces the stdout text
// by one JSON object (see Result).
package compilecli
