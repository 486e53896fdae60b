package mail

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"time"

	"github.com/kilnbuild/kiln/internal/store"
)

// defaultCommandTimeout bounds one hook command.
const defaultCommandTimeout = 30 * time.Second

// commandWaitDelay is how long a killed command's pipes may stay open
// (held by a grandchild) before Wait gives up on them.
const commandWaitDelay = 2 * time.Second

// maxCommandOutput is how much of a command's output is kept for the log
// and last_error.
const maxCommandOutput = 4 << 10

// ErrCommandTimeout is wrapped by a hook command's error when it ran out of
// SenderConfig.CommandTimeout and was killed.
var ErrCommandTimeout = errors.New("hook command timed out")

// runCommand runs record r's command with its body on stdin; nil means it
// exited 0 within the time limit. The command runs in its own process
// group, killed as a whole on timeout.
func (s *Sender) runCommand(ctx context.Context, r *store.Outbox) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.CommandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", r.GetTo())
	cmd.Stdin = bytes.NewReader(r.GetBody())
	var out limitedBuffer
	out.max = maxCommandOutput
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Env = append(os.Environ(),
		"KILN_EVENT="+headerSafe(r.GetSubject()),
		"KILN_BUILD_ID="+strconv.FormatUint(r.GetBuildId(), 10),
		"KILN_DELIVERY="+strconv.FormatUint(r.GetId(), 10))
	cmd.WaitDelay = commandWaitDelay
	setProcessGroup(cmd)
	err := cmd.Run()
	if err == nil {
		return nil
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		err = fmt.Errorf("%w after %s: %w", ErrCommandTimeout, s.cfg.CommandTimeout, err)
	}
	if o := oneLine(out.String()); o != "" {
		return fmt.Errorf("command: %w; output: %s", err, truncate(o, 400))
	}
	return fmt.Errorf("command: %w", err)
}

// limitedBuffer keeps the first max bytes written to it and drops the rest.
type limitedBuffer struct {
	bytes.Buffer
	max int
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.Len(); room > 0 {
		b.Buffer.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}
