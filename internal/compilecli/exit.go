package compilecli

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// Exit statuses of startcompile; see the package documentation.
const (
	ExitOK      = 0 // succeeded, or accepted without --wait
	ExitFailed  = 1 // the build failed or was cancelled
	ExitInvalid = 2 // invalid or refused request
	ExitInfra   = 3 // infrastructure error
)

// ErrUsage is wrapped by every error about the command line itself (unknown
// flag, missing email, malformed option); such errors exit with ExitInvalid.
var ErrUsage = errors.New("usage")

// ErrArtifactMismatch is wrapped when a downloaded artifact's size or sha256
// differs from what its header announced; nothing is extracted and the exit
// status is ExitInfra.
var ErrArtifactMismatch = errors.New("artifact does not match its announced sha256 and size")

// ErrUnsafeArchive is wrapped when an artifact contains an entry that could
// write outside the download directory, through a symlink, or is not a
// regular file, directory or symlink, or when it exceeds the extraction
// limits. Nothing is extracted; the exit status is ExitInfra.
var ErrUnsafeArchive = errors.New("unsafe artifact archive")

// usageErr is a command-line mistake; its message stands alone.
type usageErr struct{ msg string }

func (e *usageErr) Error() string { return e.msg }
func (e *usageErr) Unwrap() error { return ErrUsage }

// usageError returns an error wrapping ErrUsage.
func usageError(format string, args ...any) error {
	return &usageErr{msg: fmt.Sprintf(format, args...)}
}

// buildError reports a build that ended in a state other than SUCCEEDED.
type buildError struct {
	build *kilnv1.Build
}

func (e *buildError) Error() string {
	b := e.build
	msg := fmt.Sprintf("build %d %s", b.GetId(), b.GetState().Word())
	if b.GetFailure() != "" {
		msg += ": " + b.GetFailure()
	}
	if b.GetFailingStep() != "" {
		msg += " (step: " + b.GetFailingStep() + ")"
	}
	return msg
}

// ExitCode maps an error returned by a command to the process exit status.
// nil is ExitOK; usage errors and refusals are ExitInvalid; a final build
// state FAILED or CANCELLED is ExitFailed; everything else, including
// unclassified local errors, is ExitInfra.
func ExitCode(err error) int {
	if err == nil {
		return ExitOK
	}
	var be *buildError
	switch {
	case errors.As(err, &be):
		switch be.build.GetState() {
		case kilnv1.BuildState_BUILD_STATE_FAILED, kilnv1.BuildState_BUILD_STATE_CANCELLED:
			return ExitFailed
		}
		return ExitInfra
	case errors.Is(err, ErrUsage):
		return ExitInvalid
	case errors.Is(err, ErrArtifactMismatch), errors.Is(err, ErrUnsafeArchive), errors.Is(err, ErrProvenance):
		return ExitInfra
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return ExitInfra
	}
	if st, ok := status.FromError(err); ok {
		return codeExit(st.Code())
	}
	return ExitInfra
}

// codeExit maps a gRPC status code to an exit status.
func codeExit(c codes.Code) int {
	switch c {
	case codes.OK:
		return ExitOK
	case codes.InvalidArgument, codes.NotFound, codes.PermissionDenied,
		codes.FailedPrecondition, codes.ResourceExhausted, codes.AlreadyExists,
		codes.OutOfRange, codes.Unauthenticated:
		return ExitInvalid
	}
	return ExitInfra
}

// describeError renders err for stderr. gRPC errors show the code and the
// server's message, followed by the field violations of status details.
func describeError(err error) string {
	if errors.Is(err, context.Canceled) || status.Code(err) == codes.Canceled {
		return "interrupted (a submitted build goes on; see startcompile status BUILD_ID)"
	}
	st, ok := status.FromError(err)
	if !ok || st.Code() == codes.OK {
		return err.Error()
	}
	var b strings.Builder
	switch codeExit(st.Code()) {
	case ExitInvalid:
		fmt.Fprintf(&b, "metaserver refused the request (%s): %s", st.Code(), st.Message())
	default:
		fmt.Fprintf(&b, "metaserver error (%s): %s", st.Code(), st.Message())
	}
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.BadRequest:
			for _, v := range d.GetFieldViolations() {
				fmt.Fprintf(&b, "\n  %s: %s", v.GetField(), v.GetDescription())
			}
		case *errdetails.PreconditionFailure:
			for _, v := range d.GetViolations() {
				fmt.Fprintf(&b, "\n  %s %s: %s", v.GetType(), v.GetSubject(), v.GetDescription())
			}
		case *errdetails.QuotaFailure:
			for _, v := range d.GetViolations() {
				fmt.Fprintf(&b, "\n  %s: %s", v.GetSubject(), v.GetDescription())
			}
		}
	}
	return b.String()
}

// finalError returns nil for a SUCCEEDED build and a *buildError for any
// other final state.
func finalError(b *kilnv1.Build) error {
	if b.GetState() == kilnv1.BuildState_BUILD_STATE_SUCCEEDED {
		return nil
	}
	return &buildError{build: b}
}
