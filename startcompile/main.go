// Command startcompile asks a Kiln metaserver for a build of a registered
// project and, on request, follows it, downloads its artifact, or checks a
// revision on every connected platform. See internal/compilecli for the
// commands, flags and exit statuses.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/kilnbuild/kiln/internal/compilecli"
	"github.com/kilnbuild/kiln/internal/sysinfo"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := compilecli.Run(ctx, compilecli.Env{
		Stdout:  os.Stdout,
		Stderr:  os.Stderr,
		Getenv:  os.Getenv,
		Measure: sysinfo.LocalPinned,
	}, os.Args[1:])
	stop()
	os.Exit(code)
}
