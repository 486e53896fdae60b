package main

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// blockingCompile is a metaserver whose one build runs forever: its log
// follow never ends on its own.
type blockingCompile struct {
	kilnv1.UnimplementedCompileServiceServer
}

func (blockingCompile) GetBuild(_ context.Context, req *kilnv1.GetBuildRequest) (*kilnv1.GetBuildResponse, error) {
	return &kilnv1.GetBuildResponse{Build: &kilnv1.Build{Id: req.GetBuildId(), Project: "p", State: kilnv1.BuildState_BUILD_STATE_RUNNING}}, nil
}

func (blockingCompile) GetLog(req *kilnv1.GetLogRequest, s grpc.ServerStreamingServer[kilnv1.GetLogResponse]) error {
	if err := s.Send(&kilnv1.GetLogResponse{Data: []byte("first line\n")}); err != nil {
		return err
	}
	<-s.Context().Done()
	return s.Context().Err()
}

func startMetaserver(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	kilnv1.RegisterCompileServiceServer(gs, blockingCompile{})
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	return lis.Addr().String()
}

func TestShutdownEndsFollowedLogsPromptly(t *testing.T) {
	meta := startMetaserver(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := defaultConfig()
	cfg.Metaserver, cfg.Listen, cfg.ShutdownTimeout = meta, lis.Addr().String(), 20*time.Second
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, slog.New(slog.NewTextHandler(t.Output(), nil)), lis) }()

	base := "http://" + lis.Addr().String()
	resp, err := http.Get(base + "/build/1/log.txt?follow=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || line != "first line\n" {
		t.Fatalf("first line %q, %v", line, err)
	}
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("shutdown waited for a followed log")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("shutdown took %s", d)
	}
	if _, err := io.ReadAll(resp.Body); err == nil {
		t.Error("the followed raw log ended cleanly although its build never finished")
	}
}

// syncBuffer collects a child's output safely while it runs.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestSIGTERMStopsTheProgram runs the real binary and stops it by signal.
func TestSIGTERMStopsTheProgram(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "webstatus")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	cmd := exec.Command(bin, "--listen", addr)
	cmd.Env = append(os.Environ(), "KILN_METASERVER="+startMetaserver(t))
	logs := &syncBuffer{}
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill() // by PID; a no-op once it exited
	})

	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(body) != "ok\n" {
				t.Fatalf("healthz %q", body)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("webstatus never answered: %v\n%s", err, logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit: %v\n%s", err, logs.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("webstatus ignored SIGTERM\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "shutting down") {
		t.Errorf("no shutdown log line:\n%s", logs.String())
	}
}
