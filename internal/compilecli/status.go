package compilecli

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/kilnbuild/kiln/internal/platform"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

const statusSynopsis = "startcompile status [--wait] [--download DIR] [--json] BUILD_ID"

func runStatus(ctx context.Context, env Env, args []string) int {
	var o StatusOptions
	fs := StatusFlags(&o, env.Getenv)
	pos, code, done := parseCommand(env, fs, statusSynopsis, args, 1)
	if done {
		return code
	}
	res := &Result{}
	id, err := parseBuildID(pos[0])
	if err != nil {
		return finish(env, o.JSON, res, err)
	}
	o.BuildID = id
	if err := o.Validate(); err != nil {
		return finish(env, o.JSON, res, err)
	}
	return finish(env, o.JSON, res, showStatus(ctx, env, &o, res))
}

// showStatus runs a validated status command. Without --wait the exit status
// still follows the build's state: a final FAILED or CANCELLED build is
// ExitFailed, ERROR ExitInfra, anything else ExitOK.
func showStatus(ctx context.Context, env Env, o *StatusOptions, res *Result) error {
	conn, err := Dial(ctx, o.Connection)
	if err != nil {
		return err
	}
	defer conn.Close()
	client := kilnv1.NewCompileServiceClient(conn)
	rctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	resp, err := client.GetBuild(rctx, &kilnv1.GetBuildRequest{BuildId: o.BuildID})
	cancel()
	if err != nil {
		return err
	}
	b := resp.GetBuild()
	res.setBuild(b)
	if o.Wait {
		wctx, cancel := withTimeout(ctx, o.Timeout)
		defer cancel()
		return wait(wctx, env, client, b, waitOptions{timeout: o.Timeout, dir: o.Download, asJSON: o.JSON, accept: o.Accept == AcceptUnverified, metaserver: o.Metaserver}, res)
	}
	if !o.JSON {
		writeBuild(env.Stdout, b)
	}
	if b.GetState().Final() {
		return finalError(b)
	}
	return nil
}

// writeBuild prints a human summary of b.
func writeBuild(w io.Writer, b *kilnv1.Build) {
	fmt.Fprintf(w, "build %d: %s\n", b.GetId(), b.GetState().Word())
	fmt.Fprintf(w, "  project   %s @ %s", b.GetProject(), b.GetRevision())
	if b.GetCommit() != "" {
		fmt.Fprintf(w, " (%s)", b.GetCommit())
	}
	fmt.Fprintln(w)
	if opts := b.GetOptions(); len(opts) > 0 {
		names := make([]string, 0, len(opts))
		for k := range opts {
			names = append(names, k)
		}
		sort.Strings(names)
		var kv []string
		for _, k := range names {
			kv = append(kv, k+"="+opts[k])
		}
		fmt.Fprintf(w, "  options   %s\n", strings.Join(kv, " "))
	}
	fmt.Fprintf(w, "  wants     %s\n", platform.DescribeConstraints(b.GetConstraints()))
	if b.GetPlatform() != nil {
		fmt.Fprintf(w, "  built on  %s\n", platform.Describe(b.GetPlatform()))
	}
	if b.GetQueuePosition() > 0 {
		fmt.Fprintf(w, "  position  %d\n", b.GetQueuePosition())
	}
	for _, r := range b.GetWaitingReasons() {
		fmt.Fprintf(w, "  waiting   %s\n", r)
	}
	for i, a := range b.GetAttempts() {
		fmt.Fprintf(w, "  attempt   %d on %s: %s", i+1, attemptWhere(a), a.GetOutcome().Word())
		if a.GetOutcome() == kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_RUNNING && a.GetPhase() != kilnv1.Phase_PHASE_UNSPECIFIED {
			fmt.Fprintf(w, " (%s)", a.GetPhase().Word())
		}
		if a.GetReason() != "" {
			fmt.Fprintf(w, ": %s", a.GetReason())
		}
		fmt.Fprintln(w)
	}
	if a := b.GetArtifact(); a != nil {
		fmt.Fprintf(w, "  artifact  sha256 %s, %d bytes\n", a.GetSha256(), a.GetSize())
		for _, f := range a.GetFiles() {
			fmt.Fprintf(w, "            %s\n", f)
		}
	}
	if v := b.GetVerification().Word(); v != "" {
		fmt.Fprintf(w, "  trust     %s (quorum %d; agreeing: %s)\n", v, b.GetQuorum(), strings.Join(b.GetAgreeingBuildServers(), ", "))
	}
	for _, r := range b.GetReplicas() {
		fmt.Fprintf(w, "  result    %s (%s): %s", r.GetBuildServer(), r.GetOperator(), orFailed(r.GetArtifact().GetSha256()))
		if r.GetDiscounted() != "" {
			fmt.Fprintf(w, ", not counted: %s", r.GetDiscounted())
		}
		fmt.Fprintln(w)
	}
	if files := b.GetDifferingFiles(); len(files) > 0 {
		fmt.Fprintf(w, "  differ    %s\n", strings.Join(files, ", "))
	}
	if b.GetFailure() != "" {
		fmt.Fprintf(w, "  failure   %s", b.GetFailure())
		if b.GetFailingStep() != "" {
			fmt.Fprintf(w, " (step: %s)", b.GetFailingStep())
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "  log       %d bytes\n", b.GetLogSize())
}

// orFailed is a result's sha256, or "failed" for a failed build.
func orFailed(sha string) string {
	if sha == "" {
		return "failed"
	}
	return "sha256 " + sha
}
