package config

import (
	"flag"
	"path/filepath"
	"testing"
)

func TestApplyEnvFillsOnlyFlagsNotGiven(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	a := fs.String("a", "default-a", "")
	b := fs.String("b", "default-b", "")
	c := fs.String("c", "default-c", "")
	n := fs.Int("n", 0, "")
	if err := fs.Parse([]string{"--a", "flag-a"}); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"A": "env-a", "B": "env-b"}
	err := ApplyEnv(fs, map[string]string{"a": "A", "b": "B", "c": "C"}, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if *a != "flag-a" || *b != "env-b" || *c != "default-c" {
		t.Fatalf("a=%q b=%q c=%q; want flag > environment > default", *a, *b, *c)
	}
	err = ApplyEnv(fs, map[string]string{"n": "N"}, func(string) string { return "seven" })
	if err == nil || *n != 0 {
		t.Fatalf("a bad environment value: err=%v n=%d", err, *n)
	}
}

func TestAbsPaths_RelativeFlags_ResolvedAgainstTheWorkingDirectory(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	rel := fs.String("data-dir", "", "")
	abs := fs.String("ca", "", "")
	empty := fs.String("download", "", "")
	other := fs.String("name", "", "")
	if err := fs.Parse([]string{"--data-dir", "state/../data", "--ca", "/etc/ca.pem", "--name", "x"}); err != nil {
		t.Fatal(err)
	}
	if err := AbsPaths(fs, "data-dir", "ca", "download", "not-a-flag"); err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "data"); *rel != want {
		t.Errorf("--data-dir: got %q, want %q", *rel, want)
	}
	if *abs != "/etc/ca.pem" || *empty != "" || *other != "x" {
		t.Errorf("changed what it should not: ca %q, download %q, name %q", *abs, *empty, *other)
	}
}
