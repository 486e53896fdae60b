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
// With -relay it asks the load test's relay instead (the best case of a
// local agent: a running process with the connection already open) over
// a unix socket, and opens no gRPC connection at all.
//
// Usage (by the load test only):
//
//	grpcfloor ADDR REQUEST           REQUEST: a SubmitRequest, protobuf in base64
//	grpcfloor -relay SOCKET REQUEST  the same through the relay at SOCKET
//	grpcfloor -startup               exit once the process has started (its start-up)
package main

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/kilnbuild/kiln/internal/compilecli"
	"github.com/kilnbuild/kiln/internal/loadtest/relaywire"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

func main() {
	if len(os.Args) == 2 && os.Args[1] == "-startup" {
		return
	}
	var err error
	switch {
	case len(os.Args) == 4 && os.Args[1] == "-relay":
		err = viaRelay(os.Args[2], os.Args[3])
	case len(os.Args) == 3:
		err = run(os.Args[1], os.Args[2])
	default:
		fmt.Fprintln(os.Stderr, "usage: grpcfloor ADDR REQUEST | grpcfloor -relay SOCKET REQUEST | grpcfloor -startup")
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "grpcfloor:", err)
		os.Exit(1)
	}
}

// decodeRequest reads the base64 SubmitRequest of the command line.
func decodeRequest(request string) (*kilnv1.SubmitRequest, []byte, error) {
	raw, err := base64.StdEncoding.DecodeString(request)
	if err != nil {
		return nil, nil, fmt.Errorf("request: %w", err)
	}
	req := &kilnv1.SubmitRequest{}
	if err := req.UnmarshalVT(raw); err != nil {
		return nil, nil, fmt.Errorf("request: %w", err)
	}
	return req, raw, nil
}

// final checks a final state: only a success ends the run well.
func final(b *kilnv1.Build) error {
	if b.GetState() != kilnv1.BuildState_BUILD_STATE_SUCCEEDED {
		return fmt.Errorf("build %d: %s", b.GetId(), b.GetState())
	}
	return nil
}

// viaRelay sends the request to the relay at socket and reads states
// until a final one.
func viaRelay(socket, request string) error {
	_, raw, err := decodeRequest(request)
	if err != nil {
		return err
	}
	conn, err := net.Dial("unix", socket)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		return err
	}
	if err := relaywire.Write(conn, raw); err != nil {
		return fmt.Errorf("relay: %w", err)
	}
	for {
		msg, err := relaywire.Read(conn)
		if errors.Is(err, io.EOF) {
			return errors.New("relay ended before a final state")
		}
		if err != nil {
			return fmt.Errorf("relay: %w", err)
		}
		resp := &kilnv1.WatchBuildResponse{}
		if err := resp.UnmarshalVT(msg); err != nil {
			return fmt.Errorf("relay: %w", err)
		}
		if b := resp.GetBuild(); b.GetState().Final() {
			return final(b)
		}
	}
}

func run(addr, request string) error {
	req, _, err := decodeRequest(request)
	if err != nil {
		return err
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
			return final(b)
		}
	}
}
