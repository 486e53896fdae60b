package provenance

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"

	intoto "github.com/in-toto/attestation/go/v1"
	"github.com/secure-systems-lab/go-securesystemslib/dsse"
	"google.golang.org/protobuf/encoding/protojson"
)

// PayloadType is the DSSE payload type of an in-toto Statement.
const PayloadType = "application/vnd.in-toto+json"

// MaxEnvelopeBytes bounds an envelope a build server may send.
const MaxEnvelopeBytes = 64 << 10

// ErrBadSignature is wrapped by Open's error when no signature of the
// envelope verifies with the expected key (signed with another key, or the
// payload changed after signing).
var ErrBadSignature = errors.New("provenance: signature does not verify with the expected key")

// signer is a dsse.SignerVerifier over one ed25519 key (only Verify is
// usable when priv is nil).
type signer struct {
	priv ed25519.PrivateKey
	pub  ed25519.PublicKey
}

func (s signer) Sign(_ context.Context, data []byte) ([]byte, error) {
	if s.priv == nil {
		return nil, errors.New("provenance: no private key")
	}
	return ed25519.Sign(s.priv, data), nil
}

func (s signer) Verify(_ context.Context, data, sig []byte) error {
	if !ed25519.Verify(s.pub, data, sig) {
		return ErrBadSignature
	}
	return nil
}

func (s signer) KeyID() (string, error)   { return KeyID(s.pub), nil }
func (s signer) Public() crypto.PublicKey { return s.pub }

// Seal signs st and returns the DSSE envelope as compact JSON (no newline:
// it is logged as one line).
func Seal(key ed25519.PrivateKey, st *intoto.Statement) ([]byte, error) {
	if err := st.Validate(); err != nil {
		return nil, fmt.Errorf("provenance: invalid statement: %w", err)
	}
	body, err := protojson.Marshal(st)
	if err != nil {
		return nil, err
	}
	es, err := dsse.NewEnvelopeSigner(signer{priv: key, pub: key.Public().(ed25519.PublicKey)})
	if err != nil {
		return nil, err
	}
	env, err := es.SignPayload(context.Background(), PayloadType, body)
	if err != nil {
		return nil, err
	}
	return json.Marshal(env)
}

// Open checks that envelope is a DSSE envelope of an in-toto Statement
// signed by pub and returns the statement. It wraps ErrBadSignature when
// the signature does not verify.
func Open(envelope []byte, pub ed25519.PublicKey) (*intoto.Statement, error) {
	if len(pub) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("provenance: public key of %d bytes, want %d", len(pub), ed25519.PublicKeySize)
	}
	var env dsse.Envelope
	if err := json.Unmarshal(envelope, &env); err != nil {
		return nil, fmt.Errorf("provenance: not a DSSE envelope: %w", err)
	}
	if env.PayloadType != PayloadType {
		return nil, fmt.Errorf("provenance: payload type %q, want %q", env.PayloadType, PayloadType)
	}
	ev, err := dsse.NewEnvelopeVerifier(signer{pub: pub})
	if err != nil {
		return nil, err
	}
	_, body, err := ev.VerifyAndDecode(context.Background(), &env)
	if err != nil {
		if body == nil && len(env.Signatures) > 0 {
			return nil, fmt.Errorf("%w (key %s)", ErrBadSignature, KeyID(pub)[:16])
		}
		return nil, fmt.Errorf("provenance: %w", err)
	}
	var st intoto.Statement
	if err := protojson.Unmarshal(body, &st); err != nil {
		return nil, fmt.Errorf("provenance: payload is not an in-toto statement: %w", err)
	}
	if err := st.Validate(); err != nil {
		return nil, fmt.Errorf("provenance: invalid statement: %w", err)
	}
	return &st, nil
}
