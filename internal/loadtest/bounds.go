package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"syscall"
	"time"

	"google.golang.org/grpc"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// diskWriteBound measures this disk's own throughput for what the
// metaserver does with an upload: write size bytes in 1 MiB chunks to a new
// file in dir, fsync, close. The file is removed afterwards.
func diskWriteBound(dir string, size int64) (float64, error) {
	block := make([]byte, 1<<20)
	if _, err := rand.Read(block); err != nil {
		return 0, err
	}
	f, err := os.CreateTemp(dir, ".loadtest-disk-bound-")
	if err != nil {
		return 0, err
	}
	defer os.Remove(f.Name())
	t0 := time.Now()
	for written := int64(0); written < size; written += int64(len(block)) {
		if _, err := f.Write(block[:min(int64(len(block)), size-written)]); err != nil {
			f.Close()
			return 0, err
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return 0, err
	}
	if err := f.Close(); err != nil {
		return 0, err
	}
	return mbps(size, time.Since(t0)), nil
}

// bulkServeCommand is the hidden subcommand that runs the raw gRPC bulk
// server in its own process (the harness re-executes itself), so the bound
// crosses processes exactly as a download from the metaserver does.
const bulkServeCommand = "bulk-serve"

// bulkDesc is a one-method gRPC service streaming data chunks in the very
// message the metaserver's DownloadArtifact streams
// (kiln.v1.DownloadArtifactResponse), so the bound and the figure differ
// only in what the metaserver does besides gRPC: store lookup, disk read,
// sha256 verification. The request's build_id is the size in MiB.
var bulkDesc = grpc.ServiceDesc{
	ServiceName: "kiln.loadtest.Bulk",
	HandlerType: (*any)(nil),
	Streams: []grpc.StreamDesc{{
		StreamName:    "Download",
		ServerStreams: true,
		Handler: func(_ any, stream grpc.ServerStream) error {
			req := new(kilnv1.DownloadArtifactRequest)
			if err := stream.RecvMsg(req); err != nil {
				return err
			}
			block := make([]byte, 1<<20)
			if _, err := rand.Read(block); err != nil {
				return err
			}
			for range req.GetBuildId() {
				if err := stream.SendMsg(&kilnv1.DownloadArtifactResponse{Msg: &kilnv1.DownloadArtifactResponse_Data{Data: block}}); err != nil {
					return err
				}
			}
			return nil
		},
	}},
}

// bulkServe runs the bulk server until killed.
func bulkServe(args []string) int {
	fs := flag.NewFlagSet(bulkServeCommand, flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "address")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	gs := grpc.NewServer()
	gs.RegisterService(&bulkDesc, struct{}{})
	if err := gs.Serve(ln); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// startBulkServer starts the bulk server as a child process.
func startBulkServer(ctx context.Context, dir string) (string, *proc, error) {
	self, err := os.Executable()
	if err != nil {
		return "", nil, err
	}
	addr, err := freeAddr()
	if err != nil {
		return "", nil, err
	}
	p, err := procs.start(dir, "bulk-server", self, nil, bulkServeCommand, "--listen", addr)
	if err != nil {
		return "", nil, err
	}
	err = pollUntil(ctx, readyTimeout, func() error {
		if !p.running() {
			return p.exitError()
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	})
	return addr, p, err
}

// bulkBound measures raw loopback gRPC streaming of sizeMiB MiB from the
// bulk server at addr, in MB/s.
func bulkBound(ctx context.Context, addr string, sizeMiB int) (float64, error) {
	conn, err := dialLoopback(addr)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	t0 := time.Now()
	stream, err := conn.NewStream(ctx, &bulkDesc.Streams[0], "/kiln.loadtest.Bulk/Download")
	if err != nil {
		return 0, err
	}
	if err := stream.SendMsg(&kilnv1.DownloadArtifactRequest{What: &kilnv1.DownloadArtifactRequest_BuildId{BuildId: uint64(sizeMiB)}}); err != nil {
		return 0, err
	}
	if err := stream.CloseSend(); err != nil {
		return 0, err
	}
	var got int64
	for {
		msg := new(kilnv1.DownloadArtifactResponse)
		err := stream.RecvMsg(msg)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return 0, err
		}
		got += int64(len(msg.GetData()))
	}
	if want := int64(sizeMiB) << 20; got != want {
		return 0, fmt.Errorf("bulk: got %d bytes, want %d", got, want)
	}
	return mbps(got, time.Since(t0)), nil
}

// bwrapBound measures the machine's own cost of one bubblewrap sandbox
// running `true`, with the options ENVIRONMENT.md lists (every namespace
// unshared, read-only root, fresh /dev, /proc and /tmp, a writable build
// directory): the floor under any sandboxed step. Returns the runs' times.
func bwrapBound(ctx context.Context, dir string, runs int) (*durations, error) {
	build, err := os.MkdirTemp(dir, "bwrap-bound-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(build)
	var ds durations
	for range runs {
		cmd := exec.CommandContext(ctx, "bwrap", "--unshare-all", "--die-with-parent", "--new-session",
			"--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
			"--bind", build, "/tmp/build", "--chdir", "/tmp/build", "true")
		t0 := time.Now()
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("bwrap: %w: %s", err, out)
		}
		ds.add(time.Since(t0))
	}
	return &ds, nil
}

// fsyncBound measures one small durable write on the filesystem of dir:
// write 4 KiB at the end of a file and fdatasync it, as a bbolt commit
// does at least once. Returns the runs' times.
func fsyncBound(dir string, runs int) (*durations, error) {
	f, err := os.CreateTemp(dir, ".loadtest-fsync-bound-")
	if err != nil {
		return nil, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	page := make([]byte, 4096)
	var ds durations
	for range runs {
		t0 := time.Now()
		if _, err := f.Write(page); err != nil {
			return nil, err
		}
		if err := syscall.Fdatasync(int(f.Fd())); err != nil {
			return nil, err
		}
		ds.add(time.Since(t0))
	}
	return &ds, nil
}
