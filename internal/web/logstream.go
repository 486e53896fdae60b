package web

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"unicode/utf8"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// readLog streams build id's log from offset through GetLog and calls emit
// with consecutive pieces: off is the log offset of text's first byte. Each
// piece ends on a whole UTF-8 character when the log is valid UTF-8 (a
// character split across chunks is carried into the next piece), so pieces
// can be encoded on their own (JSON, SSE) and an offset taken from them
// never splits a character. Overlapping chunks are trimmed; a gap (a chunk
// past the expected offset) is passed on as is, the offsets say so.
//
// With follow, readLog returns when the metaserver ends the stream (the
// build is final) or ctx ends. It returns the offset after the last byte
// emitted, and the first error of GetLog or emit; io.EOF is not an error.
//
// A follow also ends, with errDraining, when Options.Draining closes.
func (s *server) readLog(ctx context.Context, id, offset uint64, follow bool, emit func(off uint64, text []byte) error) (uint64, error) {
	if follow && s.drain != nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		go func() {
			select {
			case <-s.drain:
				cancel()
			case <-ctx.Done():
			}
		}()
	}
	next, err := s.readLogChunks(ctx, id, offset, follow, emit)
	if err != nil && follow && s.draining() {
		err = errDraining
	}
	return next, err
}

// errDraining ends a followed log when webstatus shuts down.
var errDraining = errors.New("webstatus is shutting down")

func (s *server) readLogChunks(ctx context.Context, id, offset uint64, follow bool, emit func(off uint64, text []byte) error) (uint64, error) {
	stream, err := s.compile.GetLog(ctx, &kilnv1.GetLogRequest{BuildId: id, Offset: offset, Follow: follow})
	if err != nil {
		return offset, err
	}
	next := offset // offset of the first byte not yet received
	var carry []byte
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return next - uint64(len(carry)), err
		}
		data, off := msg.GetData(), msg.GetOffset()
		if off < next { // overlap: drop what we already have
			skip := next - off
			if skip >= uint64(len(data)) {
				continue
			}
			data, off = data[skip:], next
		}
		if off > next && len(carry) > 0 { // gap: the carried bytes will never complete
			if err := emit(next-uint64(len(carry)), carry); err != nil {
				return next, err
			}
			carry = nil
		}
		if len(data) == 0 {
			continue
		}
		start := off - uint64(len(carry))
		buf := append(carry, data...)
		whole, rest := splitUTF8(buf)
		carry = append([]byte(nil), rest...)
		next = off + uint64(len(data))
		if len(whole) > 0 {
			if err := emit(start, whole); err != nil {
				return start, err
			}
		}
	}
	if len(carry) > 0 {
		if err := emit(next-uint64(len(carry)), carry); err != nil {
			return next - uint64(len(carry)), err
		}
	}
	return next, nil
}

// splitUTF8 splits b before a trailing incomplete UTF-8 sequence (at most
// three bytes that could still become a character).
func splitUTF8(b []byte) (whole, rest []byte) {
	for i := 1; i <= utf8.UTFMax-1 && i <= len(b); i++ {
		c := b[len(b)-i]
		if c < 0x80 { // ASCII: everything up to here is complete
			return b, nil
		}
		if utf8.RuneStart(c) {
			if !utf8.FullRune(b[len(b)-i:]) {
				return b[:len(b)-i], b[len(b)-i:]
			}
			return b, nil
		}
	}
	return b, nil
}

// parseBoolParam reads an optional boolean query parameter: absent, "",
// "0", "1", "false" or "true".
func parseBoolParam(r *http.Request, key string) (bool, error) {
	if !r.URL.Query().Has(key) {
		return false, nil
	}
	switch v := r.URL.Query().Get(key); v {
	case "", "1", "true", "yes", "on":
		return true, nil
	case "0", "false", "no", "off":
		return false, nil
	default:
		return false, badRequest("%s must be 1 or 0, not %q.", key, v)
	}
}

// checkParams refuses query parameters other than allowed.
func checkParams(r *http.Request, allowed ...string) error {
	for key := range r.URL.Query() {
		ok := false
		for _, a := range allowed {
			ok = ok || key == a
		}
		if !ok {
			return badRequest("Unknown parameter %q.", key)
		}
	}
	return nil
}

// parseOffset reads ?offset= or, for a reconnecting EventSource, the
// Last-Event-ID header (the offset after the last event received).
func parseOffset(r *http.Request) (uint64, error) {
	raw := r.URL.Query().Get("offset")
	if id := r.Header.Get("Last-Event-ID"); id != "" {
		raw = id
	}
	if raw == "" {
		return 0, nil
	}
	n, err := strconv.ParseUint(raw, 10, 64)
	if err != nil {
		return 0, badRequest("offset must be a byte offset (a non-negative number), not %q.", raw)
	}
	return n, nil
}

// flusher flushes a response, ignoring writers that cannot.
func flush(w http.ResponseWriter) {
	_ = http.NewResponseController(w).Flush()
}
