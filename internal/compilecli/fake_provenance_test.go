package compilecli

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kilnbuild/kiln/internal/provenance"
	"github.com/kilnbuild/kiln/internal/store"
	"github.com/kilnbuild/kiln/internal/store/bolt"
	"github.com/kilnbuild/kiln/internal/translog"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// fakeLog is the fake metaserver's transparency log: a real one, in a
// bbolt file, with a build server's and the metaserver's real keys, so
// that downloads from the fake pass startcompile's provenance checks.
type fakeLog struct {
	mu     sync.Mutex
	db     *bolt.DB
	notary *translog.Notary
	bsKey  ed25519.PrivateKey
	refs   map[uint64][]*kilnv1.LogEntryRef
}

func newFakeLog(t *testing.T) *fakeLog {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "log.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	seed := sha256.Sum256([]byte("fake metaserver"))
	n, err := translog.NewNotary("fake-log", ed25519.NewKeyFromSeed(seed[:]))
	if err != nil {
		t.Fatal(err)
	}
	bs := sha256.Sum256([]byte("fake build server"))
	return &fakeLog{db: db, notary: n, bsKey: ed25519.NewKeyFromSeed(bs[:]), refs: map[uint64][]*kilnv1.LogEntryRef{}}
}

// log appends build id's statement and summary for artifact sha (once).
func (l *fakeLog) log(id uint64, sha string) ([]*kilnv1.LogEntryRef, error) {
	if refs := l.refs[id]; refs != nil {
		return refs, nil
	}
	f := provenance.Facts{ArtifactSHA256: sha, Project: "hello", Commit: strings.Repeat("a", 40), BuildServer: "fakebs",
		AttemptID: id<<8 | 1, Started: time.Unix(100, 0), Ended: time.Unix(160, 0), LogSHA256: strings.Repeat("0", 64)}
	env, err := provenance.SignFacts(l.bsKey, f)
	if err != nil {
		return nil, err
	}
	var refs []*kilnv1.LogEntryRef
	err = l.db.Update(func(tx store.Tx) error {
		e, err := (&provenance.Entry{Kind: provenance.KindStatement, Build: id, Attempt: f.AttemptID, Signer: "fakebs",
			Key: l.bsKey.Public().(ed25519.PublicKey), Envelope: env}).Marshal()
		if err != nil {
			return err
		}
		n, err := translog.Append(tx, e)
		if err != nil {
			return err
		}
		refs = append(refs, &kilnv1.LogEntryRef{Index: uint64(n), Kind: provenance.KindStatement, Signer: "fakebs", Sha256: provenance.SHA256(e)})
		sum, err := provenance.NewSummary("fake-log", id, sha, []provenance.StatementRef{{Index: uint64(n), EntrySHA256: provenance.SHA256(e)}}, time.Unix(170, 0))
		if err != nil {
			return err
		}
		senv, err := provenance.Seal(l.notary.Key, sum)
		if err != nil {
			return err
		}
		e, err = (&provenance.Entry{Kind: provenance.KindSummary, Build: id, Signer: provenance.MetaserverSigner,
			Key: l.notary.Key.Public().(ed25519.PublicKey), Envelope: senv}).Marshal()
		if err != nil {
			return err
		}
		if n, err = translog.Append(tx, e); err != nil {
			return err
		}
		refs = append(refs, &kilnv1.LogEntryRef{Index: uint64(n), Kind: provenance.KindSummary, Signer: provenance.MetaserverSigner, Sha256: provenance.SHA256(e)})
		return nil
	})
	l.refs[id] = refs
	return refs, err
}

// GetProvenance answers for a build whose download the test scripted.
func (f *fakeMeta) GetProvenance(_ context.Context, req *kilnv1.GetProvenanceRequest) (*kilnv1.GetProvenanceResponse, error) {
	f.mu.Lock()
	msgs := f.downloads["build:"+itoa(req.GetBuildId())]
	for k, m := range f.downloads { // a pin's download names its build in its header
		if strings.HasPrefix(k, "pin:") && len(m) > 0 && m[0].GetHeader().GetBuildId() == req.GetBuildId() {
			msgs = m
		}
	}
	l := f.tlog
	f.mu.Unlock()
	if len(msgs) == 0 || msgs[0].GetHeader() == nil || l == nil {
		return nil, errNotFound
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	refs, err := l.log(req.GetBuildId(), msgs[0].GetHeader().GetArtifact().GetSha256())
	if err != nil {
		return nil, err
	}
	out := &kilnv1.Provenance{BuildId: req.GetBuildId(), VerifierKey: l.notary.VerifierKey}
	err = l.db.View(func(tx store.Tx) error {
		var idx []int64
		for _, r := range refs {
			d, err := tx.TlogEntry(int64(r.GetIndex()))
			if err != nil {
				return err
			}
			idx = append(idx, int64(r.GetIndex()))
			out.Entries = append(out.Entries, &kilnv1.LogEntry{Ref: r, Data: d})
		}
		cp, tree, err := l.notary.Checkpoint(tx)
		if err != nil {
			return err
		}
		out.Checkpoint = cp
		tiles, err := translog.Prove(tx, tree, idx, int64(req.GetKnownTreeSize()))
		for p, d := range tiles {
			out.Tiles = append(out.Tiles, &kilnv1.LogTile{Path: p, Data: d})
		}
		return err
	})
	return &kilnv1.GetProvenanceResponse{Provenance: out}, err
}

// otherNotary is another metaserver's key under the same log name.
func otherNotary(t *testing.T) *translog.Notary {
	t.Helper()
	seed := sha256.Sum256([]byte("another metaserver"))
	n, err := translog.NewNotary("fake-log", ed25519.NewKeyFromSeed(seed[:]))
	if err != nil {
		t.Fatal(err)
	}
	return n
}
