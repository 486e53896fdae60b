package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The peer: Buildbot as Debian ships it (buildbot, buildbot-worker 3.7),
// running the same no-op build as Kiln's load project: get the project's
// source (a Git step from the same local repository, incremental), run
// `true`, and take out.txt as the build's artifact (FileUpload to the
// master). Buildbot's web UI (buildbot-www) is not packaged by Debian,
// and its REST API is served only with it, so the master configuration
// adds a small HTTP endpoint, in the master's own process, through which
// the harness asks for a build: POST /build triggers the builder through
// Buildbot's Triggerable scheduler (a buildset in its database, as a
// forced build makes) and answers when that buildset is complete, with
// its result. One request is thus Kiln's Submit + WatchBuild until final.

// buildbotMasterCfg is master.cfg; the %[n]s are filled by writeBuildbot.
const buildbotMasterCfg = `# Kiln load test: the peer's master (written by internal/loadtest).
import json
from twisted.internet import defer, reactor
from twisted.web import resource, server
from buildbot.plugins import steps, util, schedulers, worker
from buildbot.util import service as bbservice

SRC = %[1]q
WORKERS = [%[2]s]
c = BuildmasterConfig = {}
c['buildbotNetUsageData'] = None
c['title'] = 'kiln-loadtest-peer'
c['db'] = {'db_url': 'sqlite:///state.sqlite'}
c['protocols'] = {'pb': {'port': 'tcp:%[3]d:interface=127.0.0.1'}}
c['workers'] = [worker.Worker(w, 'pass', max_builds=%[4]d) for w in WORKERS]
f = util.BuildFactory()
f.addStep(steps.Git(repourl=SRC, branch='main', mode='incremental'))
f.addStep(steps.ShellCommand(command=['true']))
f.addStep(steps.FileUpload(workersrc='out.txt', masterdest=util.Interpolate('artifacts/%%(prop:buildername)s-%%(prop:buildnumber)s.txt')))
c['builders'] = [util.BuilderConfig(name='noop', workernames=WORKERS, factory=f, collapseRequests=False)]
c['schedulers'] = [schedulers.Triggerable(name='go', builderNames=['noop'])]


class Submit(resource.Resource):
    isLeaf = True

    def __init__(self, master):
        super().__init__()
        self.master = master

    def render_POST(self, request):
        sched = self.master.scheduler_manager.namedServices['go']
        ids, results = sched.trigger(waited_for=True, sourcestamps=[
            {'codebase': '', 'repository': SRC, 'branch': 'main', 'revision': None, 'project': ''}])

        gone = []
        request.notifyFinish().addErrback(lambda f: gone.append(True))

        def done(res):
            if not gone:
                request.write(json.dumps({'results': res[0]}).encode())
                request.finish()

        def failed(f):
            if not gone:
                request.setResponseCode(500)
                request.write(str(f.value).encode())
                request.finish()

        results.addCallbacks(done, failed)
        ids.addErrback(lambda f: None)
        return server.NOT_DONE_YET


class SubmitService(bbservice.BuildbotService):
    name = 'kiln-loadtest-submit'
    listening = None

    def reconfigService(self, port):
        if self.listening is None:
            self.listening = reactor.listenTCP(port, server.Site(Submit(self.master)), interface='127.0.0.1')
        return defer.succeed(None)

    def stopService(self):
        if self.listening is not None:
            self.listening.stopListening()
            self.listening = None
        return super().stopService()


c['services'] = [SubmitService(%[5]d)]
`

// buildbotFarm is a running Buildbot master and its workers.
type buildbotFarm struct {
	master  *proc
	workers []*proc
	// masterDir and workerDirs hold each one's twistd.log (buildbot.tac
	// logs there, whatever twistd is told).
	masterDir  string
	workerDirs []string
	submit     string // http://127.0.0.1:PORT/build
	client     *http.Client
}

// ensureBuildbot installs Debian's buildbot and buildbot-worker when they
// are missing (only this scenario needs them; CI never runs it).
func ensureBuildbot(ctx context.Context, e *env) error {
	_, err1 := exec.LookPath("buildbot")
	_, err2 := exec.LookPath("buildbot-worker")
	if err1 == nil && err2 == nil {
		return nil
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("buildbot and buildbot-worker are not installed: run as root, or apt-get install buildbot buildbot-worker")
	}
	e.rep.logf("installing Debian's buildbot and buildbot-worker (apt-get)")
	cmd := exec.CommandContext(ctx, "apt-get", "-o", "DPkg::Lock::Timeout=600", "install", "-y", "-qq", "--no-install-recommends", "buildbot", "buildbot-worker")
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("apt-get install buildbot buildbot-worker: %w: %s", err, out)
	}
	return nil
}

// startBuildbot creates a master for the project at src (a git
// repository with out.txt) and n workers of jobs builds each, all on
// loopback under dir, starts them, and waits until every worker is
// attached and a first build passed on each.
func startBuildbot(ctx context.Context, e *env, dir, src string, n, jobs int) (*buildbotFarm, error) {
	twistd, err := exec.LookPath("twistd3")
	if err != nil {
		if twistd, err = exec.LookPath("twistd"); err != nil {
			return nil, fmt.Errorf("twistd (python3-twisted, a dependency of buildbot): %w", err)
		}
	}
	pbAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	httpAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	pbPort, err1 := strconv.Atoi(pbAddr[strings.LastIndexByte(pbAddr, ':')+1:])
	httpPort, err2 := strconv.Atoi(httpAddr[strings.LastIndexByte(httpAddr, ':')+1:])
	if err := errors.Join(err1, err2); err != nil {
		return nil, fmt.Errorf("free ports %s, %s: %w", pbAddr, httpAddr, err)
	}
	masterDir := filepath.Join(dir, "bb-master")
	run := func(name string, args ...string) error {
		cmd := exec.CommandContext(ctx, name, args...)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, out)
		}
		return nil
	}
	if err := run("buildbot", "create-master", "--quiet", masterDir); err != nil {
		return nil, err
	}
	var names []string
	for i := range n {
		names = append(names, fmt.Sprintf("'w%d'", i))
	}
	cfg := fmt.Sprintf(buildbotMasterCfg, "file://"+src, strings.Join(names, ", "), pbPort, jobs, httpPort)
	if err := os.WriteFile(filepath.Join(masterDir, "master.cfg"), []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(masterDir, "artifacts"), 0o755); err != nil {
		return nil, err
	}
	f := &buildbotFarm{masterDir: masterDir, submit: "http://" + httpAddr + "/build", client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}}
	f.master, err = procs.startIn(dir, masterDir, "bb-master", twistd, nil, "--nodaemon", "--no_save", "--pidfile=", "--logfile=-", "-y", "buildbot.tac")
	if err != nil {
		return nil, err
	}
	for i := range n {
		wdir := filepath.Join(dir, fmt.Sprintf("bb-worker-%d", i))
		if err := run("buildbot-worker", "create-worker", "--quiet", wdir, pbAddr, fmt.Sprintf("w%d", i), "pass"); err != nil {
			f.close()
			return nil, err
		}
		p, err := procs.startIn(dir, wdir, fmt.Sprintf("bb-worker-%d", i), twistd, nil, "--nodaemon", "--no_save", "--pidfile=", "--logfile=-", "-y", "buildbot.tac")
		if err != nil {
			f.close()
			return nil, err
		}
		f.workers = append(f.workers, p)
		f.workerDirs = append(f.workerDirs, wdir)
	}
	// Ready when every worker says it is connected and n builds at once
	// pass (most workers clone the source in these).
	err = pollUntil(ctx, 3*time.Minute, func() error {
		if !f.master.running() {
			return f.master.exitError()
		}
		for i, wdir := range f.workerDirs {
			if log, _ := os.ReadFile(filepath.Join(wdir, "twistd.log")); !strings.Contains(string(log), "worker is ready") {
				return fmt.Errorf("worker %d is not connected yet", i)
			}
		}
		var wg sync.WaitGroup
		var firstErr atomic.Value
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := f.build(ctx); err != nil {
					firstErr.CompareAndSwap(nil, err)
				}
			}()
		}
		wg.Wait()
		if err, _ := firstErr.Load().(error); err != nil {
			return err
		}
		return nil
	})
	if err != nil {
		f.close()
		return nil, fmt.Errorf("buildbot not ready: %w (master log: %s)", err, tailFile(filepath.Join(masterDir, "twistd.log"), 20))
	}
	return f, nil
}

// buildbotTimeout bounds one build's wait in the harness. Longer than
// Kiln's completionTimeout: under the sustained load a build waits in
// Buildbot's queue behind all the submitters' builds (about 30 s at 1
// build/s), which is the measured figure, not a failure.
const buildbotTimeout = 5 * time.Minute

// build asks the master for one build and returns when it is complete.
func (f *buildbotFarm) build(ctx context.Context) (time.Duration, error) {
	rctx, cancel := context.WithTimeout(ctx, buildbotTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, f.submit, nil)
	if err != nil {
		return 0, err
	}
	t0 := time.Now()
	resp, err := f.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	d := time.Since(t0)
	if err != nil {
		return d, err
	}
	var out struct {
		Results int `json:"results"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &out) != nil {
		return d, fmt.Errorf("buildbot build: HTTP %d: %s", resp.StatusCode, body)
	}
	if out.Results != 0 { // buildbot.process.results.SUCCESS
		return d, fmt.Errorf("buildbot build ended with result %d, not SUCCESS", out.Results)
	}
	return d, nil
}

// pids returns the master's and the workers' process ids.
func (f *buildbotFarm) pids() []int {
	ps := []int{f.master.pid()}
	for _, w := range f.workers {
		ps = append(ps, w.pid())
	}
	return ps
}

// close stops the workers, then the master, by their PIDs.
func (f *buildbotFarm) close() {
	for _, w := range f.workers {
		w.stop()
	}
	if f.master != nil {
		f.master.stop()
	}
}
