package compilecli

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/kilnbuild/kiln/internal/platform"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

const submitSynopsis = "startcompile [flags] EMAIL"

func runSubmit(ctx context.Context, env Env, args []string) int {
	var o SubmitOptions
	fs := SubmitFlags(&o, env.Getenv)
	pos, code, done := parseCommand(env, fs, submitSynopsis, args, 1)
	if done {
		return code
	}
	o.Email = pos[0]
	res := &Result{}
	if err := o.Validate(); err != nil {
		return finish(env, o.JSON, res, err)
	}
	return finish(env, o.JSON, res, submit(ctx, env, &o, res))
}

// submit runs a validated submit command, filling res.
func submit(ctx context.Context, env Env, o *SubmitOptions, res *Result) error {
	// Measure before dialing: both are needed, and a failing prober should
	// not cost a connection.
	var local *kilnv1.SystemInfo
	if o.Pin == "" && o.NeedsMeasure() && env.Measure != nil {
		var err error
		if local, err = env.Measure(ctx); err != nil {
			return fmt.Errorf("measuring this machine for the default platform constraints (pass --os/--arch/... explicitly to skip): %w", err)
		}
	}
	conn, err := dial(ctx, o.Connection)
	if err != nil {
		return err
	}
	defer conn.Close()
	client := kilnv1.NewCompileServiceClient(conn)

	if o.Pin != "" {
		wctx, cancel := withTimeout(ctx, o.Timeout)
		defer cancel()
		return fetch(wctx, env, client, &kilnv1.DownloadArtifactRequest{What: &kilnv1.DownloadArtifactRequest_Pin{Pin: o.Pin}}, o.Download, o.JSON, res, o.Metaserver)
	}

	c, err := o.Constraints(local)
	if err != nil {
		return err
	}
	opts, err := parseOptions(o.Options)
	if err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	resp, err := client.Submit(rctx, &kilnv1.SubmitRequest{
		Project:     o.Project,
		Revision:    o.Revision,
		Constraints: c,
		Options:     opts,
		Email:       o.Email,
	})
	cancel()
	if err != nil {
		return err
	}
	b := resp.GetBuild()
	res.RequestID, res.Cached, res.Joined = resp.GetRequestId(), resp.GetCached(), resp.GetJoined()
	res.setBuild(b)
	if !o.Wait {
		if !o.JSON {
			fmt.Fprintln(env.Stdout, acceptedLine(resp))
		}
		return nil
	}
	fmt.Fprintf(env.Stderr, "[build %d] %s, platform %s\n", b.GetId(), answerName(resp), platform.DescribeConstraints(c))
	wctx, cancelWait := withTimeout(ctx, o.Timeout)
	defer cancelWait()
	return wait(wctx, env, client, b, o.Timeout, o.Download, o.JSON, res, o.Metaserver)
}

// acceptedLine is the stdout line of a submit without --wait.
func acceptedLine(resp *kilnv1.SubmitResponse) string {
	b := resp.GetBuild()
	line := fmt.Sprintf("build %d %s", b.GetId(), answerName(resp))
	switch {
	case resp.GetCached():
		if a := b.GetArtifact(); a != nil {
			line += fmt.Sprintf(": artifact sha256 %s, %d bytes", a.GetSha256(), a.GetSize())
		}
	case b.GetState() == kilnv1.BuildState_BUILD_STATE_QUEUED && b.GetQueuePosition() > 0:
		line += fmt.Sprintf(", position %d", b.GetQueuePosition())
	}
	return line + fmt.Sprintf(" (state %s)", b.GetState().Word())
}

// answerName says how the metaserver answered a submit.
func answerName(resp *kilnv1.SubmitResponse) string {
	switch {
	case resp.GetCached():
		return "cached"
	case resp.GetJoined():
		return "joined"
	}
	return "queued"
}

// wait follows b until it is final (showing progress and the log on stderr),
// then downloads its artifact into dir when dir is set. The final build is
// recorded in res. A build that ends other than SUCCEEDED is a *buildError.
func wait(ctx context.Context, env Env, client kilnv1.CompileServiceClient, b *kilnv1.Build, timeout time.Duration, dir string, asJSON bool, res *Result, metaserver string) error {
	if !b.GetState().Final() {
		f := &follower{client: client, progress: newProgress(env.Stderr), withLog: true}
		final, err := f.follow(ctx, b.GetId())
		if final != nil {
			res.setBuild(final)
		}
		if err != nil {
			return waitError(ctx, b.GetId(), timeout, final, err)
		}
		b = final
	} else {
		newProgress(env.Stderr).update(b)
	}
	if err := finalError(b); err != nil {
		return err
	}
	if dir == "" {
		if !asJSON {
			fmt.Fprintf(env.Stdout, "build %d %s\n", b.GetId(), finalSummary(b))
		}
		return nil
	}
	err := fetch(ctx, env, client, &kilnv1.DownloadArtifactRequest{What: &kilnv1.DownloadArtifactRequest_BuildId{BuildId: b.GetId()}}, dir, asJSON, res, metaserver)
	return waitError(ctx, b.GetId(), timeout, b, err)
}

// fetch downloads and unpacks an artifact into dir and lists the files on
// stdout (unless asJSON).
func fetch(ctx context.Context, env Env, client kilnv1.CompileServiceClient, req *kilnv1.DownloadArtifactRequest, dir string, asJSON bool, res *Result, metaserver string) error {
	pc := &provenanceCheck{env: env, client: client, metaserver: metaserver}
	d, err := download(ctx, client, req, dir, env.Limits, pc)
	if err != nil {
		return err
	}
	h := d.header
	if res.BuildID == 0 {
		res.BuildID = h.GetBuildId()
		res.State = kilnv1.BuildState_BUILD_STATE_SUCCEEDED.Word()
	}
	res.ArtifactSHA256 = h.GetArtifact().GetSha256()
	res.ArtifactSize = h.GetArtifact().GetSize()
	if h.GetPlatform() != nil {
		res.setPlatform(h.GetPlatform())
	}
	res.Files = d.files
	res.DownloadDir = dir
	fmt.Fprintf(env.Stderr, "[build %d] downloaded %s (%d bytes, sha256 verified) into %s\n",
		h.GetBuildId(), shortHash(h.GetArtifact().GetSha256()), h.GetArtifact().GetSize(), dir)
	pc.report.print(env.Stderr)
	if !asJSON {
		for _, f := range d.files {
			fmt.Fprintln(env.Stdout, filepath.Join(dir, filepath.FromSlash(f)))
		}
	}
	return nil
}
