package server

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/kilnbuild/kiln/internal/platform"
	"github.com/kilnbuild/kiln/internal/sched"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// The metaserver cannot measure a volunteer's machine, but it can look at
// what comes back: before a successful result is accepted, every ELF or
// PE file of its artifact, and every such member of a static (ar) archive
// in it, must be what platform.CodeFor derives from the target's claimed
// os, arch, endianness and data model (the one mapping and the one header
// check, CodeWant.CheckHead, shared with the build server's own check). A
// machine that claims s390x and returns x86-64 code is refused, whatever
// it says, and so is one that claims Windows i686 and returns an ELF file
// or an x86-64 PE.
//
// What is read: a gzip'd tar (what build servers pack), a tar (ustar, GNU
// or v7), or a single ELF or ar file. Other containers (xz, zstd, bzip2,
// zip, 7z) are refused: their files cannot be checked. Other data has no
// files to check and is accepted as is; code hidden inside it (a script
// with an ELF appended, a nested archive) is not found, see
// docs/manifest.md. gzip data that is not a readable tar is refused. Only the first bytes of each file
// are kept in memory; the whole artifact is read once.
//
// Limits: at most maxCheckedEntries tar entries and maxArchiveMembers ar
// members per archive, and the artifact may expand to at most
// maxExpandFactor times its size plus maxExpandSlack bytes (a gzip bomb is
// refused rather than read without end).
const (
	maxCheckedEntries = 1 << 20
	maxArchiveMembers = 100000
	maxExpandFactor   = 64
	maxExpandSlack    = 1 << 30
)

var (
	arMagic = []byte("!<arch>\n")
)

// errSource marks an error of reading the stored artifact itself (the
// metaserver's disk), not of its content.
type errSource struct{ err error }

func (e *errSource) Error() string { return "reading the artifact: " + e.err.Error() }
func (e *errSource) Unwrap() error { return e.err }

// sourceReader remembers its reader's errors as *errSource, and calls
// tick before every read: an error from tick ends the reading like one of
// the reader's (the session ended).
type sourceReader struct {
	r    io.Reader
	err  error
	tick func() error
}

func (s *sourceReader) Read(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	if s.tick != nil {
		if err := s.tick(); err != nil {
			s.err = &errSource{err}
			return 0, s.err
		}
	}
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF {
		s.err = &errSource{err}
		err = s.err
	}
	return n, err
}

// boundedReader fails once more than n bytes were read through it.
type boundedReader struct {
	r io.Reader
	n int64
}

var errExpands = errors.New("expands too much")

func (b *boundedReader) Read(p []byte) (int, error) {
	if b.n <= 0 {
		return 0, errExpands
	}
	if int64(len(p)) > b.n {
		p = p[:b.n]
	}
	n, err := b.r.Read(p)
	b.n -= int64(n)
	return n, err
}

// artifactMismatch reads an artifact of size bytes from r and says why it
// does not fit a target claimed as sys ("" when it fits, or when sys has
// no known ELF identity: nothing can be checked then). The error is the
// metaserver's own (reading r failed); a reason is the volunteer's fault.
// tick, when not nil, is called as the reading goes on; its error ends it.
func artifactMismatch(r io.Reader, size int64, sys *kilnv1.SystemInfo, tick func() error) (string, error) {
	want, ok := platform.CodeFor(sys)
	if !ok {
		return "", nil
	}
	src := &sourceReader{r: r, tick: tick}
	reason, err := checkArtifact(src, size, want)
	if src.err != nil {
		return "", src.err
	}
	if err != nil {
		return "", err
	}
	if reason != "" {
		reason = "artifact does not match the target: " + reason
	}
	return reason, nil
}

func checkArtifact(src io.Reader, size int64, want platform.CodeWant) (string, error) {
	br := bufio.NewReaderSize(src, 64<<10)
	head, _ := br.Peek(512)
	var tr *tar.Reader
	switch {
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
		gz, err := gzip.NewReader(br)
		if err != nil {
			return "artifact is not a readable tar.gz: " + err.Error(), nil
		}
		tr = tar.NewReader(&boundedReader{r: gz, n: maxExpandFactor*size + maxExpandSlack})
	case isTarHeader(head):
		// ustar, GNU or an old v7 header (no magic, a valid checksum).
		tr = tar.NewReader(br)
	case otherContainer(head) != "":
		// Build servers pack tar.gz only; a container this check cannot
		// look into could hold code it would not see, which a client may
		// still unpack (red team: xz, zstd, bzip2, zip passed unchecked).
		return "artifact is " + otherContainer(head) + ", not a tar.gz (build servers pack tar.gz only)", nil
	default:
		return checkFile(br, "the artifact", want)
	}
	for i := 0; ; i++ {
		if i == maxCheckedEntries {
			return fmt.Sprintf("artifact has more than %d files", maxCheckedEntries), nil
		}
		h, err := tr.Next()
		if err == io.EOF {
			return "", nil
		}
		var es *errSource
		switch {
		case errors.As(err, &es):
			return "", err
		case errors.Is(err, errExpands):
			return fmt.Sprintf("artifact expands to more than %d bytes", maxExpandFactor*size+maxExpandSlack), nil
		case err != nil:
			return "artifact is not a readable tar: " + err.Error(), nil
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		reason, err := checkFile(tr, h.Name, want)
		if reason != "" || err != nil {
			return reason, err
		}
	}
}

// checkFile checks one file of the artifact, named name in it, from its
// first bytes (an ELF or PE header) or, for an ar archive, its members'.
func checkFile(r io.Reader, name string, want platform.CodeWant) (string, error) {
	var head [platform.HeadLen]byte
	n, err := io.ReadFull(r, head[:])
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		return readFailure(name, err)
	}
	if bytes.HasPrefix(head[:n], arMagic) {
		return checkArchive(io.MultiReader(bytes.NewReader(head[len(arMagic):n]), r), name, want)
	}
	return want.CheckHead(head[:n], name), nil
}

// readFailure turns an error reading inside the artifact into a reason,
// unless the metaserver's own reading failed.
func readFailure(name string, err error) (string, error) {
	var es *errSource
	if errors.As(err, &es) {
		return "", err
	}
	if errors.Is(err, errExpands) {
		return "artifact expands too much (" + name + ")", nil
	}
	return fmt.Sprintf("%s cannot be read: %v", name, err), nil
}

// checkArchive checks the ELF (and, for Windows, COFF) members of a static library read from r,
// just past its "!<arch>\n" (GNU or BSD names); members are named
// "lib/libfoo.a(foo.o)".
func checkArchive(r io.Reader, name string, want platform.CodeWant) (string, error) {
	var longNames []byte
	for i := 0; ; i++ {
		if i == maxArchiveMembers {
			return fmt.Sprintf("%s has more than %d members", name, maxArchiveMembers), nil
		}
		var hdr [60]byte
		if _, err := io.ReadFull(r, hdr[:]); err == io.EOF {
			return "", nil
		} else if err != nil {
			return readFailure(name, err)
		}
		msize, err := strconv.ParseInt(strings.TrimSpace(string(hdr[48:58])), 10, 64)
		if err != nil || msize < 0 || string(hdr[58:60]) != "`\n" {
			return fmt.Sprintf("%s is a malformed ar archive (member %d)", name, i+1), nil
		}
		body := io.LimitReader(r, msize)
		member := strings.TrimRight(string(hdr[:16]), " ")
		switch {
		case member == "//":
			if msize <= 1<<20 {
				longNames, err = io.ReadAll(body)
				if err != nil {
					return readFailure(name, err)
				}
			}
			member = ""
		case member == "/" || member == "/SYM64/" || strings.HasPrefix(member, "__.SYMDEF"):
			member = "" // symbol tables
		case strings.HasPrefix(member, "#1/"):
			// BSD: the name is the first k bytes of the data.
			k, err := strconv.ParseInt(member[3:], 10, 64)
			if err != nil || k < 0 || k > msize || k > 4096 {
				return fmt.Sprintf("%s is a malformed ar archive (member %d's name)", name, i+1), nil
			}
			b := make([]byte, k)
			if _, err := io.ReadFull(body, b); err != nil {
				return readFailure(name, err)
			}
			member = string(bytes.TrimRight(b, "\x00"))
		case strings.HasPrefix(member, "/"):
			member = platform.ArLongName(longNames, member[1:])
		default:
			member = strings.TrimSuffix(member, "/")
		}
		if member != "" {
			var head [platform.HeadLen]byte
			k, err := io.ReadFull(body, head[:])
			if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
				return readFailure(name, err)
			}
			if reason := want.CheckMember(head[:k], name+"("+member+")"); reason != "" {
				return reason, nil
			}
		}
		if _, err := io.Copy(io.Discard, body); err != nil {
			return readFailure(name, err)
		}
		if msize%2 == 1 { // members start at even offsets
			if _, err := io.ReadFull(r, make([]byte, 1)); err == io.EOF {
				return "", nil
			} else if err != nil {
				return readFailure(name, err)
			}
		}
	}
}

// inspectArtifact checks the artifact of r, a successful result sent on
// ss (its data inline, or uploaded before), against the platform its
// build was dispatched for, as that target claimed it. It says nothing
// ("", nil) when the attempt is not ss's or the artifact is not stored:
// the result is refused for that under s.mu. While it reads, the leases
// of ss's attempts are renewed (its heartbeats wait behind this result).
func (s *Server) inspectArtifact(ss *session, r *kilnv1.AttemptResult, inline []byte) (string, error) {
	s.mu.Lock()
	var sys *kilnv1.SystemInfo
	if a := s.ownAttemptLocked(ss, r.GetAttemptId()); a != nil {
		if ab := s.active[a.Build.ID]; ab != nil {
			sys = ab.rec.GetBuild().GetPlatform()
		}
	}
	s.mu.Unlock()
	if sys == nil {
		return "", nil
	}
	art := r.GetArtifact()
	data := inline
	if len(data) == 0 {
		data = s.blobs.pendingData(art.GetSha256())
	}
	var rd io.Reader = bytes.NewReader(data)
	if data == nil {
		f, _, err := s.blobs.open(ss.ctx, art.GetSha256())
		if err != nil {
			return "", nil // not uploaded (or unreadable): refused under s.mu
		}
		defer f.Close()
		rd = f
	}
	return artifactMismatch(rd, int64(art.GetSize()), sys, s.leaseKeeper(ss))
}

// leaseKeeper returns a tick for a long read on ss's behalf: it fails once
// the session ended and renews the leases of ss's attempts once per
// heartbeat interval.
func (s *Server) leaseKeeper(ss *session) func() error {
	last := s.now()
	return func() error {
		if err := ss.ctx.Err(); err != nil {
			return err
		}
		if s.clock.Since(last) < s.cfg.HeartbeatInterval {
			return nil
		}
		last = s.now()
		s.mu.Lock()
		defer s.mu.Unlock()
		srv := s.sched.Server(ss.name)
		if srv == nil || s.sessions[ss.name] != ss {
			return nil
		}
		var ids []uint64
		for _, a := range s.attemptsOfLocked(ss.name) {
			ids = append(ids, a.ID)
		}
		s.sched.Renew(srv, ids, s.now().Add(s.cfg.Lease))
		return nil
	}
}

// distrustLocked refuses a's target to ss's build server for the rest of
// the session, after its artifact did not match the target (reason).
func (s *Server) distrustLocked(ss *session, a *sched.Attempt, reason string) {
	target := ""
	if a.Target != nil {
		target = a.Target.ID
	}
	s.log.Warn("result refused: the artifact does not match the target's platform; the build server is no longer trusted with that target in this session",
		"build_server", ss.name, "target", target, "attempt_id", a.ID, "build_id", a.Build.ID, "reason", reason)
	if srv := s.sched.Server(ss.name); srv != nil && s.sessions[ss.name] == ss && target != "" {
		s.sched.WithdrawTarget(srv, target)
		s.updateTargetMetricsLocked()
	}
}

// isTarHeader reports whether head starts with a tar header: ustar magic,
// or (v7, no magic) a header checksum that holds.
func isTarHeader(head []byte) bool {
	if len(head) < 512 {
		return false
	}
	if string(head[257:262]) == "ustar" {
		return true
	}
	field := strings.TrimRight(strings.TrimSpace(string(bytes.TrimRight(head[148:156], "\x00"))), "\x00 ")
	want, err := strconv.ParseUint(field, 8, 32)
	if err != nil || head[0] == 0 {
		return false
	}
	var sum uint64
	for i, b := range head[:512] {
		if i >= 148 && i < 156 {
			b = ' '
		}
		sum += uint64(b)
	}
	return sum == want
}

// otherContainer names the archive or compression format head starts
// with, other than gzip and tar; "" when none.
func otherContainer(head []byte) string {
	for _, f := range []struct {
		magic, name string
	}{
		{"\xfd7zXZ\x00", "xz"}, {"\x28\xb5\x2f\xfd", "zstd"}, {"BZh", "bzip2"},
		{"PK\x03\x04", "zip"}, {"PK\x05\x06", "zip"}, {"7z\xbc\xaf\x27\x1c", "7z"},
		{"\x5d\x00\x00", "lzma"}, {"\x04\x22\x4d\x18", "lz4"},
	} {
		if bytes.HasPrefix(head, []byte(f.magic)) {
			return f.name
		}
	}
	return ""
}
