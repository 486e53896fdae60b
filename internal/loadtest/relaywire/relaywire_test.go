package relaywire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestMessagesRoundTripInOrder(t *testing.T) {
	var buf bytes.Buffer
	msgs := [][]byte{[]byte("first"), {}, bytes.Repeat([]byte{7}, 4096)}
	for _, m := range msgs {
		if err := Write(&buf, m); err != nil {
			t.Fatal(err)
		}
	}
	for i, want := range msgs {
		got, err := Read(&buf)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("message %d: %d bytes, %v; want %d bytes", i, len(got), err, len(want))
		}
	}
	if _, err := Read(&buf); !errors.Is(err, io.EOF) {
		t.Fatalf("after the last message: %v, want EOF", err)
	}
}

// A peer that announces more than MaxMessage is refused before anything
// is allocated for it, and so is a message cut short.
func TestOversizedAndTruncatedMessagesAreRefused(t *testing.T) {
	var h [4]byte
	binary.BigEndian.PutUint32(h[:], MaxMessage+1)
	if _, err := Read(bytes.NewReader(h[:])); err == nil || !strings.Contains(err.Error(), "at most") {
		t.Fatalf("an oversized length: %v", err)
	}
	binary.BigEndian.PutUint32(h[:], 10)
	if _, err := Read(bytes.NewReader(append(h[:], "short"...))); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("a truncated message: %v", err)
	}
	if err := Write(io.Discard, make([]byte, MaxMessage+1)); err == nil {
		t.Fatal("an oversized message was written")
	}
}
