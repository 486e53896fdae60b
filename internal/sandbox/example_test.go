package sandbox_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/kilnbuild/kiln/internal/sandbox"
)

func ExampleRunner() {
	dir, err := os.MkdirTemp("", "sandbox-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	// A buildserver picks Bwrap unless the volunteer chose --sandbox=none.
	var runner sandbox.Runner = sandbox.Bwrap{}
	if err := (sandbox.Bwrap{}).Available(); err != nil {
		runner = sandbox.Unsandboxed{}
	}
	step := sandbox.Step{
		Name:    "check",
		Command: "echo testing; exit 2",
		Dir:     dir,
		Env:     []string{"PATH=/usr/bin:/bin"},
		Output:  os.Stdout,
		Timeout: time.Minute,
		Limits:  sandbox.Limits{Processes: 256, FileSizeBytes: 1 << 30},
	}
	if os.Geteuid() == 0 {
		// Root never runs a step as itself: it names an unprivileged user,
		// which must own the build directory.
		step.User = &sandbox.User{UID: 1700000000, GID: 1700000000}
		if err := os.Chown(dir, 1700000000, 1700000000); err != nil {
			log.Fatal(err)
		}
	}
	err = runner.Run(context.Background(), step)
	var exit *sandbox.ExitError
	var setup *sandbox.SetupError
	switch {
	case errors.As(err, &exit):
		fmt.Println("build failed with status", exit.Code)
	case errors.As(err, &setup):
		fmt.Println("this build server is broken; retry elsewhere")
	case errors.Is(err, sandbox.ErrTimeout):
		fmt.Println("time limit reached")
	}
	// Output:
	// testing
	// build failed with status 2
}
