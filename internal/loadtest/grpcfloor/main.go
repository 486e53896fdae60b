// Command grpcfloor is the least a new Go process does to have a build run
// through Kiln's protocol: it connects as startcompile does
// (compilecli.Dial: the same options, codec and wait for a ready
// connection), sends the Submit the load test's harness sends, follows the
// build with WatchBuild (no log) until a final state, closes the
// connection and exits. No flags, no measurement of the machine, no log,
// no output. The noop scenario times it beside `startcompile --wait` and
// the harness's own build (issue 20): what it costs beyond its own
// start-up and the harness's build is what any one-shot client process
// built on grpc-go pays on this machine, and startcompile's figure beyond
// it is what startcompile itself adds.
//
// Usage (by the load test only):
//
//	grpcfloor ADDR REQUEST    REQUEST: a SubmitRequest, protobuf in base64
//	grpcfloor -startup        exit once the process has started (its start-up)
package main

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/kilnbuild/kiln/internal/compilecli"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

func main() {
	if len(os.Args) == 2 && os.Args[1] == "-startup" {
		return
	}
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: grpcfloor ADDR REQUEST | grpcfloor -startup")
		os.Exit(2)
	}
	if err := run(os.Args[1], os.Args[2]); err != nil {
		fmt.Fprintln(os.Stderr, "grpcfloor:", err)
		os.Exit(1)
	}
}

func run(addr, request string) error {
	raw, err := base64.StdEncoding.DecodeString(request)
	if err != nil {
		return fmt.Errorf("request: %w", err)
	}
	req := &kilnv1.SubmitRequest{}
	if err := req.UnmarshalVT(raw); err != nil {
		return fmt.Errorf("request: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := compilecli.Dial(ctx, compilecli.Connection{Metaserver: addr, DialTimeout: 10 * time.Second})
	if err != nil {
		return err
	}
	defer conn.Close()
	c := kilnv1.NewCompileServiceClient(conn)
	resp, err := c.Submit(ctx, req)
	if err != nil {
		return fmt.Errorf("submit: %w", err)
	}
	if resp.GetCached() || resp.GetJoined() {
		return fmt.Errorf("build %d: cached=%v joined=%v; want a new build", resp.GetBuild().GetId(), resp.GetCached(), resp.GetJoined())
	}
	stream, err := c.WatchBuild(ctx, &kilnv1.WatchBuildRequest{BuildId: resp.GetBuild().GetId(), LogOffset: -1})
	if err != nil {
		return fmt.Errorf("watch: %w", err)
	}
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return errors.New("watch ended before a final state")
		}
		if err != nil {
			return fmt.Errorf("watch: %w", err)
		}
		if b := msg.GetBuild(); b.GetState().Final() {
			if b.GetState() != kilnv1.BuildState_BUILD_STATE_SUCCEEDED {
				return fmt.Errorf("build %d: %s", b.GetId(), b.GetState())
			}
			return nil
		}
	}
}
