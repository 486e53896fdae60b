package gitmirror

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// maxTableRefs bounds how many refs a ref table holds (about 150 bytes
// each). A mirror with more refs (a forge mirror full of pull-request refs,
// say) gets no table: its names are resolved with one rev-parse each, as
// before tables existed.
const maxTableRefs = 1 << 16

// refListFormat is the for-each-ref format a ref table is read from: the
// object a ref names and its type, then, when that object is a tag, the
// object the tag names and its type (one level of peeling only: a tag of a
// tag shows "tag" here), then the ref's full name.
const refListFormat = "%(objectname) %(objecttype) %(*objectname) %(*objecttype) %(refname)"

// refRules are the prefixes git tries, in order, after the name itself, to
// turn a ref name into a full ref name (gitrevisions(7), "<refname>"); the
// last rule, refs/remotes/<name>/HEAD, is written out in lookup.
var refRules = [...]string{"refs/", "refs/tags/", "refs/heads/", "refs/remotes/"}

// refTable is a snapshot of a mirror's refs, listed after a fetch, that
// answers ref names without a git process. It is immutable once built and
// shared by concurrent readers.
//
// It answers only when it knows git would give the same answer: a name git
// could read as something other than a ref (an expression, a pseudo-ref such
// as FETCH_HEAD, a file of the git directory), or whose ref does not peel to
// a commit in at most one step (a tag of a tag, a tag of a tree), gets no
// answer, and the caller asks git.
type refTable struct {
	asOf time.Time // lastOK when the listing began: the table holds at least that fetch's refs
	// refs maps full ref names to the commit they peel to, or to "" when
	// the table cannot tell (see refTable).
	refs map[string]string
	head string          // the ref HEAD points to, "" when HEAD is not a symbolic ref
	root map[string]bool // names directly in the git directory (HEAD, config, packed-refs, ...)
	// disabled marks a table that answers nothing: the mirror has more
	// than maxTableRefs refs, or listing them failed. It stands until the
	// next fetch, so a failure is not retried on every call.
	disabled bool
}

// lookup returns the commit that name resolves to, following git's order
// (the name itself, refs/NAME, refs/tags/NAME, refs/heads/NAME,
// refs/remotes/NAME, refs/remotes/NAME/HEAD: the first existing ref wins, so
// a tag hides a branch of the same name). ok is false when the table cannot
// answer for certain; then git must be asked. It allocates nothing.
func (t *refTable) lookup(name string) (id string, ok bool) {
	if t.disabled || !isPlainRefName(name) {
		return "", false
	}
	// Rule 1: the name itself, as a file of the git directory or a ref.
	switch {
	case name == "HEAD":
		if t.head == "" {
			return "", false // detached: rev-parse reads it
		}
		id, found := t.refs[t.head]
		return id, found && id != "" // unborn: git tries the other rules
	case strings.HasPrefix(name, "refs/"):
		if id, found := t.refs[name]; found {
			return id, id != ""
		}
	case t.mayBeRootRef(name):
		return "", false
	}
	var buf [maxRevisionLen + len("refs/remotes//HEAD")]byte
	for _, prefix := range refRules {
		key := append(append(buf[:0], prefix...), name...)
		if id, found := t.refs[string(key)]; found {
			return id, id != ""
		}
	}
	key := append(append(append(buf[:0], "refs/remotes/"...), name...), "/HEAD"...)
	if id, found := t.refs[string(key)]; found {
		return id, id != ""
	}
	return "", false
}

// mayBeRootRef reports whether git could read name, which is not under
// refs/, as something the table does not list: a pseudo-ref (FETCH_HEAD,
// ORIG_HEAD: upper case and underscores), a per-worktree ref, or anything
// below an entry of the git directory.
func (t *refTable) mayBeRootRef(name string) bool {
	first, _, _ := strings.Cut(name, "/")
	if t.root[first] || first == "worktrees" || first == "main-worktree" {
		return true
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; (c < 'A' || c > 'Z') && c != '_' && c != '-' {
			return false
		}
	}
	return true
}

// isPlainRefName reports whether name is a valid ref name (git
// check-ref-format, one-level names allowed) that git's revision parser
// takes as a plain ref name: no revision syntax (~ ^ : @{ ...), no "@"
// alone (which means HEAD). Anything else is left to git.
func isPlainRefName(name string) bool {
	if name == "" || name == "@" || len(name) > maxRevisionLen ||
		strings.Contains(name, "..") || strings.Contains(name, "@{") ||
		strings.HasSuffix(name, ".") {
		return false
	}
	for i := 0; i < len(name); i++ {
		switch c := name[i]; {
		case c <= ' ' || c == 0x7f:
			return false
		case strings.IndexByte(`~^:?*[\`, c) >= 0:
			return false
		}
	}
	for comp := range strings.SplitSeq(name, "/") {
		if comp == "" || comp[0] == '.' || strings.HasSuffix(comp, ".lock") {
			return false
		}
	}
	return true
}

// currentRefs returns the ref table of the newest successful fetch, listing
// the refs first when the table is older than that fetch (or missing).
// Concurrent callers share one listing. It returns nil when ctx ended while
// waiting for another caller's listing, and a disabled table when the refs
// could not be listed; either way the caller asks git.
func (m *Mirror) currentRefs(ctx context.Context) *refTable {
	asOf := m.lastFetch()
	if t := m.refs.Load(); t != nil && t.asOf.Equal(asOf) {
		return t
	}
	select {
	case m.refsSem <- struct{}{}:
	case <-ctx.Done():
		return nil
	}
	defer func() { <-m.refsSem }()
	asOf = m.lastFetch() // a fetch may have finished while waiting
	if t := m.refs.Load(); t != nil && t.asOf.Equal(asOf) {
		return t
	}
	start := time.Now()
	t, err := m.listRefs(ctx, asOf)
	if err != nil {
		if ctx.Err() != nil {
			return nil // the next caller lists again
		}
		m.log.Warn("listing refs failed, resolving names with rev-parse until the next fetch", "err", err)
		t = &refTable{asOf: asOf, disabled: true}
	}
	m.refs.Store(t)
	m.log.Debug("listed refs", "refs", len(t.refs), "disabled", t.disabled,
		"duration_ms", time.Since(start).Milliseconds())
	return t
}

// lastFetch returns the start time of the last successful fetch or clone.
func (m *Mirror) lastFetch() time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lastOK
}

// listRefs builds a ref table from two git processes: for-each-ref for
// every ref and symbolic-ref for HEAD.
func (m *Mirror) listRefs(ctx context.Context, asOf time.Time) (*refTable, error) {
	t := &refTable{asOf: asOf, refs: make(map[string]string), root: make(map[string]bool)}
	entries, err := os.ReadDir(m.dir)
	if err != nil {
		return nil, fmt.Errorf("gitmirror: list refs: %w", err)
	}
	for _, e := range entries {
		t.root[e.Name()] = true
	}

	m.localProcs.Add(1)
	out, err := run(ctx, m.dir, nil, "symbolic-ref", "--quiet", "HEAD")
	switch {
	case err == nil:
		t.head = strings.TrimSpace(string(out))
	case exitCode(err) == 1 && ctx.Err() == nil: // HEAD is detached
	default:
		return nil, fmt.Errorf("gitmirror: list refs: %w", err)
	}

	m.localProcs.Add(1)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // stops for-each-ref early when there are too many refs
	args := []string{"for-each-ref", "--format=" + refListFormat}
	cmd, stderr := command(ctx, m.dir, args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("gitmirror: for-each-ref: %w", err)
	}
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	var parseErr error
	for sc.Scan() {
		if len(t.refs) == maxTableRefs {
			t.disabled = true
			t.refs = nil
			break
		}
		name, id, err := parseRefLine(sc.Text())
		if err != nil {
			parseErr = err
			break
		}
		t.refs[name] = id
	}
	if t.disabled || parseErr != nil || sc.Err() != nil {
		cancel()
		_, _ = io.Copy(io.Discard, stdout)
		_ = cmd.Wait()
		switch {
		case parseErr != nil:
			return nil, fmt.Errorf("gitmirror: for-each-ref: %w", parseErr)
		case sc.Err() != nil:
			return nil, fmt.Errorf("gitmirror: for-each-ref: %w", sc.Err())
		}
		m.log.Info("too many refs for a ref table, resolving names with rev-parse", "max_refs", maxTableRefs)
		return t, nil
	}
	if err := cmd.Wait(); err != nil {
		return nil, fmt.Errorf("gitmirror: list refs: %w", gitErr(ctx, args, err, stderr))
	}
	return t, nil
}

// parseRefLine reads one line of refListFormat. id is the commit the ref
// peels to in at most one step, or "" when it names anything else.
func parseRefLine(line string) (name, id string, err error) {
	oid, rest, ok1 := strings.Cut(line, " ")
	typ, rest, ok2 := strings.Cut(rest, " ")
	peeled, rest, ok3 := strings.Cut(rest, " ")
	peeledType, name, ok4 := strings.Cut(rest, " ")
	if !ok1 || !ok2 || !ok3 || !ok4 || name == "" || !isCommitID(oid) {
		return "", "", fmt.Errorf("unexpected line %q", line)
	}
	switch {
	case typ == "commit":
		id = oid
	case typ == "tag" && peeledType == "commit":
		if !isCommitID(peeled) {
			return "", "", fmt.Errorf("unexpected line %q", line)
		}
		id = peeled
	}
	return name, id, nil
}
