package web

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// artifactView is the JSON answer of /build/<id>/artifact: what the
// download would deliver.
type artifactView struct {
	BuildID  uint64     `json:"build_id"`
	Filename string     `json:"filename"`
	URL      string     `json:"url"`
	Artifact pbArtifact `json:"artifact"`
}

// errNoHeader: the metaserver's stream did not start with a header.
var errNoHeader = errors.New("artifact stream did not start with a header")

// handleArtifact streams the artifact as an attachment. Before the first
// byte of the body every failure is an error page; after it, a failure
// (DATA_LOSS from the metaserver, a short or corrupt stream) aborts the
// connection so the client sees a broken download, never a short 200.
//
// The body is checked against the header's size and sha256 while it passes
// through; the last chunk is held back until both match, so even a stream
// that is corrupt only in its final bytes never completes.
func (s *server) handleArtifact(w http.ResponseWriter, r *http.Request) {
	b, err := s.getBuild(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	name := artifactName(b)
	if b.GetArtifact() == nil || b.GetArtifact().GetSha256() == "" {
		s.writeError(w, r, &httpError{code: http.StatusNotFound,
			msg: "Build " + strconv.FormatUint(b.GetId(), 10) + " has no artifact (it is " + b.GetState().Word() + ")."})
		return
	}
	if wantsJSON(r) {
		writeJSON(w, http.StatusOK, artifactView{
			BuildID: b.GetId(), Filename: name,
			URL: "/build/" + strconv.FormatUint(b.GetId(), 10) + "/artifact", Artifact: pbArtifact{b.GetArtifact()},
		})
		return
	}

	stream, err := s.compile.DownloadArtifact(r.Context(), &kilnv1.DownloadArtifactRequest{
		What: &kilnv1.DownloadArtifactRequest_BuildId{BuildId: b.GetId()},
	})
	if err != nil {
		s.writeError(w, r, fromRPC(err, "artifact of build "+strconv.FormatUint(b.GetId(), 10)))
		return
	}
	first, err := stream.Recv()
	if err != nil {
		s.writeError(w, r, fromRPC(err, "artifact of build "+strconv.FormatUint(b.GetId(), 10)))
		return
	}
	hdr := first.GetHeader()
	if hdr == nil || hdr.GetArtifact() == nil {
		s.writeError(w, r, &httpError{code: http.StatusBadGateway, msg: "The metaserver sent a malformed artifact stream.", err: errNoHeader})
		return
	}
	art := hdr.GetArtifact()
	want := strings.ToLower(art.GetSha256())

	h := w.Header()
	h.Set("Content-Type", "application/gzip")
	h.Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": name}))
	h.Set("Content-Length", strconv.FormatUint(art.GetSize(), 10))
	h.Set("X-Kiln-Sha256", want)
	h.Set("Cache-Control", "public, max-age=31536000, immutable")
	w.WriteHeader(http.StatusOK)

	log := s.log.With("build_id", b.GetId(), "sha256", want)
	sum := sha256.New()
	var sent uint64
	var pending []byte
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			log.Warn("artifact stream failed; aborting the download", "sent_bytes", sent, "error", err)
			panic(http.ErrAbortHandler)
		}
		data := msg.GetData()
		if msg.GetHeader() != nil {
			log.Warn("artifact stream sent a second header; aborting the download", "sent_bytes", sent)
			panic(http.ErrAbortHandler)
		}
		if len(data) == 0 {
			continue
		}
		if pending != nil {
			if _, err := w.Write(pending); err != nil {
				log.Debug("client went away during download", "sent_bytes", sent, "error", err)
				return
			}
		}
		sum.Write(data)
		sent += uint64(len(data))
		if sent > art.GetSize() {
			log.Warn("artifact stream is longer than its header says; aborting the download", "size", art.GetSize(), "received_bytes", sent)
			panic(http.ErrAbortHandler)
		}
		pending = data
	}
	got := hex.EncodeToString(sum.Sum(nil))
	if sent != art.GetSize() || got != want {
		log.Warn("artifact stream does not match its header; aborting the download",
			"size", art.GetSize(), "received_bytes", sent, "got_sha256", got)
		panic(http.ErrAbortHandler)
	}
	if pending != nil {
		if _, err := w.Write(pending); err != nil {
			log.Debug("client went away during download", "sent_bytes", sent, "error", err)
		}
	}
}
