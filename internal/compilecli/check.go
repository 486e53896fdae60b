package compilecli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"sync"

	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/kilnbuild/kiln/internal/platform"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

const checkSynopsis = "startcompile check [--platform field=value,...]... [flags] EMAIL"

// MatrixFields are the system-info fields that make two targets distinct
// platforms for check, and the fields each check request pins:
// platform.DefaultPinnedFields, what a plain request pins too.
var MatrixFields = platform.DefaultPinnedFields

// CheckResult is the JSON object `check --json` prints.
type CheckResult struct {
	Project   string       `json:"project"`
	Revision  string       `json:"revision,omitempty"`
	Succeeded []CheckEntry `json:"succeeded"`
	Failed    []CheckEntry `json:"failed"`
	Error     string       `json:"error,omitempty"`
	ExitCode  int          `json:"exit_code"`
}

// CheckEntry is one platform's outcome.
type CheckEntry struct {
	// Platform is platform.Describe of the target that built it, or the
	// pinned constraints in brackets when no target did.
	Platform    string            `json:"platform"`
	Constraints map[string]string `json:"constraints"`
	BuildID     uint64            `json:"build_id,omitempty"`
	State       string            `json:"state,omitempty"`
	Commit      string            `json:"commit,omitempty"`
	Failure     string            `json:"failure,omitempty"`
	FailingStep string            `json:"failing_step,omitempty"`
	// Error is why no final state was reached (refused, timeout, ...).
	Error string `json:"error,omitempty"`

	constraints *kilnv1.PlatformConstraints
	// system is the measured platform of the target that built it; its
	// fields are written into the entry's JSON object (MarshalJSON).
	system *kilnv1.SystemInfo
	code   int // exit status this entry alone would give
}

// MarshalJSON writes the entry with the measured platform's fields
// inlined, each named as in platform.Registry and typed as in SystemInfo
// ("arch": "s390x", "char_signed": false, "align_double": 8), when a
// target built it.
func (e CheckEntry) MarshalJSON() ([]byte, error) {
	type plain CheckEntry
	b, err := json.Marshal(plain(e))
	if err != nil || e.system == nil {
		return b, err
	}
	// The entry's own keys first, then the fields in Registry order.
	out := bytes.TrimSuffix(b, []byte("}"))
	fields := platform.FieldValues(e.system)
	for _, name := range platform.Fields {
		v, ok := fields[name]
		if !ok {
			continue
		}
		vb, err := json.Marshal(v)
		if err != nil {
			return nil, err
		}
		out = append(out, ',')
		out = strconv.AppendQuote(out, name)
		out = append(out, ':')
		out = append(out, vb...)
	}
	return append(out, '}'), nil
}

func runCheck(ctx context.Context, env Env, args []string) int {
	var o CheckOptions
	fs := CheckFlags(&o, env.Getenv)
	pos, code, done := parseCommand(env, fs, checkSynopsis, args, 1)
	if done {
		return code
	}
	o.Email = pos[0]
	res := &CheckResult{Project: o.Project, Revision: o.Revision}
	err := o.Validate()
	if err == nil {
		err = check(ctx, env, &o, res)
	}
	code = ExitCode(err)
	if err != nil {
		res.Error = describeError(err)
		fmt.Fprintf(env.Stderr, "startcompile: %s\n", res.Error)
	} else if len(res.Failed) > 0 {
		code = ExitFailed
		if len(res.Succeeded) == 0 && allRefused(res.Failed) {
			code = res.Failed[0].code
		}
	}
	res.ExitCode = code
	if o.JSON {
		if res.Succeeded == nil {
			res.Succeeded = []CheckEntry{}
		}
		if res.Failed == nil {
			res.Failed = []CheckEntry{}
		}
		json.NewEncoder(env.Stdout).Encode(res)
	} else if err == nil {
		writeCheck(env.Stdout, res)
	}
	return code
}

// allRefused reports whether no entry got as far as a build: then the
// request itself is at fault and its exit status is the command's.
func allRefused(es []CheckEntry) bool {
	for _, e := range es {
		if e.BuildID != 0 {
			return false
		}
	}
	return len(es) > 0
}

// check submits one request per platform and waits for all of them.
func check(ctx context.Context, env Env, o *CheckOptions, res *CheckResult) error {
	conn, err := Dial(ctx, o.Connection)
	if err != nil {
		return err
	}
	defer conn.Close()
	client := kilnv1.NewCompileServiceClient(conn)

	plats, err := parsePlatforms(o.Platforms)
	if err != nil {
		return err
	}
	if len(plats) == 0 {
		rctx, cancel := context.WithTimeout(ctx, rpcTimeout)
		resp, err := kilnv1.NewStatusServiceClient(conn).ListBuildServers(rctx, &kilnv1.ListBuildServersRequest{})
		cancel()
		if err != nil {
			return fmt.Errorf("listing build servers: %w", err)
		}
		plats = DistinctPlatforms(resp.GetBuildServers())
		if len(plats) == 0 {
			return grpcstatus.Error(codes.Unavailable, "no connected build server offers a platform to check on")
		}
	}
	opts, err := parseOptions(o.Options)
	if err != nil {
		return err
	}
	mode, err := parseMail(o.Mail, true)
	if err != nil {
		return err
	}
	// The builds are one request group: the metaserver mails one summary
	// when the last ends (--mail summary), once the group is sealed below.
	group, err := newGroupID()
	if err != nil {
		return err
	}

	entries := make([]CheckEntry, len(plats))
	builds := make([]*kilnv1.Build, len(plats))
	for i, c := range plats {
		e := &entries[i]
		e.constraints, e.Constraints = c, constraintMap(c)
		e.Platform = "[" + platform.DescribeConstraints(c) + "]"
		rctx, cancel := context.WithTimeout(ctx, rpcTimeout)
		resp, err := client.Submit(rctx, &kilnv1.SubmitRequest{
			Project: o.Project, Revision: o.Revision, Constraints: c, Options: opts, Email: o.Email,
			Group: group, Mail: mode,
		})
		cancel()
		if err != nil {
			e.Error, e.code = describeError(err), ExitCode(err)
			fmt.Fprintf(env.Stderr, "%s: %s\n", e.Platform, e.Error)
			continue
		}
		builds[i] = resp.GetBuild()
		e.BuildID = builds[i].GetId()
		fmt.Fprintf(env.Stderr, "[build %d] %s for %s\n", e.BuildID, answerName(resp), e.Platform)
	}
	sealGroup(ctx, env, client, group, o.Email, builds)

	wctx, cancel := withTimeout(ctx, o.Timeout)
	defer cancel()
	var (
		wg sync.WaitGroup
		mu sync.Mutex // serializes stderr lines
	)
	for i, b := range builds {
		if b == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			e := &entries[i]
			final := b
			var err error
			if !b.GetState().Final() {
				f := &follower{client: client}
				final, err = f.follow(wctx, b.GetId())
				if err != nil {
					err = waitError(wctx, b.GetId(), o.Timeout, final, err)
				}
			}
			e.record(final, err)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				fmt.Fprintf(env.Stderr, "[build %d] %s: %s\n", e.BuildID, e.Platform, e.Error)
			} else {
				fmt.Fprintf(env.Stderr, "[build %d] %s: %s\n", e.BuildID, e.Platform, finalSummary(final))
			}
		}()
	}
	wg.Wait()
	for _, e := range entries {
		if e.code == ExitOK {
			res.Succeeded = append(res.Succeeded, e)
		} else {
			res.Failed = append(res.Failed, e)
		}
	}
	return nil
}

// record stores the outcome of waiting on the entry's build.
func (e *CheckEntry) record(b *kilnv1.Build, err error) {
	if b != nil {
		e.State = b.GetState().Word()
		e.Commit = b.GetCommit()
		e.Failure, e.FailingStep = b.GetFailure(), b.GetFailingStep()
		if b.GetPlatform() != nil {
			e.Platform = platform.Describe(b.GetPlatform())
			e.system = b.GetPlatform()
		}
	}
	switch {
	case err != nil:
		e.Error, e.code = describeError(err), ExitCode(err)
	default:
		e.code = ExitCode(finalError(b))
	}
}

// DistinctPlatforms returns one constraint set per distinct combination of
// MatrixFields among the targets of connected, non-revoked, non-draining
// build servers, sorted by their description.
func DistinctPlatforms(servers []*kilnv1.BuildServerStatus) []*kilnv1.PlatformConstraints {
	seen := map[string]*kilnv1.PlatformConstraints{}
	for _, s := range servers {
		if !s.GetConnected() || s.GetRevoked() || s.GetDraining() {
			continue
		}
		for _, t := range s.GetTargets() {
			if t.GetSystem() == nil {
				continue
			}
			c := platform.FromInfo(t.GetSystem(), MatrixFields...)
			seen[platform.DescribeConstraints(c)] = c
		}
	}
	keys := make([]string, 0, len(seen))
	for k := range seen {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]*kilnv1.PlatformConstraints, len(keys))
	for i, k := range keys {
		out[i] = seen[k]
	}
	return out
}

// writeCheck prints the SUCCESS and FAILURE lists.
func writeCheck(w io.Writer, res *CheckResult) {
	width := 0
	for _, e := range append(append([]CheckEntry(nil), res.Succeeded...), res.Failed...) {
		width = max(width, len(e.Platform))
	}
	fmt.Fprintf(w, "SUCCESS (%d)\n", len(res.Succeeded))
	for _, e := range res.Succeeded {
		fmt.Fprintf(w, "  %-*s  build %d\n", width, e.Platform, e.BuildID)
	}
	fmt.Fprintf(w, "FAILURE (%d)\n", len(res.Failed))
	for _, e := range res.Failed {
		var why []string
		if e.State != "" {
			why = append(why, e.State)
		}
		if e.Failure != "" {
			why = append(why, e.Failure)
		}
		if e.FailingStep != "" {
			why = append(why, "step: "+e.FailingStep)
		}
		if e.Error != "" {
			why = append(why, e.Error)
		}
		id := "no build"
		if e.BuildID != 0 {
			id = fmt.Sprintf("build %d", e.BuildID)
		}
		fmt.Fprintf(w, "  %-*s  %s: %s\n", width, e.Platform, id, strings.Join(why, "; "))
	}
}

// sealGroup tells the metaserver that every build of the check is
// requested, so its summary mail goes once the last one ends. A failure
// is only reported: the metaserver seals a group itself an hour after it
// was opened.
func sealGroup(ctx context.Context, env Env, client kilnv1.CompileServiceClient, group, email string, builds []*kilnv1.Build) {
	for _, b := range builds {
		if b == nil {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, rpcTimeout)
		_, err := client.SealGroup(rctx, &kilnv1.SealGroupRequest{Group: group, Email: email})
		cancel()
		if err != nil {
			fmt.Fprintf(env.Stderr, "startcompile: sealing the request group: %s (the metaserver seals it within an hour)\n", describeError(err))
		}
		return
	}
}
