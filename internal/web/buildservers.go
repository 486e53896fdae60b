package web

import (
	"net/http"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// buildServersView is the data of /buildservers.
type buildServersView struct {
	// BuildServers as the metaserver lists them: connected first.
	BuildServers []pbServer `json:"build_servers"`
	Connected    int        `json:"connected"`
	Unsandboxed  int        `json:"unsandboxed"`
}

func (s *server) handleBuildServers(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := s.rpcContext(r)
	defer cancel()
	resp, err := s.status.ListBuildServers(ctx, &kilnv1.ListBuildServersRequest{})
	if err != nil {
		s.writeError(w, r, fromRPC(err, "build server list"))
		return
	}
	v := buildServersView{BuildServers: wrapServers(resp.GetBuildServers())}
	for _, bs := range resp.GetBuildServers() {
		if bs.GetConnected() {
			v.Connected++
		}
		if bs.GetUnsandboxed() {
			v.Unsandboxed++
		}
	}
	s.respond(w, r, "buildservers", "Build servers", "buildservers", v)
}
