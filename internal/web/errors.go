package web

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// httpError is a failure with the HTTP status and the message a visitor
// sees. err, when set, is the cause, logged but never shown (it may name
// internal addresses).
type httpError struct {
	code int
	msg  string
	err  error
}

func (e *httpError) Error() string {
	if e.err != nil {
		return fmt.Sprintf("%d %s: %v", e.code, e.msg, e.err)
	}
	return fmt.Sprintf("%d %s", e.code, e.msg)
}

func (e *httpError) Unwrap() error { return e.err }

// badRequest is a 400 with msg shown to the visitor.
func badRequest(format string, args ...any) *httpError {
	return &httpError{code: http.StatusBadRequest, msg: fmt.Sprintf(format, args...)}
}

// fromRPC maps a metaserver call's error to what the visitor sees. what
// names the thing asked for ("build 42") for the 404 message.
//
//	NOT_FOUND                              404
//	INVALID_ARGUMENT, OUT_OF_RANGE         400 (our request was wrong: a bad page token)
//	UNAVAILABLE, DEADLINE_EXCEEDED         503 (the metaserver is unreachable or too slow)
//	RESOURCE_EXHAUSTED                     503 (rate limited; retrying later helps)
//	anything else                          502
func fromRPC(err error, what string) *httpError {
	if he := (*httpError)(nil); errors.As(err, &he) {
		return he
	}
	if errors.Is(err, errDraining) {
		return &httpError{code: http.StatusServiceUnavailable, msg: "This webstatus server is restarting.", err: err}
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return &httpError{code: http.StatusServiceUnavailable, msg: unreachableMsg, err: err}
	}
	st, _ := status.FromError(err)
	switch st.Code() {
	case codes.NotFound:
		return &httpError{code: http.StatusNotFound, msg: "There is no " + what + ".", err: err}
	case codes.InvalidArgument, codes.OutOfRange:
		return &httpError{code: http.StatusBadRequest, msg: "The metaserver refused the request: " + st.Message(), err: err}
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
		return &httpError{code: http.StatusServiceUnavailable, msg: unreachableMsg, err: err}
	case codes.ResourceExhausted:
		return &httpError{code: http.StatusServiceUnavailable, msg: "The metaserver is busy; try again in a moment.", err: err}
	default:
		return &httpError{code: http.StatusBadGateway, msg: "The metaserver failed to answer (" + st.Code().String() + ").", err: err}
	}
}

// unreachableMsg is the 503 text: what happened and that it is not the
// visitor's fault.
const unreachableMsg = "The metaserver cannot be reached right now, so the farm's status is unknown. " +
	"This page will work again once the metaserver is back; try again in a moment."

// errorView is the data of the error page and of its JSON form.
type errorView struct {
	Code    int    `json:"code"`
	Status  string `json:"status"`
	Message string `json:"message"`
}

// writeError renders err as an error page (or JSON), with its status code.
// Errors that are not *httpError become a 500 whose cause is only logged.
func (s *server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	he := &httpError{}
	if !errors.As(err, &he) {
		he = &httpError{code: http.StatusInternalServerError, msg: "Something went wrong while rendering this page.", err: err}
	}
	level := s.log.Debug
	if he.code >= 500 {
		level = s.log.Warn
	}
	level("request failed", "path", r.URL.Path, "status", he.code, "error", he.Error())
	v := errorView{Code: he.code, Status: http.StatusText(he.code), Message: he.msg}
	if he.code == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "5")
	}
	if wantsJSON(r) {
		writeJSON(w, he.code, struct {
			Error errorView `json:"error"`
		}{v})
		return
	}
	s.render(w, r, he.code, "error", v.Status, "", v)
}
