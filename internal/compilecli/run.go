package compilecli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kilnbuild/kiln/internal/config"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// rpcTimeout bounds each unary RPC (Submit resolves revisions in the
// metaserver's git mirror, which may fetch).
const rpcTimeout = 2 * time.Minute

// Env is what Run needs from the process. The zero value of every field but
// Measure has a usable default.
type Env struct {
	// Stdout receives results (text or JSON); Stderr progress and errors.
	Stdout, Stderr io.Writer
	// Getenv reads the environment (KILN_METASERVER); default os.Getenv.
	Getenv func(string) string
	// Measure returns this machine's system info. It is called only when a
	// default platform constraint needs it, before the Submit RPC, so it must
	// be fast. nil leaves the defaults free.
	Measure func(context.Context) (*kilnv1.SystemInfo, error)
	// Limits bounds downloads; the zero value means DefaultLimits.
	Limits Limits
	// Terminal reports whether a writer is a terminal: a download then
	// shows a bar redrawn in place with its rate and time left, otherwise
	// plain progress lines. Default: whether it is a character device.
	Terminal func(io.Writer) bool
}

func (e *Env) fill() {
	if e.Stdout == nil {
		e.Stdout = os.Stdout
	}
	if e.Stderr == nil {
		e.Stderr = os.Stderr
	}
	if e.Getenv == nil {
		e.Getenv = os.Getenv
	}
	if e.Terminal == nil {
		e.Terminal = isTerminal
	}
	if e.Limits == (Limits{}) {
		e.Limits = DefaultLimits
	}
}

const topUsage = `usage:
  startcompile [flags] EMAIL                      request a build
  startcompile status [flags] BUILD_ID            show or follow a build
  startcompile cancel --email EMAIL BUILD_ID      withdraw your wait (the last one cancels the build)
  startcompile log [-f|--follow] BUILD_ID            print a build's log
  startcompile check [flags] EMAIL                build on every connected platform
  startcompile verify [flags] PATH                check a download's signatures and log proofs
                                                  (exit 0 verified, 1 a check failed, 3 cannot check)

Run "startcompile -h" or "startcompile COMMAND -h" for the flags; they may
come before or after the command's name.
Exit status: 0 success, 1 build failed, 2 invalid request, 3 infrastructure error.
`

// Run executes the startcompile command line args (without the program
// name) and returns the exit status. It never calls os.Exit. Cancelling ctx
// (a signal) stops any wait and exits with ExitInfra. Flags may come before
// a command's name as well as after it: "--metaserver ADDR status 5" is
// "status --metaserver ADDR 5".
func Run(ctx context.Context, env Env, args []string) int {
	env.fill()
	name, rest := findCommand(args, env.Getenv)
	switch name {
	case "status":
		return runStatus(ctx, env, rest)
	case "cancel":
		return runCancel(ctx, env, rest)
	case "log":
		return runLog(ctx, env, rest)
	case "check":
		return runCheck(ctx, env, rest)
	case "verify":
		return runVerify(ctx, env, rest)
	case "help":
		fmt.Fprint(env.Stdout, topUsage)
		return ExitOK
	}
	return runSubmit(ctx, env, args)
}

// parseCommand parses args into the options behind fs and returns the
// positional arguments. It reports (nil, code, true) when the command is
// done already: help was asked for or the command line is malformed.
func parseCommand(env Env, fs *flag.FlagSet, synopsis string, args []string, npos int) ([]string, int, bool) {
	pos, err := parseInterspersed(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		usage(env.Stdout, synopsis, fs)
		return nil, ExitOK, true
	}
	if err == nil {
		err = misplacedCommand(pos, synopsis)
	}
	if err == nil && len(pos) != npos {
		err = usageError("want %d positional argument(s) (%s), got %d", npos, synopsis, len(pos))
	}
	if err == nil {
		if aerr := config.AbsPaths(fs, "ca", "download"); aerr != nil {
			err = usageError("%v", aerr)
		}
	}
	if err != nil {
		fmt.Fprintf(env.Stderr, "startcompile: %s\nusage: %s (-h for the flags)\n", describeError(err), synopsis)
		return nil, ExitInvalid, true
	}
	return pos, 0, false
}

// finish reports err on stderr, prints res as JSON when asked, and returns
// the exit status.
func finish(env Env, asJSON bool, res *Result, err error) int {
	code := ExitCode(err)
	if err != nil {
		msg := describeError(err)
		fmt.Fprintf(env.Stderr, "startcompile: %s\n", msg)
		if res != nil {
			res.Error = msg
		}
	}
	if asJSON && res != nil {
		res.ExitCode = code
		if werr := res.write(env.Stdout); werr != nil && code == ExitOK {
			code = ExitInfra
		}
	}
	return code
}

// withTimeout returns ctx bounded by d, or ctx itself when d is 0.
func withTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if d <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}

// waitError explains an error from waiting on build id when the wait ran
// out of time.
func waitError(ctx context.Context, id uint64, timeout time.Duration, last *kilnv1.Build, err error) error {
	// The RPC may report the deadline (the server resets the stream when the
	// propagated deadline passes) a moment before ctx's own timer fires.
	if errors.Is(ctx.Err(), context.DeadlineExceeded) || (timeout > 0 && status.Code(err) == codes.DeadlineExceeded) {
		state := "unknown"
		if last != nil {
			state = last.GetState().Word()
		}
		return fmt.Errorf("gave up after --timeout %s, build %d is %s: %w", timeout, id, state, context.DeadlineExceeded)
	}
	return err
}
