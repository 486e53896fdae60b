package provenance

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	vsa "github.com/in-toto/attestation/go/predicates/vsa/v1"
	intoto "github.com/in-toto/attestation/go/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Entry kinds, as in kilnv1.LogEntryRef.kind.
const (
	KindStatement = "statement"
	KindSummary   = "summary"
	// MetaserverSigner is the signer of a summary.
	MetaserverSigner = "metaserver"
)

// Entry is one record of the transparency log: an envelope with the key
// that signed it, as the metaserver vouched for it when it appended the
// entry. It is logged as one line of compact JSON.
type Entry struct {
	Kind  string `json:"kind"`
	Build uint64 `json:"build"`
	// Attempt is the attempt id of a statement.
	Attempt uint64 `json:"attempt,omitempty"`
	// Signer is the build server's name, or MetaserverSigner.
	Signer string `json:"signer"`
	// Key is the signer's ed25519 public key.
	Key      []byte          `json:"key"`
	Envelope json.RawMessage `json:"envelope"`
}

// Marshal encodes e as one line (no newline inside or after).
func (e *Entry) Marshal() ([]byte, error) {
	var buf bytes.Buffer
	if err := json.Compact(&buf, e.Envelope); err != nil {
		return nil, fmt.Errorf("provenance: entry envelope: %w", err)
	}
	c := *e
	c.Envelope = buf.Bytes()
	return json.Marshal(&c)
}

// ParseEntry decodes a logged entry.
func ParseEntry(data []byte) (*Entry, error) {
	var e Entry
	if err := json.Unmarshal(data, &e); err != nil {
		return nil, fmt.Errorf("provenance: log entry: %w", err)
	}
	if e.Kind != KindStatement && e.Kind != KindSummary {
		return nil, fmt.Errorf("provenance: log entry of unknown kind %q", e.Kind)
	}
	if len(e.Key) != ed25519.PublicKeySize {
		return nil, errors.New("provenance: log entry without an ed25519 key")
	}
	return &e, nil
}

// Open checks the entry's envelope against the entry's key.
func (e *Entry) Open() (*intoto.Statement, error) {
	return Open(e.Envelope, e.Key)
}

// SHA256 is the hex sha256 of data, as LogEntryRef.sha256 names an entry.
func SHA256(data []byte) string { return sha256Hex(data) }

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// NewSummary returns the metaserver's verification summary of artifact
// sha256 built by build: it names the agreeing statements by the sha256 of
// their log entries (in the log at the given indexes).
func NewSummary(verifier string, build uint64, artifactSHA256 string, statements []StatementRef, at time.Time) (*intoto.Statement, error) {
	inputs := make([]*vsa.VerificationSummary_InputAttestation, len(statements))
	for i, s := range statements {
		inputs[i] = &vsa.VerificationSummary_InputAttestation{
			Uri:    fmt.Sprintf("kiln:log/%d", s.Index),
			Digest: map[string]string{"sha256": s.EntrySHA256},
		}
	}
	pred := &vsa.VerificationSummary{
		Verifier:           &vsa.VerificationSummary_Verifier{Id: verifier},
		TimeVerified:       timestamppb.New(at),
		ResourceUri:        fmt.Sprintf("kiln:build/%d", build),
		Policy:             &vsa.VerificationSummary_Policy{Uri: "https://kiln.build/policy/quorum/v1"},
		InputAttestations:  inputs,
		VerificationResult: "PASSED",
		VerifiedLevels:     []string{"SLSA_BUILD_LEVEL_1"},
		SlsaVersion:        "1.0",
	}
	ps, err := protoStruct(pred)
	if err != nil {
		return nil, err
	}
	return &intoto.Statement{
		Type:          intoto.StatementTypeUri,
		Subject:       []*intoto.ResourceDescriptor{{Name: "artifact.tar", Digest: map[string]string{"sha256": artifactSHA256}}},
		PredicateType: SummaryPredicate,
		Predicate:     ps,
	}, nil
}

// StatementRef names a logged statement for a summary.
type StatementRef struct {
	Index       uint64
	EntrySHA256 string
}

// Summary decodes st's verification summary predicate.
func Summary(st *intoto.Statement) (*vsa.VerificationSummary, error) {
	if st.GetPredicateType() != SummaryPredicate {
		return nil, fmt.Errorf("provenance: predicate type %q, want %q", st.GetPredicateType(), SummaryPredicate)
	}
	var v vsa.VerificationSummary
	if err := fromStruct(st.GetPredicate(), &v); err != nil {
		return nil, fmt.Errorf("provenance: summary predicate: %w", err)
	}
	return &v, nil
}
