package compilecli

import (
	"context"
	"fmt"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

const cancelSynopsis = "startcompile cancel --email EMAIL BUILD_ID"

func runCancel(ctx context.Context, env Env, args []string) int {
	var o CancelOptions
	fs := CancelFlags(&o, env.Getenv)
	pos, code, done := parseCommand(env, fs, cancelSynopsis, args, 1)
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
	return finish(env, false, nil, cancelBuild(ctx, env, &o))
}

// cancelBuild runs a validated cancel command: it withdraws the wait of
// o.Email on the build and prints what became of the build (cancelled when
// that was its last waiter, otherwise going on for the others).
func cancelBuild(ctx context.Context, env Env, o *CancelOptions) error {
	conn, err := Dial(ctx, o.Connection)
	if err != nil {
		return err
	}
	defer conn.Close()
	rctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	defer cancel()
	resp, err := kilnv1.NewCompileServiceClient(conn).Cancel(rctx, &kilnv1.CancelRequest{BuildId: o.BuildID, Email: o.Email})
	if err != nil {
		return err
	}
	b := resp.GetBuild()
	switch {
	case b.GetState() == kilnv1.BuildState_BUILD_STATE_CANCELLED:
		fmt.Fprintf(env.Stdout, "build %d cancelled\n", o.BuildID)
	case b.GetState().Final():
		fmt.Fprintf(env.Stdout, "build %d %s; your wait is withdrawn: no mail follows\n", o.BuildID, b.GetState().Word())
	default:
		fmt.Fprintf(env.Stdout, "build %d %s; your wait is withdrawn: it goes on for its other requesters, no mail follows for you\n",
			o.BuildID, b.GetState().Word())
	}
	return nil
}
