package main

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kilnbuild/kiln/internal/worker"
)

// TestEveryFlagMapsToAConfigField checks the flag <-> Config mapping both
// ways: each field names a defined flag in its tag, each flag is named by a
// field, and setting the flag changes exactly that field.
func TestEveryFlagMapsToAConfigField(t *testing.T) {
	var c Config
	fs := newFlagSet(&c)
	typ := reflect.TypeOf(c)
	byFlag := map[string]string{}
	for i := range typ.NumField() {
		f := typ.Field(i)
		name := f.Tag.Get("flag")
		if name == "" {
			t.Errorf("field %s has no flag tag", f.Name)
			continue
		}
		if fs.Lookup(name) == nil {
			t.Errorf("field %s names flag --%s, which is not defined", f.Name, name)
		}
		byFlag[name] = f.Name
	}
	samples := map[reflect.Kind]string{reflect.String: "sample:1", reflect.Int64: "7s", reflect.Int: "7",
		reflect.Bool: "true", reflect.Slice: "native", reflect.Uint64: "7", reflect.Uint: "7"}
	fs.VisitAll(func(fl *flag.Flag) {
		field, ok := byFlag[fl.Name]
		if !ok {
			t.Errorf("flag --%s sets no Config field", fl.Name)
			return
		}
		if fl.Usage == "" {
			t.Errorf("flag --%s has no help text", fl.Name)
		}
		var c2 Config
		fs2 := newFlagSet(&c2)
		v := reflect.ValueOf(&c2).Elem().FieldByName(field)
		sample, ok := samples[v.Kind()]
		if v.Type() != reflect.TypeOf(time.Duration(0)) && v.Kind() == reflect.Int64 {
			sample = "7" // a plain integer flag, not a duration
		}
		if !ok {
			t.Fatalf("no sample value for kind %s", v.Kind())
		}
		if err := fs2.Parse([]string{"--" + fl.Name + "=" + sample}); err != nil {
			t.Fatalf("--%s=%s: %v", fl.Name, sample, err)
		}
		changed := 0
		for i := range typ.NumField() {
			if !reflect.ValueOf(c2).Field(i).IsZero() {
				changed++
				if typ.Field(i).Name != field {
					t.Errorf("--%s changed field %s, want %s", fl.Name, typ.Field(i).Name, field)
				}
			}
		}
		if changed != 1 {
			t.Errorf("--%s changed %d fields, want 1", fl.Name, changed)
		}
	})
}

func TestParseConfig(t *testing.T) {
	dataWithToken := t.TempDir()
	if err := os.WriteFile(filepath.Join(dataWithToken, "token"), []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		want    func(Config) bool
		wantErr string
	}{
		{name: "defaults are loopback, one job, the native target and bwrap",
			args: []string{"--data-dir", "/d", "--token", "t"},
			want: func(c Config) bool {
				specs, _ := c.targetSpecs()
				return c.Metaserver == "127.0.0.1:7070" && c.Jobs == 1 && c.Sandbox == "bwrap" && c.Grace == 30*time.Second &&
					len(specs) == 1 && specs[0].ID == "native"
			}},
		{name: "the environment fills flags not given",
			env: map[string]string{"KILN_METASERVER": "127.0.0.1:9999", "KILN_TOKEN": "envtok", "KILN_DATA_DIR": "/d"},
			want: func(c Config) bool {
				return c.Metaserver == "127.0.0.1:9999" && c.Token == "envtok" && c.DataDir == "/d"
			}},
		{name: "a flag wins over the environment",
			args: []string{"--token", "flagtok", "--data-dir", "/d"}, env: map[string]string{"KILN_TOKEN": "envtok"},
			want: func(c Config) bool { return c.Token == "flagtok" }},
		{name: "the token is read from DATA_DIR/token when not given",
			args: []string{"--data-dir", dataWithToken},
			want: func(c Config) bool { return c.Token == "from-file" }},
		{name: "repeated flags collect and options merge into the policy",
			args: []string{"--data-dir", "/d", "--token", "t", "--target", "native", "--target", "cross:s390x-linux-gnu",
				"--allow-project", "a", "--allow-project", "b", "--allow-option", "opt=x,y", "--allow-option", "opt=z",
				"--max-build-time", "1h", "--idle-only"},
			want: func(c Config) bool {
				p := c.policy()
				return len(c.Targets) == 2 && slices.Equal(p.GetAllowedProjects(), []string{"a", "b"}) &&
					slices.Equal(p.GetAllowedOptions()["opt"].GetValues(), []string{"x", "y", "z"}) &&
					p.GetMaxBuildSeconds() == 3600 && p.GetIdleOnly()
			}},
		{name: "a missing token is refused with where to put it",
			args: []string{"--data-dir", t.TempDir()}, wantErr: "no token"},
		{name: "a bad target is refused",
			args: []string{"--data-dir", "/d", "--token", "t", "--target", "sparc"}, wantErr: "--target"},
		{name: "several metaservers separated by commas are taken",
			args: []string{"--data-dir", "/d", "--token", "t", "--metaserver", "127.0.0.1:1,127.0.0.1:2"},
			want: func(c Config) bool { return c.Metaserver == "127.0.0.1:1,127.0.0.1:2" }},
		{name: "a metaserver list with a bad address is refused",
			args: []string{"--data-dir", "/d", "--token", "t", "--metaserver", "127.0.0.1:1,nohost"}, wantErr: "--metaserver"},
		{name: "a malformed option limit is refused",
			args: []string{"--data-dir", "/d", "--token", "t", "--allow-option", "noequals"}, wantErr: "--allow-option"},
		{name: "an unknown sandbox is refused",
			args: []string{"--data-dir", "/d", "--token", "t", "--sandbox", "docker"}, wantErr: "--sandbox"},
		{name: "a fractional max build time is refused",
			args: []string{"--data-dir", "/d", "--token", "t", "--max-build-time", "1500ms"}, wantErr: "whole seconds"},
		{name: "an unknown log format is refused",
			args: []string{"--data-dir", "/d", "--token", "t", "--log-format", "xml"}, wantErr: "--log-format"},
		{name: "the disk bounds default to the worker's and 0 turns them off",
			args: []string{"--data-dir", "/d", "--token", "t", "--min-free-disk-bytes", "0"},
			want: func(c Config) bool {
				return c.MaxDiskBytes == worker.DefaultMaxDiskBytes && c.MinFreeDiskBytes == 0 &&
					noneIfZero(c.MinFreeDiskBytes) < 0 && noneIfZero(c.MaxDiskBytes) == worker.DefaultMaxDiskBytes
			}},
		{name: "the mirrors' bound defaults to the worker's and 0 turns it off",
			args: []string{"--data-dir", "/d", "--token", "t"},
			want: func(c Config) bool { return c.MirrorBytes == worker.DefaultMirrorBytes }},
		{name: "a mirrors' bound of 0 is none",
			args: []string{"--data-dir", "/d", "--token", "t", "--mirror-bytes", "0"},
			want: func(c Config) bool { return c.MirrorBytes == 0 && noneIfZero(c.MirrorBytes) < 0 }},
		{name: "a negative mirrors' bound is refused",
			args: []string{"--data-dir", "/d", "--token", "t", "--mirror-bytes", "-1"}, wantErr: "--mirror-bytes"},
		{name: "a negative disk cap is refused",
			args: []string{"--data-dir", "/d", "--token", "t", "--max-disk-bytes", "-5"}, wantErr: "--max-disk-bytes"},
		{name: "stray arguments are refused",
			args: []string{"--data-dir", "/d", "--token", "t", "extra"}, wantErr: "unexpected arguments"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parseConfig(tc.args, env(tc.env))
			if tc.wantErr != "" {
				if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want ErrConfig mentioning %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tc.want(c) {
				t.Errorf("config %+v not as expected", c)
			}
		})
	}
}

func TestTheBuildServerRunsOnOneProcessorUnlessGOMAXPROCSIsSet(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	if n := ownProcs(env(nil)); n != 1 {
		t.Errorf("ownProcs without GOMAXPROCS = %d, want 1", n)
	}
	if n := ownProcs(env(map[string]string{"GOMAXPROCS": "4"})); n != 0 {
		t.Errorf("ownProcs with GOMAXPROCS=4 = %d, want 0 (leave it)", n)
	}
}
