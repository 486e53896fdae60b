package gitmirror

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
)

// maxStderr bounds how much of a git process's standard error is kept for
// error messages.
const maxStderr = 4 << 10

// gitEnv is the environment of every git process: the caller's environment
// without the variables that would redirect git to another repository or
// configuration, plus the variables that make git non-interactive and
// independent of the user's and the system's configuration.
var gitEnv = sync.OnceValue(func() []string {
	keep := map[string]bool{
		// Operators may need these to reach private remotes or to debug.
		"GIT_SSH": true, "GIT_SSH_COMMAND": true, "GIT_SSH_VARIANT": true,
		"GIT_PROXY_COMMAND": true, "GIT_SSL_CAINFO": true, "GIT_SSL_CAPATH": true,
		"GIT_TRACE": true, "GIT_TRACE_PACKET": true, "GIT_CURL_VERBOSE": true,
	}
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "GIT_") && !keep[name] {
			continue
		}
		if name == "LC_ALL" || name == "LANGUAGE" {
			continue
		}
		env = append(env, kv)
	}
	return append(env,
		"GIT_TERMINAL_PROMPT=0",
		"GIT_CONFIG_NOSYSTEM=1",
		"GIT_CONFIG_GLOBAL=/dev/null",
		"GIT_ATTR_NOSYSTEM=1",
		"GIT_ASKPASS=true", // answers every credential prompt with nothing
		"LC_ALL=C",         // stable messages in errors
	)
})

// baseArgs come before every git subcommand: they hold regardless of any
// repository configuration.
var baseArgs = []string{
	"-c", "protocol.ext.allow=never",
	"-c", "core.askPass=true",
	"-c", "credential.helper=",
	"-c", "gc.autoDetach=false", // no background gc outliving the call
	// Never run a program a repository's files name: no hooks (a build
	// that could write a mirror could plant one, run by the build server at
	// the next fetch), no file-system monitor.
	"-c", "core.hooksPath=/dev/null",
	"-c", "core.fsmonitor=false",
}

// gitError is a failed git process: its arguments, exit error and the start
// of its standard error.
type gitError struct {
	args   []string
	err    error
	stderr string
}

func (e *gitError) Error() string {
	msg := strings.TrimSpace(e.stderr)
	if msg == "" {
		return fmt.Sprintf("git %s: %v", strings.Join(e.args, " "), e.err)
	}
	return fmt.Sprintf("git %s: %v: %s", strings.Join(e.args, " "), e.err, msg)
}

// subcommand returns the git subcommand in args, past any "-c name=value".
func subcommand(args []string) string {
	for i := 0; i < len(args); i++ {
		if args[i] == "-c" {
			i++
			continue
		}
		return args[i]
	}
	return "git"
}

func (e *gitError) Unwrap() error { return e.err }

// exitCode returns the exit status of a failed git process, or -1 when it
// did not exit normally (or err is not a git failure).
func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// boundedBuffer keeps the first max bytes written to it and drops the rest.
type boundedBuffer struct {
	buf bytes.Buffer
	max int
}

func (b *boundedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.buf.Len(); room > 0 {
		if len(p) > room {
			b.buf.Write(p[:room])
		} else {
			b.buf.Write(p)
		}
	}
	return len(p), nil
}

// command prepares a git process. gitDir, when not empty, is passed as
// --git-dir. The caller wires stdin/stdout; stderr is captured into the
// returned buffer for gitErr.
func command(ctx context.Context, gitDir string, args ...string) (*exec.Cmd, *boundedBuffer) {
	full := make([]string, 0, len(baseArgs)+2+len(args))
	full = append(full, baseArgs...)
	if gitDir != "" {
		full = append(full, "--git-dir="+gitDir)
	}
	full = append(full, args...)
	cmd := exec.CommandContext(ctx, "git", full...)
	cmd.Env = gitEnv()
	stderr := &boundedBuffer{max: maxStderr}
	cmd.Stderr = stderr
	return cmd, stderr
}

// gitErr turns a process failure into an error. A cancelled or expired
// context wins over the exit status, so callers can tell cancellation from
// git's own verdict.
func gitErr(ctx context.Context, args []string, err error, stderr *boundedBuffer) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("git %s: %w", subcommand(args), ctxErr)
	}
	return &gitError{args: args, err: err, stderr: stderr.buf.String()}
}

// run runs git with optional stdin and returns its standard output.
func run(ctx context.Context, gitDir string, stdin io.Reader, args ...string) ([]byte, error) {
	cmd, stderr := command(ctx, gitDir, args...)
	cmd.Stdin = stdin
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), gitErr(ctx, args, err, stderr)
	}
	return stdout.Bytes(), nil
}
