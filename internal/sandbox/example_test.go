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
	err = runner.Run(context.Background(), sandbox.Step{
		Name:    "check",
		Command: "echo testing; exit 2",
		Dir:     dir,
		Env:     []string{"PATH=/usr/bin:/bin"},
		Output:  os.Stdout,
		Timeout: time.Minute,
		Limits:  sandbox.Limits{Processes: 256, FileSizeBytes: 1 << 30},
	})
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
