package farmtest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// VersitygwVersion is the S3-compatible server the tests run (versitygw,
// Apache-2.0, a Go program serving S3 over a POSIX directory), as
// scripts/setup.sh installs it: go install
// github.com/versity/versitygw/cmd/versitygw@VERSION.
const VersitygwVersion = "v1.8.0"

// S3Server is a real S3-compatible server for a test: versitygw over a
// directory of the test's, on 127.0.0.1 at a free port, stopped by its PID
// when the test ends.
type S3Server struct {
	// Proc is the server process (Stop, Kill, Restart).
	Proc *Process
	// Endpoint is its base URL, http://127.0.0.1:PORT.
	Endpoint string
	// AccessKey and SecretKey are its root credentials.
	AccessKey, SecretKey string
	// Dir is the directory holding the buckets (one subdirectory each).
	Dir string
}

// versitygwPath finds versitygw on PATH or in GOBIN / GOPATH/bin; "" when
// absent.
func versitygwPath() string {
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p
	}
	var dirs []string
	if d := os.Getenv("GOBIN"); d != "" {
		dirs = append(dirs, d)
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		for _, d := range filepath.SplitList(string(trimNL(out))) {
			dirs = append(dirs, filepath.Join(d, "bin"))
		}
	}
	for _, d := range dirs {
		p := filepath.Join(d, "versitygw")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

func trimNL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}

// StartS3 starts versitygw and waits until it accepts connections. It
// skips the test, with a message, when versitygw is not installed
// (scripts/setup.sh installs it).
func StartS3(t testing.TB) *S3Server {
	t.Helper()
	bin := versitygwPath()
	if bin == "" {
		t.Skipf("versitygw is not installed (PATH, GOBIN, GOPATH/bin); scripts/setup.sh installs it: go install github.com/versity/versitygw/cmd/versitygw@%s", VersitygwVersion)
	}
	dir := filepath.Join(t.TempDir(), "s3")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	addr := FreeAddr(t)
	s := &S3Server{Endpoint: "http://" + addr, AccessKey: "kilntest", SecretKey: "kiln-test-secret-" + strconv.Itoa(os.Getpid()), Dir: dir}
	// The sidecar keeps object metadata in files, not extended attributes,
	// which some file systems (tmpfs, overlay) refuse.
	side := filepath.Join(t.TempDir(), "s3-meta")
	if err := os.Mkdir(side, 0o700); err != nil {
		t.Fatal(err)
	}
	p := NewProcess(t, "versitygw", bin, "--access", s.AccessKey, "--secret", s.SecretKey, "--port", addr,
		"posix", "--sidecar", side, dir)
	p.Env = append(os.Environ(), "ROOT_ACCESS_KEY=", "ROOT_SECRET_KEY=")
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	s.Proc = p
	Eventually(t, 30*time.Second, func() error {
		if !p.Running() {
			t.Fatalf("farmtest: versitygw exited at start:\n%s", tail(p.Logs(), 30))
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	})
	return s
}

// URL returns the s3:// URL of bucket on this server, for --blobs.
func (s *S3Server) URL(bucket string) string {
	return fmt.Sprintf("s3://%s?endpoint=%s", bucket, s.Endpoint)
}

// Env returns the environment variables that give its credentials to an S3
// client (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY).
func (s *S3Server) Env() []string {
	return []string{"AWS_ACCESS_KEY_ID=" + s.AccessKey, "AWS_SECRET_ACCESS_KEY=" + s.SecretKey}
}
