package cas_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"strings"

	"github.com/kilnbuild/kiln/internal/cas"
)

func ExampleStore_Put() {
	dir, err := os.MkdirTemp("", "cas-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	store, err := cas.Open(dir)
	if err != nil {
		log.Fatal(err)
	}
	// An uploader announced digest and size; Put refuses anything else.
	const want = "59bd16dfc39e768f82bb8ec74467e571e80ed284683b586f077dbf1aa2483ecd"
	sha, size, err := store.Put(context.Background(), strings.NewReader("artifact bytes\n"), want, 15)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(size, sha)
	if _, _, err := store.Put(context.Background(), strings.NewReader("tampered bytes\n"), want, 15); errors.Is(err, cas.ErrMismatch) {
		fmt.Println("tampered upload refused")
	}

	r, _, err := store.Open(context.Background(), sha)
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()
	// Trust the bytes only once ReadAll (or io.Copy) returned no error: a
	// corrupt blob fails at the end.
	b, err := io.ReadAll(r)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Print(string(b))
	// Output:
	// 15 59bd16dfc39e768f82bb8ec74467e571e80ed284683b586f077dbf1aa2483ecd
	// tampered upload refused
	// artifact bytes
}
