// Package relaywire is the framing between the load test's relay (the
// best case of a local agent: a running process holding the metaserver
// connection) and its client, grpcfloor -relay: each message a 4-byte
// big-endian length and the protobuf bytes.
package relaywire

import (
	"encoding/binary"
	"fmt"
	"io"
)

// MaxMessage bounds one message either way.
const MaxMessage = 1 << 20

// Read reads one message.
func Read(r io.Reader) ([]byte, error) {
	var h [4]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(h[:])
	if n > MaxMessage {
		return nil, fmt.Errorf("relay message of %d bytes (at most %d)", n, MaxMessage)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, err
	}
	return b, nil
}

// Write writes one message in one write.
func Write(w io.Writer, b []byte) error {
	if len(b) > MaxMessage {
		return fmt.Errorf("relay message of %d bytes (at most %d)", len(b), MaxMessage)
	}
	buf := make([]byte, 4+len(b))
	binary.BigEndian.PutUint32(buf, uint32(len(b)))
	copy(buf[4:], b)
	_, err := w.Write(buf)
	return err
}
