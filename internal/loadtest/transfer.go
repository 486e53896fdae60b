package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/kilnbuild/kiln/internal/cas/s3blob"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// bigArtifact is a farm holding one build whose artifact is large, uploaded
// through the real protocol by a simulated build server.
type bigArtifact struct {
	m       *meta
	buildID uint64
	size    int64
	sha     string // the artifact's sha256
	block   []byte // its content: block repeated size/len(block) times
	// uploadTime is how long UploadArtifact took (first byte sent →
	// response: blob verified, fsynced, renamed).
	uploadTime time.Duration
	// rssBefore is the metaserver's RSS just before the upload, peak the
	// highest RSS seen during it.
	rssBefore, rssPeak int64
	// diskBefore and diskAfter are the disk bound measured around the upload.
	diskBefore, diskAfter float64
}

// uploadBig starts a metaserver with one simulated build server, queues a
// build, and uploads sizeMiB MiB as its artifact, measuring the metaserver's
// memory during the upload and the disk's own fsync'd write speed before
// and after it.
func uploadBig(ctx context.Context, e *env, sizeMiB int) (*bigArtifact, error) {
	src, commit, err := makeProject(ctx, e.dir)
	if err != nil {
		return nil, err
	}
	m, err := startMetaserver(ctx, e.bins, e.dir)
	if err != nil {
		return nil, err
	}
	ba := &bigArtifact{m: m, size: int64(sizeMiB) << 20}
	if err := m.addProject(ctx, projectName, src); err != nil {
		return ba, err
	}
	tokens, err := addCredentials(ctx, m, "uploader", 1)
	if err != nil {
		return ba, err
	}
	target, err := localTarget(ctx)
	if err != nil {
		return ba, err
	}
	tr := newTracker()
	assigned := make(chan *kilnv1.Assignment, 1)
	sim := newSimServer("uploader-0", tokens[0], target, 1, tr)
	sim.onAssignment = func(_ *simServer, a *kilnv1.Assignment) { assigned <- a }
	if err := sim.connect(ctx, m.Addr); err != nil {
		return ba, err
	}
	defer sim.close()

	block := make([]byte, 1<<20)
	if _, err := rand.Read(block); err != nil {
		return ba, err
	}
	src2 := blobSource{block: block, count: sizeMiB}
	sum := src2.sha256()
	ba.sha, ba.block = sum, block

	e.rep.logf("disk bound: %d MiB written in 1 MiB chunks + fsync in %s", sizeMiB, m.DataDir)
	if ba.diskBefore, err = diskWriteBound(m.DataDir, ba.size); err != nil {
		return ba, err
	}
	reqs, err := newRequests(ctx, commit)
	if err != nil {
		return ba, err
	}
	resp, err := m.Compile.Submit(ctx, reqs.next())
	if err != nil {
		return ba, err
	}
	ba.buildID = resp.GetBuild().GetId()
	var a *kilnv1.Assignment
	select {
	case a = <-assigned:
	case <-ctx.Done():
		return ba, ctx.Err()
	case <-time.After(30 * time.Second):
		return ba, errors.New("no assignment within 30 s")
	}

	mem, err := sampleMem(e, m.Proc.pid())
	if err != nil {
		return ba, err
	}
	e.rep.logf("uploading %d MiB through UploadArtifact", sizeMiB)
	prof := profiler{e: e}
	prof.cpu(ctx, "metaserver-upload", m.PprofAddr, e.bins.Metaserver, time.Duration(sizeMiB)*3*time.Millisecond)
	t0 := time.Now()
	art, err := sim.uploadKnown(a.GetAttemptId(), src2, sum)
	ba.uploadTime = time.Since(t0)
	ba.rssBefore, ba.rssPeak = mem.stop()
	if err != nil {
		return ba, err
	}
	prof.wait()
	art.Files = []string{"out.txt"}
	done := tr.wait(ba.buildID)
	if err := sim.report(a, art); err != nil {
		return ba, err
	}
	select {
	case <-done:
	case <-ctx.Done():
		return ba, ctx.Err()
	case <-time.After(30 * time.Second):
		return ba, errors.New("result not acknowledged within 30 s")
	}
	if ba.diskAfter, err = diskWriteBound(m.DataDir, ba.size); err != nil {
		return ba, err
	}
	return ba, nil
}

// memSampler follows a process's resident memory: sampled every 5 ms, and
// its VmHWM (reset at the start where the kernel allows) catches what the
// sampling misses.
type memSampler struct {
	pid    int
	before int64
	stopC  chan struct{}
	wg     sync.WaitGroup
	mu     sync.Mutex
	peak   int64
}

// sampleMem starts sampling pid's memory.
func sampleMem(e *env, pid int) (*memSampler, error) {
	if err := resetPeak(pid); err != nil {
		e.rep.logf("cannot reset the peak RSS of pid %d (%v); sampling only", pid, err)
	}
	before, err := readMem(pid)
	if err != nil {
		return nil, err
	}
	s := &memSampler{pid: pid, before: before.RSS, peak: before.RSS, stopC: make(chan struct{})}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-s.stopC:
				return
			case <-t.C:
				if mi, err := readMem(pid); err == nil {
					s.mu.Lock()
					s.peak = max(s.peak, mi.RSS, mi.HWM)
					s.mu.Unlock()
				}
			}
		}
	}()
	return s, nil
}

// stop ends the sampling and returns the RSS at the start and the peak.
func (s *memSampler) stop() (before, peak int64) {
	close(s.stopC)
	s.wg.Wait()
	if mi, err := readMem(s.pid); err == nil {
		s.peak = max(s.peak, mi.HWM)
	}
	return s.before, s.peak
}

// runUpload measures a large artifact upload against the disk's own
// fsync'd write throughput, and the metaserver's memory growth during it.
func runUpload(ctx context.Context, e *env) error {
	ba, err := uploadBig(ctx, e, e.cfg.SizeMiB)
	if ba != nil && ba.m != nil {
		defer ba.m.close()
	}
	if err != nil {
		return err
	}
	rate := mbps(ba.size, ba.uploadTime)
	bound := max(ba.diskBefore, ba.diskAfter)
	e.rep.add(figure{Scenario: "upload", Name: fmt.Sprintf("%d MiB upload, %% of disk", e.cfg.SizeMiB), Value: 100 * rate / bound, Unit: "%", Target: 70,
		Bound: bound, BoundName: "disk write+fsync",
		Note: fmt.Sprintf("upload %.0f MB/s (%.2f s, sha256 verified, fsynced); disk write+fsync %.0f MB/s before, %.0f MB/s after (the ratio uses the higher)",
			rate, ba.uploadTime.Seconds(), ba.diskBefore, ba.diskAfter)})
	e.rep.add(figure{Scenario: "upload", Name: "metaserver RSS growth during upload", Value: mib(ba.rssPeak - ba.rssBefore), Unit: "MiB", Target: 64, AtMost: true,
		Note: fmt.Sprintf("RSS %.1f MiB before, peak %.1f MiB (sampled every 5 ms and VmHWM after resetting it)", mib(ba.rssBefore), mib(ba.rssPeak))})
	return nil
}

// runDownload measures a large artifact download from the metaserver
// against raw loopback gRPC streaming between two processes.
//
// The metaserver verifies every read of a blob: with sha256, or, for a blob
// file verified before and unchanged since, with the CRC-32C of the
// verified content (internal/cas, memo.go). The upload's own sha256
// verification counts, so the downloads right after the upload check the
// CRC-32C: the first of them is the headline figure. The metaserver is then
// restarted gracefully: it saves the verifications it remembers and the next
// process trusts them for unchanged files, so one more download is again a
// CRC-32C read (the second figure). Last, the blob file's ctime is changed
// (a chmod to its own mode), which voids its verification, and one more
// download hashes with sha256 while sending: the figure for a blob not
// verified since it changed (or for an hour, or ever by a process that
// stopped gracefully).
func runDownload(ctx context.Context, e *env) error {
	ba, err := uploadBig(ctx, e, e.cfg.SizeMiB)
	if ba != nil && ba.m != nil {
		defer ba.m.close()
	}
	if err != nil {
		return err
	}
	addr, bulk, err := startBulkServer(ctx, e.dir)
	if err != nil {
		return err
	}
	defer bulk.stop()
	// Start every measurement from the page cache, as the raw bound does not
	// touch the disk: the upload just wrote the file, and reading it here
	// (not through the metaserver, which remembers nothing of it) makes it
	// certain.
	blobPath := filepath.Join(ba.m.DataDir, "blobs", ba.sha[:2], ba.sha)
	onS3 := e.bins.Blobs != ""
	if !onS3 { // on S3 the object store holds it (versitygw: just written)
		if err := readFile(blobPath); err != nil {
			return err
		}
	}
	prof := profiler{e: e}
	prof.cpu(ctx, "metaserver", ba.m.PprofAddr, e.bins.Metaserver, time.Duration(e.cfg.SizeMiB)*9*time.Millisecond)
	mem, err := sampleMem(e, ba.m.Proc.pid())
	if err != nil {
		return err
	}
	raw, got, err := downloadRounds(ctx, addr, ba.m, ba, 3)
	if err != nil {
		return err
	}
	rssBefore, rssPeak := mem.stop()
	prof.wait()

	e.rep.logf("restarting the metaserver (it saves which blobs it verified for the next process)")
	ba.m.Proc.stop()
	m2, err := restartMetaserver(ctx, ba.m, e.dir)
	if m2 != nil {
		defer m2.close()
	}
	if err != nil {
		return err
	}
	prof.cpu(ctx, "metaserver-restarted", m2.PprofAddr, e.bins.Metaserver, time.Duration(e.cfg.SizeMiB)*3*time.Millisecond)
	rawR, gotR, err := downloadRounds(ctx, addr, m2, ba, 1)
	if err != nil {
		return err
	}
	prof.wait()
	raw = append(raw, rawR...)
	if err := changeBlob(ctx, e, ba, blobPath); err != nil {
		return err
	}
	rawC, gotC, err := downloadRounds(ctx, addr, m2, ba, 1)
	if err != nil {
		return err
	}
	raw = append(raw, rawC...)

	bound := slices.Max(raw)
	memoFile, changed := "blobs/verified.memo", "the file's ctime moved"
	if onS3 {
		memoFile, changed = "blobs-verified.memo", "the object was put again (same bytes, new Last-Modified)"
	}
	rawNote := fmt.Sprintf("raw gRPC bulk (same message type, 1 MiB chunks, another process) %.0f / %.0f / %.0f / %.0f / %.0f MB/s, best used", raw[0], raw[1], raw[2], raw[3], raw[4])
	e.rep.add(figure{Scenario: "download", Name: fmt.Sprintf("%d MiB download, first after the upload, %% of raw gRPC", e.cfg.SizeMiB), Value: 100 * got[0] / bound, Unit: "%", Target: 70,
		Bound: bound, BoundName: "raw loopback gRPC bulk",
		Note: fmt.Sprintf("%.0f MB/s: the metaserver checks the CRC-32C of the content its upload verified with sha256, as on every later read of the unchanged file (the next two: %.0f / %.0f MB/s); %s", got[0], got[1], got[2], rawNote)})
	e.rep.add(figure{Scenario: "download", Name: fmt.Sprintf("%d MiB download after a graceful metaserver restart, %% of raw gRPC", e.cfg.SizeMiB), Value: 100 * gotR[0] / bound, Unit: "%", Target: 70,
		Bound: bound, BoundName: "raw loopback gRPC bulk",
		Note: fmt.Sprintf("%.0f MB/s: the stopped metaserver saved its verifications (%s) and the new one trusts them for the unchanged blob: CRC-32C", gotR[0], memoFile)})
	e.rep.add(figure{Scenario: "download", Name: fmt.Sprintf("%d MiB download after the blob file changed, %% of raw gRPC", e.cfg.SizeMiB), Value: 100 * gotC[0] / bound, Unit: "%", Target: 70,
		Bound: bound, BoundName: "raw loopback gRPC bulk",
		Note: fmt.Sprintf("%.0f MB/s: %s (likewise an hour after its last sha256, or after a crash for a blob never verified before a graceful stop), so sha256 (and CRC-32C) computed while sent; the reads after it check the CRC-32C again", gotC[0], changed)})
	e.rep.add(figure{Scenario: "download", Name: "metaserver RSS growth during downloads", Value: mib(rssPeak - rssBefore), Unit: "MiB", NoTarget: true,
		Note: fmt.Sprintf("RSS %.1f MiB before the three downloads after the upload, peak %.1f MiB (sampled every 5 ms and VmHWM after resetting it)", mib(rssBefore), mib(rssPeak))})
	return nil
}

// changeBlob voids the metaserver's remembered verification of ba's blob
// without changing its bytes: on the directory, a chmod of the blob file to
// its own mode (its ctime moves); on S3 (--blobs), the same bytes put again
// through a store of the loadtest's own, behind the metaserver's back (the
// object's Last-Modified moves).
func changeBlob(ctx context.Context, e *env, ba *bigArtifact, blobPath string) error {
	if e.bins.Blobs == "" {
		e.rep.logf("changing the blob file's ctime (chmod to its own mode): its verification no longer holds")
		fi, err := os.Stat(blobPath)
		if err != nil {
			return err
		}
		return os.Chmod(blobPath, fi.Mode().Perm())
	}
	e.rep.logf("putting the blob's object again (same bytes): its verification no longer holds")
	time.Sleep(time.Second) // Last-Modified has whole seconds
	s, err := s3blob.Open(ctx, e.bins.Blobs, s3blob.Options{SpoolDir: e.dir})
	if err != nil {
		return err
	}
	defer s.Close()
	w, err := s.Create(ctx)
	if err != nil {
		return err
	}
	defer w.Abort()
	for range ba.size / int64(len(ba.block)) {
		if _, err := w.Write(ba.block); err != nil {
			return err
		}
	}
	_, _, err = w.Commit(ctx, ba.sha, ba.size)
	return err
}

// downloadRounds runs n rounds of one raw gRPC bulk stream of the
// artifact's size from the bulk server at addr followed by one download of
// ba's artifact from m, interleaved to share the machine's noise fairly,
// and returns their throughputs in MB/s.
func downloadRounds(ctx context.Context, addr string, m *meta, ba *bigArtifact, n int) (raw, got []float64, err error) {
	for range n {
		r, err := bulkBound(ctx, addr, int(ba.size>>20))
		if err != nil {
			return nil, nil, err
		}
		size, d, err := download(ctx, m.Addr, ba.buildID)
		if err != nil {
			return nil, nil, err
		}
		if size != ba.size {
			return nil, nil, fmt.Errorf("downloaded %d bytes, want %d", size, ba.size)
		}
		raw, got = append(raw, r), append(got, mbps(size, d))
	}
	return raw, got, nil
}

// readFile reads path to the end, discarding it.
func readFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("the artifact's blob file: %w", err)
	}
	defer f.Close()
	if _, err := io.CopyBuffer(io.Discard, f, make([]byte, 1<<20)); err != nil {
		return fmt.Errorf("the artifact's blob file: %w", err)
	}
	return nil
}

// download reads build id's artifact through DownloadArtifact from the
// metaserver at addr, over a connection of its own (as a startcompile
// process does, and as bulkBound does for the bound), and returns its size
// and the time taken from the first RPC (which connects) to the last byte.
func download(ctx context.Context, addr string, id uint64) (int64, time.Duration, error) {
	conn, err := dialLoopback(addr)
	if err != nil {
		return 0, 0, err
	}
	defer conn.Close()
	t0 := time.Now()
	stream, err := kilnv1.NewCompileServiceClient(conn).DownloadArtifact(ctx, &kilnv1.DownloadArtifactRequest{What: &kilnv1.DownloadArtifactRequest_BuildId{BuildId: id}})
	if err != nil {
		return 0, 0, err
	}
	var n int64
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return n, 0, fmt.Errorf("download: %w", err)
		}
		n += int64(len(msg.GetData()))
	}
	return n, time.Since(t0), nil
}
