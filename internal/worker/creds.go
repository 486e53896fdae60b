package worker

import "context"

// bearerToken sends the build server's credential on every call as
// "authorization: Bearer <token>".
type bearerToken string

func (t bearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(t)}, nil
}

// RequireTransportSecurity is false because the connection is plaintext for
// now (loopback and trusted networks); with TLS it should become true.
func (bearerToken) RequireTransportSecurity() bool { return false }
