package web

import (
	"context"
	"net/http"
	"strings"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// The transparency log's static paths, as a tlog client reads them (see
// golang.org/x/mod/sumdb/tlog): /log/checkpoint is the signed note of
// the latest tree, /log/tile/H/L/NNN[.p/W] one tile. A full tile never
// changes, so it may be cached for good; the checkpoint and partial tiles
// change as the log grows.

// handleLogCheckpoint serves the latest signed checkpoint.
func (s *server) handleLogCheckpoint(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), s.timeout)
	defer cancel()
	resp, err := s.status.GetLogCheckpoint(ctx, &kilnv1.GetLogCheckpointRequest{})
	if err != nil {
		s.writeError(w, r, fromRPC(err, "the log's checkpoint"))
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Kiln-Log-Verifier", resp.GetVerifierKey())
	_, _ = w.Write(resp.GetCheckpoint())
}

// handleLogTile serves one tile of the log.
func (s *server) handleLogTile(w http.ResponseWriter, r *http.Request) {
	path := strings.TrimPrefix(r.URL.Path, "/log/")
	ctx, cancel := context.WithTimeout(r.Context(), s.timeout)
	defer cancel()
	resp, err := s.status.GetLogTile(ctx, &kilnv1.GetLogTileRequest{Path: path})
	if err != nil {
		s.writeError(w, r, fromRPC(err, "log "+path))
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	if strings.Contains(path, ".p/") {
		w.Header().Set("Cache-Control", "no-cache")
	} else {
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	}
	_, _ = w.Write(resp.GetData())
}
