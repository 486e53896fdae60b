package server

import (
	"context"
	"encoding/json"
	"flag"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/kilnbuild/kiln/internal/mail"
	"github.com/kilnbuild/kiln/internal/web"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

var privacySeed = flag.Uint64("privacy.seed", 0, "seed of TestNoResponsePageMailOrBuildServerMessageEverHoldsARequesterEmail (0: random)")

// privacyPlan is the path one build takes in the privacy property test.
type privacyPlan int

const (
	planQueued           privacyPlan = iota // never matches a target; some waiters withdraw
	planWithdrawnQueued                     // every waiter withdraws while it is queued
	planAdminQueued                         // an administrator cancels it while queued
	planSucceed                             // built, then asked again (a cache hit)
	planFail                                // its build step fails with a hostile reason
	planSetupFail                           // setup fails: queued again, waiting with reasons
	planRunning                             // stays running; some waiters withdraw
	planWithdrawnRunning                    // every waiter withdraws while it runs
	planAdminRunning                        // an administrator cancels it while it runs
	planCount
)

func (p privacyPlan) dispatched() bool { return p >= planSucceed }

// privacyBuild is one build of the test, with its model.
type privacyBuild struct {
	id        uint64
	plan      privacyPlan
	emails    []string // requesters, canonical
	withdrawn []string // those who withdrew
	attempt   uint64
}

func (b *privacyBuild) waiting() []string {
	var out []string
	for _, e := range b.emails {
		if !slices.Contains(b.withdrawn, e) {
			out = append(out, e)
		}
	}
	return out
}

// privacyRun drives one farm through random paths with hostile addresses.
type privacyRun struct {
	t      *testing.T
	rng    *rand.Rand
	ts     *testServer
	mb     *mailbox
	pool   []string // every address, canonical
	tokens []string // pool[i]'s unique token
	ss     *testSession
	// cancels counts the CancelAttempts the build server received.
	cancels int
	// seen is every text that left the metaserver for someone who is not
	// the requester it belongs to, with where it came from.
	seen []seenText
}

type seenText struct{ where, text string }

// hostileParts are pieces of local parts that HTML, JSON, URLs or mail
// headers treat specially; each keeps an address valid.
var hostileParts = []string{"", "+kiln", ".o'brien", "&amp", "{x}", "%2e", "/s", "=q?", "`t`", "|p~", "#h", "!b", "$d", "^c", "*"}
var hostileDomains = []string{"example.org", "EXAMPLE.NET", "xn--h4ck-er.example", "localhost", "a-b.c-d.example"}

// newAddress returns a valid address with a unique token of letters no
// hex digit, base64 of a short input or English word is likely to hold.
func (p *privacyRun) newAddress() (addr, token string) {
	const letters = "ghijklmnopqrstuvwxyz"
	tok := []byte("zq")
	for range 8 {
		tok = append(tok, letters[p.rng.IntN(len(letters))])
	}
	token = string(tok)
	local := token + hostileParts[p.rng.IntN(len(hostileParts))]
	if p.rng.IntN(3) == 0 {
		local = hostileParts[p.rng.IntN(len(hostileParts))] + local
		local = strings.TrimPrefix(local, ".")
	}
	raw := local + "@" + hostileDomains[p.rng.IntN(len(hostileDomains))]
	addr, err := mail.ValidateAddress(raw)
	if err != nil {
		p.t.Fatalf("the generator made an invalid address %q: %v", raw, err)
	}
	return addr, token
}

// spelling returns addr as a requester might type it: the domain's case
// varies, which the metaserver canonicalizes.
func (p *privacyRun) spelling(addr string) string {
	if p.rng.IntN(2) == 0 {
		return addr
	}
	at := strings.LastIndexByte(addr, '@')
	return addr[:at] + "@" + strings.ToUpper(addr[at+1:])
}

func (p *privacyRun) see(where string, text string) { p.seen = append(p.seen, seenText{where, text}) }

func (p *privacyRun) seeMsg(where string, m proto.Message) {
	p.see(where, protojson.Format(m))
	raw, _ := proto.Marshal(m)
	p.see(where+" (wire)", string(raw))
}

// seeErr records an error's message returned to caller (who may see its
// own address in it, no one else's).
func (p *privacyRun) seeErr(where, caller string, err error) {
	msg := status.Convert(err).Message()
	p.see(where, strings.ReplaceAll(msg, caller, "<caller>"))
}

// withdraw has email withdraw its wait on b and checks the answer.
func (p *privacyRun) withdraw(b *privacyBuild, email string) {
	p.t.Helper()
	got, err := p.ts.cancel(p.spelling(email), b.id)
	if err != nil {
		p.t.Fatalf("build %d (plan %d): %s withdrawing: %v", b.id, b.plan, email, err)
	}
	b.withdrawn = append(b.withdrawn, email)
	p.seeMsg("Cancel answer", got)
	if left := len(b.waiting()); left == 0 {
		if got.GetState() != kilnv1.BuildState_BUILD_STATE_CANCELLED || got.GetFailure() != withdrawnReason {
			p.t.Fatalf("build %d after its last waiter withdrew: %v %q", b.id, got.GetState(), got.GetFailure())
		}
	} else if got.GetState().Final() || got.GetWaiters() != uint32(left) {
		p.t.Fatalf("build %d after %s withdrew: %v with %d waiters; want it going on for %d", b.id, email, got.GetState(), got.GetWaiters(), left)
	}
	// Withdrawing again, or a stranger's try, is refused.
	_, err = p.ts.cancel(email, b.id)
	if status.Code(err) != codes.FailedPrecondition {
		p.t.Fatalf("build %d: %s withdrawing twice: %v; want FailedPrecondition", b.id, email, err)
	}
	p.seeErr("Cancel refusal", email, err)
	for _, stranger := range p.pool {
		if !slices.Contains(b.emails, stranger) {
			_, err = p.ts.cancel(stranger, b.id)
			expectCode(p.t, "a stranger's cancel", err, codes.PermissionDenied)
			p.seeErr("Cancel refusal", stranger, err)
			break
		}
	}
}

// withdrawSome has a strict subset of b's waiters withdraw (maybe none).
func (p *privacyRun) withdrawSome(b *privacyBuild) {
	n := p.rng.IntN(len(b.emails))
	for _, e := range b.emails[:n] {
		p.withdraw(b, e)
	}
}

// next reads the build server's next message and records it.
func (p *privacyRun) next() *kilnv1.SessionResponse {
	p.t.Helper()
	msg := p.ss.next(5 * time.Second)
	p.seeMsg("to the build server", msg)
	if msg.GetCancel() != nil {
		p.cancels++
	}
	return msg
}

// result reports r and waits for its acknowledgement.
func (p *privacyRun) result(r *kilnv1.AttemptResult) {
	p.t.Helper()
	if err := p.ss.stream.Send(&kilnv1.SessionRequest{Msg: &kilnv1.SessionRequest_Result{Result: r}}); err != nil {
		p.t.Fatal(err)
	}
	for {
		if ack := p.next().GetResultAck(); ack != nil && ack.GetAttemptId() == r.GetAttemptId() {
			return
		}
	}
}

func TestNoResponsePageMailOrBuildServerMessageEverHoldsARequesterEmail(t *testing.T) {
	seed := *privacySeed
	if seed == 0 {
		seed = rand.Uint64()
	}
	rounds := 3
	if testing.Short() {
		rounds = 1
	}
	for round := range rounds {
		t.Run("seed "+strconv.FormatUint(seed+uint64(round), 10), func(t *testing.T) {
			privacyRound(t, seed+uint64(round))
		})
	}
}

// privacyRound runs one random farm history, then reads everything public.
func privacyRound(t *testing.T, seed uint64) {
	t.Logf("rerun with -privacy.seed %d -run 'TestNoResponse.*/seed_%d$'", seed, seed)
	ts, mb := startCancelServer(t)
	p := &privacyRun{t: t, rng: rand.New(rand.NewPCG(seed, 0x6b696c6e)), ts: ts, mb: mb}
	for range 6 {
		addr, tok := p.newAddress()
		p.pool, p.tokens = append(p.pool, addr), append(p.tokens, tok)
	}
	// Every plan once, then random ones.
	var builds []*privacyBuild
	for i := range 14 {
		plan := privacyPlan(i)
		if i >= int(planCount) {
			plan = privacyPlan(p.rng.IntN(int(planCount)))
		}
		b := &privacyBuild{plan: plan}
		for _, k := range p.rng.Perm(len(p.pool))[:1+p.rng.IntN(3)] {
			b.emails = append(b.emails, p.pool[k])
		}
		req := &kilnv1.SubmitRequest{Project: "hello", Revision: "main", Options: map[string]string{"level": strconv.Itoa(100 + i)}}
		if !plan.dispatched() {
			req.Constraints = &kilnv1.PlatformConstraints{Arch: "s390x"} // no target will match
		}
		for _, e := range b.emails {
			req.Email = p.spelling(e)
			resp, err := kilnv1.NewCompileServiceClient(ts.conn).Submit(context.Background(), req)
			if err != nil {
				t.Fatalf("Submit: %v", err)
			}
			p.seeMsg("Submit answer", resp)
			if b.id == 0 {
				b.id = resp.GetBuild().GetId()
			} else if resp.GetBuild().GetId() != b.id || !resp.GetJoined() {
				t.Fatalf("request of %s did not join build %d: %v", e, b.id, resp)
			}
		}
		builds = append(builds, b)
	}

	for _, b := range builds {
		switch b.plan {
		case planQueued:
			p.withdrawSome(b)
		case planWithdrawnQueued:
			for _, e := range b.emails {
				p.withdraw(b, e)
			}
		case planAdminQueued:
			p.withdrawSome(b)
			if _, err := ts.srv.AdminCancel(b.id, "<b>stop</b> & \"go\" @ once"); err != nil {
				t.Fatal(err)
			}
		}
	}

	dispatched := 0
	for _, b := range builds {
		if b.plan.dispatched() {
			dispatched++
		}
	}
	p.ss = ts.connectHello("bs", &kilnv1.Hello{Version: "test", Slots: 64, Targets: []*kilnv1.Target{{Id: "native", System: testSystem}}})
	byID := map[uint64]*privacyBuild{}
	for _, b := range builds {
		byID[b.id] = b
	}
	for got := 0; got < dispatched; {
		if a := p.next().GetAssignment(); a != nil {
			byID[a.GetBuildId()].attempt = a.GetAttemptId()
			got++
		}
	}
	cancels := 0
	for _, k := range p.rng.Perm(len(builds)) {
		b := builds[k]
		if !b.plan.dispatched() {
			continue
		}
		err := p.ss.stream.Send(&kilnv1.SessionRequest{Msg: &kilnv1.SessionRequest_Log{Log: &kilnv1.LogChunk{
			AttemptId: b.attempt, Data: []byte("compiling <script>alert('@')</script> & \"quotes\"\n")}}})
		if err != nil {
			t.Fatal(err)
		}
		switch b.plan {
		case planSucceed:
			p.withdrawSome(b)
			data := payload(200+int(b.id), byte(b.id))
			p.result(inlineResult(b.attempt, data, data))
			addr, tok := p.newAddress()
			p.pool, p.tokens = append(p.pool, addr), append(p.tokens, tok)
			resp, err := kilnv1.NewCompileServiceClient(ts.conn).Submit(context.Background(), &kilnv1.SubmitRequest{
				Project: "hello", Revision: "main", Email: addr, Options: map[string]string{"level": strconv.Itoa(100 + k)}})
			if err != nil || !resp.GetCached() || resp.GetBuild().GetId() != b.id {
				t.Fatalf("asking again for build %d: %v, %v; want a cache hit", b.id, resp, err)
			}
			p.seeMsg("Submit answer", resp)
		case planFail:
			p.withdrawSome(b)
			p.result(&kilnv1.AttemptResult{AttemptId: b.attempt, Outcome: kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_FAILED,
				Reason: "make: *** [hello] Error 2 <i>@</i>", FailingStep: "make CFLAGS='-O2' && echo \"&\""})
		case planSetupFail:
			p.withdrawSome(b)
			p.result(&kilnv1.AttemptResult{AttemptId: b.attempt, Outcome: kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SETUP_FAILED, Reason: "fetch failed"})
		case planRunning:
			p.withdrawSome(b)
		case planWithdrawnRunning:
			for _, e := range b.emails {
				p.withdraw(b, e)
			}
			cancels++
		case planAdminRunning:
			p.withdrawSome(b)
			if _, err := ts.srv.AdminCancel(b.id, ""); err != nil {
				t.Fatal(err)
			}
			cancels++
		}
	}
	for p.cancels < cancels {
		p.next()
	}

	p.checkModel(builds)
	p.readEverything(builds)
	p.checkSeen()
}

// checkModel compares each build and its mail with what its plan says.
func (p *privacyRun) checkModel(builds []*privacyBuild) {
	t := p.t
	for _, b := range builds {
		got := p.ts.build(b.id)
		want := map[privacyPlan]kilnv1.BuildState{
			planQueued: kilnv1.BuildState_BUILD_STATE_QUEUED, planSetupFail: kilnv1.BuildState_BUILD_STATE_QUEUED,
			planRunning: kilnv1.BuildState_BUILD_STATE_RUNNING, planSucceed: kilnv1.BuildState_BUILD_STATE_SUCCEEDED,
			planFail: kilnv1.BuildState_BUILD_STATE_FAILED,
		}[b.plan]
		if want == kilnv1.BuildState_BUILD_STATE_UNSPECIFIED {
			want = kilnv1.BuildState_BUILD_STATE_CANCELLED
		}
		if got.GetState() != want {
			t.Errorf("build %d (plan %d): %v, want %v", b.id, b.plan, got.GetState(), want)
		}
		to, finished := p.mb.recipients(b.id)
		if finished != want.Final() {
			t.Errorf("build %d (plan %d): finished %v, want %v", b.id, b.plan, finished, want.Final())
		}
		if !want.Final() {
			if got.GetWaiters() != uint32(len(b.waiting())) {
				t.Errorf("build %d (plan %d): %d waiters, want %d", b.id, b.plan, got.GetWaiters(), len(b.waiting()))
			}
			continue
		}
		slices.Sort(to)
		wantTo := b.waiting()
		slices.Sort(wantTo)
		if !slices.Equal(to, wantTo) {
			t.Errorf("build %d (plan %d): mailed to %q, want %q (who still waited)", b.id, b.plan, to, wantTo)
		}
		final := p.mb.finalBuild(b.id)
		subject, text, html := mail.Compose(final, mail.ComposeOptions{PublicURL: "http://127.0.0.1:8080", LogTail: "tail"})
		p.see("mail", subject+"\n"+text+"\n"+html)
		ev, err := json.Marshal(mail.NewEvent(final, "http://127.0.0.1:8080"))
		if err != nil {
			t.Fatal(err)
		}
		p.see("hook event", string(ev))
	}
}

// readEverything reads every StatusService and CompileService answer and
// every webstatus page and JSON document about the farm.
func (p *privacyRun) readEverything(builds []*privacyBuild) {
	t := p.t
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	statusc := kilnv1.NewStatusServiceClient(p.ts.conn)
	compile := kilnv1.NewCompileServiceClient(p.ts.conn)
	ov, err := statusc.GetOverview(ctx, &kilnv1.GetOverviewRequest{})
	if err != nil {
		t.Fatal(err)
	}
	p.seeMsg("GetOverview", ov)
	bss, err := statusc.ListBuildServers(ctx, &kilnv1.ListBuildServersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	p.seeMsg("ListBuildServers", bss)
	states := []kilnv1.BuildState{kilnv1.BuildState_BUILD_STATE_UNSPECIFIED}
	for s := kilnv1.BuildState_BUILD_STATE_QUEUED; s <= kilnv1.BuildState_BUILD_STATE_CANCELLED; s++ {
		states = append(states, s)
	}
	for _, st := range states {
		token := ""
		for range len(builds) + 1 {
			lb, err := statusc.ListBuilds(ctx, &kilnv1.ListBuildsRequest{State: st, PageSize: 4, PageToken: token})
			if err != nil {
				t.Fatal(err)
			}
			p.seeMsg("ListBuilds", lb)
			if token = lb.GetNextPageToken(); token == "" {
				break
			}
		}
	}
	for _, b := range builds {
		gb, err := compile.GetBuild(ctx, &kilnv1.GetBuildRequest{BuildId: b.id})
		if err != nil {
			t.Fatal(err)
		}
		p.seeMsg("GetBuild", gb)
		wctx, wcancel := context.WithCancel(ctx)
		w, err := compile.WatchBuild(wctx, &kilnv1.WatchBuildRequest{BuildId: b.id})
		if err != nil {
			t.Fatal(err)
		}
		first, err := w.Recv()
		if err != nil {
			t.Fatalf("WatchBuild %d: %v", b.id, err)
		}
		wcancel()
		p.seeMsg("WatchBuild", first)
		lg, err := compile.GetLog(ctx, &kilnv1.GetLogRequest{BuildId: b.id})
		if err != nil {
			t.Fatal(err)
		}
		for {
			chunk, err := lg.Recv()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("GetLog %d: %v", b.id, err)
			}
			p.seeMsg("GetLog", chunk)
		}
	}

	h := web.NewHandler(statusc, compile, web.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	paths := []string{"/", "/metaserverstatus", "/buildservers", "/builds", "/builds?page_size=3"}
	for _, st := range []string{"queued", "running", "succeeded", "failed", "error", "cancelled"} {
		paths = append(paths, "/builds?state="+st)
	}
	for _, b := range builds {
		id := "/build/" + strconv.FormatUint(b.id, 10)
		paths = append(paths, id, id+"/log.txt", id+"/log?snapshot=1")
		if final := p.ts.build(b.id); final.GetState().Final() {
			// These follow a running build's log until it ends.
			paths = append(paths, id+"/log", id+"/log/events")
			if final.GetState() == kilnv1.BuildState_BUILD_STATE_SUCCEEDED {
				paths = append(paths, id+"/artifact")
			}
		}
	}
	for _, path := range paths {
		for _, accept := range []string{"text/html", "application/json"} {
			rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
			req := httptest.NewRequestWithContext(rctx, http.MethodGet, path, nil)
			req.Header.Set("Accept", accept)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			timedOut := rctx.Err() != nil
			rcancel()
			if rec.Code != http.StatusOK || timedOut {
				t.Fatalf("GET %s (%s): status %d, timed out %v\n%s", path, accept, rec.Code, timedOut, rec.Body.String())
			}
			p.see("GET "+path+" ("+accept+")", rec.Body.String())
		}
	}
}

// checkSeen fails the test for every recorded text holding an address of
// the pool, or its unique token in any encoding.
func (p *privacyRun) checkSeen() {
	if len(p.seen) < 100 {
		p.t.Fatalf("only %d texts read: the test reads too little to mean anything", len(p.seen))
	}
	for _, s := range p.seen {
		lower := strings.ToLower(s.text)
		for i, addr := range p.pool {
			if strings.Contains(s.text, addr) || strings.Contains(lower, p.tokens[i]) {
				p.t.Errorf("%s holds requester %s:\n%s", s.where, addr, s.text)
			}
		}
	}
}
