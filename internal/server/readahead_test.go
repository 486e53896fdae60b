package server

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
)

// failingReader yields its data, then err instead of io.EOF.
type failingReader struct {
	r   io.Reader
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err == io.EOF {
		return n, f.err
	}
	return n, err
}

func TestReadAheadDeliversEveryByteInOrder(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789"), 1000)
	chunks, free := readAhead(context.Background(), bytes.NewReader(data), 64, 3)
	var got []byte
	for c := range chunks {
		if c.err != nil {
			t.Fatal(c.err)
		}
		got = append(got, c.data...)
		free <- c.data[:cap(c.data)]
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("got %d bytes, want %d, or out of order", len(got), len(data))
	}
}

func TestReadAheadReportsTheReadersErrorAfterItsData(t *testing.T) {
	corrupt := errors.New("corrupt")
	chunks, _ := readAhead(context.Background(), &failingReader{r: bytes.NewReader([]byte("abc")), err: corrupt}, 2, 2)
	var got []byte
	var last error
	for c := range chunks {
		got = append(got, c.data...)
		last = c.err
	}
	if string(got) != "abc" || !errors.Is(last, corrupt) {
		t.Fatalf("got %q then %v; want abc then the reader's error", got, last)
	}
}
