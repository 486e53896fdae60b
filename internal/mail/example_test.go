package mail_test

import (
	"fmt"

	"github.com/kilnbuild/kiln/internal/mail"
)

func ExampleValidateAddress() {
	addr, err := mail.ValidateAddress("Ada.Lovelace@Example.ORG")
	fmt.Println(addr, err)
	_, err = mail.ValidateAddress("Ada <ada@example.org>")
	fmt.Println(err != nil)
	// Output:
	// Ada.Lovelace@example.org <nil>
	// true
}

// A webhook receiver checks X-Kiln-Signature by recomputing it over the raw
// body with the shared secret (and comparing with hmac.Equal).
func ExampleSign() {
	body := []byte(`{"event":"build.succeeded","build_id":42}`)
	fmt.Println(mail.Sign([]byte("s3cret"), body)[:len("sha256=")+16])
	// Output: sha256=5d3e50dbf039dd19
}
