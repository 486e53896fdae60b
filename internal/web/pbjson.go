package web

import (
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// The types below embed a proto message so that templates reach its fields
// directly ({{.Build.Project}}) while encoding/json hands the message to
// protojson: proto field names, enum names, RFC 3339 timestamps. That is
// the stable JSON form of every page.

// protoJSON is the one protojson configuration of the JSON pages.
var protoJSON = protojson.MarshalOptions{UseProtoNames: true}

func marshalProto(m proto.Message) ([]byte, error) { return protoJSON.Marshal(m) }

// pbBuild is a kilnv1.Build in a page.
type pbBuild struct{ *kilnv1.Build }

// MarshalJSON encodes the build with protojson.
func (b pbBuild) MarshalJSON() ([]byte, error) { return marshalProto(b.Build) }

// pbServer is a kilnv1.BuildServerStatus in a page.
type pbServer struct{ *kilnv1.BuildServerStatus }

// MarshalJSON encodes the build server with protojson.
func (b pbServer) MarshalJSON() ([]byte, error) { return marshalProto(b.BuildServerStatus) }

// pbOverview is a kilnv1.GetOverviewResponse in a page.
type pbOverview struct{ *kilnv1.GetOverviewResponse }

// MarshalJSON encodes the overview with protojson.
func (o pbOverview) MarshalJSON() ([]byte, error) { return marshalProto(o.GetOverviewResponse) }

// pbArtifact is a kilnv1.Artifact in a page.
type pbArtifact struct{ *kilnv1.Artifact }

// MarshalJSON encodes the artifact with protojson.
func (a pbArtifact) MarshalJSON() ([]byte, error) { return marshalProto(a.Artifact) }

func wrapBuilds(bs []*kilnv1.Build) []pbBuild {
	out := make([]pbBuild, 0, len(bs))
	for _, b := range bs {
		if b != nil {
			out = append(out, pbBuild{b})
		}
	}
	return out
}

func wrapServers(ss []*kilnv1.BuildServerStatus) []pbServer {
	out := make([]pbServer, 0, len(ss))
	for _, s := range ss {
		if s != nil {
			out = append(out, pbServer{s})
		}
	}
	return out
}
