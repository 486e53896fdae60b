package server

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	intoto "github.com/in-toto/attestation/go/v1"

	"github.com/kilnbuild/kiln/internal/provenance"
	"github.com/kilnbuild/kiln/internal/sched"
	"github.com/kilnbuild/kiln/internal/store"
	"github.com/kilnbuild/kiln/internal/translog"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// Provenance on the metaserver (docs/provenance.md):
//
//	Hello.public_key ──pinKey──▶ BuildServerRecord.public_key (first sight)
//	AttemptResult.statement ──openStatement (before s.mu)──▶ checked
//	    against the attempt (checkStatementLocked, under s.mu); a bad one
//	    ends the attempt REJECTED and the result is refused
//	build SUCCEEDED ──finishLocked──▶ logProvenance, in the transaction
//	    of the final record: the statement's entry, then the summary's
//	    (summarizeVerified), both in the transparency log
//
// The log's checkpoint and the summaries are signed by the metaserver's
// own key, DATA_DIR/provenance.key, under Config.LogName.

// openNotary loads (or makes) the metaserver's signing key.
func openNotary(cfg Config) (*translog.Notary, error) {
	key, err := provenance.LoadOrCreateKey(filepath.Join(cfg.DataDir, provenance.KeyFile))
	if err != nil {
		return nil, err
	}
	return translog.NewNotary(cfg.LogName, key)
}

// errKeyMismatch refuses a session whose key is not the one pinned.
var errKeyMismatch = status.Error(codes.PermissionDenied,
	"this build server presents another signing key than the one pinned for its credential; "+
		"a build server that lost its key is revoked and enrolled again")

// pinKey checks a session's public key against the one pinned for the
// credential name (in memory, else in the store) and pins it on first
// sight. The store write joins the connect's record update.
func (s *Server) pinKey(name string, pub []byte) error {
	if len(pub) != ed25519.PublicKeySize {
		return status.Errorf(codes.InvalidArgument, "hello: public_key of %d bytes, want an ed25519 key of %d", len(pub), ed25519.PublicKeySize)
	}
	s.mu.Lock()
	known, ok := s.keys[name]
	s.mu.Unlock()
	if !ok {
		err := s.st.View(func(tx store.Tx) error {
			rec, err := tx.BuildServer(name)
			if err != nil {
				return err
			}
			known = rec.GetPublicKey()
			return nil
		})
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return status.Errorf(codes.Unavailable, "reading build server %s: %v", name, err)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if k, ok := s.keys[name]; ok { // another session pinned meanwhile
		known = k
	}
	if len(known) > 0 && !bytes.Equal(known, pub) {
		s.log.Warn("session refused: another signing key than the pinned one", "build_server", name,
			"pinned_key", provenance.KeyID(known)[:16], "presented_key", provenance.KeyID(pub)[:16])
		return errKeyMismatch
	}
	s.keys[name] = bytes.Clone(pub)
	return nil
}

// openStatement checks, before s.mu is taken, that a successful result
// carries a statement signed by the session's key; it returns the
// statement, or why the result is refused.
func openStatement(ss *session, r *kilnv1.AttemptResult) (*signedStatement, string) {
	env := r.GetStatement()
	switch {
	case len(env) == 0:
		return nil, "the successful result carries no signed provenance statement"
	case len(env) > provenance.MaxEnvelopeBytes:
		return nil, fmt.Sprintf("provenance statement of %d bytes, more than the %d allowed", len(env), provenance.MaxEnvelopeBytes)
	}
	st, err := provenance.Open(env, ss.key)
	if err != nil {
		return nil, "provenance statement refused: " + err.Error()
	}
	return &signedStatement{envelope: env, key: ss.key, server: ss.name, attempt: r.GetAttemptId(), st: st}, ""
}

// signedStatement is a checked statement waiting for its build's end.
type signedStatement struct {
	envelope []byte
	key      ed25519.PublicKey
	server   string
	attempt  uint64
	st       *intoto.Statement
}

// checkStatementLocked returns why st does not describe attempt a's
// result r, "" when it does (a replayed statement of another attempt or
// artifact is refused here).
func (s *Server) checkStatementLocked(st *signedStatement, a *sched.Attempt, r *kilnv1.AttemptResult) string {
	ab := s.active[a.Build.ID]
	if ab == nil {
		return ""
	}
	b := ab.rec.GetBuild()
	why := provenance.CheckStatement(st.st, provenance.Claim{
		ArtifactSHA256: r.GetArtifact().GetSha256(), Project: b.GetProject(), Commit: b.GetCommit(),
		BuildServer: st.server, AttemptID: a.ID,
	})
	if why != "" {
		return "provenance statement refused: " + why
	}
	return ""
}

// agreeingStatementsLocked returns the statements to log for b, verified
// and SUCCEEDED: the one kept with each counted replica of an agreeing
// build server (Build.agreeing_build_servers) whose artifact is b's, in the
// order the results came, with each signer's pinned key.
func (s *Server) agreeingStatementsLocked(b *kilnv1.Build) []*signedStatement {
	var out []*signedStatement
	seen := map[string]bool{}
	for _, r := range b.GetReplicas() {
		name := r.GetBuildServer()
		if r.GetDiscounted() != "" || len(r.GetStatement()) == 0 || seen[name] ||
			answer(r) != b.GetArtifact().GetSha256() || !slices.Contains(b.GetAgreeingBuildServers(), name) {
			continue
		}
		seen[name] = true
		out = append(out, &signedStatement{envelope: r.GetStatement(), key: s.keys[name], server: name, attempt: r.GetAttemptId()})
	}
	return out
}

// logProvenance appends, in tx, the statements of the build's agreeing
// results and the metaserver's verification summary naming them, and
// returns the record to store: rec with their references. A statement
// whose key this process has not seen (pinned before a restart) takes the
// key pinned in its build server's record. Deterministic on a fresh
// transaction (the committer may run it again after a full disk).
func (s *Server) logProvenance(tx store.Tx, rec *store.Build, sts []*signedStatement, at time.Time) (*store.Build, error) {
	b := rec.GetBuild()
	var refs []*kilnv1.LogEntryRef
	for _, st := range sts {
		key := st.key
		if len(key) == 0 {
			bs, err := tx.BuildServer(st.server)
			if err != nil {
				return nil, fmt.Errorf("the key of build server %s: %w", st.server, err)
			}
			key = bs.GetPublicKey()
		}
		entry, err := (&provenance.Entry{Kind: provenance.KindStatement, Build: b.GetId(), Attempt: st.attempt,
			Signer: st.server, Key: key, Envelope: st.envelope}).Marshal()
		if err != nil {
			return nil, err
		}
		n, err := translog.Append(tx, entry)
		if err != nil {
			return nil, fmt.Errorf("logging the statement of build %d: %w", b.GetId(), err)
		}
		refs = append(refs, &kilnv1.LogEntryRef{Index: uint64(n), Kind: provenance.KindStatement, Signer: st.server,
			Sha256: provenance.SHA256(entry), AttemptId: st.attempt})
	}
	sum, err := s.summarizeVerified(tx, b, refs, at)
	if err != nil {
		return nil, err
	}
	out := proto.Clone(rec).(*store.Build)
	out.Build.Provenance = append(refs, sum)
	return out, nil
}

// summarizeVerified signs and logs the metaserver's verification summary
// of build b: its artifact, and the agreeing statements refs.
//
// It runs where a verified build becomes SUCCEEDED (logProvenance, from
// putFinalLocked), with the statements of every agreeing build server
// (verify.go decides who agrees).
func (s *Server) summarizeVerified(tx store.Tx, b *kilnv1.Build, refs []*kilnv1.LogEntryRef, at time.Time) (*kilnv1.LogEntryRef, error) {
	inputs := make([]provenance.StatementRef, len(refs))
	for i, r := range refs {
		inputs[i] = provenance.StatementRef{Index: r.GetIndex(), EntrySHA256: r.GetSha256()}
	}
	st, err := provenance.NewSummary(s.notary.Name, b.GetId(), b.GetArtifact().GetSha256(), inputs, at)
	if err != nil {
		return nil, err
	}
	env, err := provenance.Seal(s.notary.Key, st)
	if err != nil {
		return nil, err
	}
	entry, err := (&provenance.Entry{Kind: provenance.KindSummary, Build: b.GetId(), Signer: provenance.MetaserverSigner,
		Key: s.notary.Key.Public().(ed25519.PublicKey), Envelope: env}).Marshal()
	if err != nil {
		return nil, err
	}
	n, err := translog.Append(tx, entry)
	if err != nil {
		return nil, fmt.Errorf("logging the summary of build %d: %w", b.GetId(), err)
	}
	return &kilnv1.LogEntryRef{Index: uint64(n), Kind: provenance.KindSummary, Signer: provenance.MetaserverSigner,
		Sha256: provenance.SHA256(entry)}, nil
}
