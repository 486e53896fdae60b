package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kilnbuild/kiln/internal/gitmirror"
	"github.com/kilnbuild/kiln/internal/sandbox"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// attemptRunner turns one Assignment into an AttemptResult: fetch the
// source, run the steps in the sandbox, pack and upload the artifact. It
// keeps no per-attempt state, so it runs any number of attempts at once.
type attemptRunner struct {
	sandbox        StepRunner
	hide           []string
	limits         sandbox.Limits
	defaultTimeout time.Duration
	maxArtifact    int64
	policy         *kilnv1.BuildServerPolicy
	targets        map[string]*Target
	// jobs is one attempt's share of the machine's CPUs (KILN_JOBS).
	jobs int
	// fixedLayout: steps see the build's directories at buildRoot (the
	// sandbox binds them there) rather than at their host paths.
	fixedLayout bool
	mirrors     *mirrors
	// users, when not nil, gives each running build its own unprivileged
	// user (Config.BuildUID).
	users    *buildUsers
	uploader artifactUploader
	// downloader fetches the artifacts of a build's dependencies.
	downloader kilnv1.CompileServiceClient
	// inlineMax is the latest Welcome's max_inline_artifact_bytes: an
	// artifact up to this size goes inside the result instead of an upload.
	inlineMax atomic.Uint64
	log       *slog.Logger
}

// job is one attempt being run.
type job struct {
	asg      *kilnv1.Assignment
	dir      string // DATA_DIR/builds/<attempt id>, as made by buildDirs; the log is open
	log      *logStream
	progress func(kilnv1.Phase)
	// srcExists: src already holds the tree of the assignment's commit,
	// exactly as exported (a recycled build directory, see buildDirs.take).
	srcExists bool
	// sourced is called once src holds the commit's tree.
	sourced func()
}

// result builds an AttemptResult.
func result(outcome kilnv1.AttemptOutcome, reason, step string) *kilnv1.AttemptResult {
	return &kilnv1.AttemptResult{Outcome: outcome, Reason: reason, FailingStep: step}
}

// run runs j to its end. ctx's cancellation cause decides the outcome of an
// interrupted attempt (see stopped).
func (r *attemptRunner) run(ctx context.Context, j job) (res *kilnv1.AttemptResult) {
	a := j.asg
	target := r.targets[a.GetTargetId()]
	src := filepath.Join(j.dir, srcName)
	dest := filepath.Join(j.dir, destName)
	home := filepath.Join(j.dir, homeName)

	j.progress(kilnv1.Phase_PHASE_FETCHING)
	start := time.Now()
	if err := r.source(ctx, j, src); err != nil {
		if ctx.Err() != nil {
			return stopped(ctx)
		}
		if errors.Is(err, gitmirror.ErrUnsafePath) {
			// The project's own tree is at fault; another build server would fail alike.
			reason := fmt.Sprintf("source tree at %s is unsafe to check out: %v", a.GetCommit(), err)
			j.log.notef("%s", reason)
			return result(kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_FAILED, reason, "")
		}
		return r.setupFailed(j, fmt.Sprintf("fetching %s at %s", a.GetGitUrl(), a.GetCommit()), err)
	}
	var user *sandbox.User
	if r.users != nil {
		u, ok := r.users.take()
		if !ok {
			return r.setupFailed(j, "preparing the build", errNoBuildUser)
		}
		defer r.users.put(u)
		user = u
	}
	cache, err := r.takeCompilerCache(j, home, user)
	if err != nil {
		return r.setupFailed(j, "preparing the compiler cache", err)
	}
	if cache != nil {
		defer func() {
			if st := cache.end(); st != nil && res != nil {
				res.CompilerCache = st
			}
		}()
	}
	if user != nil {
		if err := handOver(user, src, dest, home); err != nil {
			return r.setupFailed(j, "preparing the build", err)
		}
	}
	fetched := time.Now()

	lay := hostLayout(src, dest, home)
	if r.fixedLayout {
		lay = fixedLayout(src, dest, home)
	}
	files, err := writeTargetFiles(target, home)
	if err != nil {
		return r.setupFailed(j, "writing the target's toolchain files", err)
	}
	files = lay.seen(files)
	timeout := buildTimeout(r.policy, a, r.defaultTimeout)
	limits := r.limits
	if limits.CPUSeconds == 0 {
		limits.CPUSeconds = uint64(timeout / time.Second)
	}
	env := stepEnv(a, target, lay.home, lay.dest, r.jobs, files...)
	epoch := sourceEpoch(src)
	env = append(env, reproducibleEnv(epoch)...)
	binds := lay.binds
	if cache != nil {
		env = cache.env(env, lay.home+"/"+ccacheStatsName)
		binds = append(slices.Clip(binds), sandbox.Bind{Src: cache.host, Dst: ccacheDir})
	}
	var readOnly []string
	if deps := a.GetDependencies(); len(deps) > 0 {
		sysroot := filepath.Join(j.dir, sysrootName)
		seen := sysroot
		if r.fixedLayout {
			seen = fixedSysroot
		}
		extra, err := stageDependencies(ctx, r.downloader, deps, sysroot, seen, env)
		if err != nil {
			if ctx.Err() != nil {
				return stopped(ctx)
			}
			return r.setupFailed(j, "staging the dependencies", err)
		}
		for _, d := range deps {
			j.log.notef("dependency %s: build %d, artifact %s", d.GetProject(), d.GetBuildId(), d.GetArtifact().GetSha256())
		}
		env = append(env, extra...)
		if r.fixedLayout {
			binds = append(slices.Clone(binds), sandbox.Bind{Src: sysroot, Dst: seen, ReadOnly: true})
		} else {
			readOnly = []string{sysroot}
		}
	}
	var identity *sandbox.User
	if r.fixedLayout {
		identity = &buildIdentity
	}
	s := steps{
		r: r, j: j, deadline: time.Now().Add(timeout), timeout: timeout, after: target.AfterStep,
		base: sandbox.Step{
			Identity: identity,
			Dir:      lay.src,
			Writable: lay.writable,
			Binds:    binds,
			ReadOnly: readOnly,
			Hostname: buildHostname,
			Hide:     r.hide,
			Env:      env,
			Output:   j.log,
			Limits:   limits,
			User:     user,
		},
	}
	recipe := a.GetRecipe()
	if sum := recipe.GetSummary(); sum != "" {
		j.log.notef("recipe: %s", sum)
	}
	for _, phase := range []struct {
		phase kilnv1.Phase
		cmds  []string
	}{
		{kilnv1.Phase_PHASE_BUILDING, recipe.GetBuildSteps()},
		{kilnv1.Phase_PHASE_CHECKING, recipe.GetCheckSteps()},
		{kilnv1.Phase_PHASE_PACKING, recipe.GetPackageSteps()},
	} {
		if len(phase.cmds) == 0 {
			continue
		}
		j.progress(phase.phase)
		var undo func()
		var recheck func() error
		captureFailed := func(err error) *kilnv1.AttemptResult {
			if be := (*buildError)(nil); errors.As(err, &be) {
				j.log.notef("%s", be.reason)
				return result(kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_FAILED, be.reason, "")
			}
			return r.setupFailed(j, "preparing install capture", err)
		}
		if phase.phase == kilnv1.Phase_PHASE_PACKING && recipe.GetInstallTree() {
			var err error
			if undo, recheck, err = s.captureInstalls(dest, user); err != nil {
				return captureFailed(err)
			}
		}
		for i, cmd := range phase.cmds {
			if recheck != nil && i > 0 {
				// The step before may have put a link where a bound
				// directory was; bwrap would follow it on the host.
				if err := recheck(); err != nil {
					undo()
					return captureFailed(err)
				}
			}
			if failed := s.run(ctx, cmd); failed != nil {
				if undo != nil {
					undo()
				}
				return failed
			}
		}
		if undo != nil {
			undo()
		}
	}
	if len(recipe.GetPackageSteps()) == 0 {
		j.progress(kilnv1.Phase_PHASE_PACKING)
	}

	built := time.Now()
	if cache != nil {
		cache.end() // its stats go with the result; other builds may take it meanwhile
	}
	maxArtifact, diskBound, over := r.diskBudget(j, src, dest, home)
	if over != nil {
		return over
	}
	var entries []packEntry
	if recipe.GetInstallTree() {
		entries, err = collectTree(dest)
	} else {
		entries, err = collectGlobs(src, recipe.GetArtifacts())
	}
	if err == nil {
		err = checkUnpackedSize(entries, unpackedCap(diskCap(r.sandbox), r.maxArtifact))
	}
	if err == nil {
		var checked bool
		if checked, err = checkArtifactELF(entries, target.Info.GetSystem()); err == nil && !checked {
			j.log.notef("artifact's ELF files not checked: no known ELF machine for arch %q, %q-endian, %q",
				target.Info.GetSystem().GetArch(), target.Info.GetSystem().GetEndian(), target.Info.GetSystem().GetDataModel())
		}
	}
	artPath := filepath.Join(j.dir, artifactName)
	var art *kilnv1.Artifact
	if err == nil {
		art, err = pack(entries, artPath, maxArtifact, epoch)
		if be := (*buildError)(nil); diskBound && errors.As(err, &be) {
			// pack's only build error is its size limit, here the disk's share.
			err = &buildError{overDiskCap(diskCap(r.sandbox))}
		}
	}
	if err != nil {
		if be := (*buildError)(nil); errors.As(err, &be) {
			j.log.notef("%s", be.reason)
			return result(kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_FAILED, be.reason, "")
		}
		return r.setupFailed(j, "packing artifact", err)
	}
	if err := j.log.err(); err != nil {
		return r.setupFailed(j, "writing build log", err)
	}

	packed := time.Now()
	res = result(kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCEEDED, "", "")
	res.Artifact = art
	if art.GetSize() <= r.inlineMax.Load() {
		// Small enough to go with the result: no upload call.
		data, err := os.ReadFile(artPath)
		if err != nil {
			return r.setupFailed(j, "reading artifact", err)
		}
		res.ArtifactData = data
		r.log.Debug("attempt timings", "attempt_id", a.GetAttemptId(), "fetch", fetched.Sub(start),
			"steps", built.Sub(fetched), "pack", packed.Sub(built), "inline", time.Since(packed),
			"compiler_cache", cache.summary())
		j.log.notef("artifact %s (%d bytes, %d files) sent with the result", art.GetSha256(), art.GetSize(), len(art.GetFiles()))
		return res
	}
	j.progress(kilnv1.Phase_PHASE_UPLOADING)
	if err := upload(ctx, r.uploader, a.GetAttemptId(), artPath, art); err != nil {
		if ctx.Err() != nil {
			return stopped(ctx)
		}
		return r.setupFailed(j, "uploading artifact", err)
	}
	// The artifact file goes with the build directory once the result is
	// acknowledged; unlinking it here would delay the result.
	r.log.Debug("attempt timings", "attempt_id", a.GetAttemptId(), "fetch", fetched.Sub(start),
		"steps", built.Sub(fetched), "pack", packed.Sub(built), "upload", time.Since(packed),
		"compiler_cache", cache.summary())
	j.log.notef("artifact %s (%d bytes, %d files) uploaded", art.GetSha256(), art.GetSize(), len(art.GetFiles()))
	return res
}

// diskBudget checks, after the last step, that the build's directories
// hold no more than the disk cap (the watcher during the steps may have
// missed up to one interval's writes, or a step shorter than one), and
// returns the artifact's size limit: the smaller of the artifact cap and
// what the disk cap leaves, and whether it is the disk's. res is the
// attempt's result when the build is already over the cap.
func (r *attemptRunner) diskBudget(j job, dirs ...string) (limit int64, diskBound bool, res *kilnv1.AttemptResult) {
	limit = r.maxArtifact
	maxDisk := diskCap(r.sandbox)
	if maxDisk <= 0 {
		return limit, false, nil
	}
	used, err := sandbox.DiskUsage(dirs...)
	if err != nil {
		r.log.Warn("measuring the build's disk usage", "attempt_id", j.asg.GetAttemptId(), "error", err)
	}
	if used > maxDisk {
		reason := overDiskCap(maxDisk)
		j.log.notef("%s", reason)
		return 0, false, result(kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_FAILED, reason, "")
	}
	if left := max(maxDisk-used, 1); limit <= 0 || left < limit {
		return left, true, nil
	}
	return limit, false, nil
}

// source makes src hold the tree of the assignment's commit, unless it does.
func (r *attemptRunner) source(ctx context.Context, j job, src string) error {
	if !j.srcExists {
		a := j.asg
		if err := r.mirrors.export(ctx, a.GetGitUrl(), a.GetCommit(), src); err != nil {
			return err
		}
	}
	if j.sourced != nil {
		j.sourced()
	}
	return nil
}

// setupFailed ends an attempt SETUP_FAILED: the build server's fault, to be
// retried elsewhere.
func (r *attemptRunner) setupFailed(j job, what string, err error) *kilnv1.AttemptResult {
	reason := fmt.Sprintf("%s: %v", what, err)
	j.log.notef("setup failed: %s", reason)
	return result(kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SETUP_FAILED, reason, "")
}

// stopped is the result of an attempt whose ctx was cancelled: CANCELLED
// when the metaserver asked, RETURNED when the build server is stopping (or
// dropped it; that result is discarded anyway).
func stopped(ctx context.Context) *kilnv1.AttemptResult {
	if errors.Is(context.Cause(ctx), errCancelledByServer) {
		return result(kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_CANCELLED, "cancelled by the metaserver", "")
	}
	return result(kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_RETURNED, context.Cause(ctx).Error(), "")
}

// steps runs the recipe's steps of one attempt against one deadline.
type steps struct {
	r        *attemptRunner
	j        job
	base     sandbox.Step
	deadline time.Time
	timeout  time.Duration
	// after is the target's AfterStep command, "" for none.
	after string
}

// installPrefixes are the directories a package step's installs are
// captured from when a Makefile ignores DESTDIR: each is bound, for the
// package steps only, to the same path under the install tree, so that
// `make install` writing to /usr/local/bin lands in
// $KILN_DESTDIR/usr/local/bin, in the artifact, instead of failing on the
// read-only system. (/usr itself cannot be: it holds the toolchain.)
var installPrefixes = []string{"/usr/local", "/opt"}

// captureInstalls binds each of installPrefixes that exists on the host to
// its path under dest for the following steps, and returns what removes
// the directories it made that stayed empty (undo, idempotent), so that an
// artifact shows no usr/local of its own when nothing was installed there,
// and recheck, which the caller runs before every package step after the
// first.
//
// dest belongs to the build, which may have planted symbolic links there
// (dest/usr -> /etc) for bwrap to follow on the host when it binds them.
// Nothing of the build runs between its steps (the sandbox's PID namespace
// ends with each), so what is checked before a step stays so until that
// step's sandbox is made: every directory on the way must be a directory,
// not a link (else the build fails, its own doing). A package step may
// replace one for the next (red team, second pass): hence recheck.
// Everything is made and removed through an os.Root of dest, which never
// leaves it.
func (s *steps) captureInstalls(dest string, user *sandbox.User) (undo func(), recheck func() error, err error) {
	root, err := os.OpenRoot(dest)
	if err != nil {
		return nil, nil, err
	}
	var bound []string // relative to dest, every directory on the way to each bind
	var made []string  // relative to dest, each prefix's deepest first
	kept := s.base.Binds
	for _, p := range installPrefixes {
		if fi, err := os.Stat(p); err != nil || !fi.IsDir() {
			continue
		}
		rel := strings.TrimPrefix(p, "/")
		// Top down: usr, then usr/local. Below a missing one all are.
		var missing []string
		parts := strings.Split(rel, "/")
		for i := range parts {
			d := strings.Join(parts[:i+1], "/")
			if len(missing) > 0 {
				missing = append(missing, d)
				continue
			}
			fi, err := root.Lstat(d)
			switch {
			case errors.Is(err, os.ErrNotExist):
				missing = append(missing, d)
			case err != nil:
				root.Close()
				return nil, nil, err
			case !fi.IsDir():
				root.Close()
				return nil, nil, &buildError{fmt.Sprintf("$KILN_DESTDIR/%s is a %v, not a directory: the install tree cannot capture %s", d, fi.Mode().Type(), p)}
			}
		}
		for _, d := range missing {
			if err := root.Mkdir(d, 0o755); err != nil {
				root.Close()
				return nil, nil, err
			}
			if user != nil {
				if err := root.Lchown(d, int(user.UID), int(user.GID)); err != nil {
					root.Close()
					return nil, nil, err
				}
			}
		}
		// Removed deepest first.
		for i := len(missing) - 1; i >= 0; i-- {
			made = append(made, missing[i])
		}
		for i := range parts {
			bound = append(bound, strings.Join(parts[:i+1], "/"))
		}
		s.base.Binds = append(s.base.Binds, sandbox.Bind{Src: filepath.Join(dest, rel), Dst: p})
	}
	s.j.log.notef("install capture: while packaging, /usr/local and /opt are $KILN_DESTDIR/usr/local and $KILN_DESTDIR/opt")
	recheck = func() error {
		for _, d := range bound {
			fi, err := root.Lstat(d)
			if err != nil {
				return &buildError{fmt.Sprintf("$KILN_DESTDIR/%s is gone between package steps: %v", d, err)}
			}
			if !fi.IsDir() {
				return &buildError{fmt.Sprintf("$KILN_DESTDIR/%s became a %v between package steps, not a directory", d, fi.Mode().Type())}
			}
		}
		return nil
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			s.base.Binds = kept
			// Through root: a link the package step put on the way is not
			// followed out of dest. A directory with content stays.
			for _, d := range made {
				_ = root.Remove(d) // not empty, or a link on the way: it stays
			}
			root.Close()
		})
	}, recheck, nil
}

// withAfter runs cmd in a subshell (an exit in it ends only the
// subshell), then the target's after command, and exits with cmd's status.
func withAfter(cmd, after string) string {
	if after == "" {
		return cmd
	}
	return "(\n" + cmd + "\n)\nkiln_status=$?\n" + after + "\nexit $kiln_status"
}

// run runs one step and returns nil when it succeeded, else the attempt's result.
func (s *steps) run(ctx context.Context, cmd string) *kilnv1.AttemptResult {
	log := s.j.log
	remaining := time.Until(s.deadline)
	if remaining <= 0 {
		reason := fmt.Sprintf("time limit of %v reached", s.timeout)
		log.notef("%s before step %q", reason, cmd)
		return result(kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_TIMED_OUT, reason, cmd)
	}
	fmt.Fprintf(log, "$ %s\n", cmd)
	st := s.base
	st.Name, st.Command, st.Timeout = cmd, withAfter(cmd, s.after), remaining
	err := s.r.sandbox.Run(ctx, st)
	var exit *sandbox.ExitError
	var left *sandbox.LeftoverError
	var disk *sandbox.DiskError
	switch {
	case ctx.Err() != nil:
		res := stopped(ctx)
		log.notef("step stopped: %s", res.GetReason())
		log.Flush()
		return res
	case err == nil:
		log.Flush()
		return nil
	case errors.As(err, &disk):
		outcome, reason := kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_FAILED, overDiskCap(disk.MaxBytes)
		if !disk.OverCap() {
			// The machine's disk ran low: not necessarily this build's doing.
			outcome, reason = kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SETUP_FAILED, diskLow(disk.MinFreeBytes)
		}
		log.notef("%s during step %q", reason, cmd)
		log.Flush()
		return result(outcome, reason, cmd)
	case errors.As(err, &left):
		// Checked before ExitError: a LeftoverError of a failed command
		// unwraps to one.
		reason := left.Error()
		log.notef("%s", reason)
		log.Flush()
		return result(kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_FAILED, reason, cmd)
	case errors.Is(err, sandbox.ErrTimeout):
		reason := fmt.Sprintf("time limit of %v reached", s.timeout)
		log.notef("%s during step %q", reason, cmd)
		log.Flush()
		return result(kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_TIMED_OUT, reason, cmd)
	case errors.As(err, &exit):
		reason := fmt.Sprintf("step %q exited with status %d", cmd, exit.Code)
		log.notef("%s", reason)
		log.Flush()
		return result(kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_FAILED, reason, cmd)
	default:
		res := s.r.setupFailed(s.j, fmt.Sprintf("running step %q", cmd), err)
		log.Flush()
		return res
	}
}
