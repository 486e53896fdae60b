package compilecli

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/tlog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/kilnbuild/kiln/internal/provenance"
	"github.com/kilnbuild/kiln/internal/translog"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

const verifySynopsis = "startcompile verify [--metaserver ADDR] PATH"

// ProvenanceDir is the directory --download writes beside the unpacked
// files: the archive as received (artifact.tar.gz) and the proof bundle
// (provenance.json, a kilnv1.Provenance in protojson), so that verify can
// check the download later, offline.
const ProvenanceDir = ".kiln-provenance"

// ErrProvenance is wrapped when an artifact fails a provenance check: its
// bytes, a statement's signature, its inclusion in the log, or the log's
// consistency with the checkpoint seen before. verify exits 1 with it;
// --download exits 3 and unpacks nothing.
var ErrProvenance = errors.New("provenance check failed")

// errCannotCheck is wrapped when a check could not be run (no bundle, no
// connection and nothing offline to check against): exit 3.
var errCannotCheck = errors.New("cannot check provenance")

// VerifyOptions are the options of startcompile verify.
type VerifyOptions struct {
	Connection
	// Path is a directory --download filled, a file in it, or the JSON
	// output of such a download.
	Path string `arg:"path"`
}

// Validate checks the options.
func (o *VerifyOptions) Validate() error {
	if o.Path == "" {
		return usageError("a PATH is required")
	}
	return o.Connection.validate()
}

// VerifyFlags returns the flag set of the verify command bound to o.
func VerifyFlags(o *VerifyOptions, getenv func(string) string) *flag.FlagSet {
	fs := newFlagSet("startcompile verify")
	bindConnection(fs, &o.Connection, getenv)
	return fs
}

func runVerify(ctx context.Context, env Env, args []string) int {
	var o VerifyOptions
	fs := VerifyFlags(&o, env.Getenv)
	pos, code, done := parseCommand(env, fs, verifySynopsis, args, 1)
	if done {
		return code
	}
	o.Path = pos[0]
	if err := o.Validate(); err != nil {
		return finish(env, false, nil, err)
	}
	rep, err := verifyPath(ctx, env, &o)
	if err != nil {
		fmt.Fprintf(env.Stderr, "startcompile: %s\n", describeError(err))
		switch {
		case errors.Is(err, ErrProvenance):
			return ExitFailed
		case errors.Is(err, ErrUsage):
			return ExitInvalid
		}
		return ExitInfra
	}
	rep.print(env.Stdout)
	return ExitOK
}

// verifyPath checks the download at o.Path.
func verifyPath(ctx context.Context, env Env, o *VerifyOptions) (*provenanceReport, error) {
	dir, only, err := downloadDirOf(o.Path)
	if err != nil {
		return nil, err
	}
	pdir := filepath.Join(dir, ProvenanceDir)
	raw, err := os.ReadFile(filepath.Join(pdir, "provenance.json"))
	if err != nil {
		return nil, fmt.Errorf("%w: %s holds no provenance bundle (%v); download it again with --download", errCannotCheck, dir, err)
	}
	var bundle kilnv1.Provenance
	if err := protojson.Unmarshal(raw, &bundle); err != nil {
		return nil, fmt.Errorf("%w: %s/provenance.json: %v", ErrProvenance, ProvenanceDir, err)
	}
	archive, err := os.ReadFile(filepath.Join(pdir, "artifact.tar.gz"))
	if err != nil {
		return nil, fmt.Errorf("%w: the archive as downloaded is missing: %v", ErrProvenance, err)
	}
	sum := sha256.Sum256(archive)
	if err := checkUnpacked(dir, archive, only); err != nil {
		return nil, err
	}
	fresh, err := fetchProvenance(ctx, env, o.Connection, bundle.GetBuildId())
	if err != nil && !errors.Is(err, errOffline) {
		return nil, err
	}
	return checkProvenance(env, o.Metaserver, &bundle, fresh, hex.EncodeToString(sum[:]), fresh != nil)
}

// errOffline is wrapped when the metaserver cannot be reached: verify goes
// on with the bundle alone.
var errOffline = errors.New("metaserver unreachable")

// fetchProvenance asks the metaserver for build id's provenance proved
// against its latest checkpoint and consistent with the tree last seen.
func fetchProvenance(ctx context.Context, env Env, c Connection, id uint64) (*kilnv1.Provenance, error) {
	conn, err := Dial(ctx, c)
	if err != nil {
		if status.Code(err) == codes.Unavailable {
			return nil, fmt.Errorf("%w: %v", errOffline, err)
		}
		return nil, err
	}
	defer conn.Close()
	known := int64(0)
	if seen, err := loadSeen(env, c.Metaserver); err == nil && seen != nil {
		known = seen.tree.N
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := kilnv1.NewCompileServiceClient(conn).GetProvenance(rctx, &kilnv1.GetProvenanceRequest{BuildId: id, KnownTreeSize: uint64(known)})
	if status.Code(err) == codes.Unavailable {
		return nil, fmt.Errorf("%w: %v", errOffline, err)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: the metaserver has no provenance for build %d: %v", ErrProvenance, id, err)
	}
	return resp.GetProvenance(), nil
}

// downloadDirOf returns the download directory path names and, when path
// is one file in it, that file (relative, slash-separated).
func downloadDirOf(path string) (dir, only string, err error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", "", usageError("%v", err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return "", "", usageError("%v", err)
	}
	if fi.IsDir() {
		return abs, "", nil
	}
	// A file inside a download is a file to check, whatever its name: a
	// .json file there (the artifact's, or one planted) is never read as
	// a pointer to another download to check instead.
	for d := filepath.Dir(abs); ; d = filepath.Dir(d) {
		if st, err := os.Stat(filepath.Join(d, ProvenanceDir)); err == nil && st.IsDir() {
			rel, _ := filepath.Rel(d, abs)
			return d, filepath.ToSlash(rel), nil
		}
		if d == filepath.Dir(d) {
			break
		}
	}
	if strings.HasSuffix(abs, ".json") {
		var r Result
		if data, err := os.ReadFile(abs); err == nil && json.Unmarshal(data, &r) == nil && r.DownloadDir != "" {
			return r.DownloadDir, "", nil
		}
	}
	return "", "", fmt.Errorf("%w: no %s beside %s or above it: not a directory --download filled", errCannotCheck, ProvenanceDir, path)
}

// checkUnpacked checks that the regular files unpacked in dir (or only
// the one named only) hold the bytes of their entries in archive.
func checkUnpacked(dir string, archive []byte, only string) error {
	zr, err := gzip.NewReader(bytes.NewReader(archive))
	if err != nil {
		return fmt.Errorf("%w: the archive: %v", ErrProvenance, err)
	}
	tr := tar.NewReader(zr)
	found := only == ""
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("%w: the archive: %v", ErrProvenance, err)
		}
		name := strings.TrimPrefix(filepath.ToSlash(filepath.Clean(h.Name)), "./")
		if only != "" && name != only {
			continue
		}
		onDisk := filepath.Join(dir, filepath.FromSlash(name))
		if err := realParents(dir, name); err != nil {
			return fmt.Errorf("%w: %s: %v", ErrProvenance, name, err)
		}
		switch h.Typeflag {
		case tar.TypeSymlink:
			// A link pointed elsewhere changes what the download runs.
			found = true
			if got, err := os.Readlink(onDisk); err != nil || got != h.Linkname {
				return fmt.Errorf("%w: %s is not the artifact's symlink to %q", ErrProvenance, name, h.Linkname)
			}
			continue
		case tar.TypeReg: // the reader gives TypeRegA as TypeReg
		default:
			continue
		}
		found = true
		// Never followed: a file swapped for a link to a copy elsewhere
		// would pass today and change tomorrow.
		if fi, err := os.Lstat(onDisk); err != nil || !fi.Mode().IsRegular() {
			return fmt.Errorf("%w: %s is not the artifact's regular file", ErrProvenance, name)
		}
		want := sha256.New()
		if _, err := io.Copy(want, tr); err != nil {
			return fmt.Errorf("%w: the archive: %v", ErrProvenance, err)
		}
		got, err := fileSum(onDisk)
		if err != nil {
			return fmt.Errorf("%w: %s: %v", ErrProvenance, name, err)
		}
		if !bytes.Equal(got, want.Sum(nil)) {
			return fmt.Errorf("%w: %s differs from the artifact's file (sha256 %x, the signed artifact has %x)", ErrProvenance, name, got[:8], want.Sum(nil)[:8])
		}
	}
	if !found {
		return fmt.Errorf("%w: %s is not a file of the artifact", ErrProvenance, only)
	}
	return nil
}

// realParents says which directory above name (slash-separated, below
// dir) is not a real directory: a directory swapped for a link elsewhere
// would check files that the download does not hold.
func realParents(dir, name string) error {
	p := dir
	parts := strings.Split(name, "/")
	for _, part := range parts[:len(parts)-1] {
		p = filepath.Join(p, part)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		if !fi.IsDir() {
			return fmt.Errorf("%s is not the artifact's directory", p)
		}
	}
	return nil
}

func fileSum(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return nil, err
	}
	return h.Sum(nil), nil
}

// provenanceReport is who built and verified an artifact.
type provenanceReport struct {
	build    uint64
	artifact string
	builders []string
	verifier string
	tree     tlog.Tree
	log      string
}

func (r *provenanceReport) print(w io.Writer) {
	fmt.Fprintf(w, "artifact %s of build %d: provenance verified\n", r.artifact, r.build)
	for _, b := range r.builders {
		fmt.Fprintf(w, "  built by %s\n", b)
	}
	fmt.Fprintf(w, "  verified by %s\n", r.verifier)
	fmt.Fprintf(w, "  in log %s at size %d (root %s), consistent with the checkpoint seen before\n", r.log, r.tree.N, r.tree.Hash)
}

// checkProvenance checks bundle (as downloaded) for the artifact whose
// archive has sha256 artifact, against fresh (the metaserver's answer now,
// nil offline): signatures, subjects, inclusion in the latest checkpoint
// and that checkpoint's consistency with the one this user saw last, which
// it then records.
//
// live says the proof came from the metaserver now: only then is a log key
// seen for the first time pinned for metaserver. Offline, a bundle is
// checked against its own key and pins nothing (it may come from anywhere:
// another farm's download, or an attacker's directory).
func checkProvenance(env Env, metaserver string, bundle, fresh *kilnv1.Provenance, artifact string, live bool) (*provenanceReport, error) {
	seen, err := loadSeen(env, metaserver)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errCannotCheck, err)
	}
	vkey := bundle.GetVerifierKey()
	if seen != nil {
		vkey = seen.vkey // pinned at first sight: a bundle cannot bring its own log
	}
	proof := bundle
	if fresh != nil {
		proof = fresh
	}
	tree, err := translog.OpenCheckpoint(proof.GetCheckpoint(), vkey)
	if err != nil {
		return nil, fmt.Errorf("%w: the checkpoint is not from the log this machine knows for %s: %v", ErrProvenance, metaserver, err)
	}
	tiles := &translog.Tiles{Data: map[string][]byte{}}
	for _, p := range []*kilnv1.Provenance{bundle, fresh} {
		for _, t := range p.GetTiles() {
			if p == proof || tiles.Data[t.GetPath()] == nil {
				tiles.Data[t.GetPath()] = t.GetData()
			}
		}
	}
	if seen != nil {
		if seen.tree.N > tree.N && fresh == nil {
			return nil, fmt.Errorf("%w: this machine saw the log at %d entries, the bundle proves only %d: connect to the metaserver to check the log", errCannotCheck, seen.tree.N, tree.N)
		}
		if err := translog.CheckConsistency(tree, tiles, seen.tree); err != nil {
			if errors.Is(err, translog.ErrMissingTile) {
				return nil, fmt.Errorf("%w: %v", errCannotCheck, err)
			}
			return nil, fmt.Errorf("%w: the log is not consistent with the checkpoint seen before: %v", ErrProvenance, err)
		}
	}
	rep, err := checkEntries(bundle, artifact)
	if err != nil {
		return nil, err
	}
	for _, e := range bundle.GetEntries() {
		if err := translog.CheckInclusion(tree, tiles, int64(e.GetRef().GetIndex()), e.GetData()); err != nil {
			return nil, fmt.Errorf("%w: log entry %d (%s): %v", ErrProvenance, e.GetRef().GetIndex(), e.GetRef().GetKind(), err)
		}
	}
	switch {
	case seen == nil && !live:
		fmt.Fprintf(env.Stderr, "startcompile: warning: %s unreachable and its log never seen here: checked against the bundle's own log key, which is not pinned\n", metaserver)
	case seen == nil || tree.N > seen.tree.N:
		if err := saveSeen(env, metaserver, vkey, proof.GetCheckpoint()); err != nil {
			fmt.Fprintf(env.Stderr, "startcompile: warning: could not record the log's checkpoint: %v\n", err)
		}
	}
	rep.tree, rep.log = tree, strings.SplitN(vkey, "+", 2)[0]
	return rep, nil
}

// checkEntries checks every entry's signature against the key the log
// recorded, that each is about this build's artifact, and that the
// summary names the statements.
func checkEntries(bundle *kilnv1.Provenance, artifact string) (*provenanceReport, error) {
	rep := &provenanceReport{build: bundle.GetBuildId(), artifact: artifact}
	named := map[string]bool{}
	var summary *provenance.Entry
	var summaryNames []string
	for _, e := range bundle.GetEntries() {
		ref := e.GetRef()
		if provenance.SHA256(e.GetData()) != ref.GetSha256() {
			return nil, fmt.Errorf("%w: log entry %d does not hash to its reference", ErrProvenance, ref.GetIndex())
		}
		ent, err := provenance.ParseEntry(e.GetData())
		if err != nil {
			return nil, fmt.Errorf("%w: log entry %d: %v", ErrProvenance, ref.GetIndex(), err)
		}
		if ent.Build != bundle.GetBuildId() {
			return nil, fmt.Errorf("%w: log entry %d is about build %d, not %d", ErrProvenance, ref.GetIndex(), ent.Build, bundle.GetBuildId())
		}
		st, err := ent.Open()
		if err != nil {
			return nil, fmt.Errorf("%w: the %s of %s (log entry %d): %v", ErrProvenance, ent.Kind, ent.Signer, ref.GetIndex(), err)
		}
		if got := provenance.Subject(st); got != artifact {
			return nil, fmt.Errorf("%w: the %s of %s (log entry %d) is about artifact %s, the download is %s", ErrProvenance, ent.Kind, ent.Signer, ref.GetIndex(), got, artifact)
		}
		switch ent.Kind {
		case provenance.KindStatement:
			named[ref.GetSha256()] = true
			p, err := provenance.Provenance(st)
			if err != nil {
				return nil, fmt.Errorf("%w: %v", ErrProvenance, err)
			}
			md := p.GetRunDetails().GetMetadata()
			rep.builders = append(rep.builders, fmt.Sprintf("%s (key %s), attempt id %s, %s to %s (log entry %d)",
				ent.Signer, provenance.KeyID(ent.Key)[:16], md.GetInvocationId(),
				md.GetStartedOn().AsTime().UTC().Format(time.RFC3339), md.GetFinishedOn().AsTime().UTC().Format(time.RFC3339), ref.GetIndex()))
		case provenance.KindSummary:
			v, err := provenance.Summary(st)
			if err != nil {
				return nil, fmt.Errorf("%w: %v", ErrProvenance, err)
			}
			summary = ent
			for _, in := range v.GetInputAttestations() {
				summaryNames = append(summaryNames, in.GetDigest()["sha256"])
			}
			rep.verifier = fmt.Sprintf("%s (key %s), %s (log entry %d)", v.GetVerifier().GetId(), provenance.KeyID(ent.Key)[:16],
				v.GetVerificationResult(), ref.GetIndex())
		}
	}
	if len(rep.builders) == 0 || summary == nil {
		return nil, fmt.Errorf("%w: the bundle lacks a build server's statement or the metaserver's summary", ErrProvenance)
	}
	for _, n := range summaryNames {
		if !named[n] {
			return nil, fmt.Errorf("%w: the summary names a statement that is not in the bundle", ErrProvenance)
		}
	}
	if len(summaryNames) == 0 {
		return nil, fmt.Errorf("%w: the summary names no statement", ErrProvenance)
	}
	return rep, nil
}

// provenanceCheck is the check --download runs between the archive's
// sha256 and its extraction.
type provenanceCheck struct {
	env        Env
	client     kilnv1.CompileServiceClient
	metaserver string
	bundle     *kilnv1.Provenance
	report     *provenanceReport
}

// check fetches and checks the provenance of the artifact h announces
// (already hashed): a failure wraps ErrProvenance.
func (pc *provenanceCheck) check(ctx context.Context, h *kilnv1.DownloadHeader) error {
	known := int64(0)
	if seen, err := loadSeen(pc.env, pc.metaserver); err == nil && seen != nil {
		known = seen.tree.N
	}
	resp, err := pc.client.GetProvenance(ctx, &kilnv1.GetProvenanceRequest{BuildId: h.GetBuildId(), KnownTreeSize: uint64(known)})
	if err != nil {
		return fmt.Errorf("%w: build %d: no provenance from the metaserver: %v", ErrProvenance, h.GetBuildId(), err)
	}
	b := resp.GetProvenance()
	if b.GetBuildId() != h.GetBuildId() {
		return fmt.Errorf("%w: provenance of build %d sent for build %d", ErrProvenance, b.GetBuildId(), h.GetBuildId())
	}
	rep, err := checkProvenance(pc.env, pc.metaserver, b, nil, strings.ToLower(h.GetArtifact().GetSha256()), true)
	if err != nil {
		if errors.Is(err, ErrProvenance) {
			return err
		}
		return fmt.Errorf("%w: %v", ErrProvenance, err)
	}
	pc.bundle, pc.report = b, rep
	return nil
}

// keep writes the archive and the proof bundle beside the unpacked files.
func (pc *provenanceCheck) keep(dir string, archive *os.File) error {
	pdir := filepath.Join(dir, ProvenanceDir)
	if err := os.MkdirAll(pdir, 0o755); err != nil {
		return fmt.Errorf("keeping the provenance: %w", err)
	}
	if _, err := archive.Seek(0, io.SeekStart); err != nil {
		return err
	}
	data, err := io.ReadAll(archive)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(pdir, "artifact.tar.gz"), data); err != nil {
		return fmt.Errorf("keeping the archive: %w", err)
	}
	js, err := protojson.MarshalOptions{Indent: "  "}.Marshal(pc.bundle)
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(pdir, "provenance.json"), js)
}
