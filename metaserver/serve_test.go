package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestEveryServeFlagSetsExactlyOneConfigField sets each flag of `serve` to a
// sample value and checks that exactly one field of serveConfig changed, and
// that every field has a flag.
func TestEveryServeFlagSetsExactlyOneConfigField(t *testing.T) {
	var zero serveConfig
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	zero.flags(fs)
	touched := map[string]bool{}
	fs.VisitAll(func(fl *flag.Flag) {
		if fl.Usage == "" {
			t.Errorf("--%s has no help text", fl.Name)
		}
		var c serveConfig
		fs2 := flag.NewFlagSet("t", flag.ContinueOnError)
		c.flags(fs2)
		before := flatten(reflect.ValueOf(c), "")
		var v string
		switch reflect.TypeOf(fs2.Lookup(fl.Name).Value).Elem().Name() {
		case "boolValue":
			v = "true"
		case "intValue", "int64Value":
			v = "7"
		case "durationValue":
			v = "7s"
		default:
			v = "sample:1"
		}
		if err := fs2.Set(fl.Name, v); err != nil {
			t.Fatalf("--%s=%s: %v", fl.Name, v, err)
		}
		after := flatten(reflect.ValueOf(c), "")
		changed := 0
		for name, val := range after {
			if val != before[name] {
				changed++
				touched[name] = true
			}
		}
		if changed != 1 {
			t.Errorf("--%s changed %d fields, want 1", fl.Name, changed)
		}
	})
	for name := range flatten(reflect.ValueOf(zero), "") {
		if !touched[name] {
			t.Errorf("config field %s has no flag", name)
		}
	}
}

// flatten lists the exported leaf fields of a config struct with their values.
func flatten(v reflect.Value, prefix string) map[string]string {
	out := map[string]string{}
	for i := 0; i < v.NumField(); i++ {
		f := v.Type().Field(i)
		fv := v.Field(i)
		if fv.Kind() == reflect.Struct && f.Type != reflect.TypeOf(time.Duration(0)) {
			for k, x := range flatten(fv, prefix+f.Name+".") {
				out[k] = x
			}
			continue
		}
		out[prefix+f.Name] = fmt.Sprintf("%v", fv)
	}
	return out
}

func TestServeRefusesPlaintextOffLoopbackAndBadLimits(t *testing.T) {
	for _, args := range [][]string{
		{"--data-dir", "d", "--listen", "0.0.0.0:7070"},
		{"--data-dir", "d", "--lease", "1s", "--heartbeat", "1s"},
		{"--data-dir", "d", "--smtp-tls", "maybe"},
		{"--listen", "127.0.0.1:7070"},
		{"--data-dir", "d", "--hook-url", "http://127.0.0.1:1/x"},
		{"--data-dir", "d", "--timeout-grace", "0s"},
		{"--data-dir", "d", "--exclude-for", "-1s"},
		{"--data-dir", "d", "--losses-before-aside", "0"},
		{"--data-dir", "d", "--expire-unmatched", "-1h"},
		{"--data-dir", "d", "--reconnect-grace", "0s"},
		{"--data-dir", "d", "--sample-interval", "10ms"},
	} {
		var c serveConfig
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		c.flags(fs)
		c.DataDir = ""
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		if err := c.Validate(); err == nil {
			t.Errorf("%v was accepted", args)
		}
	}
}

// Both rate-limit flags say "0: unlimited", and server.Config reads 0 as its
// default: the mapping must turn a flag's 0 (and a negative) into Config's
// "none", and keep a positive limit.
func TestRateLimitFlagsZeroMeansUnlimited(t *testing.T) {
	for _, tc := range []struct{ flag, want int }{{0, -1}, {-5, -1}, {1, 1}, {30, 30}} {
		if got := rateLimit(tc.flag); got != tc.want {
			t.Errorf("rateLimit(%d) = %d, want %d", tc.flag, got, tc.want)
		}
	}
	var c serveConfig
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	c.flags(fs)
	for name, want := range map[string]string{
		"requests-per-minute": "30", "requests-per-minute-per-address": "300", "lease": "30s", "max-infra-attempts": "5",
	} {
		if got := fs.Lookup(name).DefValue; got != want {
			t.Errorf("--%s default %s, want %s (server.Defaults)", name, got, want)
		}
	}
}

func TestServeRefusesBadStoreAndBlobsURLsAndMisplacedScaleFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--data-dir", "d", "--store", "mysql://kiln@db/kiln"},
		{"--data-dir", "d", "--store", "postgres://kiln@db:notaport/kiln"},
		{"--data-dir", "d", "--blobs", "http://bucket"},
		{"--data-dir", "d", "--blobs", "s3://bucket?endpoint=ftp://x"},
		{"--data-dir", "d", "--blobs", "s3://bucket?endpiont=http://x"},
		{"--data-dir", "d", "--standby"},
		{"--data-dir", "d", "--advertise", "10.0.0.5:7070"},
		{"--data-dir", "d", "--store", "postgres://kiln@db/kiln", "--advertise", "no-port"},
		{"--data-dir", "d", "--store", "postgres://kiln@db/kiln", "--ca", "ca.pem"},
		{"--store", "postgres://kiln@db/kiln"},
	} {
		var c serveConfig
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		c.flags(fs)
		c.DataDir, c.Store, c.Blobs = "", "", ""
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		if err := c.Validate(); err == nil {
			t.Errorf("%v was accepted", args)
		}
	}
	var c serveConfig
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	c.flags(fs)
	ok := []string{"--data-dir", "d", "--store", "postgres://kiln@127.0.0.1:5432/kiln?sslmode=disable", "--blobs", "s3://kiln?endpoint=http://127.0.0.1:9000", "--standby", "--ca", "ca.pem", "--advertise", "127.0.0.1:7070"}
	if err := fs.Parse(ok); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("%v: %v", ok, err)
	}
}

// A data directory too long for its admin socket is refused at start: a
// standby would otherwise find out only when it takes over from a dead
// writer (issue 21's failover test hit it: the standby took the lock, then
// exited on "bind: invalid argument", leaving the farm without a writer).
func TestServeRefusesADataDirTooLongForItsAdminSocket(t *testing.T) {
	long := "/" + strings.Repeat("d", maxSocketPath-len("/admin.sock")-1) // the socket: exactly the bound
	for _, tc := range []struct {
		dir string
		ok  bool
	}{{long[:len(long)-1], true}, {long, true}, {long + "d", false}} {
		var c serveConfig
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		c.flags(fs)
		args := []string{"--data-dir", tc.dir, "--store", "postgres://kiln@127.0.0.1:5432/kiln?sslmode=disable", "--standby"}
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		err := c.Validate()
		if tc.ok && err != nil {
			t.Errorf("a data dir of %d bytes: %v", len(tc.dir), err)
		}
		if !tc.ok && (err == nil || !strings.Contains(err.Error(), "admin socket")) {
			t.Errorf("a data dir of %d bytes (socket %d): %v, want refused for its admin socket", len(tc.dir), len(tc.dir)+len("/admin.sock"), err)
		}
	}
	// The bound is the kernel's: a socket at the longest accepted path binds.
	dir := t.TempDir()
	pad := maxSocketPath - len(dir) - len("/admin.sock") - 1
	if pad < 1 {
		t.Skipf("temporary directory %s too long to test the bound", dir)
	}
	at := filepath.Join(dir, strings.Repeat("d", pad))
	if err := os.Mkdir(at, 0o700); err != nil {
		t.Fatal(err)
	}
	if l := len(filepath.Join(at, "admin.sock")); l != maxSocketPath {
		t.Fatalf("socket path of %d bytes, want %d", l, maxSocketPath)
	}
	ln, err := net.Listen("unix", filepath.Join(at, "admin.sock"))
	if err != nil {
		t.Fatalf("a socket at the longest accepted path: %v", err)
	}
	ln.Close()
	if _, err := net.Listen("unix", filepath.Join(at, "admin.sock")+"x"); err == nil {
		t.Fatal("a socket one byte longer than the bound was accepted: the bound is too tight")
	}
}

func TestServeStoreURLInErrorsHidesThePassword(t *testing.T) {
	err := checkStoreURL("mysql://kiln:hunter2@db/kiln")
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("checkStoreURL: %v", err)
	}
}
