package compilecli

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"google.golang.org/grpc"

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
	// Measure while dialing: both are needed, and each waits on something
	// else (a prober's process, the connection's handshake), so a new
	// build's submit pays the longer of the two, not their sum (issue 20).
	// A failing prober's error wins over the connection's.
	type dialed struct {
		conn *grpc.ClientConn
		err  error
	}
	dc := make(chan dialed, 1)
	go func() {
		conn, err := Dial(ctx, o.Connection)
		dc <- dialed{conn, err}
	}()
	var local *kilnv1.SystemInfo
	var measureErr error
	if o.Pin == "" && o.NeedsMeasure() && env.Measure != nil {
		if local, measureErr = env.Measure(ctx); measureErr != nil {
			measureErr = fmt.Errorf("measuring this machine for the default platform constraints (pass --os/--arch/... explicitly to skip): %w", measureErr)
		}
	}
	d := <-dc
	if d.conn != nil {
		defer d.conn.Close()
	}
	if measureErr != nil {
		return measureErr
	}
	if d.err != nil {
		return d.err
	}
	conn := d.conn
	client := kilnv1.NewCompileServiceClient(conn)

	if o.Pin != "" {
		wctx, cancel := withTimeout(ctx, o.Timeout)
		defer cancel()
		return fetch(wctx, env, client, &kilnv1.DownloadArtifactRequest{What: &kilnv1.DownloadArtifactRequest_Pin{Pin: o.Pin}}, o.Download, o.JSON, res,
			&provenanceCheck{env: env, client: client, metaserver: o.Metaserver})
	}

	c, err := o.Constraints(local)
	if err != nil {
		return err
	}
	opts, err := parseOptions(o.Options)
	if err != nil {
		return err
	}
	mode, err := parseMail(o.Mail, false)
	if err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	resp, err := client.Submit(rctx, &kilnv1.SubmitRequest{
		Project:          o.Project,
		Revision:         o.Revision,
		Constraints:      c,
		Options:          opts,
		Email:            o.Email,
		Mail:             mode,
		AcceptUnverified: o.Accept == AcceptUnverified,
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
	return wait(wctx, env, client, b, waitOptions{timeout: o.Timeout, dir: o.Download, asJSON: o.JSON, accept: o.Accept == AcceptUnverified, metaserver: o.Metaserver}, res)
}

// waitOptions say how wait follows and ends.
type waitOptions struct {
	timeout time.Duration
	dir     string
	asJSON  bool
	// accept: the first result will do (--accept unverified).
	accept bool
	// metaserver is the address whose log the provenance check trusts.
	metaserver string
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
func wait(ctx context.Context, env Env, client kilnv1.CompileServiceClient, b *kilnv1.Build, wo waitOptions, res *Result) error {
	timeout, dir, asJSON := wo.timeout, wo.dir, wo.asJSON
	if !answered(b, wo.accept) {
		f := &follower{client: client, progress: newProgress(env.Stderr), withLog: true, accept: wo.accept}
		if asJSON {
			f.seen = func(b *kilnv1.Build) { res.encodePlatform(b.GetPlatform()) }
		}
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
	unverified := !answered(b, false) && answered(b, wo.accept)
	if unverified {
		fmt.Fprintf(env.Stderr, "[build %d] %s: artifact %s from %s, not verified by other operators yet (--accept unverified)\n",
			b.GetId(), b.GetVerification().Word(), shortHash(b.GetArtifact().GetSha256()), firstServer(b))
	} else if err := finalError(b); err != nil {
		return err
	}
	if dir == "" {
		if !asJSON {
			fmt.Fprintf(env.Stdout, "build %d %s\n", b.GetId(), finalSummary(b))
		}
		return nil
	}
	// A result reaches the transparency log only once verified: an
	// unverified one has no provenance to check yet (it is one volunteer's
	// word, which the requester chose to take).
	var pc *provenanceCheck
	if unverified {
		fmt.Fprintf(env.Stderr, "[build %d] provenance not checked: a result enters the transparency log only once verified\n", b.GetId())
	} else {
		pc = &provenanceCheck{env: env, client: client, metaserver: wo.metaserver}
	}
	err := fetch(ctx, env, client, &kilnv1.DownloadArtifactRequest{What: &kilnv1.DownloadArtifactRequest_BuildId{BuildId: b.GetId()},
		AcceptUnverified: wo.accept}, dir, asJSON, res, pc)
	return waitError(ctx, b.GetId(), timeout, b, err)
}

// answered reports whether b answers its requester: final, or, with
// accept (--accept unverified), holding a first result not verified yet.
func answered(b *kilnv1.Build, accept bool) bool {
	if b.GetState().Final() {
		return true
	}
	v := b.GetVerification()
	return accept && b.GetArtifact() != nil &&
		(v == kilnv1.Verification_VERIFICATION_UNVERIFIED || v == kilnv1.Verification_VERIFICATION_DISPUTED)
}

// firstServer names the build server of b's leading result.
func firstServer(b *kilnv1.Build) string {
	if s := b.GetAgreeingBuildServers(); len(s) > 0 {
		return s[0]
	}
	return "one build server"
}

// fetch downloads and unpacks an artifact into dir and lists the files on
// stdout (unless asJSON).
//
// pc, when not nil, checks the artifact's provenance before unpacking.
func fetch(ctx context.Context, env Env, client kilnv1.CompileServiceClient, req *kilnv1.DownloadArtifactRequest, dir string, asJSON bool, res *Result, pc *provenanceCheck) error {
	d, err := download(ctx, client, req, dir, env.Limits, func(h *kilnv1.DownloadHeader) *meter {
		label := fmt.Sprintf("[build %d] downloading %s", h.GetBuildId(), shortHash(h.GetArtifact().GetSha256()))
		return newMeter(env.Stderr, env.Terminal(env.Stderr), label, h.GetArtifact().GetSize(), nil)
	}, pc)
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
		res.platform = h.GetPlatform()
	}
	res.Files = d.files
	res.DownloadDir = dir
	fmt.Fprintf(env.Stderr, "[build %d] downloaded %s (%d bytes, sha256 verified) into %s\n",
		h.GetBuildId(), shortHash(h.GetArtifact().GetSha256()), h.GetArtifact().GetSize(), dir)
	if pc != nil {
		pc.report.print(env.Stderr)
	}
	if !asJSON {
		for _, f := range d.files {
			fmt.Fprintln(env.Stdout, filepath.Join(dir, filepath.FromSlash(f)))
		}
	}
	return nil
}
