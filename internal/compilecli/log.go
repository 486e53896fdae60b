package compilecli

import (
	"context"
	"errors"
	"fmt"
	"io"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

const logSynopsis = "startcompile log [-f|--follow] BUILD_ID"

func runLog(ctx context.Context, env Env, args []string) int {
	var o LogOptions
	fs := LogFlags(&o, env.Getenv)
	pos, code, done := parseCommand(env, fs, logSynopsis, args, 1)
	if done {
		return code
	}
	id, err := parseBuildID(pos[0])
	if err != nil {
		return finish(env, false, nil, err)
	}
	o.BuildID = id
	if err := o.Validate(); err != nil {
		return finish(env, false, nil, err)
	}
	return finish(env, false, nil, printLog(ctx, env, &o))
}

// printLog copies the build's log to stdout, byte for byte.
func printLog(ctx context.Context, env Env, o *LogOptions) error {
	conn, err := Dial(ctx, o.Connection)
	if err != nil {
		return err
	}
	defer conn.Close()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := kilnv1.NewCompileServiceClient(conn).GetLog(sctx, &kilnv1.GetLogRequest{BuildId: o.BuildID, Follow: o.Follow})
	if err != nil {
		return err
	}
	var next uint64
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		data := m.GetData()
		if m.GetOffset() < next { // overlapping chunk: keep only the new bytes
			skip := next - m.GetOffset()
			if skip >= uint64(len(data)) {
				continue
			}
			data = data[skip:]
		}
		if _, err := env.Stdout.Write(data); err != nil {
			return fmt.Errorf("writing the log: %w", err)
		}
		next = max(next, m.GetOffset()) + uint64(len(data))
	}
}
