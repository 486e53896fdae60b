package farmtest

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"testing"
)

// helperEnv selects a helper-child behaviour when the test binary is
// re-executed as a program under test.
const helperEnv = "FARMTEST_HELPER"

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(helper(mode))
	}
	Main(m)
}

// helper is the child program: it prints "ready" and then behaves as mode
// says.
func helper(mode string) int {
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	switch mode {
	case "serve": // graceful on SIGTERM
		fmt.Println("ready")
		<-term
		fmt.Println("terminated gracefully")
		return 0
	case "stubborn": // ignores SIGTERM
		fmt.Println("ready")
		for range term {
			fmt.Println("ignoring SIGTERM")
		}
		return 0
	case "exit3":
		fmt.Fprintln(os.Stderr, "failing on purpose")
		return 3
	case "parent": // starts a grandchild and waits
		c := exec.Command("sleep", "1000")
		if err := c.Start(); err != nil {
			fmt.Println("start:", err)
			return 1
		}
		fmt.Printf("ready child=%d\n", c.Process.Pid)
		<-term
		return 0 // leaves the grandchild behind on purpose
	}
	fmt.Fprintln(os.Stderr, "unknown helper mode", mode)
	return 2
}
