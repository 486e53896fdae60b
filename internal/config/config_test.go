package config

import (
	"flag"
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
