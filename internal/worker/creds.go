package worker

import "context"

// bearerToken sends the build server's credential on every call as
// "authorization: Bearer <token>".
type bearerToken struct {
	token  string
	secure bool
}

func (t bearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + t.token}, nil
}

// RequireTransportSecurity is true over TLS, so the token never falls back to
// a plaintext connection; plaintext is used only on loopback or with --insecure.
func (t bearerToken) RequireTransportSecurity() bool { return t.secure }
