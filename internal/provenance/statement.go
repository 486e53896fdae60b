package provenance

import (
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	slsa "github.com/in-toto/attestation/go/predicates/provenance/v1"
	intoto "github.com/in-toto/attestation/go/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// Predicate and build types.
const (
	ProvenancePredicate = "https://slsa.dev/provenance/v1"
	SummaryPredicate    = "https://slsa.dev/verification_summary/v1"
	// BuildType names Kiln's build: the parameters below mean what
	// docs/provenance.md says.
	BuildType = "https://kiln.build/attempt/v1"
	// BuilderPrefix starts runDetails.builder.id; the build server's name follows.
	BuilderPrefix = "kiln:buildserver/"
)

// Facts is what a build server states about one successful attempt.
type Facts struct {
	// ArtifactSHA256 is the subject: the packed artifact's hex sha256.
	ArtifactSHA256 string
	// The assignment.
	Project, GitURL, Commit string
	Options                 map[string]string
	// Constraints is what the build's requester pinned (empty: the
	// assignment does not carry them; the target's measured system is in
	// Toolchain).
	Constraints *kilnv1.PlatformConstraints
	// Dependencies are the dependency artifacts staged into the sysroot.
	Dependencies []*kilnv1.BuildDependency
	// Toolchain is the target's system info as measured.
	Toolchain *kilnv1.SystemInfo
	// Run details.
	BuildServer    string
	AttemptID      uint64
	Started, Ended time.Time
	LogSHA256      string
	LogSize        uint64
}

// NewStatement returns the in-toto Statement (SLSA provenance v1) of f.
func NewStatement(f Facts) (*intoto.Statement, error) {
	ext := map[string]any{
		"project": f.Project,
		"commit":  f.Commit,
		"options": stringMap(f.Options),
	}
	if f.Constraints != nil {
		b, err := protojson.Marshal(f.Constraints)
		if err != nil {
			return nil, err
		}
		var c map[string]any
		if err := json.Unmarshal(b, &c); err != nil {
			return nil, err
		}
		ext["platformConstraints"] = c
	}
	extS, err := structpb.NewStruct(ext)
	if err != nil {
		return nil, fmt.Errorf("provenance: external parameters: %w", err)
	}
	deps := []*intoto.ResourceDescriptor{{
		Uri:    "git+" + f.GitURL + "@" + f.Commit,
		Digest: map[string]string{"gitCommit": f.Commit},
		Name:   f.Project,
	}}
	for _, d := range f.Dependencies {
		deps = append(deps, &intoto.ResourceDescriptor{
			Name:   d.GetProject(),
			Uri:    "kiln:build/" + strconv.FormatUint(d.GetBuildId(), 10),
			Digest: map[string]string{"sha256": d.GetArtifact().GetSha256()},
		})
	}
	if f.Toolchain != nil {
		deps = append(deps, toolchainDescriptor(f.Toolchain))
	}
	pred := &slsa.Provenance{
		BuildDefinition: &slsa.BuildDefinition{
			BuildType:            BuildType,
			ExternalParameters:   extS,
			ResolvedDependencies: deps,
		},
		RunDetails: &slsa.RunDetails{
			Builder: &slsa.Builder{Id: BuilderPrefix + f.BuildServer},
			Metadata: &slsa.BuildMetadata{
				InvocationId: strconv.FormatUint(f.AttemptID, 10),
				StartedOn:    timestamppb.New(f.Started),
				FinishedOn:   timestamppb.New(f.Ended),
			},
			Byproducts: []*intoto.ResourceDescriptor{{
				Name:   "build.log",
				Digest: map[string]string{"sha256": f.LogSHA256},
			}},
		},
	}
	predS, err := protoStruct(pred)
	if err != nil {
		return nil, err
	}
	return &intoto.Statement{
		Type:          intoto.StatementTypeUri,
		Subject:       []*intoto.ResourceDescriptor{{Name: "artifact.tar", Digest: map[string]string{"sha256": f.ArtifactSHA256}}},
		PredicateType: ProvenancePredicate,
		Predicate:     predS,
	}, nil
}

// Provenance decodes st's SLSA provenance predicate.
func Provenance(st *intoto.Statement) (*slsa.Provenance, error) {
	if st.GetPredicateType() != ProvenancePredicate {
		return nil, fmt.Errorf("provenance: predicate type %q, want %q", st.GetPredicateType(), ProvenancePredicate)
	}
	var p slsa.Provenance
	if err := fromStruct(st.GetPredicate(), &p); err != nil {
		return nil, fmt.Errorf("provenance: predicate: %w", err)
	}
	return &p, nil
}

// Subject returns the sha256 st is about, "" when it names none.
func Subject(st *intoto.Statement) string {
	if len(st.GetSubject()) != 1 {
		return ""
	}
	return st.GetSubject()[0].GetDigest()["sha256"]
}

// Claim is what the metaserver knows of an attempt, to check a statement
// against (CheckStatement).
type Claim struct {
	ArtifactSHA256 string
	Project        string
	Commit         string
	BuildServer    string
	AttemptID      uint64
}

// CheckStatement returns why st does not describe the attempt c, "" when
// it does: a statement replayed from another attempt or artifact, or one
// naming another builder, is refused here.
func CheckStatement(st *intoto.Statement, c Claim) string {
	if got := Subject(st); got != c.ArtifactSHA256 {
		return fmt.Sprintf("statement is about artifact %.16s, not %.16s", got, c.ArtifactSHA256)
	}
	if st.GetPredicateType() != ProvenancePredicate {
		return fmt.Sprintf("predicate type %q, want %q", st.GetPredicateType(), ProvenancePredicate)
	}
	// Read straight from the predicate's Struct: decoding it whole into
	// slsa.Provenance (Provenance) costs as much as the signature check.
	pred := st.GetPredicate().GetFields()
	bd := pred["buildDefinition"].GetStructValue().GetFields()
	rd := pred["runDetails"].GetStructValue().GetFields()
	ext := bd["externalParameters"].GetStructValue().GetFields()
	builder := rd["builder"].GetStructValue().GetFields()["id"].GetStringValue()
	invocation := rd["metadata"].GetStructValue().GetFields()["invocationId"].GetStringValue()
	switch {
	case bd["buildType"].GetStringValue() != BuildType:
		return fmt.Sprintf("statement has build type %q", bd["buildType"].GetStringValue())
	case ext["project"].GetStringValue() != c.Project:
		return fmt.Sprintf("statement names project %q, not %q", ext["project"].GetStringValue(), c.Project)
	case ext["commit"].GetStringValue() != c.Commit:
		return fmt.Sprintf("statement names commit %.12s, not %.12s", ext["commit"].GetStringValue(), c.Commit)
	case builder != BuilderPrefix+c.BuildServer:
		return fmt.Sprintf("statement names builder %q, not %q", builder, BuilderPrefix+c.BuildServer)
	case invocation != strconv.FormatUint(c.AttemptID, 10):
		return fmt.Sprintf("statement is about attempt %s, not %d", invocation, c.AttemptID)
	}
	return ""
}

func stringMap(m map[string]string) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// protoStruct converts a message to a Struct through its JSON form.
func protoStruct(m proto.Message) (*structpb.Struct, error) {
	b, err := protojson.Marshal(m)
	if err != nil {
		return nil, err
	}
	var s structpb.Struct
	if err := protojson.Unmarshal(b, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

func fromStruct(s *structpb.Struct, m proto.Message) error {
	b, err := protojson.Marshal(s)
	if err != nil {
		return err
	}
	return protojson.Unmarshal(b, m)
}

// digestOf is the hex sha256 of m's deterministic encoding.
func digestOf(m proto.Message) string {
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	return sha256Hex(b)
}

// AssignmentFacts fills the facts an assignment gives: everything but
// the toolchain, the times and the log.
func AssignmentFacts(asg *kilnv1.Assignment, builder, artifactSHA256 string) Facts {
	return Facts{
		ArtifactSHA256: artifactSHA256,
		Project:        asg.GetProject(), GitURL: asg.GetGitUrl(), Commit: asg.GetCommit(),
		Options: asg.GetOptions(), Constraints: asg.GetConstraints(), Dependencies: asg.GetDependencies(),
		BuildServer: builder, AttemptID: asg.GetAttemptId(),
	}
}

// SignFacts makes and seals the statement of f.
func SignFacts(key ed25519.PrivateKey, f Facts) ([]byte, error) {
	st, err := NewStatement(f)
	if err != nil {
		return nil, err
	}
	return Seal(key, st)
}

// toolchainDescriptor names the measured toolchain: the digest of the
// whole system info (deterministic encoding) and, readable, the fields a
// binary depends on. The tool list is left to the digest: it made the
// statement several times larger and its encoding the dearest part of
// signing and checking.
func toolchainDescriptor(si *kilnv1.SystemInfo) *intoto.ResourceDescriptor {
	ann := &structpb.Struct{Fields: map[string]*structpb.Value{}}
	for k, v := range map[string]string{
		"os": si.GetOs(), "arch": si.GetArch(), "endian": si.GetEndian(), "dataModel": si.GetDataModel(),
		"libc": si.GetLibc(), "libcVersion": si.GetLibcVersion(),
		"compiler": si.GetCompiler(), "compilerVersion": si.GetCompilerVersion(),
	} {
		if v != "" {
			ann.Fields[k] = structpb.NewStringValue(v)
		}
	}
	if si.GetEmulated() {
		ann.Fields["emulated"] = structpb.NewBoolValue(true)
	}
	return &intoto.ResourceDescriptor{Name: "toolchain", Annotations: ann,
		Digest: map[string]string{"sha256": digestOf(si)}}
}
