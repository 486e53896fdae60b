package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/jonboulle/clockwork"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kilnbuild/kiln/internal/store"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// When a build ends NOT_REPRODUCIBLE and diffoscope is on the metaserver's
// PATH, the metaserver runs it on the build's first two differing
// artifacts, after the final record is committed, in the background: never
// in a commit, never under s.mu. Its text report is kept in the store as
// the build's pseudo-log diffoscopeLog (GetLog with diffoscope set reads
// it). Without diffoscope nothing is run and nothing is kept.
//
// Bounds: one diffoscope at a time (diffoscopeSlot), at the lowest CPU
// priority (nice 19), in its own process group killed whole after
// Config.DiffoscopeTimeout, its output (stdout and stderr) cut at
// maxDiffoscopeReport bytes. The artifacts are copied from the blob store
// to a private temporary directory (0700) under fixed names, a.tar.gz and
// b.tar.gz, given after "--": nothing of an artifact reaches diffoscope's
// command line. The directory is removed when it ends.

// diffoscopeLog is the pseudo attempt number of the diffoscope report in
// the store's logs: above every attempt number (an attempt id keeps its
// number in 8 bits: attemptID).
const diffoscopeLog = 1 << 8

// maxDiffoscopeReport bounds the report kept, and defaultDiffoscopeTimeout
// the time diffoscope may run.
const (
	maxDiffoscopeReport      = 256 << 10
	defaultDiffoscopeTimeout = 60 * time.Second
)

// diffoscopeArgs are diffoscope's arguments, the artifacts' fixed names
// last, after "--".
var diffoscopeArgs = []string{"--text", "-", "--text-color", "never", "--no-progress",
	"--max-text-report-size", fmt.Sprint(maxDiffoscopeReport), "--", "a.tar.gz", "b.tar.gz"}

// diffoscopeLater runs diffoscope on the artifacts shaA and shaB of build
// id in the background when it is installed, and stores its report. Call
// it once the build's final record is committed, from the committer (s.bg
// is then above zero).
func (s *Server) diffoscopeLater(id uint64, shaA, shaB string) {
	bin, err := exec.LookPath("diffoscope")
	if err != nil || shaA == "" || shaB == "" {
		return
	}
	ctx := s.bgCtx
	if ctx == nil {
		return // not started: nothing would wait for it
	}
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		select {
		case s.diffoscopeSlot <- struct{}{}:
			defer func() { <-s.diffoscopeSlot }()
		case <-ctx.Done():
			return
		}
		report, err := s.diffoscope(ctx, bin, shaA, shaB)
		if ctx.Err() != nil {
			return // the metaserver stops: the report is not kept
		}
		if err != nil {
			s.log.Warn("diffoscope not run", "build_id", id, "err", err)
			return
		}
		if err := s.st.Update(func(tx store.Tx) error { return tx.PutLog(id, diffoscopeLog, report) }); err != nil {
			s.log.Warn("keeping the diffoscope report", "build_id", id, "err", err)
			return
		}
		s.log.Info("diffoscope report kept", "build_id", id, "bytes", len(report))
		s.changes.notify(id)
	}()
}

// diffoscope copies the two artifacts to a private directory, runs bin on
// them and returns its report, headed by what was compared and how it
// ended.
func (s *Server) diffoscope(ctx context.Context, bin, shaA, shaB string) ([]byte, error) {
	dir, err := os.MkdirTemp("", "kiln-diffoscope-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	for name, sha := range map[string]string{"a.tar.gz": shaA, "b.tar.gz": shaB} {
		if err := s.copyArtifact(ctx, sha, filepath.Join(dir, name)); err != nil {
			return nil, fmt.Errorf("copying artifact %s: %w", sha, err)
		}
	}
	timeout := s.cfg.DiffoscopeTimeout
	if timeout <= 0 {
		timeout = defaultDiffoscopeTimeout
	}
	out, ended := runDiffoscope(ctx, s.clock, bin, dir, timeout)
	head := fmt.Sprintf("diffoscope of a.tar.gz (%s) and b.tar.gz (%s): %s\n\n", shaA, shaB, ended)
	return append([]byte(head), out...), nil
}

// copyArtifact writes artifact sha to a new file path.
func (s *Server) copyArtifact(ctx context.Context, sha, path string) error {
	r, _, err := s.openArtifact(ctx, sha)
	if err != nil {
		return err
	}
	defer r.Close()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// runDiffoscope runs bin in dir at nice 19 in its own process group, killed
// whole after timeout on clock, and returns its output (at most
// maxDiffoscopeReport bytes) and how it ended.
func runDiffoscope(ctx context.Context, clock clockwork.Clock, bin, dir string, timeout time.Duration) ([]byte, string) {
	ctx, cancel := withTimeout(ctx, clock, timeout)
	defer cancel()
	name, args := bin, diffoscopeArgs
	if nice, err := exec.LookPath("nice"); err == nil {
		name, args = nice, append([]string{"-n", "19", bin}, diffoscopeArgs...)
	}
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "TMPDIR=" + dir, "LC_ALL=C.UTF-8"}
	out := &cappedBuffer{max: maxDiffoscopeReport}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	var ended string
	var exit *exec.ExitError
	switch {
	case ctx.Err() != nil:
		ended = "stopped after " + timeout.String()
	case err == nil:
		ended = "no differences (exit status 0)"
	case errors.As(err, &exit) && exit.ExitCode() == 1:
		ended = "differences found (exit status 1)"
	default:
		ended = "failed: " + err.Error()
	}
	if out.cut {
		ended += fmt.Sprintf("; output cut at %d bytes", maxDiffoscopeReport)
	}
	return out.buf.Bytes(), ended
}

// cappedBuffer keeps the first max bytes written to it and discards the
// rest (cut says whether it did), never failing a write: the writer is not
// stopped by a full buffer, only by its timeout.
type cappedBuffer struct {
	buf bytes.Buffer
	max int
	cut bool
}

func (c *cappedBuffer) Write(p []byte) (int, error) {
	if room := c.max - c.buf.Len(); room < len(p) {
		c.cut = true
		c.buf.Write(p[:max(room, 0)])
	} else {
		c.buf.Write(p)
	}
	return len(p), nil
}

// sendDiffoscope sends build id's diffoscope report from offset (nothing
// when it has none).
func (s *Server) sendDiffoscope(stream kilnv1.CompileService_GetLogServer, id, offset uint64) error {
	if _, err := s.build(id); err != nil {
		return buildError(id, err)
	}
	data, _, err := s.logs.stored(id, diffoscopeLog)
	if err != nil {
		return status.Errorf(codes.Internal, "reading the diffoscope report: %v", err)
	}
	for offset < uint64(len(data)) {
		chunk := window(data, offset, logChunkOut)
		if err := stream.Send(&kilnv1.GetLogResponse{Offset: offset, Data: chunk}); err != nil {
			return err
		}
		offset += uint64(len(chunk))
	}
	return nil
}
