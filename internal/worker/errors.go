package worker

import (
	"errors"
	"fmt"
)

// AuthError reports that the metaserver refused the build server's
// credential (gRPC UNAUTHENTICATED): the token is wrong or was revoked.
// Reconnecting cannot help, so Client.Run stops and returns it; decide with
// errors.As.
type AuthError struct {
	// Err is the status error the metaserver returned.
	Err error
}

func (e *AuthError) Error() string {
	return fmt.Sprintf("metaserver refused this build server's credential (token wrong or revoked): %v", e.Err)
}

func (e *AuthError) Unwrap() error { return e.Err }

// ErrNoTargets is returned by ProbeTargets and New when no build target is
// left to offer (every probe failed, or none was configured).
var ErrNoTargets = errors.New("worker: no build target to offer")

// Causes of an attempt's cancellation; they decide the attempt's outcome.
var (
	// errCancelledByServer: the metaserver sent CancelAttempt (CANCELLED).
	errCancelledByServer = errors.New("cancelled by the metaserver")
	// errStopping: the build server is stopping and gives the attempt back (RETURNED).
	errStopping = errors.New("build server is stopping")
	// errDropped: Welcome listed the attempt in drop_attempt_ids; its result is discarded.
	errDropped = errors.New("the metaserver dropped the attempt")
)

// errNoSession is returned when a message cannot be sent because no session
// is established (or the session it was meant for has ended).
var errNoSession = errors.New("no session with the metaserver")

// buildError is a failure that is the build's own fault (an artifact that was
// not produced, or is too large): the attempt ends FAILED with its reason.
type buildError struct{ reason string }

func (e *buildError) Error() string { return e.reason }
