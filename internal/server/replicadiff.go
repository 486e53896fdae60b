package server

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"sort"
	"strconv"
)

// When two results of one build differ, the metaserver says where: the
// files whose content (or kind, or mode) differs between the two tar.gz
// artifacts, or that only one of them has (differingFiles). The list goes
// into the build (Build.differing_files), its failure when it ends
// NOT_REPRODUCIBLE, and its mail. Both artifacts are kept with the cache
// entry (kept_sha256); docs/trust.md tells the administrator how to
// compare them with diffoscope, which the metaserver does not run itself.

// maxDiffEntries bounds the entries read from each artifact, and
// maxDifferingFiles the files listed.
const (
	maxDiffEntries    = 1 << 16
	maxDifferingFiles = 64
)

// fileDigests returns each entry of a tar.gz read from r: its sha256 for a
// regular file, or its kind and link for anything else, with its mode.
func fileDigests(r io.Reader, limit int64) (map[string]string, error) {
	gz, err := gzip.NewReader(r)
	if err != nil {
		return nil, err
	}
	tr := tar.NewReader(&boundedReader{r: gz, n: limit})
	out := map[string]string{}
	for len(out) < maxDiffEntries {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		d := sha256.New()
		if h.Typeflag == tar.TypeReg {
			if _, err := io.Copy(d, tr); err != nil {
				return nil, err
			}
		}
		d.Write([]byte{h.Typeflag})
		d.Write([]byte(h.Linkname))
		d.Write([]byte{byte(h.Mode >> 8), byte(h.Mode)})
		out[h.Name] = string(d.Sum(nil))
	}
	return out, nil
}

// differingFiles names the files in which two artifacts differ, sorted, at
// most maxDifferingFiles (the last entry then says how many more). nil
// when either cannot be read as a tar.gz: the sha256s still differ.
func differingFiles(a, b []byte) []string {
	da, err := fileDigests(bytes.NewReader(a), int64(len(a))*maxExpandFactor+maxExpandSlack)
	if err != nil {
		return nil
	}
	db, err := fileDigests(bytes.NewReader(b), int64(len(b))*maxExpandFactor+maxExpandSlack)
	if err != nil {
		return nil
	}
	var out []string
	for name, d := range da {
		if db[name] != d {
			out = append(out, name)
		}
	}
	for name := range db {
		if _, ok := da[name]; !ok {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	if len(out) > maxDifferingFiles {
		more := len(out) - maxDifferingFiles
		out = append(out[:maxDifferingFiles], "… and "+strconv.Itoa(more)+" more")
	}
	return out
}

// diffAgainstFirstLocked returns the sha256 of the first result of the
// build of attempt id that differs from sha ("" when none does, or the
// build already names its differing files).
func (s *Server) diffAgainstFirstLocked(id uint64, sha string) string {
	a := s.sched.Attempt(id)
	if a == nil {
		return ""
	}
	ab := s.active[a.Build.ID]
	if ab == nil || len(ab.rec.GetBuild().GetDifferingFiles()) > 0 {
		return ""
	}
	for _, r := range ab.rec.GetBuild().GetReplicas() {
		if other := answer(r); other != "" && other != sha {
			return other
		}
	}
	return ""
}

// readArtifact reads a whole artifact: held in memory, inline or a file.
// Artifacts larger than limit are not read (nil).
func (s *Server) readArtifact(ctx context.Context, sha string, limit int64) []byte {
	if data := s.blobs.pendingData(sha); data != nil {
		return data
	}
	f, size, err := s.blobs.open(ctx, sha)
	if err != nil || size > limit {
		if f != nil {
			f.Close()
		}
		return nil
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit))
	if err != nil {
		return nil
	}
	return data
}

// maxDiffRead bounds the artifacts compared in memory.
const maxDiffRead = 256 << 20

// resultDiff returns the files in which the artifact of result r (data
// when sent inline) differs from its build's first differing result; nil
// when none differs. Called before taking s.mu: it reads both artifacts.
func (s *Server) resultDiff(ctx context.Context, attemptID uint64, sha string, data []byte) []string {
	s.mu.Lock()
	other := s.diffAgainstFirstLocked(attemptID, sha)
	s.mu.Unlock()
	if other == "" {
		return nil
	}
	if data == nil {
		data = s.readArtifact(ctx, sha, maxDiffRead)
	}
	first := s.readArtifact(ctx, other, maxDiffRead)
	if data == nil || first == nil {
		return nil
	}
	return differingFiles(first, data)
}
