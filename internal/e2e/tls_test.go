package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/credentials"

	"github.com/kilnbuild/kiln/internal/farmtest"
)

// testCA writes a private CA and a server certificate for 127.0.0.1 into
// dir and returns the paths of the CA, the certificate and the key.
func testCA(t *testing.T, dir string) (caFile, certFile, keyFile string) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kiln test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "metaserver"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	write := func(name, typ string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	return write("ca.pem", "CERTIFICATE", caDER), write("server.pem", "CERTIFICATE", der), write("server.key", "EC PRIVATE KEY", keyDER)
}

func TestTLSFarmBuildsEndToEndWithAPrivateCAAndEnrollment(t *testing.T) {
	dir := t.TempDir()
	caFile, cert, key := testCA(t, dir)
	pool := x509.NewCertPool()
	caPEM, _ := os.ReadFile(caFile)
	pool.AppendCertsFromPEM(caPEM)

	f := farmtest.New(t)
	f.ClientCreds = credentials.NewTLS(&tls.Config{RootCAs: pool})
	f.StartMetaserver("--heartbeat", "200ms", "--lease", "2s", "--tls-cert", cert, "--tls-key", key)
	repo, _ := farmtest.CProject(t, farmtest.CProjectOptions{Manifest: true})
	f.AddProject("hello", repo)

	// The volunteer joins with an enrollment token, exchanged once.
	meta := farmtest.Binary(t, "metaserver")
	out, err := runCmd(meta, "enroll-token", "create", "--data-dir", f.MetaDataDir())
	if err != nil {
		t.Fatalf("enroll-token create: %v %s", err, out)
	}
	enrollToken := strings.TrimSpace(out)
	bs := f.StartBuildserver("", "--enroll", enrollToken, "--name", "volunteer", "--ca", caFile)
	f.WaitBuildServers(1)

	res := parseResult(t, f.Startcompile("--ca", caFile, "--project", "hello", "--wait", "--json", "dev@example.com"))
	if res.State != "succeeded" {
		t.Fatalf("TLS build: %+v", res)
	}
	// Without the CA, the client does not trust the server.
	r := f.Startcompile("--project", "hello", "--json", "dev@example.com")
	if r.Exit == 0 {
		t.Fatalf("plaintext client talked to the TLS metaserver: %s", r.Stdout)
	}
	// The enrollment token is spent: a second volunteer cannot use it.
	p := f.StartBuildserver("", "--enroll", enrollToken, "--name", "second", "--ca", caFile)
	select {
	case <-p.Exited():
	case <-time.After(20 * time.Second):
		t.Fatal("a reused enrollment token was accepted")
	}
	if !strings.Contains(p.Logs(), "already used") {
		t.Fatalf("second enrollment log lacks the reason:\n%s", p.Logs())
	}
	// The first volunteer saved its credential and restarts without enrolling.
	bs.Stop()
	f.WaitBuildServers(0)
	if err := bs.Restart(); err != nil {
		t.Fatal(err)
	}
	f.WaitBuildServers(1)
}

func TestTLSPlaintextToANonLoopbackAddressIsRefused(t *testing.T) {
	f := farmtest.New(t)
	f.StartMetaserver()
	// No connection is attempted: the address is refused before dialing.
	r := f.Startcompile("--metaserver", "metaserver.example:7070", "--project", "hello", "dev@example.com")
	expectExit(t, r, 2)
	if !strings.Contains(r.Stderr, "--insecure") {
		t.Fatalf("refusal does not explain itself: %s", r.Stderr)
	}
	meta := farmtest.Binary(t, "metaserver")
	out, err := runCmd(meta, "serve", "--data-dir", t.TempDir(), "--listen", "0.0.0.0:0")
	if err == nil || !strings.Contains(out, "not loopback") {
		t.Fatalf("metaserver served plaintext on a public address: %v %s", err, out)
	}
	bsOut, err := runCmd(farmtest.Binary(t, "buildserver"), "--metaserver", "metaserver.example:7070", "--token", "x", "--data-dir", t.TempDir())
	if err == nil || !strings.Contains(bsOut, "--insecure") {
		t.Fatalf("buildserver accepted plaintext to a public address: %v %s", err, bsOut)
	}
}
